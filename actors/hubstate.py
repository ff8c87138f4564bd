"""Where a hub's queue is kept: in memory only, or journaled to one SQLite file.

The broker's :class:`~actors.queue.TaskQueue` stays the authority while the hub runs;
a :class:`SqliteQueueStore` is the journal it is rebuilt from when the broker actor or
the hub process starts again. The queue notes the ids of the tasks that changed
(``TaskQueue.changed``); after each batch of messages the broker calls :meth:`commit`,
which writes those tasks as they are then (or deletes them, and records how they ended,
if they finished) in one transaction, before any kick of the batch is acknowledged.
:class:`MemoryQueueStore` does nothing: a hub without ``--state`` keeps the queue its
broker actor had, as before.
"""

from __future__ import annotations

import datetime
import gc
import os
import sqlite3
from typing import Any

import msgpack
import pendulum
import trio

from .lifecycle import Phase
from .protocol import BrokerMessage
from .queue import TaskQueue, TaskRecord
from .serializers import as_pendulum_utc

__all__ = ["HubStateError", "MemoryQueueStore", "QueueStore", "SqliteQueueStore"]

#: ``PRAGMA application_id`` of a hub's state file: another SQLite file is refused.
APPLICATION_ID = 0x74616374  # "tact"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hub_tasks (task_id TEXT PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_finished (task_id TEXT PRIMARY KEY, succeeded INTEGER)",
)

#: Tables this project's SQLite backends make: a file that holds only these (results, or
#: schedules of a ``SqliteScheduleSource`` opened on it first) may become a state file.
_OUR_TABLES = {"results", "progress", "schedules", "schedule_claims"}

_Row = tuple[str, bytes | None, bool]  # task id, its record (None: finished), succeeded


class HubStateError(Exception):
    """The state file cannot be used: not a hub's, damaged, unreadable or unwritable."""


class QueueStore:
    """The in-memory store: nothing is written, and a restarted broker actor keeps the
    queue it had (see :class:`~actors.broker.BrokerState`)."""

    durable = False

    def load(self, now: float, wall: float, remember_finished: int = 10_000) -> TaskQueue | None:
        """The queue as last committed (``now`` on the trio clock is ``wall`` on the wall
        clock, in epoch seconds); None: keep the one in memory."""
        return None

    async def commit(self, queue: TaskQueue, now: float, wall: pendulum.DateTime) -> None:
        """Make the tasks ``queue`` noted as changed durable."""

    def close(self) -> None:
        """Release the file."""


MemoryQueueStore = QueueStore


class SqliteQueueStore(QueueStore):
    """The queue journaled to a SQLite file in WAL mode.

    ``synchronous`` is SQLite's: ``FULL`` (the default) syncs the write-ahead log at
    every commit, so an acknowledged kick survives a power cut; ``NORMAL`` syncs only at
    checkpoints, which survives a crash of the process (``kill -9``) but may lose the
    last commits on a power cut or a crash of the OS.
    """

    durable = True

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = os.fspath(path)
        self._limiter = trio.CapacityLimiter(1)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise HubStateError(f"cannot open the state file {self.path}: {exc}") from exc
        try:
            self._open(synchronous.upper())
        except sqlite3.Error as exc:
            self._conn.close()
            raise HubStateError(f"cannot use the state file {self.path}: {exc}") from exc
        except HubStateError:
            self._conn.close()
            raise

    def _open(self, synchronous: str) -> None:
        conn = self._conn
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if application_id != APPLICATION_ID:
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if application_id != 0 or not tables <= _OUR_TABLES:
                raise HubStateError(
                    f"{self.path} is a SQLite database, but not a hub's state file "
                    "(refusing to change it)"
                )
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            problems = "; ".join(str(row[0]) for row in check[:3])
            raise HubStateError(f"the state file {self.path} is damaged: {problems}")
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise HubStateError(f"the state file {self.path} cannot use WAL mode")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("BEGIN IMMEDIATE")  # fails at once on a read-only file or directory
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def load(self, now: float, wall: float, remember_finished: int = 10_000) -> TaskQueue:
        """Rebuild the queue: every task as last committed, in the order first kicked.

        Due times and expiries were written as wall-clock instants, so they keep them.
        A task that was running comes back RUNNING with its worker id and tries (see
        :meth:`~actors.broker.BrokerActor._recover`)."""
        collecting = gc.isenabled()
        gc.disable()  # a collection pass over the records made so far every few thousand
        try:
            return self._load(now, wall, remember_finished)
        finally:
            if collecting:
                gc.enable()

    def _load(self, now: float, wall: float, remember_finished: int) -> TaskQueue:
        queue = TaskQueue(remember_finished)
        conn = self._conn
        try:
            for task_id, succeeded in conn.execute(
                "SELECT task_id, succeeded FROM hub_finished ORDER BY rowid DESC LIMIT ?",
                (remember_finished,),
            ).fetchall()[::-1]:
                queue.finished[task_id] = bool(succeeded)
            records = [
                _record(task_id, data, now, wall)
                for task_id, data in conn.execute(
                    "SELECT task_id, data FROM hub_tasks ORDER BY rowid"
                ).fetchall()
            ]
        except (sqlite3.Error, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise HubStateError(f"cannot read the state file {self.path}: {exc}") from exc
        waiting = [record for record in records if record.waiting_on]
        live = {record.message.task_id: record for record in records} if waiting else {}
        for record in waiting:
            assert record.waiting_on is not None
            # A dependency that finished in the same commit as it is not live.
            record.waiting_on &= live.keys()
            for parent_id in record.waiting_on:
                parent = live[parent_id]
                if parent.dependents is None:
                    parent.dependents = []
                parent.dependents.append(record.message.task_id)
        queue.restore(records, now)
        queue.changed = {}
        return queue

    async def commit(self, queue: TaskQueue, now: float, wall: pendulum.DateTime) -> None:
        changed = queue.changed
        if not changed:
            return
        epoch = wall.timestamp()
        rows: list[_Row] = []
        for task_id in changed:
            record = queue.records.get(task_id)
            if record is None:
                rows.append((task_id, None, queue.finished.get(task_id, False)))
            else:
                rows.append((task_id, _pack(record, now, epoch), False))
        changed.clear()
        try:
            await trio.to_thread.run_sync(self._write, rows, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise HubStateError(f"cannot write the state file {self.path}: {exc}") from exc

    def _write(self, rows: list[_Row]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO hub_tasks (task_id, data) VALUES (?, ?) "
                "ON CONFLICT (task_id) DO UPDATE SET data = excluded.data",
                [(task_id, data) for task_id, data, _ in rows if data is not None],
            )
            ended = [(task_id, int(ok)) for task_id, data, ok in rows if data is None]
            if ended:
                conn.executemany("DELETE FROM hub_tasks WHERE task_id = ?", [e[:1] for e in ended])
                conn.executemany(
                    "INSERT OR REPLACE INTO hub_finished (task_id, succeeded) VALUES (?, ?)", ended
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()


def _pack(record: TaskRecord, now: float, epoch: float) -> bytes:
    """A record as msgpack; its timers as wall-clock epoch seconds."""
    message = record.message
    due = None if record.due is None else record.due.timestamp()
    eta = None if record.eta is None else epoch + record.eta - now
    expire = None if record.expire_at is None else epoch + record.expire_at - now
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            message.task_name,
            message.message,
            message.labels,
            record.phase.value,
            record.priority,
            record.tries,
            due,
            eta,
            expire,
            sorted(record.waiting_on) if record.waiting_on else None,
            record.unique_key,
            record.enqueue_time.timestamp(),
            record.worker_id,
        ],
        datetime=True,
    )


def _instant(epoch: float) -> pendulum.DateTime:
    """``pendulum.from_timestamp``, thirty times faster (a restart builds millions)."""
    return as_pendulum_utc(datetime.datetime.fromtimestamp(epoch, datetime.UTC))


def _record(task_id: str, data: bytes, now: float, wall: float) -> TaskRecord:
    fields: list[Any] = msgpack.unpackb(data, timestamp=3)
    name, body, labels, _, priority, tries, due, eta, expire, waiting, key, enqueued = fields[:12]
    record = TaskRecord(
        BrokerMessage(task_id, name, body, labels),
        Phase.WAITING,
        priority,
        0,
        tries,
        None if due is None else _instant(due),
        None if eta is None else now + (eta - wall),
        None if expire is None else now + (expire - wall),
        set(waiting) if waiting else None,
        None,
        key,
        _instant(enqueued),
    )
    if fields[3] == "running":  # its worker may claim it back (see BrokerActor._recover)
        record.worker_id = fields[12]
    return record
