"""The worker actor's side of its protocol with the broker, with an actor in the broker's
place that records what it is told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import InMemoryBroker, Node, TaskiqMessage
from actors.protocol import Finished, GetResult, Run, WorkerReady
from actors.result import TaskiqResult, utc_now
from actors.results import ResultStore
from actors.runtime import Actor, ActorRef
from actors.worker import WorkerActor


class BrokerStandIn(Actor[Any]):
    def __init__(self, told: list[Any]) -> None:
        self.told = told

    async def receive(self, message: Any) -> None:
        self.told.append(message)


@attrs.define
class Setup:
    broker: InMemoryBroker
    told: list[Any]
    worker: ActorRef[Any]
    store: ActorRef[Any]
    release: trio.Event

    def run(self, task_name: str, task_id: str) -> Run:
        message = TaskiqMessage(task_id=task_id, task_name=task_name, labels={})
        return Run(self.broker.formatter.dumps(message), 1, utc_now())

    def ended(self) -> list[tuple[str, str]]:
        """(task id, outcome) of every run the broker was told of, in order."""
        finished = [message for message in self.told if isinstance(message, Finished)]
        return [(ended.task_id, ended.outcome) for message in finished for ended in message.runs]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    broker = InMemoryBroker()
    release = trio.Event()

    @broker.task("quick")
    async def quick() -> str:
        return "quick"

    @broker.task("held")
    async def held() -> str:
        await release.wait()
        return "held"

    told: list[Any] = []
    async with Node.open("t") as node:
        stand_in = await node.spawn(lambda: BrokerStandIn(told))
        store = await node.spawn(lambda: ResultStore(broker.result_backend))
        worker = await node.spawn(
            lambda: WorkerActor(broker, stand_in, store, "w", 30, trio.CapacityLimiter(1))
        )
        await trio.testing.wait_all_tasks_blocked()
        assert told == [WorkerReady(worker, "w", 30)]
        yield Setup(broker, told, worker, store, release)


async def test_a_burst_of_short_runs_is_reported_in_one_message(setup: Setup) -> None:
    ids = [f"t{index}" for index in range(30)]
    for task_id in ids:
        await setup.worker.tell(setup.run("quick", task_id))
    await trio.testing.wait_all_tasks_blocked()
    assert setup.ended() == [(task_id, "done") for task_id in ids]
    assert sum(isinstance(message, Finished) for message in setup.told) == 1
    result = await setup.store.ask(GetResult("t29"))
    assert isinstance(result, TaskiqResult) and result.return_value == "quick"


async def test_a_blocked_run_does_not_hold_back_the_report_of_an_ended_one(
    setup: Setup,
) -> None:
    await setup.worker.tell(setup.run("quick", "first"))
    await setup.worker.tell(setup.run("held", "second"))
    await trio.testing.wait_all_tasks_blocked()
    assert setup.ended() == [("first", "done")]
    setup.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert setup.ended() == [("first", "done"), ("second", "done")]
