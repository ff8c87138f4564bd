"""Result backends: in-memory eviction, the dummy backend, defaults, and durable SQLite."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import pendulum
import pytest
import trio

from actors.backends import (
    AsyncResultBackend,
    DummyResultBackend,
    InmemoryResultBackend,
    SqliteResultBackend,
)
from actors.exceptions import ResultGetError, SerializationError
from actors.protocol import EncodedResult
from actors.result import TaskiqResult, TaskProgress, result_to_wire
from actors.serializers import MsgpackSerializer


class LedgerError(Exception):
    """Defined at module level, so it comes back with its own type."""


def ok(task_id: str, value: Any = None) -> TaskiqResult[Any]:
    return TaskiqResult(is_err=False, return_value=value, task_id=task_id)


@attrs.define
class FakeClock:
    """Wall-clock stand-in for expiry tests."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# --- in memory -----------------------------------------------------------------------------


async def test_inmemory_set_get_ready_delete() -> None:
    backend = InmemoryResultBackend()
    assert not await backend.is_result_ready("a")
    await backend.set_result("a", ok("a", 1))
    assert await backend.is_result_ready("a")
    assert (await backend.get_result("a")).return_value == 1
    await backend.delete_result("a")
    assert not await backend.is_result_ready("a")
    with pytest.raises(ResultGetError, match="'a'"):
        await backend.get_result("a")


async def test_inmemory_evicts_oldest_first() -> None:
    backend = InmemoryResultBackend(max_stored_results=3)
    for task_id in "abc":
        await backend.set_result(task_id, ok(task_id))
    await backend.set_result("a", ok("a", "again"))  # storing again makes "a" the newest
    await backend.set_result("d", ok("d"))
    assert list(backend.results) == ["c", "a", "d"]
    assert not await backend.is_result_ready("b")
    await backend.set_result("e", ok("e"))
    assert not await backend.is_result_ready("c")
    assert (await backend.get_result("a")).return_value == "again"


async def test_inmemory_unlimited() -> None:
    backend = InmemoryResultBackend(max_stored_results=-1)
    for i in range(1000):
        await backend.set_result(str(i), ok(str(i), i))
    assert len(backend.results) == 1000
    assert (await backend.get_result("0")).return_value == 0


async def test_inmemory_progress_and_bad_limit() -> None:
    backend = InmemoryResultBackend(max_stored_results=1)
    assert await backend.get_progress("p") is None
    await backend.set_progress("p", TaskProgress(progress=0.5))
    assert await backend.get_progress("p") == TaskProgress(progress=0.5)
    await backend.set_progress("q", TaskProgress(progress=0.1))
    assert await backend.get_progress("p") is None  # progress is bounded too
    await backend.delete_result("q")
    assert await backend.get_progress("q") is None
    with pytest.raises(ValueError):
        InmemoryResultBackend(max_stored_results=-2)


# --- dummy and defaults --------------------------------------------------------------------


async def test_dummy_stores_nothing() -> None:
    backend = DummyResultBackend()
    await backend.startup()
    await backend.set_result("a", ok("a", 1))
    assert not await backend.is_result_ready("a")
    with pytest.raises(ResultGetError):
        await backend.get_result("a")
    await backend.set_progress("a", TaskProgress(progress=0.3))
    assert await backend.get_progress("a") is None
    await backend.delete_result("a")
    await backend.shutdown()


class DictBackend(AsyncResultBackend[Any]):
    """A user's minimal backend, as in taskiq's docs: only the three required methods."""

    def __init__(self) -> None:
        self.store: dict[str, TaskiqResult[Any]] = {}

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        self.store[task_id] = result

    async def is_result_ready(self, task_id: str) -> bool:
        return task_id in self.store

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        return self.store[task_id]


async def test_user_backend_gets_working_defaults() -> None:
    backend = DictBackend()
    await backend.startup()
    assert await backend.get_progress("t") is None
    await backend.set_progress("t", TaskProgress(progress=0.9, message="almost"))
    progress = await backend.get_progress("t")
    assert progress is not None and progress.message == "almost"
    await backend.delete_result("t")
    assert await backend.get_progress("t") is None
    await backend.shutdown()


def test_required_methods_are_abstract() -> None:
    class Incomplete(AsyncResultBackend[Any]):
        async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


# --- SQLite --------------------------------------------------------------------------------


async def test_sqlite_roundtrip_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    backend = SqliteResultBackend(path)
    await backend.startup()
    when = pendulum.datetime(2024, 5, 1, 8, tz="Australia/Sydney")
    await backend.set_result("a", ok("a", {"when": when}))
    assert await backend.is_result_ready("a")
    assert not await backend.is_result_ready("zzz")
    back = await backend.get_result("a")
    assert back.return_value == {"when": when}
    assert back.return_value["when"].timezone_name == "Australia/Sydney"
    with pytest.raises(ResultGetError):
        await backend.get_result("zzz")
    await backend.shutdown()
    with closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_keeps_encoded_results_as_they_come(tmp_path: Path) -> None:
    backend = SqliteResultBackend(tmp_path / "r.db")
    failed = attrs.evolve(ok("t", None), is_err=True, error=LedgerError("short"))
    data = result_to_wire(failed, backend.serializer)
    await backend.set_encoded("t", EncodedResult(data, is_err=True))
    assert await backend.is_result_ready("t")
    assert await backend.get_encoded("t") == EncodedResult(data, is_err=True)
    assert isinstance((await backend.get_result("t")).error, LedgerError)
    await backend.shutdown()


async def test_sqlite_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    first = SqliteResultBackend(path)
    await first.startup()
    await first.set_result("ok", ok("ok", [1, 2, 3]))
    failed = TaskiqResult(is_err=True, return_value=None, error=LedgerError("unbalanced"))
    await first.set_result("bad", failed)
    await first.set_progress("ok", TaskProgress(progress=1.0, status="DONE", meta={"n": 3}))
    await first.shutdown()

    second = SqliteResultBackend(path)
    await second.startup()
    assert (await second.get_result("ok")).return_value == [1, 2, 3]
    bad = await second.get_result("bad")
    assert bad.is_err and type(bad.error) is LedgerError
    assert bad.task_id == "bad"  # the key fills in an id the result did not carry
    with pytest.raises(LedgerError, match="unbalanced"):
        bad.raise_for_error()
    assert await second.get_progress("ok") == TaskProgress(
        progress=1.0, status="DONE", meta={"n": 3}
    )
    await second.delete_result("ok")
    assert not await second.is_result_ready("ok")
    assert await second.get_progress("ok") is None
    await second.shutdown()


async def test_sqlite_reopens_after_shutdown(tmp_path: Path) -> None:
    backend = SqliteResultBackend(tmp_path / "r.db")
    await backend.set_result("a", ok("a", 1))  # no startup: opens on first use
    await backend.shutdown()
    assert (await backend.get_result("a")).return_value == 1
    await backend.shutdown()


async def test_sqlite_unserializable_result_is_not_stored(tmp_path: Path) -> None:
    backend = SqliteResultBackend(tmp_path / "r.db")
    with pytest.raises(SerializationError, match="object"):
        await backend.set_result("a", ok("a", object()))
    assert not await backend.is_result_ready("a")
    await backend.shutdown()


async def test_sqlite_corrupt_row_gives_error_result(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    backend = SqliteResultBackend(path)
    await backend.startup()
    await backend.shutdown()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO results VALUES ('x', ?, NULL)", (b"\x00garbage",))
    back = await backend.get_result("x")
    assert back.is_err and isinstance(back.error, SerializationError)
    assert back.task_id == "x"
    await backend.shutdown()


async def test_sqlite_ttl_sources_and_purge(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    clock = FakeClock()
    backend = SqliteResultBackend(path, result_ttl=100.0, clock=clock)
    await backend.startup()
    await backend.set_result("default", ok("default"))  # expires at +100
    labelled = TaskiqResult(is_err=False, return_value=1, labels={"ttl": "10"})
    await backend.set_result("label", labelled)  # expires at +10
    await backend.set_result("explicit", ok("explicit"), ttl=1000.0)  # expires at +1000
    await backend.set_progress("default", TaskProgress(progress=0.5))

    clock.now += 50
    assert not await backend.is_result_ready("label")
    with pytest.raises(ResultGetError):
        await backend.get_result("label")
    assert await backend.is_result_ready("default")

    clock.now += 100
    assert await backend.purge_expired() == 1  # "default"; "label" went on read
    assert await backend.get_progress("default") is None
    assert await backend.is_result_ready("explicit")
    await backend.shutdown()
    with closing(sqlite3.connect(path)) as conn, conn:
        rows = conn.execute("SELECT task_id FROM results").fetchall()
    assert rows == [("explicit",)]


async def test_sqlite_without_ttl_keeps_results(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = SqliteResultBackend(tmp_path / "r.db", clock=clock)
    await backend.set_result("a", ok("a"))
    clock.now += 10 * 365 * 86400
    await backend.startup()  # startup purges expired rows; this one has no expiry
    assert await backend.is_result_ready("a")
    await backend.shutdown()


async def test_sqlite_concurrent_writes_all_committed(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    backend = SqliteResultBackend(path, serializer=MsgpackSerializer())
    await backend.startup()
    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(backend.set_result, f"t{i}", ok(f"t{i}", i))
    assert [(await backend.get_result(f"t{i}")).return_value for i in range(200)] == list(
        range(200)
    )
    await backend.shutdown()
    with closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 200
