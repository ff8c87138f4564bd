"""A worker node: worker actors for a user's broker, on a node that dials the hub.

A worker process imports the user's tasks module and runs
``open_worker_node(broker)``: its tasks, middlewares, dependency context and
``WORKER_*`` events are the broker object's, as with taskiq's worker. Each worker tells
the hub its node, its name and the task names it has, and hands results to the hub's
store encoded with the broker's serializer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import AsyncIterator, Callable

import trio

from .events import TaskiqEvents
from .exceptions import BrokerError
from .facade import async_shared_broker
from .hub import BROKER_ACTOR, STORE_ACTOR, transport_for
from .protocol import FinishRuns, Reannounce, WorkerLeaving, WorkerTasks
from .runtime import ActorError, ChildSpec, Node, Supervisor, unique_node_name
from .websocket_broker import WebSocketBroker
from .worker import SyncThreads, WorkerActor

__all__ = ["finish_runs", "open_worker_node"]

log = logging.getLogger("actors.worker_node")


def _worker_actor(index: int) -> str:
    return f"taskq.worker-{index}"


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

        children = [ChildSpec(_worker_actor(i), worker(i)) for i in range(workers)]

        async def reannounce_on_relink() -> None:
            """The workers keep their runs while the hub's link is down, and announce
            them once it is back: a hub that restarted within its reclaim timeout gives
            them back (one that did not, or that put them back in the queue when the link
            went, cancels them)."""
            while True:
                await node.wait_for_peer_lost(hub, timeout=math.inf)
                await node.wait_for_peer(hub, timeout=math.inf)
                for index in range(workers):
                    with contextlib.suppress(ActorError):  # restarting: it announces itself
                        await node.ref(_worker_actor(index)).tell(Reannounce())

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
                    with contextlib.suppress(ActorError):  # the link is down: see Reannounce
                        await hub_broker.tell(WorkerTasks(worker_id, broker.task_names()))

        listeners = (broker.task_listeners, async_shared_broker.task_listeners)
        for listening in listeners:
            listening.append(on_task_registered)
            stack.callback(listening.remove, on_task_registered)
        await node.spawn_supervisor(
            lambda: Supervisor(children, max_restarts=10, within=5.0), name="taskq.workers"
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reannounce_on_relink)
            nursery.start_soon(announce_new_tasks)
            yield node
            nursery.cancel_scope.cancel()


async def finish_runs(node: Node, hub: str, workers: int) -> bool:
    """Have the hub hand this worker node's ``workers`` workers no more runs, then wait
    until every run they hold has ended and been reported; False if the hub's link went
    meanwhile.

    The first half of a graceful shutdown: leaving :func:`open_worker_node` afterwards
    (or when the grace period is over) closes the link, and the hub puts back in the
    queue whatever still runs here, as for any lost worker.
    """
    linked = True
    try:
        await node.ref(BROKER_ACTOR, node=hub).ask(WorkerLeaving(node.name))
        log.info("worker %s takes no more tasks; waiting for its running ones", node.name)
        async with trio.open_nursery() as nursery:
            for index in range(workers):
                nursery.start_soon(node.ref(_worker_actor(index)).ask, FinishRuns())
    except* ActorError:
        linked = False
    return linked
