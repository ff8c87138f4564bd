"""The in-process wiring: result store, broker and workers as actors on one node.

:class:`InMemoryBroker` supervises the three and answers the facade's calls by asking them.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable
from typing import Any, Self

import trio

from .backends.results import InmemoryResultBackend
from .broker import BrokerActor, BrokerState, WallClock
from .events import TaskiqEvents
from .exceptions import BrokerError, ResultGetError, SendTaskError
from .facade import AsyncBroker, _random_id
from .lifecycle import TaskInfo, TaskStatus
from .protocol import (
    Abort,
    BrokerMessage,
    BrokerRequest,
    Drain,
    Enqueue,
    GetResult,
    Inspect,
    Status,
    StopWaiting,
    StoreRequest,
    WaitResult,
)
from .result import TaskiqResult, utc_now
from .results import ResultStore
from .runtime import ActorError, ActorRef, AskTimeoutError, ChildSpec, Node, Supervisor
from .worker import SyncThreads, WorkerActor

__all__ = [
    "InMemoryBroker",
]


#: Names a wait at the result store, so a wait given up on can be forgotten: unique
#: across processes by the random prefix, and cheaper per wait than a random id.
_WAITER_PREFIX = _random_id()[:12]
_waiter_numbers = itertools.count()


async def _stop_if_running(supervisor: Supervisor, name: str) -> None:
    # An app that embeds the broker may have stopped its actors already.
    if name in supervisor.children:
        await supervisor.stop_child(name)


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
