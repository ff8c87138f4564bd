"""The hub: the task queue's broker and result store actors on a node that listens.

Clients (:class:`~actors.websocket_broker.WebSocketBroker`) and worker nodes
(:mod:`actors.worker_node`) dial it. It runs no user code: task arguments stay the
bytes the client's formatter made, results the bytes the worker encoded; the error
results it makes itself (aborted, expired, a failed dependency) it encodes with
``serializer``, which must be the one the clients use.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from transports.base import Transport

from .backends.results import (
    AsyncResultBackend,
    DecodedResults,
    EncodedResultBackend,
    InmemoryResultBackend,
    SqliteResultBackend,
)
from .backends.sqlite import Synchronous
from .broker import BrokerActor, BrokerState, WallClock
from .hubstate import QueueStore, SqliteQueueStore
from .result import utc_now
from .results import ResultStore, StoreState
from .runtime import ChildSpec, Node, Supervisor
from .serializers import JSONSerializer, TaskiqSerializer

__all__ = ["BROKER_ACTOR", "HUB_NODE", "STORE_ACTOR", "open_hub", "serve_hub", "transport_for"]

#: The hub's node name, and its actors' names: how clients and workers address them.
HUB_NODE = "hub"
BROKER_ACTOR = "taskq.broker"
STORE_ACTOR = "taskq.results"


def transport_for(
    name: str,
    secret: bytes | str | None,
    ssl_context: ssl.SSLContext | None,
    heartbeat: tuple[float, float] | None = None,
) -> Transport | None:
    """A websocket transport with TLS when an ``ssl_context`` is given, or with the
    ``(interval, timeout)`` of its ``heartbeat``; else None (the node picks its
    transport from the address)."""
    if ssl_context is None and heartbeat is None:
        return None
    from transports.websocket import WebSocketTransport

    key = secret.encode() if isinstance(secret, str) else secret
    transport = WebSocketTransport(name, key, ssl_context=ssl_context)
    if heartbeat is not None:
        transport.heartbeat_interval, transport.heartbeat_timeout = heartbeat
    return transport


@asynccontextmanager
async def open_hub(
    listen: str,
    *,
    secret: bytes | str | None = None,
    serializer: TaskiqSerializer | None = None,
    result_backend: AsyncResultBackend[Any] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    name: str = HUB_NODE,
    wall_clock: WallClock = utc_now,
    heartbeat: tuple[float, float] | None = None,
    max_queued: int | None = 100_000,
    state: str | os.PathLike[str] | None = None,
    synchronous: Synchronous = "FULL",
    reclaim_timeout: float = 10.0,
) -> AsyncIterator[Node]:
    """Run a hub for the block; ``node.address`` is where it listens.

    ``result_backend`` keeps the results (default: in memory until read, then the last
    10,000 read): encoded
    if it is an :class:`EncodedResultBackend` (the built-in ones are), else it gets them
    rebuilt with ``serializer`` (see :class:`DecodedResults`).
    ``heartbeat``: ``(interval, timeout)`` of the pings on its websocket links (default
    5 s and 15 s; ``local://`` links have none): a worker that does not answer within
    both loses its runs to others.
    ``max_queued`` bounds the live tasks (queued, scheduled, waiting or running): a kick
    beyond it is not acknowledged until a task ends, so clients' ``kiq`` waits (None: no
    bound).
    ``state``: a SQLite file that keeps the queue and (unless ``result_backend`` is
    given) the results, so a restarted hub carries on (see docs/cluster.md,
    "Durability"); ``synchronous`` is SQLite's setting for it. It raises
    :class:`~actors.hubstate.HubStateError` if the file cannot be used. A task that was
    running when the hub stopped waits ``reclaim_timeout`` seconds for its worker to
    redial and claim it, and is queued again after.
    """
    if max_queued is not None and max_queued < 1:
        raise ValueError(f"max_queued must be at least 1 or None, not {max_queued!r}")
    encode_with = serializer or JSONSerializer()
    store = QueueStore() if state is None else SqliteQueueStore(state, synchronous)
    if result_backend is None and state is not None:
        # The commit of the broker that follows each result (its task's end) syncs the
        # write-ahead log they share, with the result in it: one sync instead of two.
        result_backend = SqliteResultBackend(state, serializer=encode_with, synchronous="NORMAL")
    backend: AsyncResultBackend[Any] = result_backend or InmemoryResultBackend(
        max_stored_results=10_000
    )
    if not isinstance(backend, EncodedResultBackend):
        backend = DecodedResults(backend, encode_with)
    broker_state, store_state = BrokerState(store=store), StoreState()
    on_websockets = listen.startswith(("ws://", "wss://"))
    transport = transport_for(name, secret, ssl_context, heartbeat if on_websockets else None)
    try:
        await backend.startup()
        async with Node.open(name, listen=listen, secret=secret, transport=transport) as node:

            def broker() -> BrokerActor:
                return BrokerActor(
                    broker_state, node.ref(STORE_ACTOR), wall_clock, encode_with, max_queued,
                    reclaim_timeout,
                )  # fmt: skip

            children = [
                ChildSpec(
                    STORE_ACTOR, lambda: ResultStore(backend, encoded=True, state=store_state)
                ),
                ChildSpec(BROKER_ACTOR, broker),
            ]
            await node.spawn_supervisor(
                lambda: Supervisor(children, strategy="rest_for_one", max_restarts=10, within=5.0),
                name="taskq",
            )
            yield node
    finally:
        with trio.CancelScope(shield=True):
            await backend.shutdown()
        store.close()


async def serve_hub(
    listen: str,
    *,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Run a hub until cancelled; ``await nursery.start(serve_hub, ...)`` gives its node."""
    async with open_hub(listen, **options) as node:
        task_status.started(node)
        await trio.sleep_forever()
