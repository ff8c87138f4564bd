"""Cron expressions: the next fire time after a moment, in a time zone, as ``pendulum``.

One small interface over croniter, so the scheduler never touches the library directly.
croniter computes on stdlib ``datetime`` values with a ``zoneinfo`` zone, which it handles
correctly across daylight-saving changes (the ``fold`` of an ambiguous time included);
results are converted with :func:`pendulum.instance`.

Expressions have 5 fields (minute hour day-of-month month day-of-week) or 6, the first
being seconds (``"*/10 * * * * *"``: every ten seconds). croniter's ``@daily``-style
shortcuts are accepted too.

Daylight-saving changes, for a daily ``"30 2 * * *"`` in ``Europe/Paris`` (croniter's
behaviour, which the scheduler keeps):

* spring (the clocks jump from 02:00 to 03:00, so 02:30 does not exist): the job fires
  once, at 03:00 local time, the first moment after the gap;
* autumn (the clocks go back from 03:00 to 02:00, so 02:30 happens twice): the job fires
  twice, at 02:30 summer time and again at 02:30 winter time, one hour apart.

Use a UTC ``cron_offset`` (the default) or avoid 02:00-03:00 local time if neither suits.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pendulum
from croniter import CroniterError, croniter

__all__ = ["Zone", "next_fire", "validate", "zone_of"]

#: Where a cron expression is read: an IANA zone name, a fixed offset from UTC, or UTC.
Zone = str | dt.timedelta | None


def zone_of(zone: Zone) -> dt.tzinfo:
    """The ``tzinfo`` a cron expression is evaluated in; ``ValueError`` for unknown names."""
    if zone is None:
        return dt.UTC
    if isinstance(zone, dt.timedelta):
        return dt.timezone(zone)
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {zone!r}") from exc


def validate(expression: str) -> str:
    """The expression with its whitespace normalised; ``ValueError`` if it is not valid.

    Five fields, six with seconds first, or a croniter ``@`` shortcut.
    """
    fields = expression.split()
    if not fields:
        raise ValueError("empty cron expression")
    if not (fields[0].startswith("@") and len(fields) == 1) and len(fields) not in (5, 6):
        raise ValueError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5, "
            "or 6 with seconds first"
        )
    normalised = " ".join(fields)
    if not croniter.is_valid(normalised, second_at_beginning=len(fields) == 6):
        raise ValueError(f"invalid cron expression {expression!r}")
    return normalised


def next_fire(expression: str, after: dt.datetime, zone: Zone = None) -> pendulum.DateTime:
    """The first time strictly after ``after`` that ``expression`` matches in ``zone``.

    ``after`` must be aware (any zone). The result is a ``pendulum.DateTime`` in ``zone``
    (UTC by default). ``ValueError`` for an invalid expression or zone, or one that never
    matches (``"0 0 30 2 *"``).
    """
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("next_fire needs an aware datetime")
    normalised = validate(expression)
    tz = zone_of(zone)
    # A plain stdlib value in the target zone: astimezone sets the right fold.
    utc = after.astimezone(dt.UTC)
    start = dt.datetime(
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
        tzinfo=dt.UTC,
    ).astimezone(tz)
    try:
        found = croniter(
            normalised, start, second_at_beginning=len(normalised.split()) == 6
        ).get_next(dt.datetime)
    except CroniterError as exc:
        raise ValueError(f"cron expression {expression!r}: {exc}") from exc
    assert isinstance(found, dt.datetime)
    return pendulum.instance(found)
