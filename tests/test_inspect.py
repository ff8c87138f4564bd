"""HubView: what the dashboard, /metrics and `actors status` read, in both topologies."""

from __future__ import annotations

import collections
from typing import Any
from unittest.mock import ANY

import pendulum
import pytest
import trio
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from actors import (
    InMemoryBroker,
    InMemoryScheduleSource,
    JSONSerializer,
    TaskiqScheduler,
    WebSocketBroker,
)
from actors.actor_broker import ActorBroker
from actors.hub import open_hub
from actors.inspect import HubView, Overview
from actors.lifecycle import Phase
from actors.metrics import health, metrics_text
from actors.protocol import BrokerMessage
from actors.queue import TaskQueue, TaskRecord
from actors.worker_node import open_worker_node

from .conftest import MakeBroker


async def _overview_when(view: HubView, running: int) -> Overview:
    with trio.fail_after(10):
        while True:
            seen = await view.overview()
            if seen.running == running:
                return seen
            await trio.sleep(0.01)


def _held(broker: ActorBroker) -> tuple[trio.Event, Any, Any]:
    gate = trio.Event()

    @broker.task
    async def hold(n: int = 0) -> int:
        await gate.wait()
        return n

    @broker.task
    async def boom() -> None:
        raise ValueError("boom")

    return gate, hold, boom


async def test_overview_counts_queue_workers_and_outcomes(
    autojump_clock: Any, make_broker: MakeBroker
) -> None:
    broker = make_broker(max_async_tasks=1)
    gate, hold, boom = _held(broker)
    async with broker:
        view = HubView.of_broker(broker)
        await hold.kiq(1)
        await _overview_when(view, running=1)
        await hold.kiq(2)
        await hold.kicker().with_labels(priority=3).kiq(3)
        await hold.kicker().with_labels(delay=60).kiq(4)
        await broker.is_ready("flush")  # the kicks above have reached the broker
        seen = await view.overview()
        assert seen.queued == [(3, 1), (0, 1)]
        assert (seen.scheduled, seen.waiting, seen.parked) == (1, 0, 0)
        [worker] = seen.workers
        assert (worker.capacity, worker.in_use, worker.linked) == (1, 1, True)
        assert seen.mailboxes and all(depth >= 0 for depth in seen.mailboxes.values())
        gate.set()
        await boom.kiq()
        await broker.wait_all()
        seen = await view.overview()
        assert seen.running == 0 and seen.queued == []
        assert sum(row.succeeded for row in seen.minutes) == 4
        assert sum(row.failed for row in seen.minutes) == 1
        counts = {row.task_name: row for row in await view.counters()}
        held = counts[hold.task_name]
        assert (held.kicked, held.started, held.succeeded, held.failed) == (4, 4, 4, 0)
        assert sum(held.buckets) == 4
        assert counts[boom.task_name].failed == 1


async def test_tasks_pages_filters_and_ends(autojump_clock: Any, make_broker: MakeBroker) -> None:
    broker = make_broker(max_async_tasks=1)
    gate, hold, boom = _held(broker)
    async with broker:
        view = HubView.of_broker(broker)
        kicked = [(await hold.kiq(0)).task_id]
        await _overview_when(view, running=1)
        kicked += [(await hold.kiq(n)).task_id for n in range(1, 5)]
        failed = await boom.kiq()
        await broker.is_ready("flush")
        ids: list[str] = []
        after = None
        while True:
            page = await view.tasks(after=after, limit=2)
            assert len(page.rows) <= 2
            ids += [row.task_id for row in page.rows]
            if page.cursor is None:
                break
            after = page.cursor
        assert ids == [*kicked, failed.task_id]
        [running] = (await view.tasks(status="running")).rows
        assert (running.task_id, running.status) == (kicked[0], "running")
        assert running.worker is not None
        page = await view.tasks(status="queued", name="boom")
        assert [row.task_id for row in page.rows] == [failed.task_id]
        gate.set()
        await broker.wait_all()
        assert (await view.tasks()).rows == []
        ends = await view.tasks(status="succeeded", limit=3)
        assert [row.task_id for row in ends.rows] == kicked[::-1][:3]
        rest = await view.tasks(status="succeeded", after=ends.cursor, limit=3)
        assert [row.task_id for row in rest.rows] == kicked[::-1][3:]
        assert rest.cursor is None
        [row] = (await view.tasks(status="failed")).rows
        assert row.task_id == failed.task_id


async def test_task_detail_live_and_ended(autojump_clock: Any, make_broker: MakeBroker) -> None:
    broker = make_broker(max_async_tasks=1)
    gate, hold, boom = _held(broker)
    async with broker:
        view = HubView.of_broker(broker)
        first = await hold.kiq(7)
        await _overview_when(view, running=1)
        queued = await hold.kiq(n=8)
        failed = await boom.kiq()
        await broker.is_ready("flush")
        detail = await view.task(queued.task_id)
        assert detail is not None
        assert (detail.task_name, detail.status) == (hold.task_name, "queued")
        assert (detail.args, detail.kwargs) == ("()", "{'n': 8}")
        assert detail.size is not None and detail.size > 0
        assert [event.event for event in detail.timeline] == ["kicked"]
        gate.set()
        await broker.wait_all()
        done = await view.task(first.task_id)
        assert done is not None
        assert (done.status, done.result, done.error) == ("succeeded", "7", None)
        assert [event.event for event in done.timeline] == ["kicked", "started", "succeeded"]
        bad = await view.task(failed.task_id)
        assert bad is not None and bad.status == "failed"
        assert bad.error == "ValueError: boom"
        assert bad.traceback is not None and "boom" in bad.traceback
        assert await view.task("no-such-task") is None


async def test_abort_through_the_view(autojump_clock: Any, make_broker: MakeBroker) -> None:
    broker = make_broker(max_async_tasks=1)
    _, hold, _ = _held(broker)
    async with broker:
        view = HubView.of_broker(broker)
        running = await hold.kiq()
        await _overview_when(view, running=1)
        queued = await hold.kiq()
        assert await view.abort(queued.task_id) is True
        assert await view.abort(running.task_id) is True
        assert await view.abort("no-such-task") is False
        await broker.wait_all()
        [counts] = await view.counters()
        assert counts.aborted == 2
        [row] = (await view.overview()).minutes[-1:]
        assert row.aborted == 2


async def test_metrics_text_parses_and_counts(autojump_clock: Any, make_broker: MakeBroker) -> None:
    broker = make_broker(max_async_tasks=2)
    gate, hold, boom = _held(broker)
    async with broker:
        view = HubView.of_broker(broker)
        gate.set()
        for n in range(3):
            await hold.kiq(n)
        await boom.kiq()
        await broker.wait_all()
        families = {
            family.name: family
            for family in text_string_to_metric_families((await metrics_text(view)).decode())
        }
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    held = (("task_name", hold.task_name),)
    assert samples["taskq_tasks_kicked_total", held] == 3
    assert samples["taskq_tasks_succeeded_total", held] == 3
    assert samples["taskq_tasks_failed_total", (("task_name", boom.task_name),)] == 1
    assert samples["taskq_task_run_seconds_count", held] == 3
    assert samples["taskq_task_run_seconds_bucket", (("le", "+Inf"), *held)] == 3
    assert samples["taskq_workers", ()] == 1
    [capacity] = families["taskq_worker_capacity"].samples
    assert capacity.value == 2
    assert samples["taskq_tasks", (("state", "running"),)] == 0
    assert families["taskq_mailbox_depth"].samples
    assert families["taskq_link_reconnects"].type == "counter"


async def test_health_says_whether_the_broker_answers(autojump_clock: Any) -> None:
    broker = InMemoryBroker()
    async with broker:
        view = HubView.of_broker(broker, timeout=1)
        ok, data = await health(view)
        assert ok and data["workers"] == 1 and data["queued"] == 0
    assert await health(view) == (False, {"ok": False, "error": ANY})


async def test_schedules_listed_and_unscheduled_through_the_broker(
    autojump_clock: Any, make_broker: MakeBroker
) -> None:
    start = pendulum.datetime(2026, 1, 1, 0, 0, 1, tz="UTC")
    broker = make_broker(wall_clock=lambda: start.add(microseconds=int(trio.current_time() * 1e6)))
    ran: list[int] = []

    @broker.task
    async def tick(n: int) -> None:
        ran.append(n)

    source = InMemoryScheduleSource()
    scheduler = TaskiqScheduler(broker, [source])
    async with broker:
        view = HubView.of_broker(broker)
        every = await tick.schedule_by_interval(source, 30, 1)
        nightly = await tick.schedule_by_cron(source, "0 3 * * *", 2)
        async with scheduler:
            with trio.fail_after(5):
                while len(rows := await view.schedules()) < 2:
                    await trio.sleep(0.01)
            assert [(row.schedule_id, row.when) for row in rows] == [
                (every.schedule_id, "every 30 s"),
                (nightly.schedule_id, "cron 0 3 * * *"),
            ]
            assert all(row.next_due is not None for row in rows)
            assert await view.unschedule(every.schedule_id) is True
            assert await view.unschedule(every.schedule_id) is False
            assert [row.schedule_id for row in await view.schedules()] == [nightly.schedule_id]
            assert [task.schedule_id for task in await source.get_schedules()] == [
                nightly.schedule_id
            ]
            await trio.sleep(120)
        assert ran == []


async def test_bad_cursors_and_statuses_do_not_hurt_the_broker(broker: ActorBroker) -> None:
    view = HubView.of_broker(broker)
    with pytest.raises(ValueError, match="status must be one of"):
        await view.tasks(status="nonsense")
    for after in ("x:y", "-3:t", "", "99999999999:gone", ":"):
        assert (await view.tasks(after=after)).rows == []
        assert (await view.tasks(status="failed", after=after)).rows == []
    assert (await view.overview()).running == 0  # the broker still answers


@given(st.lists(st.tuples(st.sampled_from("apqrf"), st.integers(0, 2)), max_size=40))
@settings(max_examples=50, deadline=None)
def test_queue_counts_follow_every_move(ops: list[tuple[str, int]]) -> None:
    """The overview's counts are kept as tasks move, equal to counting the records."""
    queue = TaskQueue()
    made = 0
    for op, priority in ops:
        live = list(queue.records.values())
        if op == "a":
            record = TaskRecord(BrokerMessage(f"t{made}", "n", b"", {}), Phase.WAITING, priority)
            made += 1
            queue.add(record)
            queue.place(record, 0.0)
        elif op == "p" and (ready := queue.pop_ready()) is not None:
            queue.move(ready, Phase.RUNNING)
        elif op == "r" and (running := [r for r in live if r.phase is Phase.RUNNING]):
            running[0].eta = 10.0 * priority
            queue.place(running[0], 0.0)
        elif op == "f" and live:
            queue.finish(live[priority % len(live)], Phase.ABORTED, succeeded=False)
        expected = collections.Counter((r.phase, r.priority) for r in queue.records.values())
        assert +queue.counts == expected


async def test_a_view_of_the_hub_from_its_node_and_from_a_linked_one(autojump_clock: Any) -> None:
    async with open_hub("local://", max_queued=None) as hub:
        assert hub.address is not None
        client = WebSocketBroker(hub.address)

        @client.task
        async def add(a: int, b: int) -> int:
            return a + b

        async with client, open_worker_node(client, max_async_tasks=4) as worker:
            handle = await add.kiq(1, b=2)
            assert (await handle.wait_result()).return_value == 3
            assert client.node is not None
            on_hub = HubView.of_hub(hub)
            from_client = HubView.of_hub(client.node, serializer=JSONSerializer())
            for view in (on_hub, from_client):
                seen = await view.overview()
                assert seen.node == "hub"
                assert [(row.node, row.capacity) for row in seen.workers] == [(worker.name, 4)]
                assert set(seen.links) == {worker.name, client.node.name}
                assert {"taskq.broker", "taskq.results"} <= set(seen.mailboxes)
            shown = await from_client.task(handle.task_id)
            assert shown is not None and (shown.status, shown.result) == ("succeeded", "3")
            hidden = await on_hub.task(handle.task_id)  # no serializer: nothing decoded
            assert hidden is not None and (hidden.status, hidden.result) == ("succeeded", None)
