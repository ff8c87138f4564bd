"""A hub's state file (actors/hubstate.py): the queue journaled to SQLite and rebuilt
from it, files it refuses, a full disk; and a hub closed and opened again on its file.

The hub tests run on trio's real clock: SQLite works in a thread, and an autojump clock
would jump over it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pendulum
import pytest
import trio

from actors import SendTaskError, WebSocketBroker
from actors.backends.results import SqliteResultBackend
from actors.backends.schedules import SqliteScheduleSource
from actors.broker import BrokerActor
from actors.hub import serve_hub
from actors.hubstate import HubStateError, SqliteQueueStore
from actors.lifecycle import Phase
from actors.protocol import Barrier, BrokerMessage, EncodedResult, Finished, Run, StoreResult
from actors.queue import TaskQueue, TaskRecord
from actors.results import ResultStore
from actors.runtime import Node
from actors.schedules import ScheduledTask
from actors.worker import WorkerActor
from actors.worker_node import open_worker_node

WALL = pendulum.datetime(2026, 1, 1)


def _record(task_id: str, **fields: Any) -> TaskRecord:
    message = BrokerMessage(task_id, "job", task_id.encode(), {"n": task_id})
    return TaskRecord(message, Phase.WAITING, enqueue_time=WALL, **fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteQueueStore]:
    opened = SqliteQueueStore(tmp_path / "hub.db")
    yield opened
    opened.close()


def _journaled() -> TaskQueue:
    queue = TaskQueue()
    queue.changed = {}
    return queue


async def test_the_store_rebuilds_the_queue_it_committed(
    store: SqliteQueueStore, tmp_path: Path
) -> None:
    queue, now = _journaled(), trio.current_time()
    records = {
        "low": _record("low"),
        "high": _record("high", priority=5),
        "later": _record("later", eta=now + 60, due=WALL.add(seconds=60)),
        "parent": _record("parent"),
        "child": _record("child", unique_key="k"),
        "dying": _record("dying", expire_at=now + 30),
        "ran": _record("ran", tries=1),
        "gone": _record("gone"),
    }
    records["child"].wait_for(records["parent"])
    for record in records.values():
        queue.add(record)
        queue.place(record, now)
    queue.pop_ready()  # "high"
    records["high"].move(Phase.RUNNING)
    records["high"].tries = 1
    queue.finish(records["gone"], Phase.ABORTED, succeeded=False)
    await store.commit(queue, now, WALL)

    # Ten seconds later, on a clock that starts elsewhere (a new process).
    again = SqliteQueueStore(tmp_path / "hub.db")
    rebuilt = again.load(1000.0, WALL.timestamp() + 10)
    again.close()
    assert list(rebuilt.records) == ["low", "high", "later", "parent", "child", "dying", "ran"]
    assert rebuilt.finished == {"gone": False}
    got = rebuilt.records
    assert got["high"].phase is Phase.QUEUED and got["high"].tries == 1  # ran: queued again
    assert got["later"].phase is Phase.SCHEDULED and got["later"].eta == pytest.approx(1050)
    assert got["later"].due == WALL.add(seconds=60)
    assert got["dying"].expire_at == pytest.approx(1020)
    assert got["child"].phase is Phase.WAITING and got["parent"].dependents == ["child"]
    assert rebuilt.live_unique("k") is got["child"]
    assert got["low"].message == records["low"].message
    assert isinstance(got["low"].enqueue_time, pendulum.DateTime)
    assert got["low"].enqueue_time == WALL and got["low"].enqueue_time.add(days=1) > WALL
    assert rebuilt.next_timer() == pytest.approx(1020)  # "dying" expires before "later"
    assert dict(+rebuilt.counts) == {
        (Phase.QUEUED, 0): 4, (Phase.QUEUED, 5): 1,
        (Phase.SCHEDULED, 0): 1, (Phase.WAITING, 0): 1,
    }  # fmt: skip
    order = [rebuilt.pop_ready() for _ in range(4)]
    assert [record.task_id for record in order if record] == ["high", "low", "parent", "dying"]


async def test_a_dependency_that_ended_in_the_same_commit_is_not_waited_for(
    store: SqliteQueueStore, tmp_path: Path
) -> None:
    queue, now = _journaled(), trio.current_time()
    parent, child = _record("parent"), _record("child")
    child.wait_for(parent)
    for record in (parent, child):
        queue.add(record)
        queue.place(record, now)
    parent.move(Phase.RUNNING)
    queue.finish(parent, Phase.DONE, succeeded=True)
    await store.commit(queue, now, WALL)
    rebuilt = SqliteQueueStore(tmp_path / "hub.db").load(now, WALL.timestamp())
    assert rebuilt.records["child"].phase is Phase.QUEUED


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my notes, not a hub's state\n" * 100)
    with pytest.raises(HubStateError, match="not a database"):
        SqliteQueueStore(path)
    assert path.read_text().startswith("my notes")


def test_another_programs_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER)")
    with pytest.raises(HubStateError, match="not a hub's state file"):
        SqliteQueueStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


async def test_a_damaged_file_is_refused(store: SqliteQueueStore, tmp_path: Path) -> None:
    queue, now = _journaled(), trio.current_time()
    for i in range(2000):
        queue.add(_record(f"task-{i:04}"))
    await store.commit(queue, now, WALL)
    store.close()
    path = tmp_path / "hub.db"
    with sqlite3.connect(path) as conn:  # fold the WAL into the file, then damage it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[8192:16384] = b"\xa5" * 8192  # pages 3 and 4 of 4096 bytes
    path.write_bytes(bytes(data))
    with pytest.raises(HubStateError, match="malformed"):
        SqliteQueueStore(path)


def test_a_file_in_a_read_only_directory_is_refused() -> None:
    # /proc refuses new files even to root, so this holds whoever runs the tests.
    with pytest.raises(HubStateError, match="cannot open the state file"):
        SqliteQueueStore("/proc/hub.db")


async def test_a_full_disk_fails_the_commit_and_keeps_what_was_committed(
    store: SqliteQueueStore, tmp_path: Path
) -> None:
    queue, now = _journaled(), trio.current_time()
    queue.add(_record("kept"))
    await store.commit(queue, now, WALL)
    # SQLite's page limit: the database is "full" as on a full disk, whatever room the
    # disk has (SQLITE_FULL, the error a full disk gives).
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    for i in range(500):
        queue.add(_record(f"big-{i}-" + "x" * 200))
    with pytest.raises(HubStateError, match="full"):
        await store.commit(queue, now, WALL)
    rebuilt = store.load(now, WALL.timestamp())
    assert list(rebuilt.records) == ["kept"]


# A hub on its state file ------------------------------------------------------------


async def _hub_until(
    state: Path,
    stop: trio.CancelScope,
    reclaim_timeout: float = 10.0,
    *,
    task_status: trio.TaskStatus[Node],
) -> None:
    with stop:
        await serve_hub(
            "local://durable-hub",
            state=state,
            reclaim_timeout=reclaim_timeout,
            task_status=task_status,
        )


async def test_a_hub_opened_again_on_its_file_runs_what_it_had(tmp_path: Path) -> None:
    state = tmp_path / "hub.db"
    started: list[int] = []
    release = trio.Event()
    broker = WebSocketBroker("local://durable-hub", connect_timeout=10)

    @broker.task
    async def add(a: int, b: int) -> int:
        return a + b

    @broker.task
    async def held() -> str:
        started.append(1)
        await release.wait()
        return "released"

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()
        await nursery.start(_hub_until, state, first)
        with trio.fail_after(30):
            async with broker:
                async with open_worker_node(broker, max_async_tasks=1):
                    running = await held.kiq()
                    while not started:
                        await trio.sleep(0.01)
                # No worker now: these wait in the queue.
                queued = [await add.kiq(i, i) for i in range(5)]
                delayed = await add.kicker().with_labels(delay=0.5).kiq(10, 10)
                unique = await add.kicker().with_labels(unique=True).kiq(7, 7)
                then = await add.kiq(1, 1)
                child = await add.kicker().with_labels(depends_on=[then.task_id]).kiq(2, 2)
                while broker._unacked:  # acknowledged: committed
                    await trio.sleep(0.01)
                first.cancel()
                assert broker.node is not None
                await broker.node.wait_for_peer_lost("hub")
                await nursery.start(_hub_until, state, trio.CancelScope())
                release.set()
                async with open_worker_node(broker):
                    assert [await handle for handle in queued] == [0, 2, 4, 6, 8]
                    assert await delayed == 20
                    assert await unique == 14
                    assert (await then, await child) == (2, 4)
                    result = await running.wait_result()
        nursery.cancel_scope.cancel()
    assert result.return_value == "released" and result.tries == 2
    assert len(started) == 2


def _ended_in(state: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(state)) as conn:
        return [row[0] for row in conn.execute("SELECT task_id FROM hub_finished")]


async def test_a_task_ends_in_the_file_only_once_its_result_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub killed between the two writes must not keep a task as ended without its
    result (the chaos runner lost results that way): the broker waits for the store."""
    state = tmp_path / "hub.db"
    writing, write = trio.Event(), trio.Event()
    set_encoded_many = SqliteResultBackend.set_encoded_many

    async def slow_disk(
        self: SqliteResultBackend[Any], results: Sequence[tuple[str, EncodedResult]]
    ) -> None:
        writing.set()
        await write.wait()
        await set_encoded_many(self, results)

    monkeypatch.setattr(SqliteResultBackend, "set_encoded_many", slow_disk)
    broker = WebSocketBroker("local://durable-hub", connect_timeout=10)

    @broker.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with trio.open_nursery() as nursery:
        await nursery.start(_hub_until, state, trio.CancelScope())
        with trio.fail_after(30):
            async with broker, open_worker_node(broker):
                handle = await add.kiq(1, 2)
                await writing.wait()
                await trio.sleep(0.5)  # the worker's report of the end reaches the broker
                assert _ended_in(state) == []
                write.set()
                assert await handle == 3
                while not _ended_in(state):
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert _ended_in(state) == [handle.task_id]


async def test_results_that_reach_the_store_together_are_written_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A durable hub's store group-commits: one transaction per batch of results, not per
    result (which bounded a durable hub's throughput); a barrier waits for it."""
    transactions: list[int] = []
    commit = SqliteResultBackend._commit

    def counted(self: SqliteResultBackend[Any], conn: sqlite3.Connection, statements: Any) -> None:
        transactions.append(len(statements))
        commit(self, conn, statements)

    monkeypatch.setattr(SqliteResultBackend, "_commit", counted)
    backend: SqliteResultBackend[Any] = SqliteResultBackend(tmp_path / "hub.db")
    await backend.startup()
    ids = [f"t{n}" for n in range(20)]
    async with Node.open("t") as node:
        store = await node.spawn(lambda: ResultStore(backend, encoded=True))
        for task_id in ids:
            await store.tell(StoreResult(task_id, EncodedResult(task_id.encode(), False)))
        await store.ask(Barrier())
        written = [await backend.is_result_ready(task_id) for task_id in ids]
    await backend.shutdown()
    assert written == [True] * len(ids)
    assert 1 <= len(transactions) <= 2  # two if the store ran between the tells


async def test_a_hub_that_cannot_write_its_file_does_not_acknowledge_kicks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = SqliteQueueStore.__init__

    def full_after_opening(self: SqliteQueueStore, *args: Any) -> None:
        opened(self, *args)
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {pages}")  # "full": see above

    monkeypatch.setattr(SqliteQueueStore, "__init__", full_after_opening)
    broker = WebSocketBroker("local://durable-hub", connect_timeout=1, max_in_flight=2)

    @broker.task
    async def padded(n: int, padding: str) -> int:
        return n

    async with trio.open_nursery() as nursery:
        await nursery.start(_hub_until, tmp_path / "hub.db", trio.CancelScope())
        with trio.fail_after(30):
            async with broker:
                with pytest.raises(SendTaskError, match="full"):
                    await padded.kicker().with_labels(unique=True).kiq(1, "x" * 20_000)
                await padded.kiq(1, "x" * 20_000)
                await padded.kiq(2, "x" * 20_000)
                with pytest.raises(SendTaskError, match="accepted none"):
                    await padded.kiq(3, "")  # the two before it are still not acknowledged
                assert len(broker._unacked) == 2
                broker._unacked.clear()  # do not wait for them at the end
        nursery.cancel_scope.cancel()


async def test_schedules_and_the_queue_share_one_file_whichever_opens_it_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.db"
    source = SqliteScheduleSource(path)
    await source.startup()
    await source.add_schedule(ScheduledTask(task_name="job", cron="* * * * *"))
    queue = _journaled()
    queue.add(_record("queued"))
    state = SqliteQueueStore(path)
    await state.commit(queue, trio.current_time(), WALL)
    state.close()
    assert [schedule.task_name for schedule in await source.get_schedules()] == ["job"]
    await source.shutdown()


async def test_runs_recovered_after_a_broker_actor_crash_go_back_to_their_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker actor crashes on the report of ``quick``'s run, so the file still says
    both tasks run. Rebuilt from it, the broker asks the worker what it holds: ``slow``
    is claimed back and runs once; ``quick``'s run, whose report was lost, is not, and
    runs again once the reclaim window is over. (Real time, short: under autojump_clock
    this durable hub stopped handing out runs, as the other durable-hub tests here.)"""
    finished = BrokerActor._finished
    crashed: list[bool] = []

    async def crash_on_quick(self: BrokerActor, message: Finished) -> None:
        if not crashed and any(run.task_id == "quick" for run in message.runs):
            crashed.append(True)
            raise RuntimeError("the broker actor crashes")
        await finished(self, message)

    monkeypatch.setattr(BrokerActor, "_finished", crash_on_quick)
    execute = WorkerActor._execute
    runs: list[tuple[str, int]] = []

    async def spy(self: WorkerActor, run: Run) -> Any:
        runs.append((run.message.task_id, run.tries))
        return await execute(self, run)

    monkeypatch.setattr(WorkerActor, "_execute", spy)
    broker = WebSocketBroker("local://durable-hub", connect_timeout=10)

    @broker.task
    async def slow() -> str:
        await trio.sleep(1)
        return "slow"

    @broker.task
    async def quick() -> str:
        return "quick"

    async with trio.open_nursery() as nursery:
        await nursery.start(_hub_until, tmp_path / "hub.db", trio.CancelScope(), 2.0)
        with trio.fail_after(60):
            async with broker, open_worker_node(broker):
                handle = await slow.kicker().with_task_id("slow").kiq()
                while not runs:
                    await trio.sleep(0.01)
                await quick.kicker().with_task_id("quick").kiq()
                assert await handle == "slow"
                while len(runs) < 3:
                    await trio.sleep(0.1)
                await trio.sleep(0.5)  # a fourth run would start meanwhile
        nursery.cancel_scope.cancel()
    assert crashed
    assert sorted(runs) == [("quick", 1), ("quick", 2), ("slow", 1)]
