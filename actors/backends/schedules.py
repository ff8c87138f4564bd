"""Schedule sources: task labels, an in-memory dynamic source, and a durable SQLite one.

* :class:`LabelScheduleSource` reads schedules declared on tasks: the ``schedule`` label
  (taskiq's list of dicts) and streaq's ``crontab`` label.
* :class:`InMemoryScheduleSource` holds schedules added at run time (``schedule_by_*``);
  they last as long as the process.
* :class:`SqliteScheduleSource` keeps schedules and claims in one SQLite file, so they
  survive a restart and several schedulers (also in several processes) can share it.

The dynamic sources delete a one-off (``time``) schedule once it has been kicked, as
taskiq's dynamic sources do.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import time as _time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import pendulum

from actors.schedules import (
    SCHEDULE_LABELS,
    CronSpec,
    ScheduledTask,
    ScheduleSource,
    from_micros,
    to_micros,
)
from actors.serializers import JSONSerializer, TaskiqSerializer

from .sqlite import SqliteFile, Synchronous

if TYPE_CHECKING:
    from actors.facade import AsyncBroker

__all__ = ["InMemoryScheduleSource", "LabelScheduleSource", "SqliteScheduleSource"]

log = logging.getLogger("actors.scheduler")

_T = TypeVar("_T")


class LabelScheduleSource(ScheduleSource):
    """Schedules declared on the broker's tasks.

    ``@broker.task(schedule=[{"cron": "*/5 * * * *", "args": [1]}])``: each dict may hold
    ``cron`` (a string or :class:`~actors.schedules.CronSpec`), ``cron_offset``, ``time``
    or ``interval`` (exactly one of those three), ``args``, ``kwargs``, ``labels`` (added
    to the task's own labels), ``schedule_id`` and ``max_schedule_drift``. streaq's
    ``@broker.task(crontab="0 * * * *")`` is read too (``max_schedule_drift=`` on the task
    applies to both). Without ``schedule_id`` a schedule is named ``task:index`` (or
    ``task:crontab``), the same in every process.

    A malformed schedule is logged and left out; the others still run. Schedules cannot be
    added here; :meth:`delete_schedule` switches one off for the life of this object
    (streaq's ``unschedule``). Claims are kept in memory: schedulers in one process
    sharing this object kick each due time once; across processes use the SQLite source.
    """

    def __init__(self, broker: AsyncBroker) -> None:
        self.broker = broker
        self._removed: set[str] = set()

    async def get_schedules(self) -> list[ScheduledTask]:
        schedules: list[ScheduledTask] = []
        for name, task in self.broker.get_all_tasks().items():
            labels = task.labels
            for schedule_id, build in self._declared(name, labels):
                if schedule_id in self._removed:
                    continue
                try:
                    schedules.append(build())
                except (TypeError, ValueError, KeyError) as exc:
                    log.error("task %r: ignoring schedule %r: %s", name, schedule_id, exc)
        return schedules

    def _declared(
        self, name: str, labels: Mapping[str, Any]
    ) -> Iterable[tuple[str, Callable[[], ScheduledTask]]]:
        own = {k: v for k, v in labels.items() if k not in SCHEDULE_LABELS}
        drift = labels.get("max_schedule_drift")
        crontab = labels.get("crontab")
        if crontab:
            schedule_id = f"{name}:crontab"
            yield schedule_id, _label_builder(name, own, drift, schedule_id, {"cron": crontab})
        declared = labels.get("schedule") or []
        if isinstance(declared, Mapping):
            declared = [declared]
        for index, item in enumerate(declared):
            if not isinstance(item, Mapping):
                log.error("task %r: schedule %d is not a dict: %r", name, index, item)
                continue
            schedule_id = str(item.get("schedule_id") or f"{name}:{index}")
            yield schedule_id, _label_builder(name, own, drift, schedule_id, item)

    async def delete_schedule(self, schedule_id: str) -> None:
        self._removed.add(schedule_id)
        self.notify_changed()


def _label_builder(
    name: str, own: dict[str, Any], drift: Any, schedule_id: str, item: Mapping[str, Any]
) -> Callable[[], ScheduledTask]:
    def build() -> ScheduledTask:
        unknown = set(item) - {
            "cron",
            "cron_offset",
            "time",
            "interval",
            "args",
            "kwargs",
            "labels",
            "schedule_id",
            "max_schedule_drift",
        }
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        cron = item.get("cron")
        offset = item.get("cron_offset")
        if isinstance(cron, CronSpec):
            offset = offset if offset is not None else cron.offset
            cron = cron.to_cron()
        return ScheduledTask(
            task_name=name,
            labels={**own, **(item.get("labels") or {})},
            args=list(item.get("args") or ()),
            kwargs=dict(item.get("kwargs") or {}),
            schedule_id=schedule_id,
            cron=cron,
            cron_offset=offset,
            time=item.get("time"),
            interval=item.get("interval"),
            max_schedule_drift=item.get("max_schedule_drift", drift),
        )

    return build


class InMemoryScheduleSource(ScheduleSource):
    """Schedules added at run time, kept in this process (lost when it exits)."""

    def __init__(self, schedules: Iterable[ScheduledTask] = ()) -> None:
        self._schedules = {schedule.schedule_id: schedule for schedule in schedules}

    async def get_schedules(self) -> list[ScheduledTask]:
        return list(self._schedules.values())

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        self._schedules[schedule.schedule_id] = schedule
        self.notify_changed()

    async def delete_schedule(self, schedule_id: str) -> None:
        if self._schedules.pop(schedule_id, None) is not None:
            self.notify_changed()

    async def post_send(self, task: ScheduledTask) -> None:
        if task.one_off:
            await self.delete_schedule(task.schedule_id)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    schedule_id TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_claims (
    schedule_id TEXT PRIMARY KEY,
    last_due INTEGER NOT NULL
);
"""

_CLAIM = """
INSERT INTO schedule_claims (schedule_id, last_due) VALUES (?, ?)
ON CONFLICT (schedule_id) DO UPDATE SET last_due = excluded.last_due
WHERE excluded.last_due > schedule_claims.last_due
"""


class SqliteScheduleSource(ScheduleSource):
    """Schedules and claims in one SQLite file (WAL mode): they survive restarts.

    Several schedulers, in this process or others, may share the file: a due time is
    claimed with one atomic upsert of the schedule's high-water mark, so it is kicked
    once. Changes made through this object wake its schedulers at once; changes made by
    other processes are seen within ``refresh_interval`` seconds.

    Schedules are stored with ``serializer`` (JSON by default), so their arguments must be
    serializable by it. Claims of deleted schedules are dropped at startup once they are
    older than ``claim_retention`` seconds. One connection, used from a worker thread one
    call at a time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: TaskiqSerializer | None = None,
        refresh_interval: float | None = 10.0,
        claim_retention: float = 7 * 86400.0,
        synchronous: Synchronous = "NORMAL",
        clock: Callable[[], float] = _time.time,
    ) -> None:
        self._db = SqliteFile(path, _SCHEMA, synchronous)
        self.path = self._db.path
        self.serializer = serializer if serializer is not None else JSONSerializer()
        self.refresh_interval = refresh_interval
        self.claim_retention = claim_retention
        self._clock = clock

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Every statement goes through here (the scheduler's tests run them inline)."""
        return await self._db.run(fn)

    async def startup(self) -> None:
        """Open (or create) the database and drop stale claims of deleted schedules."""
        horizon = int((self._clock() - self.claim_retention) * 1_000_000)
        await self._run(
            lambda conn: conn.execute(
                "DELETE FROM schedule_claims WHERE last_due < ? AND schedule_id NOT IN "
                "(SELECT schedule_id FROM schedules)",
                (horizon,),
            )
        )

    async def shutdown(self) -> None:
        await self._db.close()

    async def get_schedules(self) -> list[ScheduledTask]:
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT schedule_id, data FROM schedules ORDER BY rowid"
            ).fetchall()
        )
        schedules = []
        for schedule_id, data in rows:
            try:
                schedules.append(ScheduledTask.from_dict(self.serializer.loadb(bytes(data))))
            except Exception as exc:
                log.error("%s: ignoring unreadable schedule %r: %s", self.path, schedule_id, exc)
        return schedules

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        data = self.serializer.dumpb(schedule.to_dict())
        await self._run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO schedules (schedule_id, data) VALUES (?, ?)",
                (schedule.schedule_id, data),
            )
        )
        self.notify_changed()

    async def delete_schedule(self, schedule_id: str) -> None:
        cursor = await self._run(
            lambda conn: conn.execute("DELETE FROM schedules WHERE schedule_id = ?", (schedule_id,))
        )
        if cursor.rowcount:
            self.notify_changed()

    async def post_send(self, task: ScheduledTask) -> None:
        if task.one_off:
            await self.delete_schedule(task.schedule_id)

    async def claim(self, task: ScheduledTask, due: dt.datetime) -> bool:
        micros = to_micros(due)
        cursor = await self._run(lambda conn: conn.execute(_CLAIM, (task.schedule_id, micros)))
        return cursor.rowcount == 1

    async def last_claim(self, task: ScheduledTask) -> pendulum.DateTime | None:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT last_due FROM schedule_claims WHERE schedule_id = ?", (task.schedule_id,)
            ).fetchone()
        )
        return None if row is None else from_micros(int(row[0]))
