"""The actor runtime: actors, mailboxes, refs, supervisors, nodes. No task-queue knowledge."""

from .actor import Actor as Actor
from .actor import ActorCell as ActorCell
from .errors import (
    ActorCrashedError as ActorCrashedError,
)
from .errors import (
    ActorError as ActorError,
)
from .errors import (
    ActorNotFoundError as ActorNotFoundError,
)
from .errors import (
    ActorStoppedError as ActorStoppedError,
)
from .errors import (
    AskTimeoutError as AskTimeoutError,
)
from .errors import (
    PeerLostError as PeerLostError,
)
from .errors import (
    SupervisorFailedError as SupervisorFailedError,
)
from .mailbox import LocalReply as LocalReply
from .mailbox import Mailbox as Mailbox
from .mailbox import Reply as Reply
from .node import Node as Node
from .ref import ActorRef as ActorRef
from .ref import LocalRef as LocalRef
from .ref import RemoteRef as RemoteRef
from .supervisor import (
    Backoff as Backoff,
)
from .supervisor import (
    ChildSpec as ChildSpec,
)
from .supervisor import (
    Restart as Restart,
)
from .supervisor import (
    Strategy as Strategy,
)
from .supervisor import (
    Supervisor as Supervisor,
)
from .supervisor import (
    exponential_backoff as exponential_backoff,
)
