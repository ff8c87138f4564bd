"""Scheduling: cron, one-off and interval schedules kicked by the scheduler actor.

Schedules come from sources: the ``schedule`` label on a task (and streaq's ``crontab=``)
through ``LabelScheduleSource``, and schedules added at run time through a dynamic source
(here in memory; ``SqliteScheduleSource`` keeps them across restarts)::

    python examples/scheduling.py [--seconds 4]

or, to run only the scheduler (and this module's in-process broker) from the command
line until Ctrl-C::

    actors --app-dir examples scheduler scheduling:scheduler
"""

from __future__ import annotations

import argparse

import pendulum
import trio

from actors import (
    CronSpec,
    InMemoryBroker,
    InMemoryScheduleSource,
    LabelScheduleSource,
    TaskiqScheduler,
)

broker = InMemoryBroker()


def now() -> str:
    return pendulum.now("UTC").format("HH:mm:ss")


# Declared on the task: every second (six fields, seconds first).
@broker.task(schedule=[{"cron": "* * * * * *", "args": ["tick"]}])
async def heartbeat(word: str) -> None:
    print(f"{now()} heartbeat: {word}")


# streaq's spelling: every night at 03:00 UTC (it will not fire during this demo).
@broker.task(crontab="0 3 * * *")
async def nightly_cleanup() -> None:
    print(f"{now()} cleaning up")


@broker.task
async def report(kind: str) -> None:
    print(f"{now()} {kind} report")


dynamic = InMemoryScheduleSource()
scheduler = TaskiqScheduler(broker, [LabelScheduleSource(broker), dynamic])


async def main(seconds: float) -> None:
    async with broker, scheduler:
        # A one-off run a second from now, and a report every second until unscheduled.
        soon = pendulum.now("UTC").add(seconds=1)
        one_off = await report.schedule_by_time(dynamic, soon, "one-off")
        every_second = await report.schedule_by_interval(dynamic, 1, "interval")
        # A CronSpec in a named time zone: 02:30 in Paris, whatever the season.
        nightly = await report.schedule_by_cron(
            dynamic, CronSpec(minutes=30, hours=2, offset="Europe/Paris"), "nightly"
        )
        await trio.sleep(0.1)
        due = await scheduler.next_due_times()
        for name, created in [("one-off", one_off), ("interval", every_second)]:
            print(f"next {name} report due at {due[created.schedule_id]}")
        paris = due[nightly.schedule_id]
        assert paris is not None
        print(f"next nightly report at {paris} = {paris.in_tz('Europe/Paris')} in Paris")
        print(f"next heartbeat at {due['__main__:heartbeat:0']}")

        await trio.sleep(seconds / 2)
        await every_second.unschedule()
        print(f"{now()} unscheduled the interval report")
        await trio.sleep(seconds / 2)
        await nightly.unschedule()
        print(f"kicked {scheduler.kicked} tasks")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="how long to run")
    trio.run(main, parser.parse_args().seconds)
