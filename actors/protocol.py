"""The typed mailboxes of the task queue's roles: what the broker, the workers and the
result store say to each other. attrs classes, so they can cross a link too.

Nothing changes a message once it is sent. They are not ``frozen`` only because five are
built per task and frozen attrs classes take half again as long to build.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import pendulum

from .runtime import ActorRef

__all__ = [
    "Abort",
    "BrokerMessage",
    "BrokerRequest",
    "CancelRun",
    "CopyResult",
    "Drain",
    "Enqueue",
    "Finished",
    "GetResult",
    "Inspect",
    "Run",
    "RunEnded",
    "Runs",
    "Status",
    "StopWaiting",
    "StoreRequest",
    "StoreResult",
    "Tick",
    "WaitResult",
    "WorkerReady",
    "WorkerRequest",
]


@attrs.define
class BrokerMessage:
    """A kicked task as the broker keeps it: the formatter's bytes plus the labels."""

    task_id: str
    task_name: str
    message: bytes
    labels: dict[str, Any]


# To the broker -------------------------------------------------------------------------


@attrs.define
class Enqueue:
    """Accept a task. As an ask, the reply is the id of the live task (unique/idempotent)."""

    message: BrokerMessage


@attrs.define
class WorkerReady:
    """A worker (re)started and can run ``capacity`` tasks at once. ``incarnation``
    tells this start of the worker from earlier ones (see :class:`Runs`)."""

    worker: ActorRef[Any]
    worker_id: str
    capacity: int
    incarnation: int


@attrs.define
class RunEnded:
    """How one run ended. ``outcome``: ``done`` (its result, if any, went to the store),
    ``again`` (requeue or retry: run the same task id again after ``delay`` with
    ``labels``), or ``aborted``."""

    task_id: str
    outcome: Literal["done", "again", "aborted"]
    is_err: bool = False
    delay: float = 0.0
    labels: dict[str, Any] | None = None


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
class Abort:
    """Abort a task; the reply is True once it is removed or its run was cancelled."""

    task_id: str


@attrs.define
class Inspect:
    """The reply is a ``TaskInfo`` for a live task, or None."""

    task_id: str


@attrs.define
class Status:
    """The reply is the ``TaskStatus`` of a live task, or None: ``Inspect`` without
    decoding the task's arguments."""

    task_id: str


@attrs.define
class Drain:
    """The reply comes once no task kicked so far is still live."""


BrokerRequest = Enqueue | WorkerReady | Finished | Tick | Abort | Inspect | Status | Drain

# To a worker ---------------------------------------------------------------------------


@attrs.define
class Run:
    """Run this task now; ``tries`` counts this delivery."""

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
    """Store a result (a ``TaskiqResult``), push it to waiters, expire it after ``ttl``.

    ``result`` None: the run ended on purpose without one (``NoResultError``)."""

    task_id: str
    result: Any
    ttl: float | None = None


@attrs.define
class CopyResult:
    """Store ``source``'s result under ``target`` too (``otherwise`` after a success)."""

    source: str
    target: str
    ttl: float | None = None


@attrs.define
class WaitResult:
    """The reply is the result, as soon as it is stored. ``waiter`` names this wait for
    ``StopWaiting``."""

    task_id: str
    waiter: str


@attrs.define
class StopWaiting:
    """The waiter gave up (a timeout, a cancellation): forget it."""

    task_id: str
    waiter: str


@attrs.define
class GetResult:
    """The reply is the stored result, or the backend's error."""

    task_id: str
    with_logs: bool = False


StoreRequest = StoreResult | CopyResult | WaitResult | StopWaiting | GetResult
