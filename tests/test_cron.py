"""The cron interface: next fire times for 5- and 6-field expressions, in named zones."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pendulum
import pytest
from hypothesis import given, strategies as st
from pendulum import datetime as utc  # its default zone is UTC

from actors.cron import next_fire, validate, zone_of

UTC = pendulum.UTC


def fires(expression: str, after: dt.datetime, count: int, zone: str | None = None) -> list[str]:
    """The next ``count`` fire times, as UTC ISO strings."""
    found = []
    for _ in range(count):
        after = next_fire(expression, after, zone)
        found.append(after.in_tz("UTC").isoformat())
    return found


def test_every_minute_is_strictly_after() -> None:
    assert next_fire("* * * * *", utc(2024, 1, 1, 12, 0, 30)) == utc(2024, 1, 1, 12, 1)
    # A matching moment is not "after" itself.
    assert next_fire("* * * * *", utc(2024, 1, 1, 12, 1)) == utc(2024, 1, 1, 12, 2)
    almost = utc(2024, 1, 1, 12, 0, 59).add(microseconds=999_999)
    assert next_fire("* * * * *", almost) == utc(2024, 1, 1, 12, 1)


def test_every_second_and_seconds_first() -> None:
    start = utc(2024, 1, 1, 12, 0, 0)
    assert fires("* * * * * *", start, 3) == [
        "2024-01-01T12:00:01+00:00",
        "2024-01-01T12:00:02+00:00",
        "2024-01-01T12:00:03+00:00",
    ]
    # Six fields: seconds come first.
    assert fires("*/20 * * * * *", start.add(seconds=5), 3) == [
        "2024-01-01T12:00:20+00:00",
        "2024-01-01T12:00:40+00:00",
        "2024-01-01T12:01:00+00:00",
    ]
    assert next_fire("30 15 10 * * *", start) == utc(2024, 1, 2, 10, 15, 30)


def test_shortcuts_and_whitespace() -> None:
    assert next_fire("@hourly", utc(2024, 1, 1, 0, 30)) == utc(2024, 1, 1, 1)
    assert validate("  */5   *  * * * ") == "*/5 * * * *"


def test_named_zone_follows_daylight_saving() -> None:
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
    winter = next_fire("0 9 * * *", utc(2024, 1, 10), "America/New_York")
    summer = next_fire("0 9 * * *", utc(2024, 7, 10), "America/New_York")
    assert winter.in_tz("UTC") == utc(2024, 1, 10, 14)
    assert summer.in_tz("UTC") == utc(2024, 7, 10, 13)
    assert isinstance(winter, pendulum.DateTime)
    assert winter.timezone_name == "America/New_York"
    assert (winter.hour, winter.minute) == (9, 0)


def test_fixed_offset_zone() -> None:
    found = next_fire("0 9 * * *", utc(2024, 1, 10), dt.timedelta(hours=5, minutes=30))
    assert found.in_tz("UTC") == utc(2024, 1, 10, 3, 30)
    assert found.utcoffset() == dt.timedelta(hours=5, minutes=30)


def test_paris_spring_change_fires_once_at_three() -> None:
    """31 March 2024: 02:00 -> 03:00 in Paris; 02:30 does not exist. The daily 02:30 job
    fires once that day, at 03:00 local (01:00 UTC), then at 02:30 again."""
    start = pendulum.datetime(2024, 3, 30, 3, tz="Europe/Paris")
    assert fires("30 2 * * *", start, 2, "Europe/Paris") == [
        "2024-03-31T01:00:00+00:00",
        "2024-04-01T00:30:00+00:00",
    ]
    found = next_fire("30 2 * * *", start, "Europe/Paris")
    assert (found.hour, found.minute) == (3, 0)


def test_paris_autumn_change_fires_twice() -> None:
    """27 October 2024: 03:00 -> 02:00 in Paris; 02:30 happens twice. The daily 02:30 job
    fires at both: 02:30 summer time (00:30 UTC) and 02:30 winter time (01:30 UTC)."""
    start = pendulum.datetime(2024, 10, 26, 3, tz="Europe/Paris")
    assert fires("30 2 * * *", start, 3, "Europe/Paris") == [
        "2024-10-27T00:30:00+00:00",
        "2024-10-27T01:30:00+00:00",
        "2024-10-28T01:30:00+00:00",
    ]
    # Starting inside the repeated hour, on either side of the change.
    first_pass = utc(2024, 10, 27, 0, 31)  # 02:31 summer time
    assert next_fire("30 2 * * *", first_pass, "Europe/Paris").in_tz("UTC") == utc(
        2024, 10, 27, 1, 30
    )
    second_pass = utc(2024, 10, 27, 1, 31)  # 02:31 winter time
    assert next_fire("30 2 * * *", second_pass, "Europe/Paris").in_tz("UTC") == utc(
        2024, 10, 28, 1, 30
    )


@pytest.mark.parametrize(
    "expression",
    ["", "* * * *", "* * * * * * *", "61 * * * *", "* * * * * 99", "every minute"],
)
def test_invalid_expressions(expression: str) -> None:
    with pytest.raises(ValueError):
        validate(expression)
    with pytest.raises(ValueError):
        next_fire(expression, utc(2024, 1, 1))


def test_other_errors() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        next_fire("* * * * *", utc(2024, 1, 1), "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="aware"):
        next_fire("* * * * *", dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        next_fire("0 0 30 2 *", utc(2024, 1, 1))  # 30 February never comes
    assert zone_of(None) is dt.UTC


@given(
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    after=st.datetimes(
        min_value=dt.datetime(2000, 1, 1),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.just(dt.UTC),
    ),
    zone=st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"]),
)
def test_daily_fire_is_the_next_matching_local_time(
    minute: int, hour: int, after: dt.datetime, zone: str
) -> None:
    found = next_fire(f"{minute} {hour} * * *", after, zone)
    assert found > after
    after = pendulum.instance(after)
    # At most a day (plus a daylight-saving shift) away, at the local time asked for,
    # unless that time does not exist that day (a spring-forward gap).
    assert found - after <= dt.timedelta(days=1, hours=1)
    local = found.in_tz(zone)
    if (local.hour, local.minute) != (hour, minute):
        asked = dt.datetime(local.year, local.month, local.day, hour, minute)
        tz = ZoneInfo(zone)
        round_trip = asked.replace(tzinfo=tz).astimezone(dt.UTC).astimezone(tz)
        assert round_trip.replace(tzinfo=None) != asked
