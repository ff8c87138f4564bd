"""Schedules and their sources: validation, due times, labels, memory, SQLite, claims."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pendulum
import pytest
import trio
from pendulum import datetime as utc  # its default zone is UTC

from actors.backends.schedules import (
    InMemoryScheduleSource,
    LabelScheduleSource,
    SqliteScheduleSource,
)
from actors.inmemory import InMemoryBroker
from actors.schedules import (
    CreatedSchedule,
    CronSpec,
    ScheduledTask,
    ScheduleSource,
)
from actors.serializers import JSONSerializer

# ScheduledTask --------------------------------------------------------------------------


def test_exactly_one_kind_of_schedule() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ScheduledTask(task_name="t")
    with pytest.raises(ValueError, match="exactly one"):
        ScheduledTask(task_name="t", cron="* * * * *", interval=5)
    with pytest.raises(ValueError):
        ScheduledTask(task_name="t", cron="not a cron")
    with pytest.raises(ValueError):
        ScheduledTask(task_name="t", cron="* * * * *", cron_offset="Nowhere/Special")
    with pytest.raises(ValueError, match="positive"):
        ScheduledTask(task_name="t", interval=0)
    with pytest.raises(ValueError):
        ScheduledTask(task_name="t", interval=5, max_schedule_drift=-1)


def test_values_are_normalised() -> None:
    naive = ScheduledTask(task_name="t", time=dt.datetime(2024, 5, 1, 12))
    assert naive.time == utc(2024, 5, 1, 12)
    assert isinstance(naive.time, pendulum.DateTime)
    text = ScheduledTask(task_name="t", time="2024-05-01T14:00:00+02:00")
    assert text.time == utc(2024, 5, 1, 12)
    duration = ScheduledTask(
        task_name="t", interval=pendulum.duration(minutes=2), max_schedule_drift=dt.timedelta(1)
    )
    assert (duration.interval, duration.max_schedule_drift) == (120.0, 86400.0)
    assert ScheduledTask(task_name="t", cron=" */5  * * * * ").cron == "*/5 * * * *"
    assert (
        ScheduledTask(task_name="t", interval=1).schedule_id
        != ScheduledTask(task_name="t", interval=1).schedule_id
    )


def test_interval_due_times_are_aligned_to_the_epoch() -> None:
    task = ScheduledTask(task_name="t", interval=10)
    assert task.next_due(utc(2024, 1, 1, 0, 0, 3)) == utc(2024, 1, 1, 0, 0, 10)
    assert task.next_due(utc(2024, 1, 1, 0, 0, 10)) == utc(2024, 1, 1, 0, 0, 20)
    assert task.first_due(utc(2024, 1, 1, 0, 0, 10), 0.0) == utc(2024, 1, 1, 0, 0, 10)
    assert task.first_due(utc(2024, 1, 1, 0, 0, 10), 25.0) == utc(2023, 12, 31, 23, 59, 50)
    half = ScheduledTask(task_name="t", interval=0.25)
    assert half.next_due(utc(2024, 1, 1)) == utc(2024, 1, 1).add(microseconds=250_000)


def test_one_off_and_cron_due_times() -> None:
    once = ScheduledTask(task_name="t", time=utc(2024, 1, 1, 12))
    assert once.one_off
    assert once.first_due(utc(2030, 1, 1), 0.0) == utc(2024, 1, 1, 12)  # past: still due
    assert once.next_due(utc(2024, 1, 1, 11)) == utc(2024, 1, 1, 12)
    assert once.next_due(utc(2024, 1, 1, 12)) is None
    paris = ScheduledTask(task_name="t", cron="0 9 * * *", cron_offset="Europe/Paris")
    assert paris.next_due(utc(2024, 7, 1)) == utc(2024, 7, 1, 7)


def test_cron_spec() -> None:
    assert CronSpec(minutes=30, hours=2).to_cron() == "30 2 * * *"
    assert CronSpec(seconds="*/10").to_cron() == "*/10 * * * * *"
    assert CronSpec(minutes=0, hours=9, weekdays="mon-fri").to_cron() == "0 9 * * mon-fri"


def test_round_trip_through_a_serializer() -> None:
    serializer = JSONSerializer()
    for task in [
        ScheduledTask(
            task_name="t",
            labels={"priority": 3},
            args=[1, "a"],
            kwargs={"x": [1, 2]},
            cron="30 2 * * *",
            cron_offset="Europe/Paris",
            max_schedule_drift=60,
        ),
        ScheduledTask(task_name="t", cron="0 * * * *", cron_offset=dt.timedelta(hours=-3)),
        ScheduledTask(task_name="t", time=pendulum.datetime(2024, 3, 31, 2, 30, tz="Asia/Tokyo")),
        ScheduledTask(task_name="t", interval=0.5),
    ]:
        again = ScheduledTask.from_dict(serializer.loadb(serializer.dumpb(task.to_dict())))
        assert again == task


# The default (in-memory) claims -------------------------------------------------------


async def test_claims_are_a_monotonic_mark() -> None:
    source = InMemoryScheduleSource()
    task = ScheduledTask(task_name="t", interval=1)
    assert await source.last_claim(task) is None
    assert await source.claim(task, utc(2024, 1, 1, 0, 0, 1))
    assert not await source.claim(task, utc(2024, 1, 1, 0, 0, 1))  # taken
    assert not await source.claim(task, utc(2024, 1, 1, 0, 0, 0))  # earlier: refused too
    assert await source.claim(task, utc(2024, 1, 1, 0, 0, 2))
    assert await source.last_claim(task) == utc(2024, 1, 1, 0, 0, 2)
    other = ScheduledTask(task_name="t", interval=1)
    assert await source.claim(other, utc(2024, 1, 1, 0, 0, 1))  # per schedule


async def test_concurrent_claims_have_one_winner() -> None:
    source = InMemoryScheduleSource()
    task = ScheduledTask(task_name="t", interval=1)
    wins: list[bool] = []

    async def claim() -> None:
        wins.append(await source.claim(task, utc(2024, 1, 1)))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(claim)
    assert wins.count(True) == 1


# The in-memory source -----------------------------------------------------------------


async def test_memory_source_add_delete_notify() -> None:
    source = InMemoryScheduleSource([ScheduledTask(task_name="a", interval=5, schedule_id="a")])
    event = source.changed_event()
    assert not event.is_set()
    await source.add_schedule(ScheduledTask(task_name="b", cron="* * * * *", schedule_id="b"))
    assert event.is_set()
    assert not source.changed_event().is_set()  # a fresh event for the next change
    assert [s.schedule_id for s in await source.get_schedules()] == ["a", "b"]
    await source.delete_schedule("a")
    await source.delete_schedule("missing")  # no error
    assert [s.schedule_id for s in await source.get_schedules()] == ["b"]


async def test_dynamic_sources_drop_one_offs_after_sending(tmp_path: Path) -> None:
    for source in [InMemoryScheduleSource(), SqliteScheduleSource(tmp_path / "s.db")]:
        await source.startup()
        once = ScheduledTask(task_name="t", time=utc(2024, 1, 1))
        again = ScheduledTask(task_name="t", interval=10)
        await source.add_schedule(once)
        await source.add_schedule(again)
        await source.post_send(again)
        await source.post_send(once)
        assert [s.schedule_id for s in await source.get_schedules()] == [again.schedule_id]
        await source.shutdown()


# schedule_by_* ------------------------------------------------------------------------


async def test_schedule_by_on_tasks_and_kickers() -> None:
    broker = InMemoryBroker()

    @broker.task(priority=2, max_schedule_drift=30)
    async def report(kind: str, *, copies: int = 1) -> None:
        pass

    source = InMemoryScheduleSource()
    by_cron = await report.schedule_by_cron(source, "0 9 * * *", "daily", copies=2)
    assert isinstance(by_cron, CreatedSchedule)
    assert by_cron.source is source
    assert by_cron.task.args == ["daily"] and by_cron.task.kwargs == {"copies": 2}
    assert by_cron.task.labels == {"priority": 2}  # schedule labels are not sent
    assert by_cron.task.max_schedule_drift == 30
    spec = CronSpec(minutes=30, hours=2, offset="Europe/Paris")
    by_spec = await report.kicker().with_labels(team="ops").schedule_by_cron(source, spec, "x")
    assert (by_spec.task.cron, by_spec.task.cron_offset) == ("30 2 * * *", "Europe/Paris")
    assert by_spec.task.labels == {"priority": 2, "team": "ops"}
    by_time = await report.schedule_by_time(source, dt.datetime(2030, 1, 1), "once")
    assert by_time.task.time == utc(2030, 1, 1)
    by_interval = await report.kicker().schedule_by_interval(
        source, pendulum.duration(hours=1), "i"
    )
    assert by_interval.task.interval == 3600
    ids = {s.schedule_id for s in await source.get_schedules()}
    assert ids == {c.schedule_id for c in (by_cron, by_spec, by_time, by_interval)}
    await by_cron.unschedule()
    await by_time.unschedule()
    ids = {s.schedule_id for s in await source.get_schedules()}
    assert ids == {by_spec.schedule_id, by_interval.schedule_id}


async def test_static_sources_refuse_adding() -> None:
    broker = InMemoryBroker()

    @broker.task
    async def job() -> None:
        pass

    with pytest.raises(NotImplementedError):
        await job.schedule_by_interval(LabelScheduleSource(broker), 5)


# The label source ---------------------------------------------------------------------


async def test_label_source_reads_schedule_and_crontab_labels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = InMemoryBroker()
    when = pendulum.datetime(2030, 1, 1, 8, tz="Europe/Paris")

    @broker.task(
        "report",
        team="ops",
        schedule=[
            {"cron": "*/5 * * * *", "args": [1], "kwargs": {"k": 2}, "labels": {"priority": 9}},
            {"cron": "30 2 * * *", "cron_offset": "Europe/Paris", "schedule_id": "nightly"},
            {"time": when, "max_schedule_drift": 0},
            {"interval": 30},
            {"cron": CronSpec(seconds=0, minutes="*/2", offset=dt.timedelta(hours=1))},
            {"cron": "bad cron"},
            {"interval": 5, "colour": "red"},
            "not a dict",
        ],
        crontab="0 * * * *",
        max_schedule_drift=60,
    )
    async def report(*args: Any, **kwargs: Any) -> None:
        pass

    @broker.task
    async def plain() -> None:
        pass

    with caplog.at_level(logging.ERROR, logger="actors.scheduler"):
        schedules = {s.schedule_id: s for s in await LabelScheduleSource(broker).get_schedules()}
    assert sorted(schedules) == [
        "nightly",
        "report:0",
        "report:2",
        "report:3",
        "report:4",
        "report:crontab",
    ]
    first = schedules["report:0"]
    assert (first.task_name, first.cron, first.args, first.kwargs) == (
        "report",
        "*/5 * * * *",
        [1],
        {"k": 2},
    )
    assert first.labels == {"team": "ops", "priority": 9}
    assert first.max_schedule_drift == 60  # the task's drift applies to its schedules
    assert schedules["nightly"].cron_offset == "Europe/Paris"
    assert schedules["report:2"].time == when and schedules["report:2"].max_schedule_drift == 0
    assert schedules["report:3"].interval == 30
    spec = schedules["report:4"]
    assert (spec.cron, spec.cron_offset) == ("0 */2 * * * *", dt.timedelta(hours=1))
    assert schedules["report:crontab"].cron == "0 * * * *"
    assert schedules["report:crontab"].labels == {"team": "ops"}
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "report:5" in messages and "report:6" in messages and "not a dict" in messages


async def test_label_source_unschedule() -> None:
    broker = InMemoryBroker()

    @broker.task(crontab="* * * * *")
    async def job() -> None:
        pass

    source = LabelScheduleSource(broker)
    [schedule] = await source.get_schedules()
    event = source.changed_event()
    await source.delete_schedule(schedule.schedule_id)
    assert event.is_set()
    assert await source.get_schedules() == []


# The SQLite source --------------------------------------------------------------------


async def test_sqlite_schedules_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "schedules.db"
    first = SqliteScheduleSource(path)
    await first.startup()
    task = ScheduledTask(
        task_name="t", args=[pendulum.date(2024, 1, 1)], cron="0 9 * * *", cron_offset="Asia/Tokyo"
    )
    event = first.changed_event()
    await first.add_schedule(task)
    assert event.is_set()
    assert await first.claim(task, utc(2024, 1, 1))
    await first.shutdown()

    second = SqliteScheduleSource(path)
    await second.startup()
    assert await second.get_schedules() == [task]
    assert await second.last_claim(task) == utc(2024, 1, 1)
    assert not await second.claim(task, utc(2024, 1, 1))
    await second.delete_schedule(task.schedule_id)
    assert await second.get_schedules() == []
    await second.shutdown()


async def test_sqlite_claims_are_shared_between_connections(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    sources = [SqliteScheduleSource(path) for _ in range(4)]
    task = ScheduledTask(task_name="t", interval=1)
    for source in sources:
        await source.startup()

    async def claim(source: SqliteScheduleSource, due: pendulum.DateTime, wins: list[bool]) -> None:
        wins.append(await source.claim(task, due))

    for second in range(5):
        wins: list[bool] = []
        async with trio.open_nursery() as nursery:
            for source in sources:
                nursery.start_soon(claim, source, utc(2024, 1, 1, 0, 0, second), wins)
        assert wins.count(True) == 1
    for source in sources:
        await source.shutdown()


async def test_sqlite_skips_unreadable_rows_and_purges_stale_claims(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    now = utc(2024, 6, 1).timestamp()
    source = SqliteScheduleSource(path, claim_retention=86400, clock=lambda: now)
    await source.startup()
    kept = ScheduledTask(task_name="t", interval=60, schedule_id="kept")
    await source.add_schedule(kept)
    gone_old = ScheduledTask(task_name="t", interval=60, schedule_id="gone-old")
    gone_new = ScheduledTask(task_name="t", interval=60, schedule_id="gone-new")
    await source.claim(kept, utc(2024, 1, 1))
    await source.claim(gone_old, utc(2024, 1, 1))
    await source.claim(gone_new, utc(2024, 5, 31, 12))
    await source.shutdown()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schedules VALUES ('broken', x'00ff')")
    conn.close()

    again = SqliteScheduleSource(path, claim_retention=86400, clock=lambda: now)
    await again.startup()
    with caplog.at_level(logging.ERROR, logger="actors.scheduler"):
        assert await again.get_schedules() == [kept]
    assert "broken" in caplog.text
    assert await again.last_claim(kept) == utc(2024, 1, 1)  # its schedule still exists
    assert await again.last_claim(gone_old) is None  # deleted and older than a day
    assert await again.last_claim(gone_new) == utc(2024, 5, 31, 12)
    await again.shutdown()


def test_sqlite_rejects_bad_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteScheduleSource(tmp_path / "x.db", synchronous="SOMETIMES")  # type: ignore[arg-type]


def test_subclass_without_init_gets_change_events() -> None:
    class Fixed(ScheduleSource):
        async def get_schedules(self) -> list[ScheduledTask]:
            return []

    source = Fixed()
    event = source.changed_event()
    source.notify_changed()
    assert event.is_set()
