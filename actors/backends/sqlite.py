"""One SQLite file used from trio: SQLite has no trio driver, so each store keeps one
connection and uses it from a worker thread, one call at a time (a limiter of 1)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Literal, TypeVar

import trio

__all__ = ["SqliteFile", "Synchronous"]

T = TypeVar("T")

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class SqliteFile:
    """A lazily opened WAL-mode connection, with ``schema`` applied when it opens."""

    def __init__(
        self, path: str | os.PathLike[str], schema: str, synchronous: Synchronous = "NORMAL"
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"invalid synchronous mode {synchronous!r}")
        self.path = os.fspath(path)
        self._schema = schema
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    def connection(self) -> sqlite3.Connection:
        """The open connection; call only from the thread :meth:`run` uses."""
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                conn.executescript(self._schema)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the worker thread."""
        return await trio.to_thread.run_sync(lambda: fn(self.connection()), limiter=self._limiter)

    async def close(self) -> None:
        await trio.to_thread.run_sync(self._close, limiter=self._limiter)

    def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
