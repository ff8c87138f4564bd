"""The in-process wiring: result store, broker and workers as actors on one node.

:class:`InMemoryBroker` supervises the three and answers the facade's calls by asking them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Self

from .actor_broker import ActorBroker
from .backends.results import InmemoryResultBackend
from .broker import BrokerActor, BrokerState, WallClock
from .events import TaskiqEvents
from .result import utc_now
from .results import ResultStore, StoreState
from .runtime import ChildSpec, Node, Supervisor
from .worker import SyncThreads, WorkerActor

__all__ = [
    "InMemoryBroker",
]


async def _stop_if_running(supervisor: Supervisor, name: str) -> None:
    # An app that embeds the broker may have stopped its actors already.
    if name in supervisor.children:
        await supervisor.stop_child(name)


class InMemoryBroker(ActorBroker):
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
        store_state = StoreState()

        def store() -> ResultStore:
            return ResultStore(self.result_backend, state=store_state)

        def broker() -> BrokerActor:
            return BrokerActor(self._state, node.ref(store_name), self.wall_clock)

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
        self._local_backend = self.result_backend
