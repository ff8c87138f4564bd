"""The brokers users hold: taskiq's API, and the calls kickers and handles make.

:class:`AsyncBroker` registers tasks, runs middlewares and events, and turns a kick into a
:class:`~actors.protocol.BrokerMessage`; a subclass says which actors serve it
(:class:`~actors.inmemory.InMemoryBroker` runs them in this process).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, ParamSpec, Self, TypeVar, overload

from .backends.results import AsyncResultBackend, DummyResultBackend
from .broker import unique_key
from .events import EventHandler, TaskiqEvents, TaskiqState
from .exceptions import (
    SendTaskError,
    SerializationError,
    SharedBrokerSendTaskError,
    UnknownTaskError,
)
from .formatter import TaskiqFormatter
from .inputs import check_labels
from .lifecycle import TaskInfo, TaskStatus
from .logs import TASK_EVENTS, task_event
from .middlewares import TaskiqMiddleware, maybe_await
from .protocol import BrokerMessage
from .result import TaskiqMessage, TaskiqResult, TaskProgress
from .serializers import JSONSerializer, TaskiqSerializer
from .service import Service
from .tasks import AsyncTaskiqDecoratedTask, TaskDecorator

__all__ = [
    "AsyncBroker",
    "AsyncSharedBroker",
    "async_shared_broker",
]

P = ParamSpec("P")
R = TypeVar("R")


def _random_id() -> str:
    """A uuid4-sized random hex id, without building a ``UUID``."""
    return os.urandom(16).hex()


class AsyncBroker(Service):
    """taskiq's broker API: tasks, builders, events, lifecycle, and the calls handles make.

    Subclasses provide the actors (:class:`InMemoryBroker` runs them in this process).
    """

    #: Whether this process keeps the results in ``result_backend`` (and starts it); a
    #: :class:`~actors.websocket_broker.WebSocketBroker`'s are its hub's.
    uses_result_backend = True

    def __init__(
        self,
        result_backend: AsyncResultBackend[Any] | None = None,
        task_id_generator: Callable[[], str] | None = None,
    ) -> None:
        self.result_backend: AsyncResultBackend[Any] = result_backend or DummyResultBackend()
        self.id_generator: Callable[[], str] = task_id_generator or _random_id
        self.middlewares: list[TaskiqMiddleware] = []
        self.serializer: TaskiqSerializer = JSONSerializer()
        self.formatter = TaskiqFormatter(self.serializer)
        self._custom_formatter = False
        self.state = TaskiqState()
        self.event_handlers: dict[TaskiqEvents, list[EventHandler]] = collections.defaultdict(list)
        self.dependency_context: dict[Any, Any] = {}
        self.tasks: dict[str, AsyncTaskiqDecoratedTask[Any, Any]] = {}
        #: Called after each task registration (a worker node tells its hub).
        self.task_listeners: list[Callable[[], None]] = []
        self.cast_types = True
        self.propagate_exceptions = True
        self.is_worker_process = True

    # Builders (taskiq's) ---------------------------------------------------------------

    def with_result_backend(self, result_backend: AsyncResultBackend[Any]) -> Self:
        self.result_backend = result_backend
        return self

    def with_middlewares(self, *middlewares: TaskiqMiddleware) -> Self:
        self.add_middlewares(*middlewares)
        return self

    def add_middlewares(self, *middlewares: TaskiqMiddleware) -> None:
        for middleware in middlewares:
            middleware.set_broker(self)
            self.middlewares.append(middleware)

    def with_serializer(self, serializer: TaskiqSerializer) -> Self:
        self.serializer = serializer
        if not self._custom_formatter:
            self.formatter = TaskiqFormatter(serializer)
        return self

    def with_formatter(self, formatter: TaskiqFormatter) -> Self:
        self.formatter = formatter
        self._custom_formatter = True
        return self

    def with_id_generator(self, task_id_generator: Callable[[], str]) -> Self:
        self.id_generator = task_id_generator
        return self

    def with_event_handlers(self, event: TaskiqEvents, *handlers: EventHandler) -> Self:
        self.event_handlers[event].extend(handlers)
        return self

    def add_event_handler(self, event: TaskiqEvents, handler: EventHandler) -> None:
        self.event_handlers[event].append(handler)

    def on_event(self, *events: TaskiqEvents) -> Callable[[EventHandler], EventHandler]:
        def register(handler: EventHandler) -> EventHandler:
            for event in events:
                self.add_event_handler(event, handler)
            return handler

        return register

    def add_dependency_context(self, new_ctx: dict[Any, Any]) -> None:
        self.dependency_context.update(new_ctx)

    # Tasks -----------------------------------------------------------------------------

    @overload
    def task(
        self, task_name: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncTaskiqDecoratedTask[P, R]: ...

    @overload
    def task(self, task_name: Callable[P, R]) -> AsyncTaskiqDecoratedTask[P, R]: ...

    @overload
    def task(self, task_name: str | None = None, **labels: Any) -> TaskDecorator: ...

    def task(self, task_name: str | Callable[..., Any] | None = None, **labels: Any) -> Any:
        """``@broker.task``, ``@broker.task("name", **labels)`` or ``@broker.task(**labels)``."""
        if callable(task_name):
            return self.register_task(task_name)

        def decorate(func: Callable[..., Any]) -> AsyncTaskiqDecoratedTask[Any, Any]:
            return self.register_task(func, task_name, **labels)

        return decorate

    @overload
    def register_task(
        self,
        func: Callable[P, Coroutine[Any, Any, R]],
        task_name: str | None = None,
        **labels: Any,
    ) -> AsyncTaskiqDecoratedTask[P, R]: ...

    @overload
    def register_task(
        self, func: Callable[P, R], task_name: str | None = None, **labels: Any
    ) -> AsyncTaskiqDecoratedTask[P, R]: ...

    def register_task(
        self, func: Callable[..., Any], task_name: str | None = None, **labels: Any
    ) -> AsyncTaskiqDecoratedTask[Any, Any]:
        check_labels(labels)
        name = task_name or f"{func.__module__}:{func.__qualname__}"
        task: AsyncTaskiqDecoratedTask[Any, Any] = AsyncTaskiqDecoratedTask(
            self, name, func, labels
        )
        self.tasks[name] = task
        for listener in self.task_listeners:
            listener()
        return task

    def find_task(self, task_name: str) -> AsyncTaskiqDecoratedTask[Any, Any] | None:
        """A task of this broker, or one declared on ``async_shared_broker``."""
        return self.tasks.get(task_name) or async_shared_broker.tasks.get(task_name)

    def sending_broker(self) -> AsyncBroker:
        """The broker that sends this broker's kicks: itself, except for the shared one."""
        return self

    def get_all_tasks(self) -> dict[str, AsyncTaskiqDecoratedTask[Any, Any]]:
        return dict(self.tasks)

    def task_names(self) -> list[str]:
        """The names :meth:`find_task` finds: this broker's tasks and the shared ones."""
        return [*self.tasks, *async_shared_broker.tasks]

    # Lifecycle (startup/shutdown and ``async with`` come from Service) ------------------

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """The backend, the middlewares, the actors, then the startup events; shutdown
        fires the shutdown events, then stops the actors (running tasks are cancelled)
        and closes the backend."""
        if self.uses_result_backend:
            await self.result_backend.startup()
            stack.push_async_callback(self.result_backend.shutdown)
        for middleware in self.middlewares:
            await maybe_await(middleware.startup())
            stack.push_async_callback(_call_hook, middleware.shutdown)
        await self._start_actors(stack)
        await self.fire_events(self._startup_events())
        stack.push_async_callback(self.fire_events, self._shutdown_events())

    def _startup_events(self) -> list[TaskiqEvents]:
        return [TaskiqEvents.CLIENT_STARTUP]

    def _shutdown_events(self) -> list[TaskiqEvents]:
        return [TaskiqEvents.CLIENT_SHUTDOWN]

    async def fire_events(self, events: Iterable[TaskiqEvents]) -> None:
        """Run the handlers of each event in turn, with this broker's state. Starting and
        stopping fire the broker's own; a worker node fires the ``WORKER_*`` ones on a
        broker that runs as a client in the same process."""
        for event in events:
            for handler in self.event_handlers[event]:
                await maybe_await(handler(self.state))

    async def _start_actors(self, stack: contextlib.AsyncExitStack) -> None:
        raise NotImplementedError

    # What kickers and handles call -----------------------------------------------------

    async def send(self, message: TaskiqMessage) -> str:
        """Middlewares, formatter, then the broker actor; returns the live task id."""
        for middleware in self.middlewares:
            message = await maybe_await(middleware.pre_send(message))
        if self.find_task(message.task_name) is None:
            raise UnknownTaskError(task_name=message.task_name)
        if not isinstance(message.task_id, str) or not message.task_id:
            raise SendTaskError(f"the task id must be a non-empty string, not {message.task_id!r}")
        labels = message.labels
        check_labels(labels)
        try:
            if labels.get("unique"):
                arguments = self.serializer.dumpb([message.args, message.kwargs])
                labels["unique_key"] = unique_key(message.task_name, arguments)
            broker_message = self.formatter.dumps(message)
        except SerializationError as exc:
            raise SendTaskError(str(exc)) from exc  # taskiq's error for a failed kick
        task_id = await self.kick(broker_message)
        if TASK_EVENTS.isEnabledFor(logging.DEBUG):
            task_event("kicked", task_id, message.task_name, logging.DEBUG)
        for middleware in self.middlewares:
            await maybe_await(middleware.post_send(message))
        return task_id

    async def kick(self, message: BrokerMessage) -> str:
        raise NotImplementedError

    async def wait_result(self, task_id: str) -> TaskiqResult[Any]:
        raise NotImplementedError

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        return await self.result_backend.get_result(task_id, with_logs=with_logs)

    async def is_ready(self, task_id: str) -> bool:
        return await self.result_backend.is_result_ready(task_id)

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        await self.result_backend.set_progress(task_id, progress)

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        return await self.result_backend.get_progress(task_id)

    async def task_status(self, task_id: str) -> TaskStatus:
        raise NotImplementedError

    async def task_info(self, task_id: str) -> TaskInfo | None:
        raise NotImplementedError

    async def abort(self, task_id: str, timeout: float = 5) -> bool:
        raise NotImplementedError

    async def wait_all(self) -> None:
        raise NotImplementedError


async def _call_hook(hook: Callable[[], Any]) -> None:
    await maybe_await(hook())


class AsyncSharedBroker(AsyncBroker):
    """Tasks declared in library code with ``@async_shared_broker.task``.

    They run on any broker (workers find them by name) and are kicked through the broker
    given to :meth:`default_broker`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._default: AsyncBroker | None = None

    def default_broker(self, new_broker: AsyncBroker) -> None:
        self._default = new_broker

    def sending_broker(self) -> AsyncBroker:
        if self._default is None:
            raise SharedBrokerSendTaskError(
                "a shared task was kicked before async_shared_broker.default_broker(...) was set"
            )
        return self._default


async_shared_broker = AsyncSharedBroker()
