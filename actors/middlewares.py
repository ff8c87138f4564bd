"""Middlewares: taskiq's hooks around sending and running tasks, and the retry ones."""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .context import request_rerun
from .exceptions import NoResultError, SendTaskError, TaskAbortedError, TaskRejectedError
from .inputs import int_label, seconds_label
from .result import TaskiqMessage, TaskiqResult

if TYPE_CHECKING:
    from .roles import Broker

__all__ = ["SimpleRetryMiddleware", "SmartRetryMiddleware", "TaskiqMiddleware", "maybe_await"]

RETRIES_LABEL = "_retries"


async def maybe_await(value: Any) -> Any:
    """Hooks and handlers may be sync or async, as in taskiq."""
    if inspect.isawaitable(value):
        return await value
    return value


class TaskiqMiddleware:
    """Override any hook; each may be sync or async. ``self.broker`` is set on add."""

    broker: Broker

    def set_broker(self, broker: Broker) -> None:
        self.broker = broker

    def startup(self) -> Awaitable[None] | None:
        return None

    def shutdown(self) -> Awaitable[None] | None:
        return None

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage | Awaitable[TaskiqMessage]:
        return message

    def post_send(self, message: TaskiqMessage) -> Awaitable[None] | None:
        return None

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage | Awaitable[TaskiqMessage]:
        return message

    def post_execute(
        self, message: TaskiqMessage, result: TaskiqResult[Any]
    ) -> Awaitable[None] | None:
        return None

    def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> Awaitable[None] | None:
        return None

    def post_save(
        self, message: TaskiqMessage, result: TaskiqResult[Any]
    ) -> Awaitable[None] | None:
        return None


#: Errors that end a task on purpose; retrying them would undo the decision.
FINAL_ERRORS = (NoResultError, TaskRejectedError, TaskAbortedError)


class SimpleRetryMiddleware(TaskiqMiddleware):
    """Run a failed task again, same task id, up to ``max_retries`` times.

    Applies to tasks labelled ``retry_on_error=True`` (or to all with
    ``default_retry_label=True``); the ``max_retries`` label overrides the default count.
    A retried run stores no result: waiters get the last run's.
    """

    def __init__(
        self,
        default_retry_count: int = 3,
        default_retry_label: bool = False,
        no_result_on_retry: bool = True,
    ) -> None:
        self.default_retry_count = default_retry_count
        self.default_retry_label = default_retry_label
        self.no_result_on_retry = no_result_on_retry

    def delay(self, labels: dict[str, Any], retries: int) -> float:
        """Seconds to wait before retry number ``retries`` (1-based)."""
        return 0.0

    def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        labels = message.labels
        if isinstance(exception, FINAL_ERRORS):
            return
        if not _truthy(labels.get("retry_on_error", self.default_retry_label)):
            return
        try:
            retries = (int_label(labels, RETRIES_LABEL, minimum=0) or 0) + 1
            limit = int_label(labels, "max_retries", minimum=0)
            delay = self.delay(labels, retries)
        except SendTaskError:
            return  # a label that slipped past kiq's checks: the task keeps its error
        # As taskiq counts: ``max_retries`` bounds the runs, the first one included.
        if retries >= (self.default_retry_count if limit is None else limit):
            return
        request_rerun(delay, {**labels, RETRIES_LABEL: retries})


class SmartRetryMiddleware(SimpleRetryMiddleware):
    """Retries with a delay the broker really waits: ``default_delay`` (or the task's
    ``delay`` label), optionally times the retry number (capped at ``max_delay_exponent``
    seconds), plus up to a second of jitter."""

    def __init__(
        self,
        default_retry_count: int = 3,
        default_retry_label: bool = False,
        no_result_on_retry: bool = True,
        default_delay: float = 5,
        use_jitter: bool = False,
        use_delay_exponent: bool = False,
        max_delay_exponent: float = 60,
    ) -> None:
        super().__init__(default_retry_count, default_retry_label, no_result_on_retry)
        self.default_delay = default_delay
        self.use_jitter = use_jitter
        self.use_delay_exponent = use_delay_exponent
        self.max_delay_exponent = max_delay_exponent

    def delay(self, labels: dict[str, Any], retries: int) -> float:
        # taskiq's formula: a ``delay`` label overrides the default, and the "exponent"
        # grows the delay with the retry number, capped.
        delay = seconds_label(labels, "delay")
        if delay is None:
            delay = self.default_delay
        if self.use_delay_exponent:
            delay = min(delay * retries, self.max_delay_exponent)
        if self.use_jitter:
            delay += random.uniform(0, 1)
        return delay


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)
