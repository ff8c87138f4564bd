"""Flow control on the hub: a bounded queue, kicks that wait for room, and due times
that are wall-clock instants."""

from __future__ import annotations

import datetime
from functools import partial
from typing import Any

import attrs
import pendulum
import pytest
import trio

from actors import (
    AsyncTaskiqTask,
    SendTaskError,
    TaskExpiredError,
    TaskiqMessage,
    TaskStatus,
    WebSocketBroker,
)
from actors.hub import open_hub, serve_hub
from actors.protocol import Kick
from actors.queue import TaskQueue, TaskRecord
from actors.worker_node import open_worker_node


@pytest.fixture
def queue_lengths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of live tasks in the hub's queue after each task it accepts."""
    lengths: list[int] = []
    add = TaskQueue.add

    def counting_add(queue: TaskQueue, record: TaskRecord) -> None:
        add(queue, record)
        lengths.append(len(queue.records))

    monkeypatch.setattr(TaskQueue, "add", counting_add)
    return lengths


async def test_kiq_waits_for_room_on_a_full_hub_and_other_clients_keep_going(
    autojump_clock: Any, queue_lengths: list[int]
) -> None:
    async with open_hub("local://", max_queued=10) as hub:
        assert hub.address is not None
        kicker = WebSocketBroker(hub.address, max_in_flight=4, connect_timeout=60)
        watcher = WebSocketBroker(hub.address)

        @kicker.task("slow")
        async def slow(n: int) -> int:
            await trio.sleep(1)
            return n

        async with kicker, watcher, open_worker_node(kicker, max_async_tasks=2):
            handles = []
            kicked_at: list[float] = []
            watched_at: list[float] = []

            async def kick_many() -> None:
                for n in range(60):
                    handles.append(await slow.kiq(n))
                    kicked_at.append(trio.current_time())

            async def watch() -> None:
                while not handles:
                    await trio.sleep(0.01)
                first = handles[0].task_id
                result = await watcher.wait_result(first)
                assert result.return_value == 0
                assert await watcher.task_status(first) is TaskStatus.DONE
                watched_at.append(trio.current_time())

            begin = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kick_many)
                nursery.start_soon(watch)
            results = [await handle.wait_result(timeout=60) for handle in handles]

    assert [result.return_value for result in results] == list(range(60))
    assert len(queue_lengths) == 60 and max(queue_lengths) <= 10
    # 10 queued and 4 in flight: kiq did not wait for room (the first frees at 1 s), only
    # for acknowledgements, which may wait a few milliseconds on the link (lazy tells).
    assert kicked_at[13] - begin < 0.5
    assert kicked_at[-1] - begin >= 20  # then 2 tasks a second make room
    assert watched_at[0] < kicked_at[-1]  # the other client was not held up


async def test_kiq_that_finds_no_room_in_time_is_a_send_task_error(autojump_clock: Any) -> None:
    async with open_hub("local://", max_queued=1) as hub:
        assert hub.address is not None
        broker = WebSocketBroker(
            hub.address, max_in_flight=1, connect_timeout=5, hand_over_timeout=0
        )

        @broker.task("forever")
        async def forever() -> None:
            await trio.sleep_forever()

        async with broker, open_worker_node(broker):
            await forever.kiq()  # running: the queue is full
            await forever.kiq()  # held by the hub, unacknowledged
            begin = trio.current_time()
            with pytest.raises(SendTaskError, match="kicks in flight"):
                await forever.kiq()
            assert trio.current_time() - begin == pytest.approx(5)


class Wall:
    """A wall clock that follows trio's, from 2026-03-01 12:00 UTC."""

    def __init__(self) -> None:
        self.t0 = trio.current_time()

    def __call__(self) -> pendulum.DateTime:
        elapsed = round((trio.current_time() - self.t0) * 1_000_000)
        return START + datetime.timedelta(microseconds=elapsed)


START = pendulum.datetime(2026, 3, 1, 12)


async def test_a_delay_counts_from_the_kick_however_late_the_hub_gets_it(
    autojump_clock: Any,
) -> None:
    """The hub is down when the client kicks: a task is due ``delay`` after the kick on
    the wall clock, not after the hub accepted it (its info says when), and ``expire``
    counts from the kick too."""
    address = "local://hub-that-comes-late"
    wall = Wall()
    broker = WebSocketBroker(address, wall_clock=wall, connect_timeout=60)
    ran_at: list[pendulum.DateTime] = []

    @broker.task("job")
    async def job() -> None:
        ran_at.append(wall())

    handles: dict[str, AsyncTaskiqTask[None]] = {}

    async def kick(label: str, seconds: int) -> None:
        handles[label] = await job.kicker().with_labels(**{label: seconds}).kiq()

    async with trio.open_nursery() as nursery, broker:
        nursery.start_soon(kick, "delay", 30)
        nursery.start_soon(kick, "expire", 5)
        await trio.sleep(10)
        assert not handles  # still waiting for the link
        await nursery.start(partial(serve_hub, address, wall_clock=wall))
        async with open_worker_node(broker):
            while len(handles) < 2:
                await trio.sleep(0.1)
            info = await broker.task_info(handles["delay"].task_id)
            assert info is not None and info.status is TaskStatus.SCHEDULED
            assert info.scheduled == START.add(seconds=30)
            await handles["delay"].wait_result(timeout=60)
            expired = await handles["expire"].wait_result(timeout=60)
        assert isinstance(expired.error, TaskExpiredError)  # 5 s after the kick, unstarted
        nursery.cancel_scope.cancel()
    [when] = ran_at
    assert (when - START).total_seconds() == pytest.approx(30)


async def test_a_kick_held_by_a_full_hub_and_sent_again_runs_once(autojump_clock: Any) -> None:
    runs: list[str] = []
    async with open_hub("local://", max_queued=1) as hub:
        assert hub.address is not None
        broker = WebSocketBroker(hub.address)

        @broker.task("block")
        async def block() -> None:
            await trio.sleep_forever()

        @broker.task("once")
        async def once() -> None:
            runs.append("ran")

        async with broker, open_worker_node(broker):
            blocking = await block.kiq()  # the queue is full while it runs
            raw = TaskiqMessage(task_id="t-1", task_name="once", labels={}, args=[], kwargs={})
            assert broker.node is not None and broker._broker_ref is not None
            kick = Kick(broker.formatter.dumps(raw), broker.node.name, broker._ack_to)
            await broker._broker_ref.tell(kick)
            await broker._broker_ref.tell(attrs.evolve(kick, resend=True))
            await trio.sleep(1)
            assert await broker.task_status("t-1") is TaskStatus.NOT_FOUND  # held
            assert await blocking.abort()
            await broker.wait_result("t-1")
            await broker.wait_all()
    assert runs == ["ran"]


async def test_max_queued_must_leave_room() -> None:
    with pytest.raises(ValueError, match="max_queued"):
        async with open_hub("local://", max_queued=0):
            pass
