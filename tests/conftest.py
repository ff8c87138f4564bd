"""Fixtures shared by the task-queue tests.

``topology`` runs a test twice: ``inprocess`` (``InMemoryBroker``: every role on one
node) and ``cluster`` (a hub, a worker node and a ``WebSocketBroker`` client as three
nodes linked over ``local://`` in the test's own ``trio.run``). In the cluster the same
broker object is the client and the worker's task registry, as when a worker process
imports the user's tasks module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors import InMemoryBroker, WebSocketBroker
from actors.client import ActorBroker
from actors.hub import open_hub
from actors.worker_node import open_worker_node

TOPOLOGIES = ["inprocess", "cluster"]


@pytest.fixture(params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def cluster_xfail(request: pytest.FixtureRequest, reason: str) -> None:
    """Mark the running test an expected failure in the cluster topology only."""
    if request.getfixturevalue("topology") == "cluster":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"cluster: {reason}"))


@pytest.fixture
async def broker(topology: str) -> AsyncIterator[ActorBroker]:
    """A running broker with the default settings, in the test's topology."""
    if topology == "inprocess":
        async with InMemoryBroker() as in_process:
            yield in_process
        return
    async with open_hub("local://") as hub:
        assert hub.address is not None
        client = WebSocketBroker(hub.address)
        async with client, open_worker_node(client):
            yield client
