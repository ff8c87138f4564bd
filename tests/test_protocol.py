"""The broker and the worker actors, each with an actor in the other's place that records
what it is told: how many messages a burst of tasks costs, and in what order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import InMemoryBroker, Node, TaskAbortedError, TaskiqMessage
from actors.broker import BrokerActor, BrokerState
from actors.hubstate import QueueStore
from actors.lifecycle import Phase, TaskStatus
from actors.protocol import (
    Abort,
    BrokerMessage,
    CancelRun,
    Enqueue,
    Finished,
    GetResult,
    Run,
    RunEnded,
    Runs,
    Status,
    StatusReply,
    WorkerReady,
)
from actors.queue import TaskQueue
from actors.result import TaskiqResult, utc_now
from actors.results import ResultStore
from actors.runtime import Actor, ActorRef
from actors.worker import SyncThreads, WorkerActor


class Recorder(Actor[Any]):
    def __init__(self, told: list[Any]) -> None:
        self.told = told

    async def receive(self, message: Any) -> None:
        self.told.append(message)


def _message(task_name: str, task_id: str, **labels: Any) -> TaskiqMessage:
    return TaskiqMessage(task_id=task_id, task_name=task_name, labels=labels)


# The worker, told by a recorder in the broker's place ------------------------------------


@attrs.define
class WorkerSetup:
    broker: InMemoryBroker
    told: list[Any]
    worker: ActorRef[Any]
    store: ActorRef[Any]
    release: trio.Event
    incarnation: int

    def run(self, task_name: str, task_id: str, incarnation: int | None = None) -> Runs:
        message = self.broker.formatter.dumps(_message(task_name, task_id))
        return Runs(
            [Run(message, 1, utc_now())], self.incarnation if incarnation is None else incarnation
        )

    def ended(self) -> list[tuple[str, str]]:
        """(task id, outcome) of every run the broker was told of, in order."""
        finished = [message for message in self.told if isinstance(message, Finished)]
        return [(ended.task_id, ended.outcome) for message in finished for ended in message.runs]


@pytest.fixture
async def worker_setup() -> AsyncIterator[WorkerSetup]:
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
        stand_in = await node.spawn(lambda: Recorder(told))
        store = await node.spawn(lambda: ResultStore(broker.result_backend))
        worker = await node.spawn(
            lambda: WorkerActor(broker, stand_in, store, "w", 30, SyncThreads(1))
        )
        await trio.testing.wait_all_tasks_blocked()
        [ready] = told
        assert ready == WorkerReady("t", worker.name, "w", 30, ready.incarnation, ["quick", "held"])
        yield WorkerSetup(broker, told, worker, store, release, ready.incarnation)


async def test_a_burst_of_short_runs_is_reported_in_one_message(
    worker_setup: WorkerSetup,
) -> None:
    ids = [f"t{index}" for index in range(30)]
    for task_id in ids:
        await worker_setup.worker.tell(worker_setup.run("quick", task_id))
    await trio.testing.wait_all_tasks_blocked()
    assert worker_setup.ended() == [(task_id, "done") for task_id in ids]
    assert sum(isinstance(message, Finished) for message in worker_setup.told) == 1
    result = await worker_setup.store.ask(GetResult("t29"))
    assert isinstance(result, TaskiqResult) and result.return_value == "quick"


async def test_a_blocked_run_does_not_hold_back_the_report_of_an_ended_one(
    worker_setup: WorkerSetup,
) -> None:
    await worker_setup.worker.tell(worker_setup.run("quick", "first"))
    await worker_setup.worker.tell(worker_setup.run("held", "second"))
    await trio.testing.wait_all_tasks_blocked()
    assert worker_setup.ended() == [("first", "done")]
    worker_setup.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert worker_setup.ended() == [("first", "done"), ("second", "done")]


async def test_runs_meant_for_an_earlier_start_of_the_worker_are_dropped(
    worker_setup: WorkerSetup,
) -> None:
    """Its mailbox outlives a restart; the broker delivers those runs again itself."""
    earlier = worker_setup.incarnation - 1
    await worker_setup.worker.tell(worker_setup.run("quick", "stale", incarnation=earlier))
    await worker_setup.worker.tell(worker_setup.run("quick", "fresh"))
    await trio.testing.wait_all_tasks_blocked()
    assert worker_setup.ended() == [("fresh", "done")]


# The broker, with a recorder in a worker's place -----------------------------------------


@attrs.define
class BrokerSetup:
    broker: InMemoryBroker
    told: list[Any]
    actor: ActorRef[Any]

    async def kick(self, task_id: str, priority: int = 0) -> None:
        message = _message("any", task_id, priority=priority)
        await self.actor.tell(Enqueue(self.broker.formatter.dumps(message)))


@pytest.fixture
async def broker_setup() -> AsyncIterator[BrokerSetup]:
    """A broker actor and its result store, with a recorder as a worker of capacity 3."""
    broker = InMemoryBroker()
    told: list[Any] = []
    async with Node.open("t") as node:
        store = await node.spawn(lambda: ResultStore(broker.result_backend))
        actor = await node.spawn(lambda: BrokerActor(BrokerState(), store, utc_now))
        stand_in = await node.spawn(lambda: Recorder(told))
        await actor.tell(WorkerReady("t", stand_in.name, "w", 3, 1))
        yield BrokerSetup(broker, told, actor)


async def test_room_freed_together_is_handed_out_in_one_message_by_priority(
    broker_setup: BrokerSetup,
) -> None:
    told, kick, actor = broker_setup.told, broker_setup.kick, broker_setup.actor
    for task_id in ("a", "b", "c"):
        await kick(task_id)
        await trio.testing.wait_all_tasks_blocked()
    # Kicked while the worker has room: each is handed out at once.
    assert [[run.message.task_id for run in runs.runs] for runs in told] == [
        ["a"],
        ["b"],
        ["c"],
    ]
    for task_id, priority in (("low", 0), ("high", 9), ("mid", 5), ("lowest", -1)):
        await kick(task_id, priority)
    await trio.testing.wait_all_tasks_blocked()
    assert len(told) == 3  # no room: they wait
    await actor.tell(Finished("w", [RunEnded(task_id, "done", delivery=1) for task_id in "abc"]))
    await trio.testing.wait_all_tasks_blocked()
    assert len(told) == 4
    assert [run.message.task_id for run in told[3].runs] == ["high", "mid", "low"]


async def test_a_run_that_ends_asking_to_run_again_after_a_told_abort_ends_aborted(
    broker_setup: BrokerSetup,
) -> None:
    """An abort sent as a tell has no reply to wait for, yet it counts all the same."""
    told, actor = broker_setup.told, broker_setup.actor
    await broker_setup.kick("a")
    await actor.tell(Abort("a"))
    await actor.tell(Finished("w", [RunEnded("a", "again", delivery=1)]))
    await trio.testing.wait_all_tasks_blocked()
    assert [type(message) for message in told] == [Runs, CancelRun]  # not handed out again
    result = await broker_setup.broker.result_backend.get_result("a")
    assert isinstance(result.error, TaskAbortedError)


async def test_a_late_report_of_another_delivery_is_ignored(
    broker_setup: BrokerSetup,
) -> None:
    told, actor = broker_setup.told, broker_setup.actor
    await broker_setup.kick("a")
    await trio.testing.wait_all_tasks_blocked()
    assert [run.message.task_id for run in told[0].runs] == ["a"]  # handed to "w"
    await actor.tell(Finished("presumed-dead", [RunEnded("a", "done", delivery=1)]))
    await actor.tell(Finished("w", [RunEnded("a", "done", delivery=2)]))  # not its delivery
    await trio.testing.wait_all_tasks_blocked()
    assert await actor.ask(Status("a")) == StatusReply(TaskStatus.RUNNING)
    await actor.tell(Finished("w", [RunEnded("a", "done", delivery=1)]))
    await trio.testing.wait_all_tasks_blocked()
    assert await actor.ask(Status("a")) == StatusReply(None)  # ended


class _CountingStore(QueueStore):
    """A durable store that writes nothing: it records each commit's tasks and phases."""

    durable = True

    def __init__(self) -> None:
        self.commits: list[list[tuple[str, Phase]]] = []

    def load(self, now: float, wall: float, remember_finished: int = 10_000) -> TaskQueue:
        queue = TaskQueue(remember_finished)
        queue.changed = {}
        return queue

    async def commit(self, queue: TaskQueue, now: float, wall: Any) -> None:
        if queue.changed:
            self.commits.append(
                [(task_id, queue.records[task_id].phase) for task_id in queue.changed]
            )
            queue.changed.clear()


async def test_a_durable_broker_commits_a_kick_and_its_run_in_one_transaction() -> None:
    """One sync per batch, not two (the kicks, then the runs handed out): the runs go
    out before the commit, and the kick is acknowledged after it."""
    store, told = _CountingStore(), list[Any]()
    async with Node.open("t") as node:
        results = await node.spawn(lambda: ResultStore(InMemoryBroker().result_backend))
        actor = await node.spawn(lambda: BrokerActor(BrokerState(store=store), results, utc_now))
        stand_in = await node.spawn(lambda: Recorder(told))
        await actor.tell(WorkerReady("t", stand_in.name, "w", 3, 1))
        await actor.ask(Enqueue(BrokerMessage("a", "any", b"", {})))
        await trio.testing.wait_all_tasks_blocked()
    assert store.commits == [[("a", Phase.RUNNING)]]
    assert [[run.message.task_id for run in runs.runs] for runs in told] == [["a"]]
