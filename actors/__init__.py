"""trio-actors: supervised actors on trio, and a taskiq-style task queue built on them."""

from .runtime import (
    Actor as Actor,
    ActorCrashedError as ActorCrashedError,
    ActorError as ActorError,
    ActorNotFoundError as ActorNotFoundError,
    ActorRef as ActorRef,
    ActorStoppedError as ActorStoppedError,
    AskTimeoutError as AskTimeoutError,
    Backoff as Backoff,
    ChildSpec as ChildSpec,
    Node as Node,
    PeerLostError as PeerLostError,
    Reply as Reply,
    Restart as Restart,
    Strategy as Strategy,
    Supervisor as Supervisor,
    SupervisorFailedError as SupervisorFailedError,
    exponential_backoff as exponential_backoff,
)
