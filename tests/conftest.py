"""Fixtures shared by the task-queue tests.

``topology`` runs a test twice: ``inprocess`` (``InMemoryBroker``: every role on one
node) and ``cluster`` (a hub, a worker node and a ``WebSocketBroker`` client as three
nodes linked over ``local://`` in the test's own ``trio.run``). In the cluster the same
broker object is the client and the worker's task registry, as when a worker process
imports the user's tasks module.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from actors import InMemoryBroker, WebSocketBroker
from actors.actor_broker import ActorBroker
from actors.hub import open_hub
from actors.worker_node import open_worker_node

TOPOLOGIES = ["inprocess", "cluster"]

MakeBroker = Callable[..., ActorBroker]


class OneProcessCluster(WebSocketBroker):
    """A client that starts its own hub and worker node: ``InMemoryBroker``'s options,
    each given to the side that uses it; its ``result_backend`` is the hub's."""

    def __init__(self, **options: Any) -> None:
        super().__init__("local://")
        like = InMemoryBroker(**options)  # the same options, defaults and checks
        self.cast_types = like.cast_types
        self.propagate_exceptions = like.propagate_exceptions
        self.await_inplace = like.await_inplace
        self.wall_clock = like.wall_clock
        self.result_backend = like.result_backend
        self._like = like

    async def _start_actors(self, stack: contextlib.AsyncExitStack) -> None:
        hub = await stack.enter_async_context(
            open_hub("local://", result_backend=self.result_backend, wall_clock=self.wall_clock)
        )
        assert hub.address is not None
        self.url = hub.address
        await super()._start_actors(stack)
        like = self._like
        await stack.enter_async_context(
            open_worker_node(
                self,
                workers=like.worker_count,
                max_async_tasks=like.max_async_tasks,
                sync_tasks_pool_size=like.sync_tasks_pool_size,
            )
        )


@pytest.fixture(params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def cluster_xfail(request: pytest.FixtureRequest, reason: str) -> None:
    """Mark the running test an expected failure in the cluster topology only."""
    if request.getfixturevalue("topology") == "cluster":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"cluster: {reason}"))


@pytest.fixture
def make_broker(topology: str) -> MakeBroker:
    """Builds a broker (not started) in the test's topology, with ``InMemoryBroker``'s
    options."""
    return InMemoryBroker if topology == "inprocess" else OneProcessCluster


@pytest.fixture
async def broker(make_broker: MakeBroker) -> AsyncIterator[ActorBroker]:
    """A running broker with the default settings, in the test's topology."""
    async with make_broker() as running:
        yield running
