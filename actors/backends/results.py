"""Result backends: where finished tasks' results (and running tasks' progress) are kept.

The interface is taskiq's ``AsyncResultBackend``, so a backend written for taskiq plugs in
unchanged; the result store actor wraps whichever backend is configured and pushes results
to waiters, so backends only store and fetch.

A hub runs no user code, so it keeps results as the bytes the worker encoded
(:class:`~actors.protocol.EncodedResult`): through an :class:`EncodedResultBackend`, which
the built-in backends are. Any other backend is wrapped in :class:`DecodedResults`, which
hands it results rebuilt from those bytes.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal

import attrs
import trio
from typing_extensions import TypeVar

from actors.exceptions import (
    ResultBackendError,
    ResultGetError,
    ResultIsReadyError,
)
from actors.protocol import EncodedResult
from actors.result import TaskiqResult, TaskProgress, result_from_wire, result_to_wire
from actors.serializers import JSONSerializer, TaskiqSerializer

from .sqlite import SqliteFile, Synchronous

__all__ = [
    "AsyncResultBackend",
    "DecodedResults",
    "DummyResultBackend",
    "EncodedResultBackend",
    "InmemoryResultBackend",
    "SqliteResultBackend",
]

_ReturnT = TypeVar("_ReturnT", default=Any)
_T = TypeVar("_T")

_DEFAULT_PROGRESS_LIMIT = 10_000

#: ``InmemoryResultBackend``'s bound on the memory its results take, by default.
DEFAULT_MAX_MEMORY = 256 * 1024 * 1024
#: What a result object counts besides its return value (an estimate).
_OBJECT_BYTES = 512


class AsyncResultBackend(ABC, Generic[_ReturnT]):
    """Stores results by task id. Subclasses must implement set/get/is_ready.

    The defaults: ``startup``/``shutdown`` do nothing; progress is kept in memory (the most
    recent 10,000 task ids); ``delete_result`` forgets only that progress.
    """

    _default_progress: OrderedDict[str, TaskProgress[Any]] | None = None

    async def startup(self) -> None:
        """Open connections; called once before use."""

    async def shutdown(self) -> None:
        """Release connections; called once after use."""

    @abstractmethod
    async def set_result(self, task_id: str, result: TaskiqResult[_ReturnT]) -> None:
        """Store (or replace) the result of ``task_id``."""

    @abstractmethod
    async def is_result_ready(self, task_id: str) -> bool:
        """Whether a result for ``task_id`` is stored."""

    @abstractmethod
    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[_ReturnT]:
        """The stored result; raises ``ResultGetError`` if there is none."""

    async def mark_read(self, task_id: str) -> None:
        """The result was handed to a reader without ``get_result``: a waiter present when
        it was stored, or the client that kicked the task (a push). A backend that keeps
        unread results longer (``InmemoryResultBackend``) may now evict it first."""

    async def delete_result(self, task_id: str) -> None:
        """Forget the result and progress of ``task_id`` (no error if unknown)."""
        if self._default_progress is not None:
            self._default_progress.pop(task_id, None)

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        """Store the latest progress report of a running task."""
        if self._default_progress is None:
            self._default_progress = OrderedDict()
        store = self._default_progress
        store[task_id] = progress
        store.move_to_end(task_id)
        while len(store) > _DEFAULT_PROGRESS_LIMIT:
            store.popitem(last=False)

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        """The latest progress report, or None if there is none."""
        if self._default_progress is None:
            return None
        return self._default_progress.get(task_id)


class EncodedResultBackend(AsyncResultBackend[_ReturnT]):
    """A backend that also keeps results encoded, as a hub stores them (it has not the
    user's types to rebuild them with)."""

    #: Whether ``set_encoded_many`` costs about what one ``set_encoded`` does (one
    #: transaction): the result store then writes the results of a batch together.
    writes_together = False

    @abstractmethod
    async def set_encoded(self, task_id: str, result: EncodedResult) -> None:
        """Store (or replace) the encoded result of ``task_id``."""

    async def set_encoded_many(self, results: Sequence[tuple[str, EncodedResult]]) -> None:
        """Store several encoded results, by default one at a time."""
        for task_id, result in results:
            await self.set_encoded(task_id, result)

    @abstractmethod
    async def get_encoded(self, task_id: str) -> EncodedResult:
        """The encoded result; raises ``ResultGetError`` if there is none."""


class DecodedResults(EncodedResultBackend[Any]):
    """A user's ``AsyncResultBackend`` on a hub: each encoded result is rebuilt with
    ``result_from_wire`` and ``serializer`` (the hub's, which the clients use) before
    ``set_result``, and what ``get_result`` returns is encoded again.

    The hub has no user types: a rebuilt ``return_value`` is the serializer's plain data
    (dicts, lists, strings, numbers for JSON), and an error of a type the hub cannot
    import is a ``RemoteTaskError``. Clients rebuild their types from it as usual.
    """

    def __init__(self, backend: AsyncResultBackend[Any], serializer: TaskiqSerializer) -> None:
        self.backend = backend
        self.serializer = serializer

    async def startup(self) -> None:
        await self.backend.startup()

    async def shutdown(self) -> None:
        await self.backend.shutdown()

    async def set_encoded(self, task_id: str, result: EncodedResult) -> None:
        await self.backend.set_result(task_id, result_from_wire(result.data, self.serializer))

    async def get_encoded(self, task_id: str) -> EncodedResult:
        result = await self.backend.get_result(task_id)
        return EncodedResult(result_to_wire(result, self.serializer), result.is_err)

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        await self.backend.set_result(task_id, result)

    async def is_result_ready(self, task_id: str) -> bool:
        return await self.backend.is_result_ready(task_id)

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        return await self.backend.get_result(task_id, with_logs=with_logs)

    async def mark_read(self, task_id: str) -> None:
        await self.backend.mark_read(task_id)

    async def delete_result(self, task_id: str) -> None:
        await self.backend.delete_result(task_id)

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        await self.backend.set_progress(task_id, progress)

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        return await self.backend.get_progress(task_id)


class InmemoryResultBackend(EncodedResultBackend[_ReturnT]):
    """Keeps results in memory until they are read, then the last ``max_stored_results``
    read (-1: all of them).

    An unread result is kept until it is read or deleted (its ``ttl``), so gathering many
    tasks needs no setting. All results together are bounded by ``max_memory`` bytes
    (None: no bound): beyond it the results read longest ago go first, and only then the
    oldest unread ones. An encoded result (a hub's) counts its bytes; a result object
    counts an estimate, 512 bytes plus the shallow size of its return value. A result is
    read by ``get_result``/``get_encoded`` or ``mark_read``; storing it again makes it
    unread. Operations complete without yielding to the scheduler.
    """

    def __init__(
        self, max_stored_results: int = 100, max_memory: int | None = DEFAULT_MAX_MEMORY
    ) -> None:
        if max_stored_results < -1:
            raise ValueError("max_stored_results must be -1 (unlimited) or >= 0")
        if max_memory is not None and max_memory < 0:
            raise ValueError("max_memory must be None (unlimited) or >= 0")
        self.max_stored_results = max_stored_results
        self.max_memory = max_memory
        self.results: dict[str, TaskiqResult[_ReturnT] | EncodedResult] = {}
        self.progress: OrderedDict[str, TaskProgress[Any]] = OrderedDict()
        #: Result ids with their sizes, oldest first: not read yet, and read.
        self._unread: OrderedDict[str, int] = OrderedDict()
        self._read: OrderedDict[str, int] = OrderedDict()
        #: Bytes the results count (see the class docstring).
        self.memory = 0

    def _put(self, store: OrderedDict[str, _T], key: str, value: _T) -> None:
        store[key] = value
        store.move_to_end(key)
        if self.max_stored_results != -1:
            while len(store) > self.max_stored_results:
                store.popitem(last=False)

    def _keep(self, task_id: str, result: TaskiqResult[_ReturnT] | EncodedResult) -> None:
        if task_id in self.results:  # stored again: it counts as new
            self._forget(task_id)
        if isinstance(result, EncodedResult):
            size = len(result.data)
        else:
            size = _OBJECT_BYTES + sys.getsizeof(result.return_value, 0)
        self.results[task_id] = result
        self._unread[task_id] = size
        self.memory += size
        if self.max_memory is not None:
            while self.memory > self.max_memory:
                oldest = self._read or self._unread
                self._forget(next(iter(oldest)))

    def _forget(self, task_id: str) -> None:
        if self.results.pop(task_id, None) is not None:
            size = self._unread.pop(task_id, None)
            if size is None:
                size = self._read.pop(task_id)
            self.memory -= size

    def _mark_read(self, task_id: str) -> None:
        size = self._unread.pop(task_id, None)
        if size is None:
            size = self._read.pop(task_id, None)
            if size is None:
                return
        self._read[task_id] = size
        if self.max_stored_results != -1:
            while len(self._read) > self.max_stored_results:
                self._forget(next(iter(self._read)))

    async def set_result(self, task_id: str, result: TaskiqResult[_ReturnT]) -> None:
        self._keep(task_id, result)

    async def set_encoded(self, task_id: str, result: EncodedResult) -> None:
        self._keep(task_id, result)

    async def is_result_ready(self, task_id: str) -> bool:
        return task_id in self.results

    async def mark_read(self, task_id: str) -> None:
        self._mark_read(task_id)

    def _read_as(self, task_id: str, kind: type[_T]) -> _T:
        result = self.results.get(task_id)
        if not isinstance(result, kind):  # none, or kept the other way (encoded or not)
            raise ResultGetError(f"No result stored for task {task_id!r}")
        self._mark_read(task_id)
        return result

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[_ReturnT]:
        return self._read_as(task_id, TaskiqResult)

    async def get_encoded(self, task_id: str) -> EncodedResult:
        return self._read_as(task_id, EncodedResult)

    async def delete_result(self, task_id: str) -> None:
        self._forget(task_id)
        self.progress.pop(task_id, None)

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        self._put(self.progress, task_id, progress)

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        return self.progress.get(task_id)


class DummyResultBackend(EncodedResultBackend[_ReturnT]):
    """Stores nothing: for brokers whose callers never read results."""

    async def set_result(self, task_id: str, result: TaskiqResult[_ReturnT]) -> None:
        pass

    async def set_encoded(self, task_id: str, result: EncodedResult) -> None:
        pass

    async def is_result_ready(self, task_id: str) -> bool:
        return False

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[_ReturnT]:
        raise ResultGetError(f"DummyResultBackend stores no results (task {task_id!r})")

    async def get_encoded(self, task_id: str) -> EncodedResult:
        raise ResultGetError(f"DummyResultBackend stores no results (task {task_id!r})")

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        pass

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        return None


# --- SQLite -------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS results_expiry ON results (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS progress (
    task_id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS progress_expiry ON progress (expires_at)
    WHERE expires_at IS NOT NULL;
"""

_Statement = tuple[str, tuple[Any, ...]]
_PURGE_EVERY_WRITES = 1000


@attrs.define(eq=False)
class _Batch:
    """Writes waiting to be committed together; every writer waits for its batch."""

    statements: list[_Statement] = attrs.field(factory=list)
    done: bool = False
    error: BaseException | None = None


def _ttl_from_labels(labels: dict[str, Any]) -> float | None:
    """A positive ``ttl`` label in seconds (number or numeric string), else None."""
    raw = labels.get("ttl")
    if raw is None or isinstance(raw, bool):
        return None
    try:
        ttl = float(raw)
    except (TypeError, ValueError):
        return None
    return ttl if ttl > 0 else None


class SqliteResultBackend(EncodedResultBackend[_ReturnT]):
    """Durable results in one SQLite file (WAL mode): they survive a restart of the process.

    Results are stored as ``result_to_wire`` bytes made with ``serializer`` (JSON by
    default; on a hub, give it the hub's serializer: encoded results are stored as they
    come). Each result may expire: ``ttl`` given to ``set_result``, else a positive
    ``ttl`` label on the result, else ``result_ttl`` (None: kept until deleted). Expired
    rows are invisible, removed when read, at startup, and every 1000 writes.

    One connection, used from a worker thread one call at a time (``CapacityLimiter(1)``);
    concurrent writes are committed together in one transaction, and ``set_result``
    returns once its write is committed. ``clock`` returns wall-clock seconds (expiry
    must survive restarts); tests may pass a fake one.
    """

    writes_together = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: TaskiqSerializer | None = None,
        result_ttl: float | None = None,
        synchronous: Synchronous = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = SqliteFile(path, _SCHEMA, synchronous)
        self.path = self._db.path
        self.serializer = serializer if serializer is not None else JSONSerializer()
        self.result_ttl = result_ttl
        self._clock = clock
        self._write_lock = trio.Lock()
        self._batch = _Batch()
        self._writes_since_purge = 0

    # The methods taking ``conn`` run in the database's worker thread.

    def _commit(self, conn: sqlite3.Connection, statements: Sequence[_Statement]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _purge(self, conn: sqlite3.Connection) -> int:
        now = self._clock()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute("DELETE FROM results WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM progress WHERE expires_at <= ?", (now,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return cur.rowcount

    def _fetch(
        self, conn: sqlite3.Connection, table: Literal["results", "progress"], task_id: str
    ) -> bytes | None:
        row = conn.execute(
            f"SELECT data, expires_at FROM {table} WHERE task_id = ?", (task_id,)
        ).fetchone()
        if row is None:
            return None
        data, expires_at = row
        if expires_at is not None and expires_at <= self._clock():
            conn.execute(f"DELETE FROM {table} WHERE task_id = ?", (task_id,))
            return None
        return bytes(data)

    async def _flush(self) -> None:
        """Commit the open batch; the caller holds ``_write_lock``."""
        batch, self._batch = self._batch, _Batch()
        try:
            await self._db.run(lambda conn: self._commit(conn, batch.statements))
        except Exception as exc:  # _write raises it to every writer of the batch
            batch.error = exc
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            batch.done = True

    async def _write(self, *statements: _Statement) -> None:
        batch = self._batch
        batch.statements.extend(statements)
        self._writes_since_purge += 1
        if self._writes_since_purge >= _PURGE_EVERY_WRITES:
            self._writes_since_purge = 0
            now = self._clock()
            batch.statements.append(("DELETE FROM results WHERE expires_at <= ?", (now,)))
            batch.statements.append(("DELETE FROM progress WHERE expires_at <= ?", (now,)))
        async with self._write_lock:
            if not batch.done:
                await self._flush()
        if batch.error is not None:
            raise ResultBackendError(f"SQLite write failed: {batch.error}") from batch.error

    def _expires_at(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    async def startup(self) -> None:
        """Open (or create) the database and drop expired rows."""
        try:
            await self._db.run(self._purge)
        except sqlite3.Error as exc:
            raise ResultBackendError(f"Cannot open result store {self.path!r}: {exc}") from exc

    async def shutdown(self) -> None:
        """Commit pending writes and close the connection (reopened on next use)."""
        async with self._write_lock:
            batch = self._batch
            try:
                if batch.statements:
                    await self._flush()
            finally:
                await self._db.close()
        if batch.error is not None:
            raise ResultBackendError(f"SQLite write failed: {batch.error}") from batch.error

    async def purge_expired(self) -> int:
        """Delete expired results and progress now; returns how many results went."""
        return await self._db.run(self._purge)

    async def set_result(
        self, task_id: str, result: TaskiqResult[_ReturnT], *, ttl: float | None = None
    ) -> None:
        """Store the result; raises ``SerializationError`` before writing if it cannot be."""
        data = result_to_wire(result, self.serializer)
        if ttl is None:
            ttl = _ttl_from_labels(result.labels)
        await self._store(task_id, data, ttl)

    async def set_encoded(self, task_id: str, result: EncodedResult) -> None:
        """Store the bytes as they are (the store deletes them when a ``ttl`` label ends)."""
        await self._store(task_id, result.data, None)

    async def set_encoded_many(self, results: Sequence[tuple[str, EncodedResult]]) -> None:
        """Store them all in one transaction."""
        await self._write(
            *(
                statement
                for task_id, result in results
                for statement in self._storing(task_id, result.data, None)
            )
        )

    async def _store(self, task_id: str, data: bytes, ttl: float | None) -> None:
        await self._write(*self._storing(task_id, data, ttl))

    def _storing(self, task_id: str, data: bytes, ttl: float | None) -> list[_Statement]:
        expires_at = self._expires_at(self.result_ttl if ttl is None else ttl)
        return [
            (
                "INSERT OR REPLACE INTO results (task_id, data, expires_at) VALUES (?, ?, ?)",
                (task_id, data, expires_at),
            ),
            # The task's progress report lives as long as its result.
            ("UPDATE progress SET expires_at = ? WHERE task_id = ?", (expires_at, task_id)),
        ]

    async def is_result_ready(self, task_id: str) -> bool:
        try:
            return (
                await self._db.run(lambda conn: self._fetch(conn, "results", task_id)) is not None
            )
        except sqlite3.Error as exc:
            raise ResultIsReadyError(f"SQLite read failed: {exc}") from exc

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[_ReturnT]:
        """The stored result; a row that cannot be decoded gives an error result."""
        result = result_from_wire(await self._fetch_result(task_id), self.serializer)
        if not result.task_id:
            result.task_id = task_id
        return result

    async def _fetch_result(self, task_id: str) -> bytes:
        try:
            data = await self._db.run(lambda conn: self._fetch(conn, "results", task_id))
        except sqlite3.Error as exc:
            raise ResultGetError(f"SQLite read failed: {exc}") from exc
        if data is None:
            raise ResultGetError(f"No result stored for task {task_id!r}")
        return data

    async def get_encoded(self, task_id: str) -> EncodedResult:
        data = await self._fetch_result(task_id)
        return EncodedResult(data, result_from_wire(data, self.serializer).is_err)

    async def delete_result(self, task_id: str) -> None:
        await self._write(
            ("DELETE FROM results WHERE task_id = ?", (task_id,)),
            ("DELETE FROM progress WHERE task_id = ?", (task_id,)),
        )

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        data = self.serializer.dumpb(progress.to_dict())
        await self._write(
            (
                "INSERT OR REPLACE INTO progress (task_id, data, expires_at) VALUES (?, ?, ?)",
                (task_id, data, self._expires_at(self.result_ttl)),
            )
        )

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        """The latest progress; None if there is none or it cannot be decoded."""
        try:
            data = await self._db.run(lambda conn: self._fetch(conn, "progress", task_id))
        except sqlite3.Error as exc:
            raise ResultGetError(f"SQLite read failed: {exc}") from exc
        if data is None:
            return None
        try:
            return TaskProgress.from_dict(self.serializer.loadb(data))
        except Exception:
            return None
