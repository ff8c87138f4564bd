"""The scheduler actor: due times computed (not polled), claims, backlogs, DST, sources.

Every test runs under trio's autojump clock with a wall clock that follows it (``Wall``),
so days pass in milliseconds and every run happens at an exact wall time. Tasks run on a
real ``InMemoryBroker`` and record the labels the scheduler kicked them with.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pendulum
import pytest
import trio
import trio.lowlevel
import trio.testing
from pendulum import datetime as utc  # its default zone is UTC

from actors.backends.schedules import (
    InMemoryScheduleSource,
    LabelScheduleSource,
    SqliteScheduleSource,
)
from actors.context import Context
from actors.scheduler import TaskiqScheduler
from actors.schedules import ScheduledTask, ScheduledTaskCancelledError, ScheduleSource
from actors.tasks import AsyncTaskiqDecoratedTask, TaskiqDepends

from .conftest import MakeBroker
from .programs import program_env, run_example

_T = TypeVar("_T")
START = pendulum.datetime(2024, 1, 1, tz="UTC")


class Wall:
    """A wall clock that follows trio's: ``start`` plus the trio time since creation."""

    def __init__(self, start: pendulum.DateTime = START) -> None:
        self.start = start
        self.t0 = trio.current_time()
        self.reads = 0

    def __call__(self) -> pendulum.DateTime:
        self.reads += 1
        elapsed = round((trio.current_time() - self.t0) * 1_000_000)
        return self.start + dt.timedelta(microseconds=elapsed)


@attrs.frozen
class Run:
    task: str
    arg: Any
    due: pendulum.DateTime | None
    at: pendulum.DateTime
    schedule_id: str | None


class Setup:
    """A broker whose tasks record each run, and a scheduler factory over it."""

    def __init__(self, make_broker: MakeBroker, start: pendulum.DateTime = START) -> None:
        self.wall = Wall(start)
        self.broker = make_broker(wall_clock=self.wall)
        self.runs: list[Run] = []

    def task(self, name: str = "job", **labels: Any) -> AsyncTaskiqDecoratedTask[..., None]:
        runs, wall = self.runs, self.wall

        async def job(arg: Any = None, context: Context = TaskiqDepends()) -> None:
            message_labels = context.message.labels
            due = message_labels.get("schedule_due")
            runs.append(
                Run(
                    name,
                    arg,
                    None if due is None else pendulum.parse(due),  # type: ignore[arg-type]
                    wall(),
                    message_labels.get("schedule_id"),
                )
            )

        return self.broker.task(name, **labels)(job)

    def scheduler(self, sources: Sequence[ScheduleSource], **options: Any) -> TaskiqScheduler:
        return TaskiqScheduler(self.broker, sources, wall_clock=self.wall, **options)

    def times(self, task: str | None = None) -> list[str]:
        """Wall times of the runs (of ``task``), sorted, as ``HH:MM:SS`` (ISO on other days).

        Sorted: trio may start tasks kicked in the same instant in any order."""
        return sorted(_short(run.at) for run in self.runs if task is None or run.task == task)

    def dues(self, task: str | None = None) -> list[str]:
        return sorted(
            _short(run.due) for run in self.runs if run.due and (task is None or run.task == task)
        )


def _short(when: pendulum.DateTime) -> str:
    when = when.in_tz("UTC")
    if when.date() == START.date():
        return when.format("HH:mm:ss")
    return when.isoformat()


class InlineSqliteScheduleSource(SqliteScheduleSource):
    """The SQLite source with its statements run inline instead of in a worker thread.

    Under the autojump clock a task waiting for a thread counts as blocked, so trio would
    jump the clock while SQLite works; inline, the tests stay exact. The threaded path
    is exercised by ``test_two_schedulers_on_one_sqlite_file_in_threads`` and by
    ``test_schedule_sources.py``.
    """

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        await trio.lowlevel.checkpoint()
        return fn(self._db.connection())


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    """Real time, twenty times faster: threads run while trio time flows."""
    return trio.testing.MockClock(rate=20)


# Cron ---------------------------------------------------------------------------------


async def test_cron_every_second_on_a_real_broker(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    setup.task("tick", schedule=[{"cron": "* * * * * *", "args": [7]}])
    async with setup.broker, setup.scheduler([LabelScheduleSource(setup.broker)]):
        await trio.sleep(4.5)
    assert setup.times() == ["00:00:00", "00:00:01", "00:00:02", "00:00:03", "00:00:04"]
    assert setup.dues() == setup.times()
    assert {run.arg for run in setup.runs} == {7}
    assert {run.schedule_id for run in setup.runs} == {"tick:0"}


async def test_cron_every_minute_sleeps_until_due(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker, START.add(seconds=30))
    setup.task("minutely", crontab="* * * * *")
    scheduler = setup.scheduler([LabelScheduleSource(setup.broker)], clock_check_interval=None)
    async with setup.broker, scheduler:
        await trio.sleep(5 * 60)
    assert setup.times() == ["00:01:00", "00:02:00", "00:03:00", "00:04:00", "00:05:00"]
    # Polling once a second would read the wall clock 300 times or more.
    assert setup.wall.reads < 60
    assert scheduler.kicked == 5


async def test_long_sleeps_are_not_polling(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    setup.task("nightly", schedule=[{"cron": "0 3 * * *"}])
    scheduler = setup.scheduler([LabelScheduleSource(setup.broker)], clock_check_interval=None)
    async with setup.broker, scheduler:
        await trio.sleep(3 * 86400)
    assert setup.times() == [
        "03:00:00",
        "2024-01-02T03:00:00+00:00",
        "2024-01-03T03:00:00+00:00",
    ]
    assert setup.wall.reads < 40


async def test_clock_check_interval_bounds_each_sleep(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    setup.task("nightly", schedule=[{"cron": "0 3 * * *"}])
    scheduler = setup.scheduler([LabelScheduleSource(setup.broker)], clock_check_interval=600)
    async with setup.broker, scheduler:
        await trio.sleep(3 * 3600 + 1)
    assert setup.times() == ["03:00:00"]
    assert 18 <= setup.wall.reads < 120


async def test_seconds_field_and_zone(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    setup.task(
        "quarter",
        schedule=[
            {"cron": "*/15 * * * * *"},
            {"cron": "0 0 9 * * *", "cron_offset": "Asia/Tokyo", "args": ["tokyo"]},
        ],
    )
    async with setup.broker, setup.scheduler([LabelScheduleSource(setup.broker)]):
        await trio.sleep(50)
    assert setup.times() == ["00:00:00", "00:00:00", "00:00:15", "00:00:30", "00:00:45"]
    # 09:00 in Tokyo is 00:00 UTC.
    assert [run.arg for run in setup.runs].count("tokyo") == 1


# Intervals and one-off times ----------------------------------------------------------


async def test_intervals_are_epoch_aligned(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker, START.add(seconds=1))
    job = setup.task()
    source = InMemoryScheduleSource()
    await job.schedule_by_interval(source, 7, "seven")
    await job.kicker().schedule_by_interval(source, pendulum.duration(minutes=1), "minute")
    async with setup.broker, setup.scheduler([source]):
        await trio.sleep(60)
    seven = [run.at for run in setup.runs if run.arg == "seven"]
    assert [int(t.timestamp()) % 7 for t in seven] == [0] * len(seven)
    assert len(seven) == 9  # 60 seconds hold 8 or 9 multiples of 7; here 9
    assert [_short(run.at) for run in setup.runs if run.arg == "minute"] == ["00:01:00"]


async def test_one_off_times(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    job = setup.task("once", schedule=[{"time": START.subtract(days=30), "args": ["label past"]}])
    source = InMemoryScheduleSource()
    await job.schedule_by_time(source, START.add(seconds=90), "future")
    await job.schedule_by_time(source, START.subtract(hours=1), "past")
    await job.schedule_by_time(source, dt.datetime(2024, 1, 1, 0, 2), "naive is UTC")
    sources = [source, LabelScheduleSource(setup.broker)]
    async with setup.broker, setup.scheduler(sources) as scheduler:
        await trio.sleep(1)
        assert len(await source.get_schedules()) == 2  # fired one-offs are deleted
        await trio.sleep(600)
        assert await scheduler.next_due_times() == {"once:0": None}
    fired = {run.arg: _short(run.at) for run in setup.runs}
    assert fired == {
        "past": "00:00:00",
        "label past": "00:00:00",
        "future": "00:01:30",
        "naive is UTC": "00:02:00",
    }
    assert len(setup.runs) == 4
    assert await source.get_schedules() == []


# Dynamic changes ----------------------------------------------------------------------


async def test_unschedule_while_running(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    job = setup.task()
    source = InMemoryScheduleSource()
    created = await job.schedule_by_cron(source, "* * * * * *", "x")
    async with setup.broker, setup.scheduler([source]) as scheduler:
        await trio.sleep(3.5)
        await created.unschedule()
        await trio.testing.wait_all_tasks_blocked()
        assert await scheduler.next_due_times() == {}
        await trio.sleep(10)
    assert setup.times() == ["00:00:00", "00:00:01", "00:00:02", "00:00:03"]


async def test_add_while_sleeping_wakes_the_scheduler(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    job = setup.task("job", schedule=[{"cron": "0 12 * * *", "args": ["noon"]}])
    source = InMemoryScheduleSource()
    scheduler = setup.scheduler([LabelScheduleSource(setup.broker), source])
    async with setup.broker, scheduler:
        await trio.sleep(30)  # the scheduler sleeps until noon
        created = await job.schedule_by_cron(source, "* * * * *", "minutely")
        await trio.testing.wait_all_tasks_blocked()
        assert (await scheduler.next_due_times())[created.schedule_id] == utc(2024, 1, 1, 0, 1)
        await trio.sleep(140)
        await created.unschedule()
        await trio.sleep(12 * 3600)
    assert setup.times() == ["00:01:00", "00:02:00", "12:00:00"]
    assert [run.arg for run in setup.runs] == ["minutely", "minutely", "noon"]


async def test_a_burst_of_changes_is_read_once(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    job = setup.task()

    class Counting(InMemoryScheduleSource):
        reads = 0

        async def get_schedules(self) -> list[ScheduledTask]:
            self.reads += 1
            return await super().get_schedules()

    source = Counting()
    async with setup.broker, setup.scheduler([source]) as scheduler:
        for minute in range(200):
            await job.schedule_by_cron(source, f"{minute % 60} * * * *", minute)
        await trio.testing.wait_all_tasks_blocked()
        assert len(await scheduler.next_due_times()) == 200
        assert source.reads <= 3
        await trio.sleep(3599)
    assert len(setup.runs) == 200


async def test_the_same_scheduler_can_run_again(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    setup.task("tick", crontab="* * * * * *")
    scheduler = setup.scheduler([LabelScheduleSource(setup.broker)])
    async with setup.broker:
        async with scheduler:
            await trio.sleep(1.5)
        await trio.sleep(60)  # stopped: nothing runs, and nothing is replayed later
        async with scheduler:  # from 00:01:01.5 to 00:01:03.2
            await trio.sleep(1.7)
    assert setup.dues() == ["00:00:00", "00:00:01", "00:01:02", "00:01:03"]


async def test_scheduler_unschedule_by_task_or_id(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    """streaq's unschedule: stop a task's crontab label, or one schedule by id."""
    setup = Setup(make_broker)
    cron_job = setup.task("cron_job", crontab="* * * * * *")
    other = setup.task("other")
    source = InMemoryScheduleSource()
    keep = await other.schedule_by_cron(source, "* * * * * *", "keep")
    drop = await other.schedule_by_cron(source, "* * * * * *", "drop")
    scheduler = setup.scheduler([LabelScheduleSource(setup.broker), source])
    async with setup.broker, scheduler:
        await trio.sleep(1.5)
        assert await scheduler.unschedule(cron_job) == 1
        assert await scheduler.unschedule(drop.schedule_id) == 1
        assert await scheduler.unschedule("no such schedule") == 0
        await trio.sleep(3)
    assert setup.dues("cron_job") == ["00:00:00", "00:00:01"]
    assert sorted(_short(run.at) for run in setup.runs if run.arg == "drop") == [
        "00:00:00",
        "00:00:01",
    ]
    assert sorted(_short(run.at) for run in setup.runs if run.arg == "keep") == [
        f"00:00:0{second}" for second in range(5)
    ]
    assert [s.schedule_id for s in await source.get_schedules()] == [keep.schedule_id]


# Exactly once -------------------------------------------------------------------------


async def test_two_schedulers_on_one_source_kick_each_due_time_once(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    job = setup.task("job", crontab="* * * * * *")
    source = InMemoryScheduleSource()
    await job.schedule_by_cron(source, "*/2 * * * * *", "dynamic")
    labels = LabelScheduleSource(setup.broker)
    first = setup.scheduler([labels, source])
    second = setup.scheduler([labels, source])
    async with setup.broker, first, second:
        await trio.sleep(9.5)
    crontab = [run.due for run in setup.runs if run.arg is None]
    dynamic = [run.due for run in setup.runs if run.arg == "dynamic"]
    assert len(crontab) == len(set(crontab)) == 10
    assert len(dynamic) == len(set(dynamic)) == 5
    assert first.kicked + second.kicked == 15


async def test_two_schedulers_on_one_sqlite_file(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, make_broker: MakeBroker
) -> None:
    setup = Setup(make_broker)
    job = setup.task()
    path = tmp_path / "schedules.db"
    writer = InlineSqliteScheduleSource(path)
    await writer.startup()
    # Ten due times, 00:00:00 to 00:00:09, then never again that day.
    await job.schedule_by_cron(writer, "0-9 0 0 * * *", "shared")
    await writer.shutdown()
    schedulers = [setup.scheduler([InlineSqliteScheduleSource(path)]) for _ in range(3)]
    async with setup.broker, schedulers[0], schedulers[1], schedulers[2]:
        await trio.sleep(15)
    assert setup.dues() == [f"00:00:0{second}" for second in range(10)]
    assert setup.times() == setup.dues()
    assert sum(scheduler.kicked for scheduler in schedulers) == 10


async def test_two_schedulers_on_one_sqlite_file_in_threads(
    fast_clock: trio.testing.MockClock, tmp_path: Path, make_broker: MakeBroker
) -> None:
    """The same with the real (threaded) source and a clock that does not jump."""
    setup = Setup(make_broker)
    job = setup.task()
    path = tmp_path / "threads.db"
    writer = SqliteScheduleSource(path)
    await writer.startup()
    await job.schedule_by_cron(writer, "2-9 0 0 * * *", "threads")
    await writer.shutdown()
    schedulers = [
        setup.scheduler([SqliteScheduleSource(path)], max_schedule_drift=30) for _ in range(2)
    ]
    async with setup.broker, schedulers[0], schedulers[1]:
        # 40 s of this clock is 2 s of real time: room for a loaded machine's threads
        # (the dues end at 00:00:09, and none comes again before tomorrow).
        await trio.sleep(40)
    dues = [run.due for run in setup.runs]
    assert len(dues) == len(set(dues)) == 8
    assert sum(scheduler.kicked for scheduler in schedulers) == 8


# Backlogs and restarts ----------------------------------------------------------------


async def test_restart_with_the_sqlite_source(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, make_broker: MakeBroker
) -> None:
    """Schedules survive a restart; without max_schedule_drift the time the scheduler was
    down is not replayed, with it each missed due time is kicked once; a one-off that
    passed while down fires once at the next start."""
    setup = Setup(make_broker)
    job = setup.task()
    path = tmp_path / "state.db"

    async with setup.broker:
        source = InlineSqliteScheduleSource(path)
        async with setup.scheduler([source]):
            await job.schedule_by_cron(source, "* * * * *", "plain")
            await (
                job.kicker()
                .with_labels(max_schedule_drift=3600)
                .schedule_by_cron(source, "* * * * *", "backlog")
            )
            await job.schedule_by_time(source, START.add(minutes=5), "once")
            await trio.sleep(150)  # until 00:02:30
        assert setup.dues() == ["00:00:00"] * 2 + ["00:01:00"] * 2 + ["00:02:00"] * 2

        await trio.sleep(8 * 60)  # down until 00:10:30; "once" was due at 00:05
        setup.runs.clear()
        async with setup.scheduler([InlineSqliteScheduleSource(path)]):
            await trio.sleep(60)  # until 00:11:30

    by_arg: dict[str, list[str]] = {}
    for run in sorted(setup.runs, key=lambda run: (run.due, run.arg)):
        assert run.due is not None
        by_arg.setdefault(run.arg, []).append(_short(run.due))
    assert by_arg["plain"] == ["00:11:00"]
    assert by_arg["backlog"] == [f"00:{minute:02}:00" for minute in range(3, 12)]
    assert by_arg["once"] == ["00:05:00"]
    assert [_short(run.at) for run in setup.runs if run.arg == "once"] == ["00:10:30"]
    reopened = SqliteScheduleSource(path)
    await reopened.startup()
    assert sorted(s.args[0] for s in await reopened.get_schedules()) == ["backlog", "plain"]
    await reopened.shutdown()


async def test_drift_bounds_the_backlog(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    """A schedule that allows 3 minutes of drift gets at most 3 minutes replayed."""
    setup = Setup(make_broker)
    job = setup.task()
    source = InMemoryScheduleSource()
    await (
        job.kicker()
        .with_labels(max_schedule_drift=180)
        .schedule_by_cron(source, "* * * * *", "bounded")
    )
    async with setup.broker:
        async with setup.scheduler([source]):
            await trio.sleep(61)
        await trio.sleep(10 * 60)  # down from 00:01:01 to 00:11:01
        async with setup.scheduler([source]):
            await trio.sleep(1)
    assert setup.dues() == ["00:00:00", "00:01:00", "00:09:00", "00:10:00", "00:11:00"]


async def test_a_stalled_scheduler_skips_late_due_times(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    make_broker: MakeBroker,
) -> None:
    """While running, a due time reached more than max_schedule_drift late is skipped."""
    setup = Setup(make_broker)
    job = setup.task()
    stall = trio.Event()

    class Stalling(InMemoryScheduleSource):
        async def pre_send(self, task: ScheduledTask) -> None:
            if not stall.is_set():
                stall.set()
                await trio.sleep(5.5)

    source = Stalling()
    await job.schedule_by_cron(source, "* * * * * *", "s")
    with caplog.at_level(logging.WARNING, logger="actors.scheduler"):
        async with setup.broker, setup.scheduler([source]):
            await trio.sleep(8.5)
    # 00:00:00 is kicked late, at 00:00:05.5; 00:00:01 to 00:00:04 are more than a
    # second late by then and skipped; 00:00:05 is within the bound.
    assert setup.dues() == ["00:00:00", "00:00:05", "00:00:06", "00:00:07", "00:00:08"]
    assert "skipped" in caplog.text


async def test_a_zero_drift_schedule_still_fires_when_woken_late(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    """A real scheduler always wakes a little late; the scheduler's own bound applies."""
    setup = Setup(make_broker)
    fast = setup.wall

    def wall_one_percent_fast() -> pendulum.DateTime:
        elapsed = (fast() - fast.start).total_seconds()
        return fast.start + dt.timedelta(seconds=elapsed * 1.01)

    setup.task("strict", crontab="* * * * *", max_schedule_drift=0)
    scheduler = TaskiqScheduler(
        setup.broker, [LabelScheduleSource(setup.broker)], wall_clock=wall_one_percent_fast
    )
    async with setup.broker, scheduler:
        await trio.sleep(5 * 60 - 10)  # the wall clock reads 00:04:57 at the end
    # Each minute is reached 0.6 s late; none is skipped.
    assert setup.dues() == ["00:00:00", "00:01:00", "00:02:00", "00:03:00", "00:04:00"]


# Daylight-saving changes through the scheduler ----------------------------------------


async def test_paris_spring_change(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    """31 March 2024 has no 02:30 in Paris: the daily 02:30 job runs at 03:00 CEST."""
    setup = Setup(make_broker, utc(2024, 3, 30, 12))
    setup.task("paris", schedule=[{"cron": "30 2 * * *", "cron_offset": "Europe/Paris"}])
    async with setup.broker, setup.scheduler([LabelScheduleSource(setup.broker)]):
        await trio.sleep(2 * 86400)
    assert [run.at.in_tz("Europe/Paris").isoformat() for run in setup.runs] == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
    ]


async def test_paris_autumn_change(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    """27 October 2024 has 02:30 twice in Paris: the daily 02:30 job runs at both."""
    setup = Setup(make_broker, utc(2024, 10, 26, 12))
    setup.task("paris", schedule=[{"cron": "30 2 * * *", "cron_offset": "Europe/Paris"}])
    async with setup.broker, setup.scheduler([LabelScheduleSource(setup.broker)]):
        await trio.sleep(2 * 86400)
    assert [run.at.in_tz("UTC").isoformat() for run in setup.runs] == [
        "2024-10-27T00:30:00+00:00",  # 02:30 CEST
        "2024-10-27T01:30:00+00:00",  # 02:30 CET
        "2024-10-28T01:30:00+00:00",
    ]


# Failures -----------------------------------------------------------------------------


class Broken(ScheduleSource):
    """A source whose reads fail ``failures`` times (forever if None)."""

    def __init__(self, schedules: list[ScheduledTask], failures: int | None = None) -> None:
        self.schedules = schedules
        self.failures = failures
        self.reads = 0

    async def get_schedules(self) -> list[ScheduledTask]:
        self.reads += 1
        if self.failures is None or self.reads <= self.failures:
            raise ConnectionError("schedule store unreachable")
        return self.schedules


async def test_a_raising_source_does_not_stop_the_others(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    make_broker: MakeBroker,
) -> None:
    setup = Setup(make_broker)
    job = setup.task()
    good = InMemoryScheduleSource()
    await job.schedule_by_cron(good, "* * * * * *", "good")
    always = Broken([ScheduledTask(task_name="job", args=["never"], interval=1)])
    flaky = Broken([ScheduledTask(task_name="job", args=["flaky"], interval=1)], failures=2)
    with caplog.at_level(logging.ERROR, logger="actors.scheduler"):
        async with setup.broker, setup.scheduler([always, good, flaky]):
            await trio.sleep(12.5)
    assert [run.arg for run in setup.runs].count("good") == 13
    # The flaky source failed at 00:00:00 and 00:00:05, then was read at 00:00:10.
    assert [_short(run.at) for run in setup.runs if run.arg == "flaky"] == [
        "00:00:10",
        "00:00:11",
        "00:00:12",
    ]
    assert "never" not in [run.arg for run in setup.runs]
    assert always.reads == 3
    assert "schedule store unreachable" in caplog.text


async def test_raising_claims_hooks_and_kicks_skip_one_due_time(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    make_broker: MakeBroker,
) -> None:
    setup = Setup(make_broker)
    job = setup.task()

    class Moody(InMemoryScheduleSource):
        async def claim(self, task: ScheduledTask, due: dt.datetime) -> bool:
            if due.second == 1:
                raise RuntimeError("claim store hiccup")
            return await super().claim(task, due)

        async def pre_send(self, task: ScheduledTask) -> None:
            if setup.wall().second == 2:
                raise ScheduledTaskCancelledError("not now")

        async def post_send(self, task: ScheduledTask) -> None:
            raise RuntimeError("post_send broke")

    source = Moody()
    await job.schedule_by_cron(source, "* * * * * *", "m")
    await source.add_schedule(ScheduledTask(task_name="no such task", interval=1))
    with caplog.at_level(logging.INFO, logger="actors.scheduler"):
        async with setup.broker, setup.scheduler([source]):
            await trio.sleep(4.5)
    assert setup.dues() == ["00:00:00", "00:00:03", "00:00:04"]
    assert "claim store hiccup" in caplog.text
    assert "cancelled by its source" in caplog.text
    assert "post_send broke" in caplog.text
    assert "no such task" in caplog.text


async def test_the_actor_is_restarted_with_its_due_times(
    autojump_clock: trio.testing.MockClock, make_broker: MakeBroker
) -> None:
    """A crash of the scheduler actor (a bug, here a failing wall clock) restarts it
    under its supervisor; no due time is lost or kicked twice."""
    setup = Setup(make_broker)
    setup.task("tick", crontab="* * * * * *")
    wall = setup.wall
    failing = [True]

    def flaky_wall() -> pendulum.DateTime:
        if failing[0] and trio.current_time() - wall.t0 >= 3.2:
            failing[0] = False
            raise RuntimeError("wall clock broke")
        return wall()

    scheduler = TaskiqScheduler(
        setup.broker, [LabelScheduleSource(setup.broker)], wall_clock=flaky_wall
    )
    async with setup.broker, scheduler:
        await trio.sleep(6.5)
    assert not failing[0]
    assert setup.dues() == [f"00:00:0{second}" for second in range(7)]


# The example and the command line -----------------------------------------------------


def test_the_scheduling_example_runs() -> None:
    out = run_example("scheduling", "--seconds", "2.5")
    assert out.count("heartbeat") >= 2
    assert "one-off report" in out
    assert "unscheduled" in out


def test_the_scheduler_command_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    (tmp_path / "cli_schedules.py").write_text(
        textwrap.dedent(
            f"""
            from actors.backends.schedules import LabelScheduleSource
            from actors.inmemory import InMemoryBroker
            from actors.scheduler import TaskiqScheduler

            broker = InMemoryBroker()

            @broker.task(schedule=[{{"cron": "* * * * * *"}}])
            def touch() -> None:
                with open({str(marker)!r}, "a") as out:
                    out.write("ran\\n")

            scheduler = TaskiqScheduler(broker, [LabelScheduleSource(broker)])
            """
        )
    )
    env = program_env(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "scheduler", "cli_schedules:scheduler"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        start = time.monotonic()
        while time.monotonic() - start < 20:
            if marker.exists() and marker.read_text().count("ran") >= 2:
                break
            if process.poll() is not None:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert marker.read_text().count("ran") >= 2, stderr
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


def test_the_command_line_reports_bad_targets(tmp_path: Path) -> None:
    (tmp_path / "not_a_scheduler.py").write_text("scheduler = 42\n")
    env = program_env(tmp_path)
    for target, message in [
        ("no_colon", "MODULE:SCHEDULER"),
        ("no_such_module_xyz:scheduler", "cannot import"),
        ("not_a_scheduler:missing", "has no attribute"),
        ("not_a_scheduler:scheduler", "not a TaskiqScheduler"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "actors.cli", "scheduler", target],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (target, done.stderr)
        assert message in done.stderr, (target, done.stderr)
