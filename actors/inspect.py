"""A read-mostly view of a running task queue, for the dashboard, ``/metrics``,
``/healthz`` and ``actors status``.

:class:`HubView` asks the broker and result store actors (the ``taskq.Get*`` asks of
:mod:`actors.protocol`), wherever they run: in this process (an ``InMemoryBroker``, or
the hub's own node) or on a hub reached over a link (a client node, as ``actors
status`` dials). It keeps no state of its own; every call is one or a few asks.

Arguments and results are decoded for display only when the view knows the
serializer (built from a broker, or given one); otherwise they show as a size in bytes.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

import attrs
import pendulum

from .exceptions import BrokerError
from .formatter import TaskiqFormatter
from .hub import BROKER_ACTOR, HUB_NODE, STORE_ACTOR
from .introspection import STATUSES
from .protocol import (
    Abort,
    BrokerRequest,
    Counters,
    EncodedResult,
    GetCounters,
    GetOverview,
    GetProgress,
    GetResult,
    GetSchedules,
    GetTaskEvents,
    Inspect,
    ListTasks,
    LiveTask,
    MinuteRow,
    NameCounters,
    NoResult,
    Overview,
    ScheduleList,
    ScheduleRow,
    StoreRequest,
    TaskEvent,
    TaskEvents,
    TaskPage,
    TaskRow,
    Unschedule,
    WorkerRow,
)
from .result import TaskiqResult, TaskProgress, result_from_wire
from .runtime import ActorError, ActorRef, AskTimeoutError, Node
from .serializers import TaskiqSerializer
from .wire import WireError

if TYPE_CHECKING:
    from .actor_broker import ActorBroker

__all__ = [
    "HubView",
    "MinuteRow",
    "NameCounters",
    "Overview",
    "ScheduleRow",
    "TaskDetail",
    "TaskEvent",
    "TaskPage",
    "TaskRow",
    "WorkerRow",
]

_RUNTIME_ERRORS = (ActorError, WireError)


@attrs.frozen
class TaskDetail:
    """One task for display. ``status``: a live phase (``queued``, ``running``...) or
    how it ended (``succeeded``, ``failed``, ``aborted``...); ``args``/``kwargs``/
    ``result``: ``repr`` of the decoded values, None when the view cannot decode them
    (then ``size`` says how many bytes the arguments take); ``timeline``: kicked, the
    current or last run's start (with its worker), retries and the end, oldest first
    (an end's times are the hub's; a start's the worker's, once the result is in)."""

    task_id: str
    task_name: str | None
    status: str
    size: int | None = None
    args: str | None = None
    kwargs: str | None = None
    labels: dict[str, Any] = attrs.field(factory=dict)
    tries: int = 0
    enqueue_time: pendulum.DateTime | None = None
    scheduled: pendulum.DateTime | None = None
    result: str | None = None
    error: str | None = None
    traceback: str | None = None
    progress: str | None = None
    timeline: list[TaskEvent] = attrs.field(factory=list)
    dependencies: list[str] = attrs.field(factory=list)
    dependents: list[str] = attrs.field(factory=list)


@attrs.frozen
class HubView:
    """Ask a task queue what it holds. Build it with :meth:`of_broker` (a running
    ``InMemoryBroker`` or ``WebSocketBroker``) or :meth:`of_hub` (the hub's node, or a
    node linked to a hub). Runtime failures (the hub unreachable, an ask timing out)
    raise ``BrokerError``."""

    broker: ActorRef[BrokerRequest]
    store: ActorRef[StoreRequest]
    serializer: TaskiqSerializer | None = None
    timeout: float = 5.0

    @classmethod
    def of_broker(cls, broker: ActorBroker, timeout: float = 5.0) -> HubView:
        refs = broker._actors()
        return cls(refs[0], refs[1], broker.serializer, timeout)

    @classmethod
    def of_hub(
        cls,
        node: Node,
        hub: str = HUB_NODE,
        serializer: TaskiqSerializer | None = None,
        timeout: float = 5.0,
    ) -> HubView:
        """``node``: the hub's own node, or one linked to the hub named ``hub``."""
        where = None if node.name == hub else hub
        return cls(
            node.ref(BROKER_ACTOR, node=where),
            node.ref(STORE_ACTOR, node=where),
            serializer,
            timeout,
        )

    async def _ask(self, actor: ActorRef[Any], message: Any) -> Any:
        try:
            return await actor.ask(message, timeout=self.timeout)
        except AskTimeoutError as exc:
            raise BrokerError(f"the hub did not answer within {self.timeout} s") from exc
        except _RUNTIME_ERRORS as exc:
            raise BrokerError(f"cannot reach the hub: {exc}") from exc

    async def overview(self, minutes: int = 15) -> Overview:
        """The queue at a glance, with the outcomes of the last ``minutes`` minutes."""
        answer: Overview = await self._ask(self.broker, GetOverview(minutes))
        return answer

    async def tasks(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> TaskPage:
        """A page of tasks: live ones in kick order (``status`` None, ``waiting``,
        ``scheduled``, ``queued`` or ``running``) or recent ends newest first
        (``succeeded``, ``failed``, ``retried``, ``aborted``, ``expired``). ``name``
        matches part of the task name; ``after`` is the previous page's ``cursor``.
        A page may hold fewer than ``limit`` rows and still have a cursor: the broker
        looks at a bounded number of tasks per page."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)} or None, not {status!r}")
        answer: TaskPage = await self._ask(self.broker, ListTasks(status, name, after, limit))
        return answer

    async def counters(self) -> list[NameCounters]:
        """Per task name counts and run-time histograms, since the broker started."""
        answer: Counters = await self._ask(self.broker, GetCounters())
        return answer.names

    async def schedules(self) -> list[ScheduleRow]:
        """The schedules of every scheduler whose broker this is (each reports its own
        after every look at them: at start, each due time, each change, and at least
        every minute), ordered by next due time."""
        answer: ScheduleList = await self._ask(self.broker, GetSchedules())
        far = pendulum.DateTime.max.replace(tzinfo=pendulum.UTC)
        return sorted(answer.rows, key=lambda row: (row.next_due or far, row.schedule_id))

    async def unschedule(self, schedule_id: str) -> bool:
        """Delete a schedule from the source of the scheduler that reported it; False if
        no linked scheduler has it."""
        return bool(await self._ask(self.broker, Unschedule(schedule_id)))

    async def abort(self, task_id: str) -> bool:
        """Abort a queued or running task; True once it is removed or its run cancelled."""
        return bool(await self._ask(self.broker, Abort(task_id)))

    async def task(self, task_id: str) -> TaskDetail | None:
        """Everything known of one task, live or recently ended; None if nothing is."""
        live = await self._ask(self.broker, Inspect(task_id))
        events: TaskEvents = await self._ask(self.broker, GetTaskEvents(task_id))
        timeline = events.events
        progress = await self._ask(self.store, GetProgress(task_id))
        shown_progress = repr(progress) if isinstance(progress, TaskProgress) else None
        if isinstance(live, LiveTask):
            return self._live(live, timeline, shown_progress)
        stored = await self._ask(self.store, GetResult(task_id))
        if isinstance(stored, NoResult) and not timeline:
            return None
        detail = TaskDetail(
            task_id,
            timeline[-1].task_name if timeline else None,
            _ended_status(timeline),
            timeline=timeline,
            progress=shown_progress,
        )
        return self._with_result(detail, stored)

    def _live(self, live: LiveTask, timeline: list[TaskEvent], progress: str | None) -> TaskDetail:
        message = live.message
        args = kwargs = None
        if self.serializer is not None:
            try:
                decoded = TaskiqFormatter(self.serializer).loads(message.message)
            except Exception:  # bytes the view's serializer does not read
                pass
            else:
                args, kwargs = repr(tuple(decoded.args)), repr(dict(decoded.kwargs))
        return TaskDetail(
            message.task_id,
            message.task_name,
            _live_status(live),
            size=len(message.message),
            args=args,
            kwargs=kwargs,
            labels=dict(message.labels),
            tries=live.tries,
            enqueue_time=live.enqueue_time,
            scheduled=live.scheduled,
            progress=progress,
            timeline=_timeline(timeline, message.task_name, live.enqueue_time),
            dependencies=list(live.dependencies),
            dependents=list(live.dependents),
        )

    def _with_result(self, detail: TaskDetail, stored: object) -> TaskDetail:
        result: TaskiqResult[Any] | None = None
        if isinstance(stored, TaskiqResult):
            result = stored
        elif isinstance(stored, EncodedResult) and self.serializer is not None:
            try:
                result = result_from_wire(stored.data, self.serializer)
            except Exception:
                result = None
        if result is None:
            return detail
        error = result.error
        return attrs.evolve(
            detail,
            status=_result_status(result, detail.status),
            labels=dict(result.labels),
            tries=result.tries,
            enqueue_time=result.enqueue_time,
            timeline=_timeline(
                detail.timeline,
                detail.task_name or "",
                result.enqueue_time,
                (result.start_time, result.worker_id or ""),
            ),
            result=None if result.is_err else repr(result.return_value),
            error=None if error is None else f"{type(error).__name__}: {error}",
            traceback=None if error is None else "".join(traceback.format_exception(error)),
        )


def _timeline(
    events: list[TaskEvent],
    name: str,
    kicked: pendulum.DateTime | None,
    started: tuple[pendulum.DateTime | None, str] | None = None,
) -> list[TaskEvent]:
    """The broker's events with the kick and the last run's start (the broker counts
    those without keeping their times: they are the task's own), oldest first."""
    events = [event for event in events if event.event != "started" or started is None]
    if kicked is not None:
        events.append(TaskEvent(kicked.timestamp(), name, "kicked"))
    if started is not None and started[0] is not None:
        events.append(TaskEvent(started[0].timestamp(), name, "started", started[1]))
    return sorted(events, key=lambda event: event.time)


def _live_status(live: LiveTask) -> str:
    """The live status, telling a task waiting for dependencies from a scheduled one."""
    if live.dependencies and live.status == "scheduled":
        return "waiting"
    return str(live.status)


def _ended_status(timeline: list[TaskEvent]) -> str:
    for event in reversed(timeline):
        if event.event not in ("kicked", "started", "retried"):
            return event.event
    return "done"


def _result_status(result: TaskiqResult[Any], status: str) -> str:
    if status != "done":
        return status
    return "failed" if result.is_err else "succeeded"
