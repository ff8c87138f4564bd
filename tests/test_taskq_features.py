"""streaq's task features on the in-process broker: abort, status, chaining, queue options."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import AsyncIterator
from typing import Any

import pendulum
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings, strategies as st

from actors import (
    AsyncTaskiqTask,
    DependencyFailedError,
    InMemoryBroker,
    JSONSerializer,
    ResultGetError,
    TaskAbortedError,
    TaskExpiredError,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqResult,
    TaskStatus,
)
from actors.actor_broker import ActorBroker
from actors.hub import STORE_ACTOR
from actors.protocol import EncodedResult, StoreResult
from actors.runtime import ActorRef

from .conftest import MakeBroker, OneProcessCluster

EPOCH = pendulum.datetime(2026, 3, 1, 12, 0, 0, tz="UTC")


def trio_wall_clock() -> pendulum.DateTime:
    """Wall time that follows trio's clock, so autojump moves both."""
    return EPOCH.add(seconds=trio.current_time())


@pytest.fixture
async def broker(make_broker: MakeBroker) -> AsyncIterator[ActorBroker]:
    """One worker slot, so tests decide what waits in the queue."""
    the_broker = make_broker(max_async_tasks=1, wall_clock=trio_wall_clock)
    async with the_broker:
        yield the_broker


class Gate:
    """A task that holds the only worker slot until released."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self.started = trio.Event()
        self.release = trio.Event()

        @broker.task("gate")
        async def hold() -> str:
            self.started.set()
            await self.release.wait()
            return "released"

        self.task = hold

    async def occupy(self) -> AsyncTaskiqTask[str]:
        handle = await self.task.kiq()
        await self.started.wait()
        return handle


# Abort -------------------------------------------------------------------------------------


async def test_abort_a_queued_task(broker: InMemoryBroker) -> None:
    gate = Gate(broker)
    ran: list[str] = []

    @broker.task
    async def victim() -> None:
        ran.append("victim")

    await gate.occupy()
    handle = await victim.kiq()
    assert await handle.status() is TaskStatus.QUEUED
    assert await handle.abort() is True
    gate.release.set()
    await broker.wait_all()
    result = await handle.wait_result()
    assert isinstance(result.error, TaskAbortedError)
    assert ran == []
    assert await handle.status() is TaskStatus.DONE
    assert await handle.abort() is False  # already ended


class CountingSerializer(JSONSerializer):
    def __init__(self) -> None:
        self.decoded = 0

    def loadb(self, data: bytes) -> Any:
        self.decoded += 1
        return super().loadb(data)


async def test_status_does_not_decode_the_arguments(
    autojump_clock: Any, make_broker: MakeBroker
) -> None:
    serializer = CountingSerializer()
    broker = make_broker().with_serializer(serializer)

    @broker.task
    async def later(payload: list[int]) -> None:
        pass

    async with broker:
        handle = await later.kicker().with_delay(10).kiq(list(range(1000)))
        decoded = serializer.decoded
        assert await handle.status() is TaskStatus.SCHEDULED
        assert serializer.decoded == decoded
        info = await handle.info()
        assert info is not None and info.args == (list(range(1000)),)
        await handle.abort()


async def test_abort_a_scheduled_task(broker: InMemoryBroker, autojump_clock: Any) -> None:
    ran: list[str] = []

    @broker.task
    async def later() -> None:
        ran.append("later")

    handle = await later.kicker().with_delay(10).kiq()
    assert await handle.status() is TaskStatus.SCHEDULED
    assert await handle.abort() is True
    await trio.sleep(20)
    assert ran == []
    assert isinstance((await handle.wait_result()).error, TaskAbortedError)


async def test_abort_a_running_async_task_cancels_its_scope(broker: InMemoryBroker) -> None:
    started = trio.Event()
    cleaned_up: list[bool] = []

    @broker.task
    async def forever() -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cleaned_up.append(True)

    @broker.task
    async def after_it() -> str:
        return "next"

    handle = await forever.kiq()
    await started.wait()
    assert await handle.status() is TaskStatus.RUNNING
    assert await handle.abort(timeout=5) is True
    assert cleaned_up == [True]
    assert isinstance((await handle.wait_result()).error, TaskAbortedError)
    assert await (await after_it.kiq()) == "next"  # the slot was given back


async def test_abort_a_running_sync_task_abandons_its_thread(make_broker: MakeBroker) -> None:
    broker = make_broker(max_async_tasks=1)
    entered, leave, left = threading.Event(), threading.Event(), threading.Event()

    @broker.task
    def blocking() -> str:
        entered.set()
        leave.wait(timeout=10)
        left.set()
        return "ignored"

    async with broker:
        handle = await blocking.kiq()
        await trio.to_thread.run_sync(entered.wait)
        with trio.fail_after(5):
            assert await handle.abort() is True
        result = await handle.wait_result()
        assert isinstance(result.error, TaskAbortedError)
        assert not left.is_set()  # the abort did not wait for the thread
        leave.set()
        assert await trio.to_thread.run_sync(left.wait, 5)
        await trio.testing.wait_all_tasks_blocked()
        assert (await handle.get_result()).is_err  # the thread's late value was dropped


async def test_abort_that_comes_while_a_run_is_shielded_lets_it_finish(
    broker: InMemoryBroker,
) -> None:
    started, release = trio.Event(), trio.Event()

    @broker.task
    async def shielded() -> str:
        started.set()
        with trio.CancelScope(shield=True):
            await release.wait()
        return "finished"

    @broker.task
    async def after_it() -> str:
        return "next"

    handle = await shielded.kiq()
    await started.wait()
    aborted: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def abort() -> None:
            aborted.append(await handle.abort(timeout=5))

        nursery.start_soon(abort)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert aborted == [False]  # it ended on its own, with its result
    assert await handle == "finished"
    assert await (await after_it.kiq()) == "next"  # its runner was replaced


async def test_runs_do_not_see_each_others_context_variables(broker: InMemoryBroker) -> None:
    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")

    @broker.task
    async def set_it() -> str:
        seen.set("set by an earlier run")
        await trio.lowlevel.checkpoint()
        return seen.get()

    @broker.task
    async def read_it() -> str:
        return seen.get()

    assert await (await set_it.kiq()) == "set by an earlier run"
    assert await (await read_it.kiq()) == "unset"  # same worker slot, fresh context


async def test_abort_of_unknown_or_finished_task_is_false(broker: InMemoryBroker) -> None:
    @broker.task
    async def quick() -> int:
        return 1

    handle = await quick.kiq()
    assert await handle == 1
    assert await handle.abort() is False
    assert await AsyncTaskiqTask("no-such-id", broker).abort() is False


# Status and info ---------------------------------------------------------------------------


async def test_status_through_a_whole_life(broker: InMemoryBroker, autojump_clock: Any) -> None:
    gate = Gate(broker)

    @broker.task
    async def job(x: int) -> int:
        return x

    await gate.occupy()
    handle = await job.kicker().with_delay(5).kiq(1)
    rebuilt: AsyncTaskiqTask[int] = AsyncTaskiqTask(handle.task_id, broker)
    assert await rebuilt.status() is TaskStatus.SCHEDULED
    await trio.sleep(6)
    assert await rebuilt.status() is TaskStatus.QUEUED
    gate.release.set()
    assert await rebuilt == 1
    assert await rebuilt.status() is TaskStatus.DONE
    assert await AsyncTaskiqTask("nobody", broker).status() is TaskStatus.NOT_FOUND


async def test_info_describes_a_live_task(broker: InMemoryBroker, autojump_clock: Any) -> None:
    gate = Gate(broker)

    @broker.task("info:job")
    async def job(a: int, *, b: str) -> None:
        pass

    await gate.occupy()
    first = await job.kiq(1, b="x")
    handle = await job.kicker().after(first).kiq(2, b="y")
    info = await handle.info()
    assert info is not None
    assert (info.task_id, info.task_name, info.args, info.kwargs) == (
        handle.task_id,
        "info:job",
        (2,),
        {"b": "y"},
    )
    assert info.tries == 0
    assert info.dependencies == frozenset({first.task_id})
    assert info.enqueue_time == trio_wall_clock()
    assert (await first.info()) is not None
    scheduled = await job.kicker().with_delay(60).kiq(3, b="z")
    scheduled_info = await scheduled.info()
    assert scheduled_info is not None and scheduled_info.scheduled == trio_wall_clock().add(
        seconds=60
    )
    gate.release.set()
    await first
    await handle
    assert await handle.info() is None


# Delay, schedule and priority --------------------------------------------------------------


async def test_delay_and_schedule_really_wait(broker: InMemoryBroker, autojump_clock: Any) -> None:
    started: dict[str, float] = {}

    @broker.task
    async def stamp(name: str) -> None:
        started[name] = trio.current_time()

    t0 = trio.current_time()
    delayed = await stamp.kicker().with_delay(pendulum.duration(seconds=30)).kiq("delay")
    scheduled = await stamp.kicker().with_schedule(trio_wall_clock().add(minutes=2)).kiq("at")
    await delayed
    await scheduled
    assert started["delay"] - t0 == pytest.approx(30)
    assert started["at"] - t0 == pytest.approx(120)


async def test_priority_higher_first_fifo_within(broker: InMemoryBroker) -> None:
    gate = Gate(broker)
    order: list[str] = []

    @broker.task
    async def record(name: str) -> None:
        order.append(name)

    await gate.occupy()
    for name, priority in [("low", 0), ("high-1", 5), ("mid", 2), ("high-2", 5), ("neg", -1)]:
        await record.kicker().with_priority(priority).kiq(name)
    await record.kiq("default")
    gate.release.set()
    await broker.wait_all()
    assert order == ["high-1", "high-2", "mid", "low", "default", "neg"]


async def test_priority_from_the_decorator(broker: InMemoryBroker) -> None:
    gate = Gate(broker)
    order: list[str] = []

    @broker.task(priority=9)
    async def urgent() -> None:
        order.append("urgent")

    @broker.task
    async def normal() -> None:
        order.append("normal")

    await gate.occupy()
    await normal.kiq()
    await urgent.kiq()
    gate.release.set()
    await broker.wait_all()
    assert order == ["urgent", "normal"]


# Chaining and dependencies -----------------------------------------------------------------


async def test_then_feeds_the_return_value_and_unpacks_tuples(broker: InMemoryBroker) -> None:
    @broker.task
    async def pair() -> tuple[int, int]:
        return 2, 3

    @broker.task
    async def listing() -> list[int]:
        return [2, 3]

    @broker.task
    async def combine(a: int, b: int, scale: int = 1) -> int:
        return (a + b) * scale

    @broker.task
    async def length(values: list[int]) -> int:
        return len(values)

    child = await (await pair.kiq()).then(combine, scale=10)
    assert await child == 50
    assert await (await (await listing.kiq()).then(length)) == 2  # a list stays one value


async def test_otherwise_runs_only_when_the_parent_fails(broker: InMemoryBroker) -> None:
    ran: list[tuple[int, int]] = []

    @broker.task
    async def divide(a: int, b: int) -> float:
        return a / b

    @broker.task
    async def fallback(a: int, b: int) -> float:
        ran.append((a, b))
        return 0.0

    failing = await divide.kiq(1, 0)
    rescued = await failing.otherwise(fallback)
    assert await rescued == 0.0
    assert ran == [(1, 0)]

    fine = await divide.kiq(6, 3)
    not_needed = await fine.otherwise(fallback)
    assert await not_needed == 2.0
    await broker.wait_all()
    assert ran == [(1, 0)]
    # and a fallback for a parent that already finished decides at once
    assert await (await fine.otherwise(fallback)) == 2.0
    assert await (await failing.otherwise(fallback)) == 0.0


async def test_after_waits_for_every_dependency(
    autojump_clock: Any, make_broker: MakeBroker
) -> None:
    broker_wide = make_broker(max_async_tasks=10)
    order: list[str] = []

    @broker_wide.task
    async def step(name: str, seconds: float) -> None:
        await trio.sleep(seconds)
        order.append(name)

    async with broker_wide:
        slow = await step.kiq("slow", 3)
        fast = await step.kiq("fast", 1)
        joined = await step.kicker().after(slow, fast.task_id).kiq("joined", 0)
        await joined
    assert order == ["fast", "slow", "joined"]


async def test_failure_cascades_three_levels(broker: InMemoryBroker) -> None:
    ran: list[str] = []

    @broker.task
    async def fails() -> None:
        raise RuntimeError("root cause")

    @broker.task
    async def step(name: str) -> None:
        ran.append(name)

    root = await fails.kiq()
    level1 = await step.kicker().after(root).kiq("one")
    level2 = await step.kicker().after(level1).kiq("two")
    level3 = await step.kicker().after(level2).kiq("three")
    for handle in (level1, level2, level3):
        result = await handle.wait_result()
        assert isinstance(result.error, DependencyFailedError)
    assert ran == []
    late = await step.kicker().after(level3).kiq("late")  # after an already-failed task
    assert isinstance((await late.wait_result()).error, DependencyFailedError)


async def test_aborting_a_parent_fails_its_dependents(broker: InMemoryBroker) -> None:
    gate = Gate(broker)

    @broker.task
    async def child() -> None:
        pass

    parent = await gate.occupy()
    dependent = await child.kicker().after(parent).kiq()
    assert await parent.abort() is True
    assert isinstance((await parent.wait_result()).error, TaskAbortedError)
    assert isinstance((await dependent.wait_result()).error, DependencyFailedError)


# Unique, expire, ttl, tries ----------------------------------------------------------------


async def test_unique_and_live_task_ids_are_idempotent(broker: InMemoryBroker) -> None:
    gate = Gate(broker)
    runs: list[int] = []

    @broker.task(unique=True)
    async def once(x: int) -> int:
        runs.append(x)
        return x

    await gate.occupy()
    first = await once.kiq(1)
    again = await once.kiq(1)
    other = await once.kiq(2)
    assert again.task_id == first.task_id != other.task_id
    by_id = await once.kicker().with_task_id(other.task_id).kiq(2)
    assert by_id.task_id == other.task_id
    gate.release.set()
    await broker.wait_all()
    assert sorted(runs) == [1, 2]
    fresh = await once.kiq(1)  # the first one ended: a new run
    assert fresh.task_id != first.task_id
    await fresh
    assert sorted(runs) == [1, 1, 2]


async def test_expire_ends_a_task_not_started_in_time(
    broker: InMemoryBroker, autojump_clock: Any
) -> None:
    gate = Gate(broker)
    ran: list[str] = []

    @broker.task(expire=5)
    async def perishable() -> None:
        ran.append("ran")

    await gate.occupy()
    handle = await perishable.kiq()
    await trio.sleep(10)
    gate.release.set()
    result = await handle.wait_result()
    assert isinstance(result.error, TaskExpiredError)
    assert ran == []
    in_time = await perishable.kiq()
    await in_time
    assert ran == ["ran"]


async def test_ttl_deletes_the_result(broker: InMemoryBroker, autojump_clock: Any) -> None:
    @broker.task(ttl=5)
    async def short_lived() -> int:
        return 1

    handle = await short_lived.kiq()
    assert await handle == 1
    await trio.sleep(4)
    assert await handle.is_ready()
    await trio.sleep(2)
    assert not await handle.is_ready()
    with pytest.raises(ResultGetError):
        await handle.get_result()


async def test_max_tries_retries_with_the_same_id(broker: InMemoryBroker) -> None:
    calls: list[int] = []

    @broker.task(max_tries=3)
    async def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("flaky")
        return len(calls)

    @broker.task(max_tries=2)
    async def broken() -> None:
        calls.append(2)
        raise RuntimeError("broken")

    result = await (await flaky.kiq()).wait_result()
    assert (result.return_value, result.tries) == (3, 3)
    calls.clear()
    failed = await (await broken.kiq()).wait_result()
    assert failed.is_err and failed.tries == 2 and calls == [2, 2]


# Property: nothing is lost, nobody hangs ---------------------------------------------------

Op = tuple[str, int, int, bool]
operations = st.lists(
    st.tuples(
        st.sampled_from(["kick", "kick_after", "abort", "otherwise"]),
        st.integers(0, 3),  # duration in seconds
        st.integers(0, 20),  # which earlier handle
        st.booleans(),  # whether the task fails
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.integers(1, 4))
def test_random_kicks_aborts_and_dependencies_never_lose_a_task(ops: list[Op], slots: int) -> None:
    async def scenario() -> None:
        broker = InMemoryBroker(max_async_tasks=slots)
        ran: set[str] = set()

        @broker.task
        async def work(seconds: int, fail: bool, tag: str) -> str:
            await trio.sleep(seconds)
            ran.add(tag)
            if fail:
                raise RuntimeError(tag)
            return tag

        handles: list[AsyncTaskiqTask[Any]] = []
        aborted: set[str] = set()
        async with broker:
            for index, (kind, seconds, pick, fail) in enumerate(ops):
                tag = f"t{index}"
                earlier = handles[pick % len(handles)] if handles else None
                if kind == "abort" and earlier is not None:
                    if await earlier.abort():
                        aborted.add(earlier.task_id)
                elif kind == "kick_after" and earlier is not None:
                    handles.append(await work.kicker().after(earlier).kiq(seconds, fail, tag))
                elif kind == "otherwise" and earlier is not None:
                    handles.append(await earlier.otherwise(work))
                else:
                    handles.append(await work.kiq(seconds, fail, tag))
                await trio.sleep(seconds / 2)
            with trio.fail_after(1000):
                results = {h.task_id: await h.wait_result() for h in handles}
                await broker.wait_all()
            for task_id in aborted:
                assert isinstance(results[task_id].error, TaskAbortedError)
            for handle in handles:
                assert await handle.status() is TaskStatus.DONE
                result = results[handle.task_id]
                if not result.is_err:
                    assert result.return_value in ran  # a success really ran
                elif handle.task_id not in aborted:
                    assert isinstance(result.error, RuntimeError | DependencyFailedError)

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


class CrashOnce(TaskiqMiddleware):
    """A buggy middleware: its first post_execute raises, which crashes the worker."""

    def __init__(self) -> None:
        self.crashed = False

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("middleware bug")


async def test_a_crashed_worker_is_restarted_and_its_tasks_delivered_again(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker().with_middlewares(CrashOnce())
    attempts: list[str] = []

    @broker.task
    async def survives() -> int:
        attempts.append("run")
        return len(attempts)

    @broker.task
    async def bystander() -> str:
        return "fine"

    async with broker:
        with trio.fail_after(5):
            result = await (await survives.kiq()).wait_result()
            assert await (await bystander.kiq()) == "fine"
    assert (result.return_value, result.tries) == (2, 2)  # at least once: it ran again


async def crash_the_store(broker: ActorBroker) -> None:
    """Crash the result store actor (a ttl that is not a number); its supervisor restarts
    it. Told on the store's node: a link would refuse the message."""
    if isinstance(broker, OneProcessCluster):
        store: ActorRef[Any] = broker.hub_node.ref(STORE_ACTOR)
    else:
        assert broker._store_ref is not None
        store = broker._store_ref
    crash = StoreResult("crash", EncodedResult(b"", is_err=False), "soon")  # type: ignore[arg-type]
    await store.tell(crash)


async def test_a_restarted_result_store_keeps_what_it_knew(
    make_broker: MakeBroker, autojump_clock: Any
) -> None:
    broker = make_broker(max_stored_results=1)

    @broker.task
    async def value(x: int) -> int:
        return x

    @broker.task(ttl=5)
    async def short_lived() -> int:
        return 0

    async with broker:
        evicted, kept = await value.kiq(1), await value.kiq(2)
        mortal = await short_lived.kiq()
        assert [await evicted, await kept, await mortal] == [1, 2, 0]  # the last read stays
        assert broker._store_ref is not None
        await crash_the_store(broker)
        await trio.sleep(1)
        with trio.fail_after(5), pytest.raises(ResultGetError, match="gone"):
            await evicted.wait_result()  # it still knows the task ended: no hang
        assert await mortal.is_ready()
        await trio.sleep(5)
        assert not await mortal.is_ready()  # and still deletes it when its ttl ends


async def test_expire_applies_while_waiting_for_a_dependency(
    broker: InMemoryBroker, autojump_clock: Any
) -> None:
    gate = Gate(broker)

    @broker.task
    async def child() -> None:
        pass

    parent = await gate.occupy()
    dependent = await child.kicker().after(parent).with_labels(expire=1).kiq()
    start = trio.current_time()
    result = await dependent.wait_result()
    assert isinstance(result.error, TaskExpiredError)
    assert trio.current_time() - start == pytest.approx(1)
    gate.release.set()
    assert await parent == "released"
