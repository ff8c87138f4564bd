"""A task's life as one explicit state machine, which the broker, ``status()`` and the
docs all follow.

Theory of operation: a kicked task starts WAITING (dependencies not finished),
SCHEDULED (an ETA in the future) or QUEUED. The broker moves QUEUED tasks to RUNNING
when a worker has credit. A run ends DONE (a result was stored, success or error), or
goes back to QUEUED / SCHEDULED (requeue, retry with delay, or redelivery after its
worker was lost). ABORTED and EXPIRED are ends the broker reaches without a normal run.
Every end stores an error or success result, so no waiter is left hanging.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import pendulum

__all__ = ["TRANSITIONS", "Phase", "TaskInfo", "TaskStatus", "check_transition"]


class TaskStatus(enum.StrEnum):
    """What ``handle.status()`` reports (streaq's names)."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    DONE = "done"
    NOT_FOUND = "missing"


class Phase(enum.Enum):
    """The broker's finer view of a task; :attr:`status` maps it to the public one."""

    WAITING = "waiting"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ABORTED = "aborted"
    EXPIRED = "expired"

    # Members are singletons compared by identity: hash them the same way (Enum's own
    # hash is Python code, and the broker checks a transition at every move).
    __hash__ = object.__hash__

    @property
    def status(self) -> TaskStatus:
        return _STATUS[self]


_STATUS = {
    Phase.WAITING: TaskStatus.SCHEDULED,
    Phase.SCHEDULED: TaskStatus.SCHEDULED,
    Phase.QUEUED: TaskStatus.QUEUED,
    Phase.RUNNING: TaskStatus.RUNNING,
    Phase.DONE: TaskStatus.DONE,
    Phase.ABORTED: TaskStatus.DONE,
    Phase.EXPIRED: TaskStatus.DONE,
}

#: Every allowed move; the broker asserts each one it makes.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.WAITING: frozenset(
        {Phase.SCHEDULED, Phase.QUEUED, Phase.DONE, Phase.ABORTED, Phase.EXPIRED}
    ),
    Phase.SCHEDULED: frozenset({Phase.QUEUED, Phase.ABORTED, Phase.EXPIRED}),
    Phase.QUEUED: frozenset({Phase.RUNNING, Phase.ABORTED, Phase.EXPIRED}),
    Phase.RUNNING: frozenset({Phase.DONE, Phase.ABORTED, Phase.QUEUED, Phase.SCHEDULED}),
    Phase.DONE: frozenset(),
    Phase.ABORTED: frozenset(),
    Phase.EXPIRED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug: the broker tried a move the table does not allow."""


def check_transition(current: Phase, new: Phase) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"a task cannot go from {current.value} to {new.value}")


@attrs.frozen
class TaskInfo:
    """What ``handle.info()`` tells about a live task (streaq's ``TaskInfo``)."""

    task_id: str
    task_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tries: int
    status: TaskStatus
    enqueue_time: pendulum.DateTime
    scheduled: pendulum.DateTime | None = None
    dependencies: frozenset[str] = frozenset()
    dependents: frozenset[str] = frozenset()
    labels: dict[str, Any] = attrs.field(factory=dict)
