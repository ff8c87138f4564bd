"""Schedules: what to kick and when, where schedules come from, and ``schedule_by_*``.

A :class:`ScheduledTask` names a task, its arguments and labels, and exactly one of: a
``cron`` expression (read in ``cron_offset``, a zone name or a fixed offset, UTC by
default), a one-off ``time``, or an ``interval``. It computes its own *due times*; the
scheduler actor (:mod:`actors.scheduler`) sleeps until the earliest one and kicks.

A :class:`ScheduleSource` holds schedules (taskiq's interface: ``startup``, ``shutdown``,
``get_schedules``, ``add_schedule``, ``delete_schedule``, ``pre_send``, ``post_send``) plus
two things the scheduler relies on:

* ``claim(task, due)``: the source records that ``due`` of ``task`` is taken and answers
  whether this caller took it. Claims are a per-schedule high-water mark, so a due time is
  kicked at most once however many schedulers read the source, and never out of order.
  The default keeps the mark in memory (enough for schedulers sharing one source object in
  one process); the SQLite source keeps it in the database.
* ``notify_changed()``: wakes every scheduler reading the source (``add_schedule`` and
  ``delete_schedule`` of the built-in sources call it), so a sleeping scheduler sees a new
  schedule at once. ``refresh_interval`` makes schedulers also re-read the source that
  often, for changes made elsewhere (another process writing the same SQLite file).

Sources themselves live in :mod:`actors.backends.schedules`.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pendulum
import trio

from . import cron as _cron
from .exceptions import TaskiqError
from .result import as_seconds

if TYPE_CHECKING:
    from .tasks import AsyncKicker, AsyncTaskiqTask

__all__ = [
    "SCHEDULE_LABELS",
    "CreatedSchedule",
    "CronSpec",
    "ScheduleSource",
    "ScheduledTask",
    "ScheduledTaskCancelledError",
    "schedule_by_cron",
    "schedule_by_interval",
    "schedule_by_time",
]

#: Task labels that describe schedules; they are not sent with the kicked task.
SCHEDULE_LABELS = ("schedule", "crontab", "max_schedule_drift")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


class ScheduledTaskCancelledError(TaskiqError):
    """Raised by a source's ``pre_send`` to skip one kick of a schedule (as in taskiq)."""


# Values -------------------------------------------------------------------------------


def to_micros(when: dt.datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float)."""
    return calendar.timegm(when.utctimetuple()) * 1_000_000 + when.microsecond


def from_micros(micros: int) -> pendulum.DateTime:
    """Inverse of :func:`to_micros`, in UTC."""
    return pendulum.instance(_EPOCH + dt.timedelta(microseconds=micros))


def _time(value: dt.datetime | str | None) -> pendulum.DateTime | None:
    """An aware ``pendulum.DateTime``; naive values and strings without offset are UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=dt.UTC)
    return pendulum.instance(value)


def _as_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


def _as_list(value: Iterable[Any]) -> list[Any]:
    return list(value)


def _offset(value: str | dt.timedelta | None) -> str | dt.timedelta | None:
    if isinstance(value, dt.timedelta) and type(value) is not dt.timedelta:
        # pendulum.Duration redefines arithmetic; keep a plain, comparable timedelta.
        return dt.timedelta(seconds=value.total_seconds())
    return value


@attrs.frozen(kw_only=True)
class CronSpec:
    """A cron expression by fields (taskiq's ``CronSpec``), plus optional seconds.

    ``CronSpec(minutes=30, hours=2, offset="Europe/Paris")`` is ``"30 2 * * *"`` read in
    Paris time; with ``seconds`` set it becomes a six-field expression, seconds first.
    """

    seconds: str | int | None = None
    minutes: str | int = "*"
    hours: str | int = "*"
    days: str | int = "*"
    months: str | int = "*"
    weekdays: str | int = "*"
    offset: str | dt.timedelta | None = None

    def to_cron(self) -> str:
        fields = [self.minutes, self.hours, self.days, self.months, self.weekdays]
        if self.seconds is not None:
            fields.insert(0, self.seconds)
        return " ".join(str(field) for field in fields)


@attrs.frozen(kw_only=True)
class ScheduledTask:
    """One schedule: which task to kick, with what, and when.

    Exactly one of ``cron``, ``time`` and ``interval`` is set.

    * ``cron``: 5 fields, or 6 with seconds first; read in ``cron_offset`` (an IANA zone
      name such as ``"Europe/Paris"``, or a fixed ``timedelta`` from UTC; UTC if None).
    * ``time``: a one-off moment (naive values are UTC). It fires once, also when it is
      already past when the scheduler first sees it.
    * ``interval``: seconds (or a ``timedelta``). Due times are the multiples of the
      interval since the Unix epoch, so every scheduler agrees on them: an interval of 10
      fires at :00, :10, :20 ... of each minute.

    ``max_schedule_drift`` (seconds) bounds how late a cron or interval due time may be
    kicked. A scheduler that starts never reaches back before now for a schedule without
    one; a schedule with one resumes after its last claimed due time and gets each due
    time missed while no scheduler ran kicked once, as far back as the bound (a backlog
    it asked for). While running, a due time the scheduler gets to later than the bound
    (it stalled, the wall clock jumped) is skipped; there the scheduler's own bound (1
    second by default) applies when it is larger.
    """

    task_name: str
    labels: dict[str, Any] = attrs.field(factory=dict, converter=_as_dict)
    args: list[Any] = attrs.field(factory=list, converter=_as_list)
    kwargs: dict[str, Any] = attrs.field(factory=dict, converter=_as_dict)
    schedule_id: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    cron: str | None = None
    cron_offset: str | dt.timedelta | None = attrs.field(default=None, converter=_offset)
    time: pendulum.DateTime | None = attrs.field(default=None, converter=_time)
    interval: float | None = attrs.field(default=None, converter=as_seconds)
    max_schedule_drift: float | None = attrs.field(default=None, converter=as_seconds)

    def __attrs_post_init__(self) -> None:
        kinds = [name for name in ("cron", "time", "interval") if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"schedule {self.schedule_id!r} of {self.task_name!r} needs exactly one of "
                f"cron, time and interval; got {kinds or 'none'}"
            )
        if self.cron is not None:
            object.__setattr__(self, "cron", _cron.validate(self.cron))
            _cron.zone_of(self.cron_offset)
        if self.interval is not None and not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError(f"interval must be a positive number of seconds, not {self.interval}")
        if self.max_schedule_drift is not None and self.max_schedule_drift < 0:
            raise ValueError("max_schedule_drift must not be negative")

    @property
    def one_off(self) -> bool:
        return self.time is not None

    # Due times -------------------------------------------------------------------------

    def next_due(self, after: dt.datetime) -> pendulum.DateTime | None:
        """The first due time strictly after ``after`` (None once a one-off is past).

        Due times are in UTC: an ambiguous local time (the repeated hour of an autumn
        change) never equals a time in another zone, so the scheduler compares in UTC.
        """
        if self.time is not None:
            return self.time.in_tz("UTC") if to_micros(self.time) > to_micros(after) else None
        if self.interval is not None:
            step = round(self.interval * 1_000_000) or 1
            return from_micros((to_micros(after) // step + 1) * step)
        assert self.cron is not None
        return _cron.next_fire(self.cron, after, self.cron_offset).in_tz("UTC")

    def first_due(self, now: dt.datetime, drift: float) -> pendulum.DateTime | None:
        """Where a scheduler starts: a one-off's time (even if past); otherwise the first
        due time at or after ``now - drift``. In UTC."""
        if self.time is not None:
            return self.time.in_tz("UTC")
        return self.next_due(now - dt.timedelta(seconds=drift) - _MICROSECOND)

    # Storage ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data (datetimes and timedeltas as such) for a serializer."""
        return {
            "task_name": self.task_name,
            "labels": self.labels,
            "args": self.args,
            "kwargs": self.kwargs,
            "schedule_id": self.schedule_id,
            "cron": self.cron,
            "cron_offset": self.cron_offset,
            "time": self.time,
            "interval": self.interval,
            "max_schedule_drift": self.max_schedule_drift,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduledTask:
        fields = {field.name for field in attrs.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in fields})


# Sources ------------------------------------------------------------------------------


class ScheduleSource(ABC):
    """Where a scheduler finds schedules (taskiq's interface, plus claims and changes).

    Subclasses implement :meth:`get_schedules`; dynamic ones also :meth:`add_schedule`
    and :meth:`delete_schedule`, and call :meth:`notify_changed` when the set changes.
    Override :meth:`claim` to share claims between processes.
    """

    #: Re-read this source this often (seconds), also without a notification. None: never.
    refresh_interval: float | None = None

    async def startup(self) -> None:  # noqa: B027 - an optional hook, as in taskiq
        """Open connections; the scheduler calls it (and retries it if it raises)."""

    async def shutdown(self) -> None:  # noqa: B027 - an optional hook, as in taskiq
        """Release connections; called when the scheduler stops."""

    @abstractmethod
    async def get_schedules(self) -> list[ScheduledTask]:
        """Every schedule this source holds now."""

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        """Store a schedule (replacing one with the same ``schedule_id``)."""
        raise NotImplementedError(f"{type(self).__name__} does not support adding schedules")

    async def delete_schedule(self, schedule_id: str) -> None:
        """Remove a schedule; no error if it is unknown."""
        raise NotImplementedError(f"{type(self).__name__} does not support deleting schedules")

    async def pre_send(self, task: ScheduledTask) -> None:  # noqa: B027 - an optional hook, as in taskiq
        """Before a kick; raise :class:`ScheduledTaskCancelledError` to skip this one."""

    async def post_send(self, task: ScheduledTask) -> None:  # noqa: B027 - an optional hook, as in taskiq
        """After a kick was accepted by the broker."""

    async def claim(self, task: ScheduledTask, due: dt.datetime) -> bool:
        """Take due time ``due`` of ``task``: True for exactly one caller per due time.

        The claim is a high-water mark per ``schedule_id``: a due time at or before the
        last one claimed is refused. Kept in memory here; it must be atomic.
        """
        marks: dict[str, int] = self.__dict__.setdefault("_claim_marks", {})
        micros = to_micros(due)
        if marks.get(task.schedule_id, -(2**63)) >= micros:
            return False
        marks[task.schedule_id] = micros
        return True

    async def last_claim(self, task: ScheduledTask) -> pendulum.DateTime | None:
        """The last due time of ``task`` claimed so far (None if none), from which a
        scheduler that starts resumes: missed due times after it are replayed within
        the schedule's ``max_schedule_drift``."""
        micros = self.__dict__.get("_claim_marks", {}).get(task.schedule_id)
        return None if micros is None else from_micros(micros)

    # Change notification ---------------------------------------------------------------

    def changed_event(self) -> trio.Event:
        """Set (and replaced by a fresh one) the next time the schedules change."""
        event = self.__dict__.get("_changed")
        if event is None:
            event = self.__dict__["_changed"] = trio.Event()
        assert isinstance(event, trio.Event)
        return event

    def notify_changed(self) -> None:
        """Wake the schedulers reading this source so they re-read it."""
        event = self.changed_event()
        self.__dict__["_changed"] = trio.Event()
        event.set()


# Created schedules and the schedule_by_* functions ------------------------------------


@attrs.define(eq=False)
class CreatedSchedule:
    """What ``schedule_by_*`` returns: the stored schedule and how to undo it."""

    kicker: AsyncKicker[Any, Any]
    source: ScheduleSource
    task: ScheduledTask

    @property
    def schedule_id(self) -> str:
        return self.task.schedule_id

    async def unschedule(self) -> None:
        """Delete the schedule from its source; a scheduler stops kicking it at once."""
        await self.source.delete_schedule(self.task.schedule_id)

    async def kiq(self) -> AsyncTaskiqTask[Any]:
        """Kick the task once now, with the schedule's arguments."""
        return await self.kicker.kiq(*self.task.args, **self.task.kwargs)

    def __repr__(self) -> str:
        return f"<CreatedSchedule {self.schedule_id} of {self.task.task_name}>"


def _schedule_labels(kicker: AsyncKicker[Any, Any]) -> tuple[dict[str, Any], float | None]:
    labels = {k: v for k, v in kicker.labels.items() if k not in SCHEDULE_LABELS}
    return labels, as_seconds(kicker.labels.get("max_schedule_drift"))


async def _add(
    kicker: AsyncKicker[Any, Any],
    source: ScheduleSource,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    **when: Any,
) -> CreatedSchedule:
    labels, drift = _schedule_labels(kicker)
    task = ScheduledTask(
        task_name=kicker.task_name,
        labels=labels,
        args=list(args),
        kwargs=kwargs,
        max_schedule_drift=drift,
        **when,
    )
    await source.add_schedule(task)
    return CreatedSchedule(kicker, source, task)


async def schedule_by_cron(
    kicker: AsyncKicker[Any, Any],
    source: ScheduleSource,
    cron: str | CronSpec,
    *args: Any,
    **kwargs: Any,
) -> CreatedSchedule:
    """Kick the task whenever ``cron`` matches (a string or a :class:`CronSpec`, whose
    ``offset`` becomes the schedule's ``cron_offset``)."""
    if isinstance(cron, CronSpec):
        return await _add(
            kicker, source, args, kwargs, cron=cron.to_cron(), cron_offset=cron.offset
        )
    return await _add(kicker, source, args, kwargs, cron=cron)


async def schedule_by_time(
    kicker: AsyncKicker[Any, Any],
    source: ScheduleSource,
    time: dt.datetime,
    *args: Any,
    **kwargs: Any,
) -> CreatedSchedule:
    """Kick the task once at ``time`` (naive values are UTC; a past time fires at once)."""
    return await _add(kicker, source, args, kwargs, time=time)


async def schedule_by_interval(
    kicker: AsyncKicker[Any, Any],
    source: ScheduleSource,
    interval: float | dt.timedelta,
    *args: Any,
    **kwargs: Any,
) -> CreatedSchedule:
    """Kick the task every ``interval`` (seconds or a ``timedelta``/``Duration``)."""
    return await _add(kicker, source, args, kwargs, interval=interval)
