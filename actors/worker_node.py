"""A worker node: worker actors for a user's broker, on a node that dials the hub.

A worker process imports the user's tasks module and runs
``open_worker_node(broker)``: its tasks, middlewares, dependency context and
``WORKER_*`` events are the broker object's, as with taskiq's worker. Each worker tells
the hub its node, its name and the task names it has, and hands results to the hub's
store encoded with the broker's serializer.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import AsyncIterator, Callable

import trio

from .events import TaskiqEvents
from .exceptions import BrokerError
from .facade import async_shared_broker
from .hub import BROKER_ACTOR, STORE_ACTOR, transport_for
from .protocol import WorkerTasks
from .runtime import ActorError, ChildSpec, Node, Supervisor, unique_node_name
from .websocket_broker import WebSocketBroker
from .worker import SyncThreads, WorkerActor

__all__ = ["open_worker_node"]


@contextlib.asynccontextmanager
async def open_worker_node(
    broker: WebSocketBroker,
    *,
    url: str | None = None,
    secret: bytes | str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    workers: int = 1,
    max_async_tasks: int = 30,
    sync_tasks_pool_size: int = 4,
    connect_timeout: float = 10.0,
) -> AsyncIterator[Node]:
    """Run ``workers`` worker actors for ``broker``'s tasks for the block.

    ``url``, ``secret`` and ``ssl_context`` default to the broker's. When ``broker``
    is not running (a worker process), it starts on this node and fires
    ``WORKER_STARTUP``; when it already runs as a client in this process (or is being
    started), only the worker events fire here.
    """
    url = url or broker.url
    secret = broker.secret if secret is None else secret
    ssl_context = ssl_context or broker.ssl_context
    name = unique_node_name("worker")
    transport = transport_for(name, secret, ssl_context)
    async with (
        Node.open(name, connect=[url], secret=secret, transport=transport) as node,
        contextlib.AsyncExitStack() as stack,
    ):
        try:
            await node.wait_for_peer(broker.hub, timeout=connect_timeout)
        except trio.TooSlowError:
            raise BrokerError(
                f"worker: no link to the hub at {url} within {connect_timeout}s "
                "(is it running, with the same secret?)"
            ) from None
        if broker.node is not None:  # it runs as a client in this process too
            await broker.fire_events([TaskiqEvents.WORKER_STARTUP])
            stack.push_async_callback(broker.fire_events, [TaskiqEvents.WORKER_SHUTDOWN])
        else:
            await stack.enter_async_context(broker.attach(node, worker=True))
        hub = broker.hub
        hub_broker = node.ref(BROKER_ACTOR, node=hub)
        store = node.ref(STORE_ACTOR, node=hub)
        sync_threads = SyncThreads(sync_tasks_pool_size)
        worker_ids = [f"{name}.worker-{i}" for i in range(workers)]

        def worker(index: int) -> Callable[[], WorkerActor]:
            return lambda: WorkerActor(
                broker,
                hub_broker,
                store,
                worker_ids[index],
                max_async_tasks,
                sync_threads,
                encode_results=True,
            )

        children = [ChildSpec(f"taskq.worker-{i}", worker(i)) for i in range(workers)]

        async def start_workers() -> None:
            await node.spawn_supervisor(
                lambda: Supervisor(children, max_restarts=10, within=5.0), name="taskq.workers"
            )

        async def restart_workers_on_relink() -> None:
            """The hub puts back the runs of a worker node whose link went, so they are
            cancelled here, and the workers start afresh (and announce themselves) once
            the link is back."""
            while True:
                await node.wait_for_peer_lost(hub, timeout=math.inf)
                await node.root.stop_child("taskq.workers")
                await node.wait_for_peer(hub, timeout=math.inf)
                await start_workers()

        registered = trio.Event()

        def on_task_registered() -> None:
            registered.set()

        async def announce_new_tasks() -> None:
            """Tasks registered after the workers started: tell the hub (it hands a task
            only to a worker that has its name)."""
            nonlocal registered
            while True:
                await registered.wait()
                registered = trio.Event()
                for worker_id in worker_ids:
                    with contextlib.suppress(ActorError):  # relinking workers announce all
                        await hub_broker.tell(WorkerTasks(worker_id, broker.task_names()))

        listeners = (broker.task_listeners, async_shared_broker.task_listeners)
        for listening in listeners:
            listening.append(on_task_registered)
            stack.callback(listening.remove, on_task_registered)
        await start_workers()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_workers_on_relink)
            nursery.start_soon(announce_new_tasks)
            yield node
            nursery.cancel_scope.cancel()
