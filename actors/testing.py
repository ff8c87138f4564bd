"""pytest fixtures for testing your own tasks; a ``pytest11`` plugin, loaded by pytest
whenever trio-actors is installed. The fixtures are async: they run in the test's own
``trio.run`` (pytest-trio, with ``trio_mode = true`` or ``@pytest.mark.trio``).

- ``actors_broker``: the broker under test. Override it in your ``conftest.py`` to
  return your own broker object, not started; the default is a fresh ``InMemoryBroker``
  for tasks a test declares itself.
- ``actors_running``: ``actors_broker`` started for the test, the way it runs in one
  process: an ``InMemoryBroker`` as it is, a ``WebSocketBroker`` as the client of a
  :func:`cluster` over ``local://``.
- ``actors_cluster``: :func:`cluster` itself, for options or several brokers:
  ``async with actors_cluster(broker, websockets=True) as running:``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import attrs
import pytest

from .actor_broker import ActorBroker
from .hub import open_hub
from .inmemory import InMemoryBroker
from .runtime import Node
from .websocket_broker import WebSocketBroker
from .worker_node import open_worker_node

__all__ = ["Cluster", "actors_broker", "actors_cluster", "actors_running", "cluster"]


@attrs.frozen
class Cluster:
    """A running hub, a worker node, and ``broker``, their client."""

    hub: Node
    worker: Node
    broker: WebSocketBroker

    @property
    def url(self) -> str:
        """Where the hub listens (``local://...`` or ``ws://127.0.0.1:PORT``)."""
        assert self.hub.address is not None
        return self.hub.address


@contextlib.asynccontextmanager
async def cluster(
    broker: WebSocketBroker,
    *,
    websockets: bool = False,
    workers: int = 1,
    max_async_tasks: int = 30,
) -> AsyncIterator[Cluster]:
    """A hub and a worker node for ``broker``'s tasks, with ``broker`` (not started) as
    their client, for the block: a kick crosses real links (over websockets on
    127.0.0.1 with ``websockets``, with the broker's secret). The broker's URL points at
    this hub meanwhile, and is put back after."""
    listen = "ws://127.0.0.1:0" if websockets else "local://"
    url = broker.url
    async with open_hub(listen, secret=broker.secret, serializer=broker.serializer) as hub:
        assert hub.address is not None
        broker.url = hub.address
        try:
            async with (
                broker,
                open_worker_node(
                    broker, workers=workers, max_async_tasks=max_async_tasks
                ) as worker,
            ):
                yield Cluster(hub, worker, broker)
        finally:
            broker.url = url


@pytest.fixture
def actors_broker() -> ActorBroker:
    """The broker under test: override this fixture to return yours (not started)."""
    return InMemoryBroker()


@pytest.fixture
async def actors_running(actors_broker: ActorBroker) -> AsyncIterator[ActorBroker]:
    """``actors_broker`` started for the test (a ``WebSocketBroker`` in a cluster)."""
    if isinstance(actors_broker, WebSocketBroker):
        async with cluster(actors_broker) as running:
            yield running.broker
    else:
        async with actors_broker:
            yield actors_broker


@pytest.fixture
def actors_cluster() -> Callable[..., contextlib.AbstractAsyncContextManager[Cluster]]:
    """:func:`cluster`: ``async with actors_cluster(broker, ...) as running:``."""
    return cluster
