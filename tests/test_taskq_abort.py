"""Abort wins at every point of a task's life, and abandoned sync runs free their slot."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncGenerator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings, strategies as st

from actors import (
    Context,
    InMemoryBroker,
    TaskAbortedError,
    TaskiqDepends,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqResult,
    TaskStatus,
    TaskTimeoutError,
)

from .conftest import MakeBroker


async def test_abort_right_after_kiq_wins(autojump_clock: Any, make_broker: MakeBroker) -> None:
    """The task has just been handed to a worker and waits there for a runner."""
    broker = make_broker()
    started: list[bool] = []

    @broker.task
    async def forever() -> None:
        started.append(True)
        await trio.sleep_forever()

    async with broker:
        handle = await forever.kiq()
        assert await handle.abort(timeout=5) is True
        assert isinstance((await handle.wait_result()).error, TaskAbortedError)
        assert await handle.status() is TaskStatus.DONE
        await broker.wait_all()
    assert started == []


class CrashAfterShieldedWait(TaskiqMiddleware):
    """Holds the first run in post_execute, deaf to cancellation, then crashes its worker:
    the worker's answer to an abort is lost with it."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        if self.entered.is_set():
            return
        self.entered.set()
        with trio.CancelScope(shield=True):
            await self.release.wait()
        raise RuntimeError("middleware bug")


async def set_once_all_blocked(event: trio.Event) -> None:
    await trio.testing.wait_all_tasks_blocked()
    event.set()


async def test_a_run_being_aborted_is_not_delivered_again_after_its_worker_restarts(
    autojump_clock: Any, make_broker: MakeBroker
) -> None:
    crash = CrashAfterShieldedWait()
    broker = make_broker().with_middlewares(crash)
    runs: list[str] = []

    @broker.task
    async def work() -> str:
        runs.append("run")
        return "ran"

    async with broker:
        handle = await work.kiq()
        await crash.entered.wait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(set_once_all_blocked, crash.release)
            assert await handle.abort(timeout=5) is True
        assert isinstance((await handle.wait_result()).error, TaskAbortedError)
        await broker.wait_all()
    assert runs == ["run"]


# Sync runs and their threads -------------------------------------------------------------


@pytest.mark.parametrize("end", ["abort", "timeout"])
async def test_an_abandoned_sync_run_frees_its_slot(end: str, make_broker: MakeBroker) -> None:
    broker = make_broker(sync_tasks_pool_size=1)
    entered, leave, left = threading.Event(), threading.Event(), threading.Event()

    @broker.task
    def blocking() -> str:
        entered.set()
        leave.wait()
        left.set()
        return "late"

    @broker.task
    def quick() -> str:
        return "next"

    async with broker:
        try:
            kicker = blocking.kicker()
            if end == "timeout":
                kicker = kicker.with_labels(timeout=0.1)
            handle = await kicker.kiq()
            assert await trio.to_thread.run_sync(entered.wait, 5)
            if end == "abort":
                assert await handle.abort() is True
            error = (await handle.wait_result()).error
            assert isinstance(error, TaskAbortedError if end == "abort" else TaskTimeoutError)
            with trio.fail_after(5):  # without the fix: waits for `leave`
                assert await (await quick.kiq()) == "next"
            assert not left.is_set()
        finally:
            leave.set()
            assert await trio.to_thread.run_sync(left.wait, 5)


async def test_beyond_the_bound_of_abandoned_threads_sync_runs_wait(
    caplog: pytest.LogCaptureFixture, make_broker: MakeBroker
) -> None:
    """Pool size 1: two threads in all, so with two abandoned ones the next run waits."""
    broker = make_broker(sync_tasks_pool_size=1)
    entered = [threading.Event(), threading.Event()]
    leave = [threading.Event(), threading.Event()]

    @broker.task
    def blocking(index: int) -> None:
        entered[index].set()
        leave[index].wait()

    @broker.task
    def quick() -> str:
        return "next"

    caplog.set_level(logging.WARNING, "actors.worker")
    async with broker:
        try:
            for index in range(2):
                handle = await blocking.kiq(index)
                assert await trio.to_thread.run_sync(entered[index].wait, 5)
                assert await handle.abort() is True
            waiting = await quick.kiq()
            await trio.testing.wait_all_tasks_blocked()
            assert await waiting.status() is TaskStatus.RUNNING
            assert not await waiting.is_ready()
            assert "a sync task waits for a thread" in caplog.text
            leave[0].set()
            with trio.fail_after(5):
                assert await waiting == "next"
        finally:
            for event in leave:
                event.set()


# Property: abort at random moments -------------------------------------------------------

KINDS = ["instant", "sleep", "sync", "delayed", "after", "timeout", "sync_timeout", "retry"]

#: What each kind returns (or the error it ends with) when nothing aborts it.
OUTCOMES: dict[str, Any] = {
    "instant": "instant",
    "sleep": "slept",
    "sync": "sync",
    "delayed": "instant",
    "after": "instant",
    "timeout": TaskTimeoutError,
    "sync_timeout": TaskTimeoutError,
    "retry": "retried",
}

moments = st.one_of(
    st.tuples(st.just("checkpoints"), st.integers(0, 12)),  # an instant task has ended by about 5
    st.tuples(st.just("sleep"), st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 3.0])),
)


class Checkpoints(TaskiqMiddleware):
    """pre_execute that yields to trio: an abort may come while it runs."""

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        return message


async def injected(context: Context = TaskiqDepends()) -> AsyncGenerator[str, None]:
    """A dependency that yields to trio while it is set up and torn down."""
    await trio.lowlevel.checkpoint()
    yield context.message.task_id
    await trio.lowlevel.checkpoint()


@attrs.define
class Scenario:
    """The tasks of one example, and what their bodies did."""

    broker: InMemoryBroker
    release: threading.Event = attrs.field(factory=threading.Event)
    starts: list[str] = attrs.field(factory=list)  # tags, one per run started
    lefts: list[threading.Event] = attrs.field(factory=list)


def tasks_of(scenario: Scenario) -> dict[str, Any]:
    broker = scenario.broker
    starts = scenario.starts

    @broker.task
    async def instant(tag: str, task_id: str = TaskiqDepends(injected)) -> str:
        starts.append(tag)
        return "instant"

    @broker.task
    async def sleep(tag: str, seconds: float) -> str:
        starts.append(tag)
        await trio.sleep(seconds)
        return "slept"

    @broker.task
    def sync(tag: str) -> str:
        starts.append(tag)
        left = threading.Event()
        scenario.lefts.append(left)
        scenario.release.wait()
        left.set()
        return "sync"

    @broker.task(max_tries=3)
    async def retry(tag: str) -> str:
        starts.append(tag)
        await trio.sleep(0.5)
        if starts.count(tag) < 3:
            raise RuntimeError("not yet")
        return "retried"

    return {"instant": instant, "sleep": sleep, "sync": sync, "retry": retry}


async def kick(scenario: Scenario, tasks: dict[str, Any], kind: str, tag: str) -> Any:
    if kind == "instant":
        return await tasks["instant"].kiq(tag)
    if kind == "sleep":
        return await tasks["sleep"].kiq(tag, 1.0)
    if kind == "sync":
        return await tasks["sync"].kiq(tag)
    if kind == "delayed":
        return await tasks["instant"].kicker().with_delay(1).kiq(tag)
    if kind == "after":
        parent = await tasks["sleep"].kiq(f"{tag}-parent", 1.0)
        return await tasks["instant"].kicker().after(parent).kiq(tag)
    if kind == "timeout":
        return await tasks["sleep"].kicker().with_labels(timeout=1).kiq(tag, 2.0)
    if kind == "sync_timeout":
        return await tasks["sync"].kicker().with_labels(timeout=1).kiq(tag)
    return await tasks["retry"].kiq(tag)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KINDS), moments), min_size=1, max_size=3))
def test_abort_at_random_moments_agrees_with_the_result(
    ops: list[tuple[str, tuple[str, float]]],
) -> None:
    async def scenario_run() -> None:
        broker = InMemoryBroker(max_async_tasks=2, sync_tasks_pool_size=1)
        broker.add_middlewares(Checkpoints())
        scenario = Scenario(broker)
        tasks = tasks_of(scenario)
        ran_quick = threading.Event()

        @broker.task
        def quick_sync() -> str:
            ran_quick.set()
            return "quick"

        async with broker:
            for index, (kind, (how, amount)) in enumerate(ops):
                tag = f"t{index}"
                handle = await kick(scenario, tasks, kind, tag)
                if how == "checkpoints":
                    for _ in range(int(amount)):
                        await trio.lowlevel.checkpoint()
                else:
                    await trio.sleep(amount)
                aborted = await handle.abort(timeout=5)
                starts_then = scenario.starts.count(tag)
                with trio.fail_after(100):
                    result = await handle.wait_result()
                    await broker.wait_all()
                assert await handle.status() is TaskStatus.DONE
                expected = OUTCOMES[kind]
                if aborted:
                    assert isinstance(result.error, TaskAbortedError), (kind, result)
                elif isinstance(expected, type):
                    assert isinstance(result.error, expected), (kind, result)
                else:
                    assert (result.is_err, result.return_value) == (False, expected), (kind, result)
                await trio.sleep(5)  # time for a run that should not happen
                if kind.startswith("sync"):
                    # A thread started just before the abort may enter the function
                    # just after it (threads run on their own): a second run is the bug.
                    assert scenario.starts.count(tag) <= 1, (kind, "ran again")
                else:
                    assert scenario.starts.count(tag) == starts_then, (kind, "ran again")
            # The broker keeps serving, threads included (abandoned ones let go first).
            scenario.release.set()
            for left in scenario.lefts:
                assert await trio.to_thread.run_sync(left.wait, 10)
            with trio.fail_after(100):
                assert await (await tasks["instant"].kiq("last")) == "instant"
            handle = await quick_sync.kiq()
            assert await trio.to_thread.run_sync(ran_quick.wait, 10)
            assert await handle == "quick"

    trio.run(scenario_run, clock=trio.testing.MockClock(autojump_threshold=0))
