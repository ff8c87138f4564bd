"""trio-actors: supervised actors on trio, and a taskiq-style task queue built on them."""

from .backends.results import (
    AsyncResultBackend as AsyncResultBackend,
    DecodedResults as DecodedResults,
    DummyResultBackend as DummyResultBackend,
    EncodedResultBackend as EncodedResultBackend,
    InmemoryResultBackend as InmemoryResultBackend,
    SqliteResultBackend as SqliteResultBackend,
)
from .backends.schedules import (
    InMemoryScheduleSource as InMemoryScheduleSource,
    LabelScheduleSource as LabelScheduleSource,
    SqliteScheduleSource as SqliteScheduleSource,
)
from .context import Context as Context
from .events import TaskiqEvents as TaskiqEvents, TaskiqState as TaskiqState
from .exceptions import (
    BrokerError as BrokerError,
    DependencyFailedError as DependencyFailedError,
    NoResultError as NoResultError,
    ResultBackendError as ResultBackendError,
    ResultGetError as ResultGetError,
    ResultIsReadyError as ResultIsReadyError,
    SecurityError as SecurityError,
    SendTaskError as SendTaskError,
    SerializationError as SerializationError,
    SharedBrokerSendTaskError as SharedBrokerSendTaskError,
    TaskAbortedError as TaskAbortedError,
    TaskExpiredError as TaskExpiredError,
    TaskiqError as TaskiqError,
    TaskiqResultTimeoutError as TaskiqResultTimeoutError,
    TaskRejectedError as TaskRejectedError,
    TaskTimeoutError as TaskTimeoutError,
    UnknownTaskError as UnknownTaskError,
)
from .facade import (
    AsyncBroker as AsyncBroker,
    AsyncSharedBroker as AsyncSharedBroker,
    async_shared_broker as async_shared_broker,
)
from .formatter import JSONFormatter as JSONFormatter, TaskiqFormatter as TaskiqFormatter
from .inmemory import InMemoryBroker as InMemoryBroker
from .lifecycle import TaskInfo as TaskInfo, TaskStatus as TaskStatus
from .middlewares import (
    SimpleRetryMiddleware as SimpleRetryMiddleware,
    SmartRetryMiddleware as SmartRetryMiddleware,
    TaskiqMiddleware as TaskiqMiddleware,
)
from .protocol import EncodedResult as EncodedResult
from .result import (
    ResultStatus as ResultStatus,
    TaskiqMessage as TaskiqMessage,
    TaskiqResult as TaskiqResult,
    TaskProgress as TaskProgress,
)
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
    MailboxFullError as MailboxFullError,
    Node as Node,
    PeerLostError as PeerLostError,
    Reply as Reply,
    Restart as Restart,
    Strategy as Strategy,
    Supervisor as Supervisor,
    SupervisorFailedError as SupervisorFailedError,
    exponential_backoff as exponential_backoff,
)
from .scheduler import TaskiqScheduler as TaskiqScheduler
from .schedules import (
    CreatedSchedule as CreatedSchedule,
    CronSpec as CronSpec,
    ScheduledTask as ScheduledTask,
    ScheduledTaskCancelledError as ScheduledTaskCancelledError,
    ScheduleSource as ScheduleSource,
)
from .serializers import (
    JSONSerializer as JSONSerializer,
    MsgpackSerializer as MsgpackSerializer,
    PickleSerializer as PickleSerializer,
    TaskiqSerializer as TaskiqSerializer,
    serializer_by_name as serializer_by_name,
)
from .tasks import (
    AsyncKicker as AsyncKicker,
    AsyncTaskiqDecoratedTask as AsyncTaskiqDecoratedTask,
    AsyncTaskiqTask as AsyncTaskiqTask,
    TaskiqDepends as TaskiqDepends,
    gather as gather,
)
from .websocket_broker import WebSocketBroker as WebSocketBroker
