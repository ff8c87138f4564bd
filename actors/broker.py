"""The broker: the actor that owns the queue, and the taskiq-style brokers users hold.

:class:`BrokerActor` accepts kicked tasks, orders them (priority, ETA, dependencies,
uniqueness), hands them to workers that have credit, and ends tasks that never run
(aborted, expired, failed dependency) with an error result so no waiter hangs. Its
state lives in a :class:`~actors.queue.TaskQueue` owned by the broker object, so a
restarted actor continues with every task it had.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import math
import os
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Self, TypeVar, overload

import attrs
import pendulum
import trio

from .backends.results import AsyncResultBackend, DummyResultBackend, InmemoryResultBackend
from .events import EventHandler, TaskiqEvents, TaskiqState
from .exceptions import (
    BrokerError,
    DependencyFailedError,
    ResultGetError,
    SendTaskError,
    SerializationError,
    SharedBrokerSendTaskError,
    TaskAbortedError,
    TaskExpiredError,
    UnknownTaskError,
)
from .formatter import TaskiqFormatter
from .inputs import check_labels, eta_label, ids_label, int_label, seconds_label, ttl_label
from .lifecycle import Phase, TaskInfo, TaskStatus
from .middlewares import TaskiqMiddleware, maybe_await
from .protocol import (
    Abort,
    BrokerMessage,
    BrokerRequest,
    CancelRun,
    CopyResult,
    Drain,
    Enqueue,
    Finished,
    GetResult,
    Inspect,
    Run,
    RunEnded,
    Runs,
    Status,
    StopWaiting,
    StoreRequest,
    StoreResult,
    Tick,
    WaitResult,
    WorkerReady,
    WorkerRequest,
)
from .queue import TaskQueue, TaskRecord
from .result import TaskiqMessage, TaskiqResult, utc_now
from .results import ResultStore
from .runtime import (
    Actor,
    ActorError,
    ActorRef,
    AskTimeoutError,
    ChildSpec,
    Node,
    Reply,
    Supervisor,
)
from .serializers import JSONSerializer, TaskiqSerializer
from .service import Service
from .tasks import AsyncTaskiqDecoratedTask, TaskDecorator
from .worker import SyncThreads, WorkerActor

__all__ = [
    "AsyncBroker",
    "AsyncSharedBroker",
    "BrokerActor",
    "BrokerState",
    "InMemoryBroker",
    "async_shared_broker",
    "unique_key",
]

P = ParamSpec("P")
R = TypeVar("R")


WallClock = Callable[[], pendulum.DateTime]


def _random_id() -> str:
    """A uuid4-sized random hex id, without building a ``UUID``."""
    return os.urandom(16).hex()


#: Names a wait at the result store, so a wait given up on can be forgotten: unique
#: across processes by the random prefix, and cheaper per wait than a random id.
_WAITER_PREFIX = _random_id()[:12]
_waiter_numbers = itertools.count()


def unique_key(task_name: str, arguments: bytes) -> str:
    """Equal task name and serialized arguments give equal keys (``unique=True``)."""
    return hashlib.blake2b(task_name.encode() + b"\0" + arguments, digest_size=16).hexdigest()


@attrs.define(eq=False)
class _WorkerSlot:
    ref: ActorRef[WorkerRequest]
    capacity: int
    incarnation: int
    running: set[str] = attrs.field(factory=set)


@attrs.define(eq=False)
class BrokerState:
    """What survives a restart of the broker actor."""

    queue: TaskQueue = attrs.field(factory=TaskQueue)
    workers: dict[str, _WorkerSlot] = attrs.field(factory=dict)
    drains: list[Reply] = attrs.field(factory=list)
    aborts: dict[str, list[Reply]] = attrs.field(factory=lambda: collections.defaultdict(list))


class BrokerActor(Actor[BrokerRequest]):
    """Queue and dispatch. Every message is handled whole before the next one."""

    mailbox_size = 4096

    def __init__(
        self,
        state: BrokerState,
        store: ActorRef[StoreRequest],
        formatter: TaskiqFormatter,
        wall_clock: WallClock,
    ) -> None:
        self.state = state
        self.queue = state.queue
        self.store = store
        self.formatter = formatter
        self.wall_clock = wall_clock
        self._rearm = trio.Event()
        self._armed_for: float | None = None

    async def started(self) -> None:
        self.nursery.start_soon(self._timer)
        # Tasks handed to workers of a previous incarnation stay RUNNING; workers
        # report their end to whichever broker instance is alive then.

    async def receive(self, message: BrokerRequest) -> Any:
        answer: Any = None
        if isinstance(message, Enqueue):
            answer = await self._enqueue(message.message)
            if self._free_worker() is not None:
                await self._dispatch()  # a task kicked while a worker has room starts first
        elif isinstance(message, Finished):
            await self._finished(message)
        elif isinstance(message, Tick):
            await self._tick()
        elif isinstance(message, WorkerReady):
            await self._worker_ready(message)
        elif isinstance(message, Abort):
            answer = await self._abort(message.task_id)
        elif isinstance(message, Inspect):
            answer = self._inspect(message.task_id)
        elif isinstance(message, Status):
            record = self.queue.live(message.task_id)
            answer = None if record is None else record.phase.status
        else:
            self._drain()
        return answer

    async def drained(self) -> None:
        """After a batch of messages: hand out the room freed in it (to the highest
        priorities waiting), re-arm the timer, and tell ``wait_all`` callers once nothing
        is left."""
        await self._dispatch()
        if self.queue.next_timer() != self._armed_for:
            self._rearm.set()
        if not self.queue.records and self.state.drains:
            for reply in self.state.drains:
                reply.resolve(None)
            self.state.drains.clear()

    # Accepting -------------------------------------------------------------------------

    async def _enqueue(self, message: BrokerMessage) -> str:
        queue = self.queue
        if queue.live(message.task_id) is not None:
            return message.task_id  # the same id while live is idempotent
        labels = message.labels
        key = labels.get("unique_key") if labels.get("unique") else None
        if isinstance(key, str):
            live = queue.live_unique(key)
            if live is not None:
                return live.task_id
        else:
            key = None
        now = trio.current_time()
        record = TaskRecord(message, Phase.WAITING, enqueue_time=self.wall_clock())
        try:
            record.priority = int_label(labels, "priority") or 0
            record.eta = self._eta(labels, now)
            expire = seconds_label(labels, "expire")
            dependencies = ids_label(labels, "depends_on")
        except SendTaskError as error:  # a label that did not come through kiq's checks
            queue.add(record)
            await self._end(record, Phase.DONE, error)
            return message.task_id
        record.unique_key = key
        if expire is not None:
            record.expire_at = now + expire
        ended = await self._link_dependencies(record, dependencies) if dependencies else None
        queue.add(record)
        if ended is None:
            queue.place(record, now)
        elif ended[1]:  # a fallback whose parent already succeeded
            await self.store.tell(CopyResult(ended[0], record.task_id, self._ttl(record)))
            queue.finish(record, Phase.DONE, succeeded=True)
        else:
            await self._fail_dependents_of(ended[0], [record])
        return message.task_id

    def _eta(self, labels: dict[str, Any], now: float) -> float | None:
        delay = seconds_label(labels, "delay")
        if delay is not None:
            return now + delay
        when = eta_label(labels)
        if when is not None:
            return now + (when - self.wall_clock()).total_seconds()
        return None

    async def _link_dependencies(
        self, record: TaskRecord, dependencies: list[str]
    ) -> tuple[str, bool] | None:
        """Wire ``record`` to its live dependencies.

        Returns ``(id, succeeded)`` for a dependency that already ended in a way that
        decides ``record`` at once: a failure, or the success of the task it falls back for.
        """
        fallback_of = record.message.labels.get("otherwise_of")
        for dependency in dependencies:
            parent = self.queue.live(dependency)
            if parent is not None:
                record.waiting_on.add(dependency)
                parent.dependents.append(record.task_id)
                continue
            succeeded = self.queue.finished.get(dependency)
            if succeeded is None:
                succeeded = await self._stored_success(dependency)
            if dependency == fallback_of:
                if succeeded:
                    return dependency, True
            elif not succeeded:
                return dependency, False
        return None

    async def _stored_success(self, task_id: str) -> bool:
        result = await self.store.ask(GetResult(task_id))
        return isinstance(result, TaskiqResult) and not result.is_err

    # Dispatching -----------------------------------------------------------------------

    async def _worker_ready(self, message: WorkerReady) -> None:
        previous = self.state.workers.get(message.worker_id)
        self.state.workers[message.worker_id] = _WorkerSlot(
            message.worker, message.capacity, message.incarnation
        )
        if previous is not None:
            # The worker restarted: what it was running is delivered again, unless it
            # was being aborted (its cancel may have been lost with the old worker).
            now = trio.current_time()
            for task_id in previous.running:
                record = self.queue.live(task_id)
                if record is None or record.phase is not Phase.RUNNING:
                    continue
                if task_id in self.state.aborts:
                    await self._run_ended(RunEnded(task_id, "aborted"))
                else:
                    self.queue.place(record, now)

    def _free_worker(self) -> tuple[str, _WorkerSlot] | None:
        """The worker with the most free credit; None while every worker is full."""
        best: tuple[str, _WorkerSlot] | None = None
        most = 0
        for item in self.state.workers.items():
            free = item[1].capacity - len(item[1].running)
            if free > most:
                best, most = item, free
        return best

    async def _dispatch(self) -> None:
        """Hand ready tasks to workers with room, each worker's share in one message."""
        queue = self.queue
        handed: dict[str, list[Run]] = {}
        while queue.has_ready():
            free = self._free_worker()
            if free is None:
                break
            worker_id, slot = free
            record = queue.pop_ready()
            assert record is not None
            if record.expire_at is not None and record.expire_at <= trio.current_time():
                await self._end(record, Phase.EXPIRED, TaskExpiredError(self._late(record)))
                continue
            record.move(Phase.RUNNING)
            record.tries += 1
            record.worker_id = worker_id
            slot.running.add(record.task_id)
            run = Run(record.message, record.tries, record.enqueue_time)
            handed.setdefault(worker_id, []).append(run)
        for worker_id, runs in handed.items():
            slot = self.state.workers[worker_id]
            await slot.ref.tell(Runs(runs, slot.incarnation))

    async def _finished(self, message: Finished) -> None:
        slot = self.state.workers.get(message.worker_id)
        for ended in message.runs:
            if slot is not None:
                slot.running.discard(ended.task_id)
            await self._run_ended(ended)

    async def _run_ended(self, ended: RunEnded) -> None:
        record = self.queue.live(ended.task_id)
        if record is None or record.phase is not Phase.RUNNING:
            return
        aborts = self.state.aborts.pop(record.task_id, None) if self.state.aborts else None
        if ended.outcome == "again" and aborts is None:
            if ended.labels is not None:
                record.message = attrs.evolve(record.message, labels=ended.labels)
            now = trio.current_time()
            record.eta = now + ended.delay if ended.delay > 0 else None
            self.queue.place(record, now)
            return
        if ended.outcome == "done":
            self.queue.finish(record, Phase.DONE, succeeded=not ended.is_err)
            if record.dependents:
                await self._release_dependents(record, succeeded=not ended.is_err)
        else:
            await self._end(
                record, Phase.ABORTED, TaskAbortedError(f"task {record.task_id} was aborted")
            )
        for reply in aborts or ():
            reply.resolve(ended.outcome != "done")

    # Timers ----------------------------------------------------------------------------

    async def _timer(self) -> None:
        """Sleep until the earliest ETA or expiry, then tick; re-armed on changes."""
        while True:
            self._armed_for = when = self.queue.next_timer()
            with trio.move_on_at(math.inf if when is None else when):
                await self._rearm.wait()
            if self._rearm.is_set():
                self._rearm = trio.Event()
                continue
            await self.ref.tell(Tick())
            await self._rearm.wait()
            self._rearm = trio.Event()

    async def _tick(self) -> None:
        now = trio.current_time()
        came, expired = self.queue.due(now)
        for record in came:
            self.queue.place(record, now)
        for record in expired:
            await self._end(record, Phase.EXPIRED, TaskExpiredError(self._late(record)))
        self._rearm.set()

    @staticmethod
    def _late(record: TaskRecord) -> str:
        return f"task {record.task_id} was not started before it expired"

    # Ending tasks that never ran -------------------------------------------------------

    async def _abort(self, task_id: str) -> bool | None:
        record = self.queue.live(task_id)
        if record is None:
            return False
        if record.phase is Phase.RUNNING:
            # Noted even without a reply (a tell): a run that ends asking to run
            # again, or that a restarted worker lost, then ends aborted.
            replies = self.state.aborts[task_id]
            reply = self.defer_reply()
            if reply is not None:
                replies.append(reply)
            slot = self.state.workers.get(record.worker_id or "")
            if slot is not None:
                await slot.ref.tell(CancelRun(task_id))
            return None
        await self._end(record, Phase.ABORTED, TaskAbortedError(f"task {task_id} was aborted"))
        return True

    async def _end(self, record: TaskRecord, phase: Phase, error: BaseException) -> None:
        """End a task with an error result, and fail what depended on it."""
        self.queue.finish(record, phase, succeeded=False)
        await self._store_error(record, error)
        await self._fail_dependents_of(record.task_id, self._dependents(record))

    async def _store_error(self, record: TaskRecord, error: BaseException) -> None:
        result: TaskiqResult[Any] = TaskiqResult(
            is_err=True,
            return_value=None,
            error=error,
            task_id=record.task_id,
            labels=dict(record.message.labels),
            tries=record.tries,
            enqueue_time=record.enqueue_time,
            finish_time=self.wall_clock(),
        )
        await self.store.tell(StoreResult(record.task_id, result, self._ttl(record)))

    @staticmethod
    def _ttl(record: TaskRecord) -> float | None:
        return ttl_label(record.message.labels)

    def _dependents(self, record: TaskRecord) -> list[TaskRecord]:
        found = (self.queue.live(task_id) for task_id in record.dependents)
        return [dependent for dependent in found if dependent is not None]

    async def _release_dependents(self, record: TaskRecord, *, succeeded: bool) -> None:
        if not succeeded:
            await self._fail_dependents_of(record.task_id, self._dependents(record))
            return
        now = trio.current_time()
        for dependent in self._dependents(record):
            if dependent.message.labels.get("otherwise_of") == record.task_id:
                # The parent succeeded: the fallback resolves to the parent's result.
                await self.store.tell(
                    CopyResult(record.task_id, dependent.task_id, self._ttl(dependent))
                )
                self.queue.finish(dependent, Phase.DONE, succeeded=True)
                await self._release_dependents(dependent, succeeded=True)
                continue
            dependent.waiting_on.discard(record.task_id)
            if not dependent.waiting_on:
                self.queue.place(dependent, now)

    async def _fail_dependents_of(self, failed_id: str, dependents: list[TaskRecord]) -> None:
        """A dependency failed: fallbacks may now run, everything else fails, transitively."""
        now = trio.current_time()
        work = [(failed_id, dependent) for dependent in dependents]
        while work:
            failed, dependent = work.pop()
            if self.queue.live(dependent.task_id) is not dependent:
                continue
            if dependent.message.labels.get("otherwise_of") == failed:
                dependent.waiting_on.discard(failed)
                if not dependent.waiting_on:
                    self.queue.place(dependent, now)
                continue
            self.queue.finish(dependent, Phase.DONE, succeeded=False)
            await self._store_error(
                dependent,
                DependencyFailedError(
                    f"task {dependent.task_id} did not run: dependency {failed} failed",
                    dependency_id=failed,
                ),
            )
            work.extend((dependent.task_id, child) for child in self._dependents(dependent))

    # Questions -------------------------------------------------------------------------

    def _inspect(self, task_id: str) -> TaskInfo | None:
        record = self.queue.live(task_id)
        if record is None:
            return None
        message = self.formatter.loads(record.message.message)
        scheduled = None
        if record.phase is Phase.SCHEDULED and record.eta is not None:
            with contextlib.suppress(OverflowError):  # due after the year 9999: unknown
                scheduled = self.wall_clock().add(seconds=record.eta - trio.current_time())
        return TaskInfo(
            task_id=task_id,
            task_name=record.message.task_name,
            args=tuple(message.args),
            kwargs=dict(message.kwargs),
            tries=record.tries,
            status=record.phase.status,
            enqueue_time=record.enqueue_time,
            scheduled=scheduled,
            dependencies=frozenset(record.waiting_on),
            dependents=frozenset(record.dependents),
            labels=dict(record.message.labels),
        )

    def _drain(self) -> None:
        if self.queue.records:
            reply = self.defer_reply()
            if reply is not None:
                self.state.drains.append(reply)


# The brokers users hold ----------------------------------------------------------------


class AsyncBroker(Service):
    """taskiq's broker API: tasks, builders, events, lifecycle, and the calls handles make.

    Subclasses provide the actors (:class:`InMemoryBroker` runs them in this process).
    """

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
        return task

    def find_task(self, task_name: str) -> AsyncTaskiqDecoratedTask[Any, Any] | None:
        """A task of this broker, or one declared on ``async_shared_broker``."""
        return self.tasks.get(task_name) or async_shared_broker.tasks.get(task_name)

    def sending_broker(self) -> AsyncBroker:
        """The broker that sends this broker's kicks: itself, except for the shared one."""
        return self

    def get_all_tasks(self) -> dict[str, AsyncTaskiqDecoratedTask[Any, Any]]:
        return dict(self.tasks)

    # Lifecycle (startup/shutdown and ``async with`` come from Service) ------------------

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """The backend, the middlewares, the actors, then the startup events; shutdown
        fires the shutdown events, then stops the actors (running tasks are cancelled)
        and closes the backend."""
        await self.result_backend.startup()
        stack.push_async_callback(self.result_backend.shutdown)
        for middleware in self.middlewares:
            await maybe_await(middleware.startup())
            stack.push_async_callback(_call_hook, middleware.shutdown)
        await self._start_actors(stack)
        await self._fire(self._startup_events())
        stack.push_async_callback(self._fire, self._shutdown_events())

    def _startup_events(self) -> list[TaskiqEvents]:
        return [TaskiqEvents.CLIENT_STARTUP]

    def _shutdown_events(self) -> list[TaskiqEvents]:
        return [TaskiqEvents.CLIENT_SHUTDOWN]

    async def _fire(self, events: list[TaskiqEvents]) -> None:
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
        for middleware in self.middlewares:
            await maybe_await(middleware.post_send(message))
        return task_id

    async def kick(self, message: BrokerMessage) -> str:
        raise NotImplementedError

    async def wait_result(self, task_id: str) -> TaskiqResult[Any]:
        raise NotImplementedError

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        return await self.result_backend.get_result(task_id, with_logs=with_logs)

    async def task_status(self, task_id: str) -> TaskStatus:
        raise NotImplementedError

    async def task_info(self, task_id: str) -> TaskInfo | None:
        raise NotImplementedError

    async def abort(self, task_id: str, timeout: float = 5) -> bool:
        raise NotImplementedError

    async def wait_all(self) -> None:
        raise NotImplementedError


async def _stop_if_running(supervisor: Supervisor, name: str) -> None:
    # An app that embeds the broker may have stopped its actors already.
    if name in supervisor.children:
        await supervisor.stop_child(name)


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


class InMemoryBroker(AsyncBroker):
    """Broker, worker and result store as supervised actors in this process.

    No server to start. ``async with broker:`` runs them on a node of their own;
    ``broker.attach(node)`` runs them on a node you already have.
    """

    def __init__(
        self,
        sync_tasks_pool_size: int = 4,
        max_stored_results: int = 100,
        cast_types: bool = True,
        max_async_tasks: int = 30,
        propagate_exceptions: bool = True,
        await_inplace: bool = False,
        *,
        workers: int = 1,
        node: Node | None = None,
        wall_clock: WallClock | None = None,
    ) -> None:
        super().__init__(InmemoryResultBackend(max_stored_results=max_stored_results))
        self.sync_tasks_pool_size = sync_tasks_pool_size
        self.cast_types = cast_types
        self.max_async_tasks = max_async_tasks
        self.propagate_exceptions = propagate_exceptions
        self.await_inplace = await_inplace
        self.worker_count = workers
        self.wall_clock: WallClock = wall_clock or utc_now
        self._node = node
        self._state = BrokerState()
        self._broker_ref: ActorRef[BrokerRequest] | None = None
        self._store_ref: ActorRef[StoreRequest] | None = None
        self._prefix = f"taskq-{uuid.uuid4().hex[:8]}"

    def attach(self, node: Node) -> Self:
        """Run this broker's actors on ``node`` (embedding in your own actor system)."""
        self._node = node
        return self

    def _startup_events(self) -> list[TaskiqEvents]:
        return [TaskiqEvents.WORKER_STARTUP, TaskiqEvents.CLIENT_STARTUP]

    def _shutdown_events(self) -> list[TaskiqEvents]:
        return [TaskiqEvents.CLIENT_SHUTDOWN, TaskiqEvents.WORKER_SHUTDOWN]

    async def _start_actors(self, stack: contextlib.AsyncExitStack) -> None:
        node = self._node
        if node is None:
            node = await stack.enter_async_context(Node.open(self._prefix))
        prefix = self._prefix
        sync_threads = SyncThreads(self.sync_tasks_pool_size)
        store_name, broker_name = f"{prefix}.results", f"{prefix}.broker"

        def store() -> ResultStore:
            return ResultStore(self.result_backend)

        def broker() -> BrokerActor:
            return BrokerActor(self._state, node.ref(store_name), self.formatter, self.wall_clock)

        def worker(index: int) -> Callable[[], WorkerActor]:
            return lambda: WorkerActor(
                self,
                node.ref(broker_name),
                node.ref(store_name),
                f"{prefix}.worker-{index}",
                self.max_async_tasks,
                sync_threads,
            )

        children = [
            ChildSpec(store_name, store),
            ChildSpec(broker_name, broker),
            *(ChildSpec(f"{prefix}.worker-{i}", worker(i)) for i in range(self.worker_count)),
        ]
        # rest_for_one: the store outlives a broker restart, the broker a worker restart.
        supervisor = Supervisor(children, strategy="rest_for_one", max_restarts=10, within=5.0)
        await node.spawn_supervisor(lambda: supervisor, name=prefix)
        stack.push_async_callback(_stop_if_running, node.root, prefix)
        self._store_ref = node.ref(store_name)
        self._broker_ref = node.ref(broker_name)

    def _actors(self) -> tuple[ActorRef[BrokerRequest], ActorRef[StoreRequest]]:
        if self._broker_ref is None or self._store_ref is None:
            raise BrokerError("the broker is not running: use `async with broker:` or startup()")
        return self._broker_ref, self._store_ref

    async def kick(self, message: BrokerMessage) -> str:
        broker = self._broker_ref or self._actors()[0]
        # Users of the task queue see taskiq's errors, never the runtime's (here and in
        # every call below); try/except rather than a context manager on the hot path.
        try:
            if message.labels.get("unique") or self.await_inplace:
                task_id: str = await broker.ask(Enqueue(message))
            else:
                await broker.tell(Enqueue(message))
                task_id = message.task_id
        except ActorError as exc:
            raise SendTaskError(f"task {message.task_id} was not accepted: {exc}") from exc
        if self.await_inplace:
            await self.wait_result(task_id)
        return task_id

    async def wait_result(self, task_id: str) -> TaskiqResult[Any]:
        _, store = self._actors()
        backend = self.result_backend
        # A stored result is read straight from the backend; only waiting needs the store.
        try:
            if await backend.is_result_ready(task_id):
                return await backend.get_result(task_id)
        except ResultGetError:
            pass
        waiter = f"{_WAITER_PREFIX}-{next(_waiter_numbers)}"
        try:
            result = await store.ask(WaitResult(task_id, waiter))
        except ActorError as exc:
            raise ResultGetError(f"no result for {task_id}: {exc}") from exc
        except trio.Cancelled:
            # The store forgets this waiter: a wait that times out leaves nothing behind.
            with trio.CancelScope(shield=True), contextlib.suppress(ActorError):
                await store.tell(StopWaiting(task_id, waiter))
            raise
        if isinstance(result, ResultGetError):
            raise result
        assert isinstance(result, TaskiqResult)
        return result

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        _, store = self._actors()
        try:
            result = await store.ask(GetResult(task_id, with_logs))
        except ActorError as exc:
            raise ResultGetError(f"no result for {task_id}: {exc}") from exc
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    async def task_status(self, task_id: str) -> TaskStatus:
        broker, _ = self._actors()
        try:
            status = await broker.ask(Status(task_id))
        except ActorError as exc:
            raise BrokerError(f"no status for {task_id}: {exc}") from exc
        if isinstance(status, TaskStatus):
            return status
        if await self.result_backend.is_result_ready(task_id):
            return TaskStatus.DONE
        return TaskStatus.NOT_FOUND

    async def task_info(self, task_id: str) -> TaskInfo | None:
        broker, _ = self._actors()
        try:
            info = await broker.ask(Inspect(task_id))
        except ActorError as exc:
            raise BrokerError(f"no info for {task_id}: {exc}") from exc
        return info if isinstance(info, TaskInfo) else None

    async def abort(self, task_id: str, timeout: float = 5) -> bool:
        broker, _ = self._actors()
        try:
            return bool(await broker.ask(Abort(task_id), timeout=timeout))
        except AskTimeoutError:
            return False
        except ActorError as exc:
            raise BrokerError(f"abort of {task_id} failed: {exc}") from exc

    async def wait_all(self) -> None:
        """Wait until every task kicked so far has ended."""
        broker, _ = self._actors()
        try:
            await broker.ask(Drain())
        except ActorError as exc:
            raise BrokerError(f"wait_all failed: {exc}") from exc
