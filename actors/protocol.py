"""The typed mailboxes of the task queue's roles: what the broker, the workers and the
result store say to each other, and their replies. attrs classes with stable wire tags
(``taskq.<Name>``), so each can cross a link between nodes.

Nothing here holds a Python object that only makes sense in one process: actors are
named by ``(node, actor)`` strings, errors and "no such thing" answers are typed values
(:class:`NoResult`, :class:`StatusReply`), and a result is either a ``TaskiqResult`` (the
store is in the worker's process) or an :class:`EncodedResult` (the worker encoded it
with the broker's serializer: the hub never decodes user data).

Nothing changes a message once it is sent. They are not ``frozen`` only because five are
built per task and frozen attrs classes take half again as long to build.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import pendulum

from . import wire
from .lifecycle import TaskStatus
from .result import TaskiqResult, TaskProgress
from .runtime import ActorRef

__all__ = [
    "Abort",
    "Accepted",
    "Barrier",
    "BrokerMessage",
    "BrokerRequest",
    "CancelRun",
    "CopyResult",
    "Counters",
    "Drain",
    "EncodedResult",
    "Enqueue",
    "FinishRuns",
    "Finished",
    "GetCounters",
    "GetOverview",
    "GetProgress",
    "GetResult",
    "GetSchedules",
    "GetTaskEvents",
    "Inspect",
    "IsReady",
    "Kick",
    "ListTasks",
    "LiveTask",
    "MarkRead",
    "MinuteRow",
    "NameCounters",
    "NoResult",
    "NodeLost",
    "Overview",
    "Pushed",
    "Reannounce",
    "ReclaimOver",
    "Run",
    "RunEnded",
    "Runs",
    "ScheduleList",
    "ScheduleRow",
    "SchedulesReport",
    "SetProgress",
    "Status",
    "StatusReply",
    "StopWaiting",
    "StoreRequest",
    "StoreResult",
    "Stored",
    "TaskEvent",
    "TaskEvents",
    "TaskPage",
    "TaskRow",
    "Tick",
    "Unschedule",
    "WaitResult",
    "Watch",
    "WorkerLeaving",
    "WorkerReady",
    "WorkerRequest",
    "WorkerRow",
    "WorkerTasks",
]


@attrs.define
class BrokerMessage:
    """A kicked task as the broker keeps it: the formatter's bytes plus the labels."""

    task_id: str
    task_name: str
    message: bytes
    labels: dict[str, Any]


@attrs.define
class EncodedResult:
    """A result as ``result_to_wire`` bytes (the broker's serializer); ``is_err`` is
    outside them so the hub can tell success from failure without decoding."""

    data: bytes
    is_err: bool


@attrs.define
class NoResult:
    """The reply when there is no result to give, and why (the facade raises
    ``ResultGetError`` with it)."""

    reason: str


Stored = TaskiqResult[Any] | EncodedResult
"""A result as the store keeps it."""

# To the broker -------------------------------------------------------------------------


@attrs.define
class Enqueue:
    """Accept a task. As an ask, the reply is the id of the live task (unique/idempotent)."""

    message: BrokerMessage


@attrs.define
class Kick:
    """``Enqueue`` from another node, acknowledged: the hub tells ``Accepted`` to the
    actor ``ack_actor`` on node ``ack_node`` (batched). ``resend``: sent again after a
    reconnect, so the hub drops it if it has that task id, live or recently ended."""

    message: BrokerMessage
    ack_node: str
    ack_actor: str
    resend: bool = False


@attrs.define
class Accepted:
    """The hub has these kicked task ids (the client may forget them)."""

    task_ids: list[str]


@attrs.define
class WorkerReady:
    """A worker (re)started, or announces itself again (see :class:`Reannounce`), and
    can run ``capacity`` tasks at once. It is the actor ``actor`` on node ``node``;
    ``incarnation`` tells this start of the worker from earlier ones (see
    :class:`Runs`); ``tasks`` are the task names it can run; ``holding`` the task ids of
    the runs it holds (waiting, running, or ended and not yet reported)."""

    node: str
    actor: str
    worker_id: str
    capacity: int
    incarnation: int
    tasks: list[str] = attrs.field(factory=list)
    holding: list[str] = attrs.field(factory=list)


@attrs.define
class WorkerTasks:
    """The task names this worker can run now (tasks registered after it started)."""

    worker_id: str
    tasks: list[str]


@attrs.define
class RunEnded:
    """How one run ended. ``outcome``: ``done`` (its result, if any, went to the store),
    ``again`` (requeue or retry: run the same task id again after ``delay`` with
    ``labels``), or ``aborted``. ``delivery`` is the run's ``tries``: which delivery of
    the task this was, so the broker ignores a late report of an earlier one."""

    task_id: str
    outcome: Literal["done", "again", "aborted"]
    is_err: bool = False
    delay: float = 0.0
    labels: dict[str, Any] | None = None
    delivery: int = 0


@attrs.define
class Finished:
    """Runs of this worker ended, in order: all that ended since its last report, so a
    burst of short runs costs the broker one message."""

    worker_id: str
    runs: list[RunEnded]


@attrs.define
class Tick:
    """The broker's timer: scheduled tasks or expiries are due."""


@attrs.define
class ReclaimOver:
    """The broker's reclaim window after a recovery is over: the runs no worker
    claimed are queued again."""


@attrs.define
class NodeLost:
    """The link to this worker node is gone: its workers' runs go to the others."""

    node: str


@attrs.define
class Abort:
    """Abort a task; the reply is True once it is removed or its run was cancelled."""

    task_id: str


@attrs.define
class Inspect:
    """The reply is a :class:`LiveTask`, or None once the task has ended."""

    task_id: str


@attrs.define
class LiveTask:
    """What the broker knows of a live task; the facade decodes its arguments."""

    message: BrokerMessage
    tries: int
    status: TaskStatus
    enqueue_time: pendulum.DateTime
    scheduled: pendulum.DateTime | None
    dependencies: list[str]
    dependents: list[str]


@attrs.define
class Status:
    """The reply is a :class:`StatusReply`: ``Inspect`` without the arguments."""

    task_id: str


@attrs.define
class StatusReply:
    """The status of a live task, or None when the broker no longer has it."""

    status: TaskStatus | None


@attrs.define
class Drain:
    """The reply comes once no task kicked so far is still live."""


# Introspection (the dashboard, ``/metrics``, ``actors status``) --------------------------


@attrs.define
class GetOverview:
    """The reply is an :class:`Overview` with the last ``minutes`` minutes' outcomes."""

    minutes: int = 15


@attrs.frozen
class WorkerRow:
    """A worker as the broker sees it. ``last_seen``: wall time (epoch seconds) the
    broker last heard from it (its start or a run's end); ``linked``: its node's link is
    up (links carry heartbeats, so a hung node loses it)."""

    worker_id: str
    node: str
    capacity: int
    in_use: int
    last_seen: float
    linked: bool


@attrs.frozen
class MinuteRow:
    """Outcomes in the minute starting at ``start`` (epoch seconds)."""

    start: float
    succeeded: int
    failed: int
    retried: int
    aborted: int


@attrs.frozen
class Overview:
    """The queue at a glance. ``queued``: ``(priority, ready tasks)``, highest priority
    first; ``parked``: kicks
    held while the queue is full; ``links``: the peer nodes linked to the broker's node,
    ``reconnects`` how many links came back after one dropped; ``mailboxes``: messages
    waiting in each actor's mailbox on the broker's node."""

    node: str
    queued: list[tuple[int, int]]
    running: int
    scheduled: int
    waiting: int
    parked: int
    minutes: list[MinuteRow]
    workers: list[WorkerRow]
    links: list[str]
    reconnects: int
    mailboxes: dict[str, int]


@attrs.define
class ListTasks:
    """The reply is a :class:`TaskPage`. ``status``: a live phase (``waiting``,
    ``scheduled``, ``queued``, ``running``; None: all live tasks, in kick order) or a
    recent end (``succeeded``, ``failed``, ``retried``, ``aborted``, ``expired``: newest
    first); ``name``: part of the task name; ``after``: the previous page's cursor."""

    status: str | None = None
    name: str | None = None
    after: str | None = None
    limit: int = 50


@attrs.frozen
class TaskRow:
    """One task of a page; ``time``: when it was kicked (live) or ended (wall clock)."""

    task_id: str
    task_name: str
    status: str
    time: pendulum.DateTime | None
    tries: int = 0
    priority: int = 0
    worker: str | None = None


@attrs.frozen
class TaskPage:
    """``cursor``: pass it as ``after`` for the next page; None when nothing follows."""

    rows: list[TaskRow]
    cursor: str | None


@attrs.define
class GetTaskEvents:
    """The reply is :class:`TaskEvents`."""

    task_id: str


@attrs.frozen
class TaskEvent:
    """``time``: wall clock, epoch seconds; ``detail``: the worker for ``started``, the
    failed dependency for a task that did not run because of one."""

    time: float
    task_name: str
    event: str
    detail: str = ""


@attrs.frozen
class TaskEvents:
    """A task's events the broker still remembers, oldest first."""

    events: list[TaskEvent]


@attrs.define
class GetCounters:
    """The reply is :class:`Counters`."""


@attrs.frozen
class NameCounters:
    """Counts since the broker started; ``buckets``: runs per ``RUN_TIME_BUCKETS``
    bound of :mod:`actors.stats` (not cumulative), the last one those longer."""

    task_name: str
    kicked: int
    started: int
    succeeded: int
    failed: int
    retried: int
    aborted: int
    run_time_sum: float
    buckets: list[int]


@attrs.frozen
class Counters:
    """One :class:`NameCounters` per task name seen."""

    names: list[NameCounters]


@attrs.frozen
class ScheduleRow:
    """One schedule as its scheduler sees it: ``when`` says how it repeats (``cron
    */5 * * * *``, ``every 30 s``, ``once at ...``); ``next_due`` None: it will not fire
    again; ``scheduler``: the node the scheduler runs on."""

    schedule_id: str
    task_name: str
    when: str
    next_due: pendulum.DateTime | None
    scheduler: str


@attrs.define
class SchedulesReport:
    """A scheduler's schedules, told to its broker whenever it has looked at them;
    ``scheduler`` is where to send :class:`Unschedule`."""

    scheduler: ActorRef[Any]
    rows: list[ScheduleRow]


@attrs.define
class GetSchedules:
    """The reply is :class:`ScheduleList`: the last report of every scheduler that is
    still linked."""


@attrs.frozen
class ScheduleList:
    rows: list[ScheduleRow]


@attrs.define
class Unschedule:
    """Delete a schedule; the reply is True when a scheduler had it and deleted it.
    Sent to the broker, which hands it to the scheduler that reported the schedule."""

    schedule_id: str


@attrs.define
class WorkerLeaving:
    """The workers of node ``node`` are shutting down: hand them no more runs (the runs
    they have end there, or come back when their link goes)."""

    node: str


BrokerRequest = (
    Enqueue
    | Kick
    | WorkerReady
    | WorkerTasks
    | Finished
    | Tick
    | ReclaimOver
    | NodeLost
    | Abort
    | Inspect
    | Status
    | Drain
    | GetOverview
    | ListTasks
    | GetTaskEvents
    | GetCounters
    | SchedulesReport
    | GetSchedules
    | Unschedule
    | WorkerLeaving
)

# To a worker ---------------------------------------------------------------------------


@attrs.define
class Run:
    """Run this task now; ``tries`` counts this delivery (and names it: see
    :class:`RunEnded`)."""

    message: BrokerMessage
    tries: int
    enqueue_time: pendulum.DateTime


@attrs.define
class Runs:
    """Run these tasks, in order: all the broker hands this worker in one round, so a
    burst of tasks costs the worker one message.

    ``incarnation`` is the worker start they were meant for. A worker's mailbox outlives
    its restarts, and the broker delivers again what an earlier start was given, so a
    worker drops runs meant for another start: none runs twice, and none after an abort
    ended it."""

    runs: list[Run]
    incarnation: int


@attrs.define
class CancelRun:
    """Cancel the run of this task (an abort)."""

    task_id: str


@attrs.define
class FinishRuns:
    """The reply comes once this worker holds no run: each one it was handed has ended
    and its end was reported to the broker (a graceful shutdown waits for it)."""


@attrs.define
class Reannounce:
    """Announce yourself again with a :class:`WorkerReady` that lists the runs held:
    from a broker rebuilt from its store, or from the worker's node once its link to the
    hub is back."""


WorkerRequest = Runs | CancelRun | FinishRuns | Reannounce

# To the result store -------------------------------------------------------------------


@attrs.define
class StoreResult:
    """Store a result, push it to waiters, expire it after ``ttl``.

    ``result`` None: the run ended on purpose without one (``NoResultError``)."""

    task_id: str
    result: Stored | None
    ttl: float | None = None


@attrs.define
class CopyResult:
    """Store ``source``'s result under ``target`` too (``otherwise`` after a success)."""

    source: str
    target: str
    ttl: float | None = None


@attrs.define
class WaitResult:
    """The reply is the result (:data:`Stored`) or :class:`NoResult`, as soon as there
    is one. ``waiter`` names this wait for ``StopWaiting``."""

    task_id: str
    waiter: str


@attrs.define
class Barrier:
    """The reply comes once the store has handled every message it had before this one
    (the results among them written): a durable hub's broker asks it before its file
    says that tasks ended, so no task is ended there without its result."""


@attrs.define
class StopWaiting:
    """The waiter gave up (a timeout, a cancellation): forget it."""

    task_id: str
    waiter: str


@attrs.define
class Watch:
    """Push the results of ``task_ids`` (kicked by one client) to the actor ``actor`` on
    node ``node`` as they are stored, so that client's waits need no round trip."""

    node: str
    actor: str
    task_ids: list[str]


@attrs.define
class MarkRead:
    """A client's waits took these pushed results: the store's backend may evict them
    as read (``AsyncResultBackend.mark_read``)."""

    task_ids: list[str]


@attrs.define
class Pushed:
    """Results the store pushed to a client that kicked them (``results[i]`` is
    ``task_ids[i]``'s, :data:`Stored` or :class:`NoResult`): the client's copy is the
    one its wait reads, whatever the store's backend evicts meanwhile."""

    task_ids: list[str]
    results: list[Stored | NoResult]


@attrs.define
class GetResult:
    """The reply is the stored result (:data:`Stored`) or :class:`NoResult`."""

    task_id: str
    with_logs: bool = False


@attrs.define
class IsReady:
    """The reply is True when a result is stored for the task."""

    task_id: str


@attrs.define
class SetProgress:
    """A running task's progress report."""

    task_id: str
    progress: TaskProgress[Any]


@attrs.define
class GetProgress:
    """The reply is the task's last ``TaskProgress``, or None."""

    task_id: str


StoreRequest = (
    StoreResult
    | Barrier
    | CopyResult
    | WaitResult
    | StopWaiting
    | Watch
    | MarkRead
    | GetResult
    | IsReady
    | SetProgress
    | GetProgress
)

#: Every class above under a tag that does not depend on this module's path.
for _cls in (
    BrokerMessage, EncodedResult, NoResult, LiveTask, StatusReply, TaskProgress,
    Enqueue, Kick, Accepted, WorkerReady, WorkerTasks, RunEnded, Finished, Tick, NodeLost,
    Abort, Inspect, Status, Drain, WorkerLeaving, ReclaimOver,
    Run, Runs, CancelRun, FinishRuns, Reannounce,
    StoreResult, Barrier, CopyResult, WaitResult, StopWaiting, Watch, MarkRead, Pushed,
    GetResult, IsReady,
    SetProgress, GetProgress,
    GetOverview, WorkerRow, MinuteRow, Overview, ListTasks, TaskRow, TaskPage,
    GetTaskEvents, TaskEvent, TaskEvents, GetCounters, NameCounters, Counters,
    ScheduleRow, SchedulesReport, GetSchedules, ScheduleList, Unschedule,
):  # fmt: skip
    wire.register(_cls, f"taskq.{_cls.__name__}")

#: Nobody waits on these: they may wait on a link for a frame to travel with.
for _cls in (Accepted, MarkRead):
    wire.register_lazy(_cls)

#: Results cross the hub as EncodedResult (the one member with a ``data`` field).
for _union in (Stored, Stored | None, Stored | NoResult):
    wire.structure_by_key(_union, EncodedResult, "data")


def _labels_to_wire(labels: dict[str, Any] | None) -> Any:
    return labels and wire.converter.unstructure(labels, dict[str, Any])


def _labels_from_wire(raw: dict[str, Any] | None) -> Any:
    return raw and wire.converter.structure(raw, dict[str, Any])


def _kick_from_list(raw: list[Any]) -> Kick:
    task_id, task_name, message, labels, ack_node, ack_actor, resend = raw
    body = BrokerMessage(task_id, task_name, message, _labels_from_wire(labels))
    return Kick(body, ack_node, ack_actor, resend)


def _run_from_list(raw: list[Any]) -> Run:
    task_id, task_name, message, labels, tries, enqueue_time = raw
    body = BrokerMessage(task_id, task_name, message, _labels_from_wire(labels))
    return Run(body, tries, wire.structure_datetime(enqueue_time))


def _run_ended_from_list(raw: list[Any]) -> RunEnded:
    task_id, outcome, is_err, delay, labels, delivery = raw
    if outcome not in ("done", "again", "aborted"):
        raise wire.WireError(f"malformed RunEnded: outcome {outcome!r:.40}")
    return RunEnded(task_id, outcome, is_err, float(delay), _labels_from_wire(labels), delivery)


def _store_result_to_list(store: StoreResult) -> list[Any]:
    result = store.result
    if type(result) is EncodedResult:  # what crosses links: the hub never decodes results
        return [store.task_id, result.data, result.is_err, store.ttl]
    data = None if result is None else wire.converter.unstructure(result, Stored)
    return [store.task_id, data, False, store.ttl]


def _store_result_from_list(raw: list[Any]) -> StoreResult:
    task_id, data, is_err, ttl = raw
    ttl = None if ttl is None else float(ttl)
    if type(data) is bytes:
        return StoreResult(task_id, EncodedResult(data, is_err), ttl)
    stored: Any = Stored  # a union, which cattrs's types do not take
    return StoreResult(
        task_id, None if data is None else wire.converter.structure(data, stored), ttl
    )


#: Every task sends one of each: lists of their fields instead of cattrs's maps.
wire.register_codec(
    Kick,
    lambda k: [
        *(k.message.task_id, k.message.task_name, k.message.message),
        *(_labels_to_wire(k.message.labels), k.ack_node, k.ack_actor, k.resend),
    ],
    _kick_from_list,
    *(str, str, bytes, dict, str, str, bool),
)
wire.register_codec(
    Run,
    lambda r: [
        *(r.message.task_id, r.message.task_name, r.message.message),
        *(_labels_to_wire(r.message.labels), r.tries),
        wire.unstructure_datetime(r.enqueue_time),
    ],
    _run_from_list,
    *(str, str, bytes, dict, int, list),
)
wire.register_codec(
    RunEnded,
    lambda e: [e.task_id, e.outcome, e.is_err, e.delay, _labels_to_wire(e.labels), e.delivery],
    _run_ended_from_list,
    *(str, str, bool, (float, int), (dict, type(None)), int),
)
wire.register_codec(
    StoreResult,
    _store_result_to_list,
    _store_result_from_list,
    *(str, (bytes, dict, type(None)), bool, (float, int, type(None))),
)
