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

__all__ = [
    "Abort",
    "Accepted",
    "BrokerMessage",
    "BrokerRequest",
    "CancelRun",
    "CopyResult",
    "Drain",
    "EncodedResult",
    "Enqueue",
    "Finished",
    "GetProgress",
    "GetResult",
    "Inspect",
    "IsReady",
    "Kick",
    "LiveTask",
    "NoResult",
    "NodeLost",
    "Pushed",
    "Run",
    "RunEnded",
    "Runs",
    "SetProgress",
    "Status",
    "StatusReply",
    "StopWaiting",
    "StoreRequest",
    "StoreResult",
    "Stored",
    "Tick",
    "WaitResult",
    "Watch",
    "WorkerReady",
    "WorkerRequest",
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
    """A worker (re)started and can run ``capacity`` tasks at once. It is the actor
    ``actor`` on node ``node``; ``incarnation`` tells this start of the worker from
    earlier ones (see :class:`Runs`); ``tasks`` are the task names it can run."""

    node: str
    actor: str
    worker_id: str
    capacity: int
    incarnation: int
    tasks: list[str] = attrs.field(factory=list)


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


BrokerRequest = (
    Enqueue
    | Kick
    | WorkerReady
    | WorkerTasks
    | Finished
    | Tick
    | NodeLost
    | Abort
    | Inspect
    | Status
    | Drain
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


WorkerRequest = Runs | CancelRun

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
class Pushed:
    """Results the store pushed to a client that kicked them (``results[i]`` is
    ``task_ids[i]``'s, :data:`Stored` or :class:`NoResult`).

    The store's backend keeps the newest ``keep`` results: a result that was the
    store's ``seqs[i]``-th is gone from it once ``stored`` (its count now) reaches
    ``seqs[i] + keep``, and the client no longer reads its own copy then."""

    task_ids: list[str]
    results: list[Stored | NoResult]
    seqs: list[int]
    stored: int
    keep: int


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
    | CopyResult
    | WaitResult
    | StopWaiting
    | Watch
    | GetResult
    | IsReady
    | SetProgress
    | GetProgress
)

#: Every class above under a tag that does not depend on this module's path.
for _cls in (
    BrokerMessage, EncodedResult, NoResult, LiveTask, StatusReply, TaskProgress,
    Enqueue, Kick, Accepted, WorkerReady, WorkerTasks, RunEnded, Finished, Tick, NodeLost,
    Abort, Inspect, Status, Drain,
    Run, Runs, CancelRun,
    StoreResult, CopyResult, WaitResult, StopWaiting, Watch, Pushed, GetResult, IsReady,
    SetProgress, GetProgress,
):  # fmt: skip
    wire.register(_cls, f"taskq.{_cls.__name__}")

#: Results cross the hub as EncodedResult (the one member with a ``data`` field).
for _union in (Stored, Stored | None, Stored | NoResult):
    wire.structure_by_key(_union, EncodedResult, "data")
