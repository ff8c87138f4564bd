"""What the task queue refuses, and that nothing a user passes in crashes one of its roles:
bad labels, bad timeouts, exceptions of any kind from a task, waits given up on."""

from __future__ import annotations

import contextlib
import datetime
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings, strategies as st

import actors.inmemory
from actors import (
    AsyncTaskiqTask,
    Context,
    InMemoryBroker,
    ResultGetError,
    SendTaskError,
    SimpleRetryMiddleware,
    TaskiqDepends,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqResultTimeoutError,
    TaskStatus,
    gather,
)
from actors.exceptions import RemoteTaskError
from actors.protocol import BrokerMessage
from actors.results import ResultStore


class Custom(BaseException):
    """A task's own BaseException subclass."""


BAD_LABELS = [
    ("expire", math.nan),
    ("expire", -1),
    ("ttl", "1h"),
    ("ttl", math.nan),
    ("max_tries", "x"),
    ("priority", "high"),
    ("priority", 1.5),
    ("delay", math.inf),
    ("delay", "soon"),
    ("eta", "tomorrow"),
    ("eta", 5),
    ("timeout", -1),
    ("timeout", math.nan),
    ("timeout", "abc"),
    ("depends_on", "abc"),
    ("max_retries", True),
    ("_retries", "x"),
    ("X-Taskiq-requeue", -2),
    ("then_of", 7),
]


async def serves(broker: InMemoryBroker) -> bool:
    """Whether the broker still runs a normal task to the end."""

    @broker.task("plain")
    async def plain(x: int) -> int:
        return x + 1

    with trio.fail_after(60):
        return await (await plain.kiq(1)) == 2


@pytest.mark.parametrize(("label", "value"), BAD_LABELS)
async def test_kiq_refuses_a_bad_label_naming_it(
    broker: InMemoryBroker, label: str, value: Any
) -> None:
    @broker.task
    async def job() -> None:
        pass

    with pytest.raises(SendTaskError, match=f"label '{label}'"):
        await job.kicker().with_labels(**{label: value}).kiq()
    assert await serves(broker)


@pytest.mark.parametrize("task_id", [123, ""])
async def test_kiq_refuses_a_task_id_that_is_not_a_non_empty_string(
    broker: InMemoryBroker, task_id: Any
) -> None:
    @broker.task
    async def job() -> None:
        pass

    with pytest.raises(SendTaskError, match="task id"):
        await job.kicker().with_task_id(task_id).kiq()
    assert await serves(broker)


@pytest.mark.parametrize(("label", "value"), BAD_LABELS[:6])
def test_the_decorator_refuses_a_bad_label_naming_it(label: str, value: Any) -> None:
    def job() -> None:
        pass

    with pytest.raises(SendTaskError, match=f"label '{label}'"):
        InMemoryBroker().task(**{label: value})(job)


async def test_good_label_spellings_are_accepted(
    broker: InMemoryBroker, autojump_clock: Any
) -> None:

    @broker.task(ttl=datetime.timedelta(hours=1), priority="3", max_tries=2.0, timeout="5")
    async def job() -> str:
        return "ok"

    kicker = job.kicker().with_labels(expire=None, eta=datetime.datetime(2000, 1, 1))
    with trio.fail_after(60):
        assert await (await kicker.with_priority(2).kiq()) == "ok"


@pytest.mark.parametrize(
    "labels",
    [{"priority": "high"}, {"expire": math.nan}, {"delay": -5}, {"depends_on": 5}],
)
async def test_a_bad_label_that_slips_past_kiq_fails_only_its_task(
    broker: InMemoryBroker, autojump_clock: Any, labels: dict[str, Any]
) -> None:
    @broker.task("job")
    async def job() -> None:
        pass

    message = TaskiqMessage(task_id="bad", task_name="job", labels=labels)
    raw = broker.formatter.dumps(message)
    await broker.kick(BrokerMessage(raw.task_id, raw.task_name, raw.message, labels))
    with trio.fail_after(60):
        result = await AsyncTaskiqTask[None]("bad", broker).wait_result()
    assert isinstance(result.error, SendTaskError)
    assert await serves(broker)


class Spoil(TaskiqMiddleware):
    """Changes labels after kiq checked them."""

    def __init__(self, **labels: Any) -> None:
        self.labels = labels

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        if message.task_name == "failing":
            message.labels.update(self.labels)
        return message


@pytest.mark.parametrize("labels", [{"max_tries": "x"}, {"timeout": math.nan}, {"ttl": "1h"}])
async def test_labels_a_middleware_spoils_fail_the_task_not_the_worker(
    autojump_clock: Any, labels: dict[str, Any]
) -> None:
    broker = InMemoryBroker().with_middlewares(Spoil(**labels))

    @broker.task("failing")
    async def failing() -> None:
        raise RuntimeError("boom")

    async with broker:
        with trio.fail_after(60):
            result = await (await failing.kiq()).wait_result()
        assert isinstance(result.error, SendTaskError)
        assert await serves(broker)


async def test_a_retry_label_spoilt_after_the_run_ends_the_task_with_its_error() -> None:
    broker = InMemoryBroker().with_middlewares(SimpleRetryMiddleware(default_retry_label=True))

    @broker.task("failing")
    async def failing(context: Context = TaskiqDepends()) -> None:
        context.message.labels["max_retries"] = "many"  # read by on_error, after the run
        raise RuntimeError("boom")

    async with broker:
        with trio.fail_after(60):
            result = await (await failing.kiq()).wait_result()
        assert isinstance(result.error, RuntimeError) and result.tries == 1
        assert await serves(broker)


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, Custom])
@pytest.mark.parametrize("sync", [False, True])
async def test_any_exception_a_task_raises_is_its_error_result(
    broker: InMemoryBroker, error: type[BaseException], sync: bool, topology: str
) -> None:
    def raise_it() -> None:
        raise error("from the task")

    async def raise_it_async() -> None:
        raise_it()

    task = broker.register_task(raise_it if sync else raise_it_async, "raises")
    with trio.fail_after(60):
        result = await (await task.kiq()).wait_result()
    assert result.is_err
    if topology == "cluster":
        # Across nodes a BaseException that is not an Exception is not rebuilt (it
        # would stop the client): it stands in as a RemoteTaskError naming it.
        assert isinstance(result.error, RemoteTaskError)
        assert result.error.type_name.endswith(error.__qualname__)
    else:
        assert type(result.error) is error
    assert await serves(broker)


# Timeouts -------------------------------------------------------------------------------


def recording_stores(monkeypatch: pytest.MonkeyPatch) -> list[ResultStore]:
    """Every ResultStore the brokers start from now on."""
    stores: list[ResultStore] = []

    class Recorded(ResultStore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(actors.inmemory, "ResultStore", Recorded)
    return stores


def waiting(stores: list[ResultStore]) -> int:
    return sum(len(replies) for replies in stores[-1]._waiters.values())


async def test_waits_given_up_leave_no_waiter_behind(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: Any
) -> None:
    stores = recording_stores(monkeypatch)
    async with InMemoryBroker() as broker:
        never = AsyncTaskiqTask[None]("never-kicked", broker)
        for _ in range(50):
            with pytest.raises(TaskiqResultTimeoutError):
                await never.wait_result(timeout=1)
        with pytest.raises(TaskiqResultTimeoutError):
            await gather(never, AsyncTaskiqTask[None]("nor-this", broker), timeout=1)
        with trio.move_on_after(1):
            await never.wait_result()
        assert await serves(broker)  # a round trip through the store: it has read everything
        assert waiting(stores) == 0


BAD_TIMEOUTS: list[tuple[Any, type[Exception]]] = [
    (math.nan, ValueError),
    ("5", TypeError),
    (True, TypeError),
    ([1], TypeError),
]


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS)
async def test_a_bad_timeout_is_refused_at_the_call(
    broker: InMemoryBroker, autojump_clock: Any, timeout: Any, error: type[Exception]
) -> None:
    handle = AsyncTaskiqTask[None]("never-kicked", broker)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: handle.wait_result(timeout=timeout),
        lambda: gather(handle, timeout=timeout),
        lambda: handle.abort(timeout=timeout),
    ]
    for call in calls:
        with trio.fail_after(60), pytest.raises(error, match="timeout"):
            await call()


@pytest.mark.parametrize("timeout", [None, 0, -1, -0.5])
async def test_none_zero_negative_and_inf_timeouts_wait_as_long_as_it_takes(
    broker: InMemoryBroker, autojump_clock: Any, timeout: float | None
) -> None:
    release = trio.Event()

    @broker.task
    async def slow() -> str:
        await release.wait()
        return "done"

    async def release_later() -> None:
        await trio.sleep(10_000)
        release.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_later)
        first, second = await slow.kiq(), await slow.kiq()
        assert (await first.wait_result(timeout=timeout)).return_value == "done"
        assert [r.return_value for r in await gather(second, timeout=timeout)] == ["done"]

    @broker.task
    async def forever() -> None:
        await trio.sleep_forever()

    running = await forever.kiq()
    await trio.sleep(1)
    assert await running.abort(timeout=timeout)  # waits for the worker's confirmation


# Property: whatever the labels, arguments and timeouts, no role crashes ----------------------

LABEL_NAMES = [
    "priority",
    "delay",
    "eta",
    "expire",
    "ttl",
    "timeout",
    "max_tries",
    "max_retries",
    "retry_on_error",
    "_retries",
    "depends_on",
    "then_of",
    "otherwise_of",
    "unique",
    "unique_key",
    "X-Taskiq-requeue",
]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(-1e12, 1e12),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 2.5]),
    st.text(max_size=4),
    st.sampled_from(["5", "-1", "nan", "1h", "2026-03-01T12:00:00Z", "2000-01-01"]),
    st.lists(st.text(max_size=3), max_size=3),
    st.timedeltas(datetime.timedelta(days=-3), datetime.timedelta(days=3)),
    st.datetimes(datetime.datetime(1990, 1, 1), datetime.datetime(2100, 1, 1)),
    st.just(object()),
)
labels_strategy = st.dictionaries(st.sampled_from(LABEL_NAMES), values, max_size=5)
arguments = st.lists(
    st.one_of(st.integers(), st.text(max_size=3), st.just({1, 2}), st.just(object())),
    max_size=2,
)
wait_timeouts = st.one_of(st.none(), st.floats(-5, 5), st.sampled_from([math.nan, math.inf]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(labels_strategy, arguments, st.booleans()), min_size=1, max_size=4))
def test_random_labels_and_arguments_never_crash_a_role(
    kicks: list[tuple[dict[str, Any], list[Any], bool]],
) -> None:
    async def scenario() -> None:
        broker = InMemoryBroker(max_async_tasks=2).with_middlewares(SimpleRetryMiddleware())
        failed: set[str] = set()

        @broker.task("work")
        async def work(*args: Any, fail: bool = False, context: Context = TaskiqDepends()) -> int:
            await trio.sleep(1)
            if fail and context.message.task_id not in failed:  # once: retries may be many
                failed.add(context.message.task_id)
                raise Custom("failed")
            return len(args)

        async with broker:
            handles = []
            for labels, args, fail in kicks:
                try:
                    handles.append(await work.kicker().with_labels(**labels).kiq(*args, fail=fail))
                except SendTaskError as exc:
                    assert "label '" in str(exc) or "serializ" in str(exc).lower()
            for handle in handles:
                try:
                    result = await handle.wait_result(timeout=1e12)
                except ResultGetError:
                    continue  # it ended, and its ttl deleted the result before this wait
                except TaskiqResultTimeoutError:  # delayed further (up to 1e30 s): still there
                    assert await handle.status() is TaskStatus.SCHEDULED
                    assert await handle.abort()
                    result = await handle.wait_result()
                assert result.is_err or result.return_value is not None
            assert await serves(broker)

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wait_timeouts, min_size=1, max_size=6))
def test_random_wait_timeouts_leave_no_waiter_behind(timeouts: list[float | None]) -> None:
    async def scenario(stores: list[ResultStore]) -> None:
        async with InMemoryBroker() as broker:
            never = AsyncTaskiqTask[None]("never-kicked", broker)
            for timeout in timeouts:
                with trio.move_on_after(2):  # whatever the timeout, the caller may give up
                    with contextlib.suppress(ValueError, TaskiqResultTimeoutError):
                        await never.wait_result(timeout=timeout)
            assert await serves(broker)
            assert waiting(stores) == 0

    with pytest.MonkeyPatch.context() as monkeypatch:
        stores = recording_stores(monkeypatch)
        trio.run(scenario, stores, clock=trio.testing.MockClock(autojump_threshold=0))
