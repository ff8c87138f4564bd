"""The task API users call: decorated tasks, kickers, handles, and ``gather``.

A thin facade: every call becomes a message to the broker or the result store actor.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Awaitable, Callable, Coroutine, Generator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

import cattrs
import pendulum
import trio
from taskiq_dependencies import DependencyGraph, Depends
from taskiq_dependencies.dependency import Dependency

from .exceptions import TaskiqResultTimeoutError
from .inputs import wait_limit
from .lifecycle import TaskInfo, TaskStatus
from .result import TaskiqMessage, TaskiqResult, TaskProgress, as_seconds

if TYPE_CHECKING:
    from .roles import Broker
    from .schedules import CreatedSchedule, CronSpec, ScheduleSource

__all__ = [
    "AsyncKicker",
    "AsyncTaskiqDecoratedTask",
    "AsyncTaskiqTask",
    "TaskDecorator",
    "TaskiqDepends",
    "gather",
]

P = ParamSpec("P")
R = TypeVar("R")

#: ``param: Context = TaskiqDepends()`` injects the context (taskiq-dependencies' Depends).
TaskiqDepends = Depends

_casts = cattrs.Converter()


class TaskDecorator(Protocol):
    """What ``@broker.task(...)`` with arguments returns; unwraps coroutine functions."""

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncTaskiqDecoratedTask[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R]) -> AsyncTaskiqDecoratedTask[P, R]: ...


class AsyncTaskiqDecoratedTask(Generic[P, R]):
    """What ``@broker.task`` returns: call it to run locally, ``kiq`` to send it."""

    def __init__(
        self,
        broker: Broker,
        task_name: str,
        original_func: Callable[P, Awaitable[R]] | Callable[P, R],
        labels: dict[str, Any],
    ) -> None:
        self.broker = broker
        self.task_name = task_name
        self.original_func = original_func
        self.labels = labels
        self.is_async = inspect.iscoroutinefunction(original_func)
        self.dependency_graph = DependencyGraph(original_func)
        self._casts = _cast_plan(original_func)
        functools.update_wrapper(self, original_func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.original_func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.task_name}>"

    def kicker(self) -> AsyncKicker[P, R]:
        return AsyncKicker(self.task_name, self.broker, dict(self.labels))

    async def kiq(self, *args: P.args, **kwargs: P.kwargs) -> AsyncTaskiqTask[R]:
        """Send the task; the handle comes back once the broker has accepted it."""
        return await self.kicker().kiq(*args, **kwargs)

    async def schedule_by_cron(
        self, source: ScheduleSource, cron: str | CronSpec, *args: P.args, **kwargs: P.kwargs
    ) -> CreatedSchedule:
        return await self.kicker().schedule_by_cron(source, cron, *args, **kwargs)

    async def schedule_by_time(
        self, source: ScheduleSource, time: datetime, *args: P.args, **kwargs: P.kwargs
    ) -> CreatedSchedule:
        return await self.kicker().schedule_by_time(source, time, *args, **kwargs)

    async def schedule_by_interval(
        self,
        source: ScheduleSource,
        interval: float | pendulum.Duration,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> CreatedSchedule:
        return await self.kicker().schedule_by_interval(source, interval, *args, **kwargs)

    def cast_arguments(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Structure arguments into the function's annotations (``cast_types``)."""
        if not self._casts.types:  # not ``__bool__``: a Python call for every task
            return args, kwargs
        names = list(self._casts.positional)
        cast_args = [
            _cast(value, self._casts.types.get(names[i])) if i < len(names) else value
            for i, value in enumerate(args)
        ]
        cast_kwargs = {
            name: _cast(value, self._casts.types.get(name)) for name, value in kwargs.items()
        }
        return cast_args, cast_kwargs


class _CastPlan:
    def __init__(self, positional: list[str], types: dict[str, Any]) -> None:
        self.positional = positional
        self.types = types

    def __bool__(self) -> bool:
        return bool(self.types)


def _cast_plan(func: Callable[..., Any]) -> _CastPlan:
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    signature = inspect.signature(func)
    positional = [
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    types = {
        name: hint
        for name, hint in hints.items()
        if name != "return"
        and name in signature.parameters
        and not isinstance(signature.parameters[name].default, Dependency)
        and hint is not Any
    }
    return _CastPlan(positional, types)


def _cast(value: Any, annotation: Any) -> Any:
    if annotation is None:
        return value
    try:
        return _casts.structure(value, annotation)
    except Exception:
        return value  # as taskiq: a value that does not fit is passed unchanged


class AsyncKicker(Generic[P, R]):
    """Sets labels and queue options before sending a task."""

    def __init__(
        self,
        task_name: str,
        broker: Broker,
        labels: dict[str, Any],
        return_type: type[Any] | None = None,
    ) -> None:
        self.task_name = task_name
        self.broker = broker
        self.labels = labels
        self.return_type = return_type
        self.task_id: str | None = None

    def with_labels(self, **labels: Any) -> AsyncKicker[P, R]:
        self.labels.update(labels)
        return self

    def with_task_id(self, task_id: str) -> AsyncKicker[P, R]:
        self.task_id = task_id
        return self

    def with_broker(self, broker: Broker) -> AsyncKicker[P, R]:
        self.broker = broker
        return self

    def with_delay(self, delay: float | pendulum.Duration) -> AsyncKicker[P, R]:
        """Queue the task only after ``delay`` (seconds or a Duration)."""
        self.labels["delay"] = as_seconds(delay)
        return self

    def with_schedule(self, when: datetime) -> AsyncKicker[P, R]:
        """Queue the task at ``when`` (an aware datetime)."""
        self.labels["eta"] = pendulum.instance(when).isoformat()
        return self

    def with_priority(self, priority: int) -> AsyncKicker[P, R]:
        """Higher first; FIFO within a priority (``kiq`` checks the value)."""
        self.labels["priority"] = priority
        return self

    def after(self, *dependencies: AsyncTaskiqTask[Any] | str) -> AsyncKicker[P, R]:
        """Run only once these tasks succeeded; if one fails, so does this one."""
        ids = [d if isinstance(d, str) else d.task_id for d in dependencies]
        self.labels["depends_on"] = [*self.labels.get("depends_on", ()), *ids]
        return self

    async def kiq(self, *args: P.args, **kwargs: P.kwargs) -> AsyncTaskiqTask[R]:
        broker = self.broker.sending_broker()
        message = TaskiqMessage(
            task_id=broker.id_generator() if self.task_id is None else self.task_id,
            task_name=self.task_name,
            labels=dict(self.labels),
            args=args,  # made a list by TaskiqMessage
            kwargs=dict(kwargs),
        )
        task_id = await broker.send(message)
        return AsyncTaskiqTask(task_id, broker, args=args, kwargs=kwargs)

    async def schedule_by_cron(
        self, source: ScheduleSource, cron: str | CronSpec, *args: P.args, **kwargs: P.kwargs
    ) -> CreatedSchedule:
        from .schedules import schedule_by_cron

        return await schedule_by_cron(self, source, cron, *args, **kwargs)

    async def schedule_by_time(
        self, source: ScheduleSource, time: datetime, *args: P.args, **kwargs: P.kwargs
    ) -> CreatedSchedule:
        from .schedules import schedule_by_time

        return await schedule_by_time(self, source, time, *args, **kwargs)

    async def schedule_by_interval(
        self,
        source: ScheduleSource,
        interval: float | pendulum.Duration,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> CreatedSchedule:
        from .schedules import schedule_by_interval

        return await schedule_by_interval(self, source, interval, *args, **kwargs)


class AsyncTaskiqTask(Generic[R]):
    """The handle of a kicked task. Rebuild one from an id alone with
    ``AsyncTaskiqTask(task_id, broker)``."""

    def __init__(
        self,
        task_id: str,
        broker: Broker,
        *,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.task_id = task_id
        self.broker = broker
        self._args = args
        self._kwargs = kwargs

    def __repr__(self) -> str:
        return f"<AsyncTaskiqTask {self.task_id}>"

    async def is_ready(self) -> bool:
        return await self.broker.is_ready(self.task_id)

    async def get_result(self, with_logs: bool = False) -> TaskiqResult[R]:
        """The stored result; ``ResultGetError`` if there is none (yet)."""
        return await self.broker.get_result(self.task_id, with_logs=with_logs)

    async def wait_result(
        self, check_interval: float = 0.2, timeout: float | None = -1.0, with_logs: bool = False
    ) -> TaskiqResult[R]:
        """Wait for the result, pushed as soon as it is stored.

        ``check_interval`` is accepted for taskiq compatibility; nothing polls.
        Raises ``TaskiqResultTimeoutError`` past a positive ``timeout`` (see ``wait_limit``).
        """
        limit = wait_limit(timeout)
        if limit == math.inf:  # no cancel scope: this is the hot path
            return await self.broker.wait_result(self.task_id)
        with trio.move_on_after(limit):
            return await self.broker.wait_result(self.task_id)
        raise TaskiqResultTimeoutError(
            f"no result for task {self.task_id} within {timeout}s", timeout=timeout
        )

    async def get_progress(self) -> TaskProgress[Any] | None:
        return await self.broker.get_progress(self.task_id)

    def __await__(self) -> Generator[Any, None, R]:
        """``await handle``: the return value, or the task's error raised."""

        async def value() -> R:
            result = await self.wait_result()
            return result.raise_for_error().return_value

        return value().__await__()

    async def status(self) -> TaskStatus:
        return await self.broker.task_status(self.task_id)

    async def info(self) -> TaskInfo | None:
        return await self.broker.task_info(self.task_id)

    async def abort(self, timeout: float | None = 5) -> bool:
        """Remove a waiting task, or cancel a running one; False if it already ended."""
        return await self.broker.abort(self.task_id, timeout=wait_limit(timeout))

    async def then(
        self, task: AsyncTaskiqDecoratedTask[..., Any], **kwargs: Any
    ) -> AsyncTaskiqTask[Any]:
        """Run ``task`` with this task's return value as its first positional argument(s)."""
        kicker = task.kicker().after(self).with_labels(then_of=self.task_id)
        return await kicker.kiq(**kwargs)

    async def otherwise(self, task: AsyncTaskiqDecoratedTask[..., Any]) -> AsyncTaskiqTask[Any]:
        """Run ``task`` with this task's arguments if this task fails; otherwise the new
        handle resolves to this task's result."""
        args, kwargs = self._args, self._kwargs
        if args is None or kwargs is None:
            info = await self.info()
            if info is None:
                raise LookupError(f"task {self.task_id} ended; its arguments are unknown")
            args, kwargs = info.args, info.kwargs
        kicker = task.kicker().after(self).with_labels(otherwise_of=self.task_id)
        return await kicker.kiq(*args, **kwargs)


async def gather(
    *tasks: AsyncTaskiqTask[Any] | Awaitable[AsyncTaskiqTask[Any]],
    timeout: float | None = -1,
    with_logs: bool = False,
    periodicity: float = 0.1,
) -> tuple[TaskiqResult[Any], ...]:
    """Wait for several handles at once; results in input order.

    Accepts handles or awaitables producing handles (``gather(task.kiq(1), ...)``).
    ``periodicity`` is accepted for taskiq compatibility; results are pushed.
    """
    limit = wait_limit(timeout)
    results: list[TaskiqResult[Any] | None] = [None] * len(tasks)

    async def one(index: int, item: AsyncTaskiqTask[Any] | Awaitable[AsyncTaskiqTask[Any]]) -> None:
        handle = item if isinstance(item, AsyncTaskiqTask) else await item
        results[index] = await handle.wait_result(with_logs=with_logs)

    with trio.move_on_after(limit):
        async with trio.open_nursery() as nursery:
            for index, item in enumerate(tasks):
                nursery.start_soon(one, index, item)
        return tuple(result for result in results if result is not None)
    raise TaskiqResultTimeoutError(f"gather: not every result came within {timeout}s")
