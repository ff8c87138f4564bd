"""The actor runtime: actors, mailboxes, refs, supervisors, nodes. No task-queue knowledge."""

from .actor import Actor as Actor, ActorCell as ActorCell
from .errors import (
    ActorCrashedError as ActorCrashedError,
    ActorError as ActorError,
    ActorNotFoundError as ActorNotFoundError,
    ActorStoppedError as ActorStoppedError,
    AskTimeoutError as AskTimeoutError,
    MailboxFullError as MailboxFullError,
    PeerLostError as PeerLostError,
    SupervisorFailedError as SupervisorFailedError,
)
from .mailbox import LocalReply as LocalReply, Mailbox as Mailbox, Reply as Reply
from .node import Node as Node, unique_node_name as unique_node_name
from .ref import ActorRef as ActorRef, LocalRef as LocalRef, RemoteRef as RemoteRef
from .supervisor import (
    Backoff as Backoff,
    ChildSpec as ChildSpec,
    Restart as Restart,
    Strategy as Strategy,
    Supervisor as Supervisor,
    exponential_backoff as exponential_backoff,
)
