"""What a running task can reach: its message, the broker, the state, and controls."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import attrs

from .exceptions import NoResultError, TaskRejectedError
from .result import TaskiqMessage, TaskProgress
from .roles import Broker

if TYPE_CHECKING:
    from .events import TaskiqState

__all__ = ["Context", "Rerun", "current_run", "request_rerun"]

REQUEUE_LABEL = "X-Taskiq-requeue"


@attrs.define
class Rerun:
    """Run the same task id again, after ``delay`` seconds, with these labels."""

    delay: float
    labels: dict[str, Any]


@attrs.define
class RunControl:
    """Per-run flags a task or a middleware sets and the worker reads afterwards."""

    rerun: Rerun | None = None


current_run: contextvars.ContextVar[RunControl] = contextvars.ContextVar("actors_current_run")


def request_rerun(delay: float, labels: dict[str, Any]) -> None:
    """Ask the worker to run the current task again instead of storing this result.

    Middlewares call this from ``on_error`` (retries); ``Context.requeue`` calls it too.
    """
    current_run.get().rerun = Rerun(delay, labels)


class Context:
    """Injected with ``context: Context = TaskiqDepends()``."""

    message: TaskiqMessage
    broker: Broker

    def __init__(self, message: TaskiqMessage, broker: Broker) -> None:
        self.message = message
        self.broker = broker

    @property
    def state(self) -> TaskiqState:
        return self.broker.state

    async def requeue(self) -> None:
        """Send this message (same id) back to the queue; no result is stored for this run.

        Always raises ``NoResultError`` to end the run.
        """
        labels = dict(self.message.labels)
        labels[REQUEUE_LABEL] = str(int(labels.get(REQUEUE_LABEL, 0)) + 1)
        request_rerun(0.0, labels)
        raise NoResultError("the task was requeued")

    def reject(self) -> None:
        """End the task for good: waiters get an error result with ``TaskRejectedError``."""
        raise TaskRejectedError(f"task {self.message.task_id} was rejected")

    async def set_progress(self, progress: TaskProgress[Any]) -> None:
        """Report progress; ``handle.get_progress()`` reads it."""
        await self.broker.set_progress(self.message.task_id, progress)
