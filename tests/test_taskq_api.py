"""The taskiq task API on the in-process broker: kicking, handles, results, context."""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncGenerator
from typing import Any

import attrs
import pendulum
import pytest
import trio
import trio.testing

from actors import (
    AsyncKicker,
    AsyncResultBackend,
    BrokerError,
    Context,
    DummyResultBackend,
    InMemoryBroker,
    MsgpackSerializer,
    NoResultError,
    PickleSerializer,
    ResultGetError,
    SendTaskError,
    SerializationError,
    SharedBrokerSendTaskError,
    SimpleRetryMiddleware,
    SmartRetryMiddleware,
    TaskiqDepends,
    TaskiqEvents,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqResult,
    TaskiqResultTimeoutError,
    TaskiqState,
    TaskProgress,
    TaskRejectedError,
    TaskTimeoutError,
    UnknownTaskError,
    async_shared_broker,
    gather,
)

from .conftest import MakeBroker, cluster_xfail


async def test_kiq_returns_a_handle_whose_result_carries_every_field(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker()

    @broker.task("maths:add", team="core")
    async def add(a: int, b: int) -> int:
        return a + b

    async with broker:
        handle = await add.kiq(2, 3)
        result = await handle.wait_result(timeout=5)

    assert result.return_value == 5
    assert not result.is_err and result.error is None and result.log is None
    assert result.task_id == handle.task_id
    assert result.labels["team"] == "core"
    assert result.tries == 1
    assert result.worker_id is not None and result.worker_id.endswith(".worker-0")
    assert isinstance(result.enqueue_time, pendulum.DateTime)
    assert isinstance(result.start_time, pendulum.DateTime)
    assert isinstance(result.finish_time, pendulum.DateTime)
    assert result.enqueue_time <= result.start_time <= result.finish_time
    run_seconds = (result.finish_time - result.start_time).total_seconds()
    assert 0 <= result.execution_time <= run_seconds + 0.001  # timed inside the run
    assert result.raise_for_error() is result


async def test_default_task_name_is_module_and_qualname(broker: InMemoryBroker) -> None:
    @broker.task
    async def named() -> str:
        return "x"

    assert (
        named.task_name
        == f"{__name__}:test_default_task_name_is_module_and_qualname.<locals>.named"
    )
    assert broker.find_task(named.task_name) is named
    assert await named() == "x"  # calling the task runs it here
    assert await (await named.kiq()) == "x"


async def test_awaiting_a_handle_raises_the_task_error(broker: InMemoryBroker) -> None:
    @broker.task
    async def fails() -> None:
        raise ValueError("no good")

    handle = await fails.kiq()
    result = await handle.wait_result()
    assert result.is_err
    assert isinstance(result.error, ValueError)
    with pytest.raises(ValueError, match="no good"):
        result.raise_for_error()
    with pytest.raises(ValueError, match="no good"):
        await handle


async def test_is_ready_and_get_result(broker: InMemoryBroker) -> None:
    release = trio.Event()

    @broker.task
    async def gated() -> int:
        await release.wait()
        return 7

    handle = await gated.kiq()
    assert not await handle.is_ready()
    with pytest.raises(ResultGetError):
        await handle.get_result()
    release.set()
    await handle.wait_result()
    assert await handle.is_ready()
    assert (await handle.get_result()).return_value == 7


async def test_wait_result_timeout(broker: InMemoryBroker, autojump_clock: Any) -> None:
    @broker.task
    async def slow() -> None:
        await trio.sleep(10)

    handle = await slow.kiq()
    start = trio.current_time()
    with pytest.raises(TaskiqResultTimeoutError):
        await handle.wait_result(timeout=1)
    assert trio.current_time() - start == pytest.approx(1)
    assert not (await handle.wait_result()).is_err


async def test_kicker_labels_task_id_and_broker(make_broker: MakeBroker) -> None:
    first, second = make_broker(), make_broker()

    @first.task
    async def echo_labels(context: Context = TaskiqDepends()) -> dict[str, Any]:
        return dict(context.message.labels)

    second.register_task(echo_labels.original_func, echo_labels.task_name)
    async with first, second:
        handle = (
            await echo_labels.kicker()
            .with_labels(colour="red")
            .with_task_id("my-id")
            .with_broker(second)
            .kiq()
        )
        assert handle.task_id == "my-id"
        assert handle.broker is second
        labels = await handle
        assert labels["colour"] == "red"
        with pytest.raises(ResultGetError):
            await first.get_result("my-id")  # it went to the second broker


async def test_gather_returns_results_in_input_order(
    broker: InMemoryBroker, autojump_clock: Any
) -> None:
    @broker.task
    async def after(seconds: float, value: int) -> int:
        await trio.sleep(seconds)
        return value

    results = await gather(
        await after.kiq(0.03, 1), after.kiq(0.01, 2), await after.kiq(0.02, 3), timeout=5
    )
    assert [result.return_value for result in results] == [1, 2, 3]


async def test_gather_timeout(broker: InMemoryBroker, autojump_clock: Any) -> None:
    @broker.task
    async def sleepy() -> None:
        await trio.sleep(100)

    with pytest.raises(TaskiqResultTimeoutError):
        await gather(await sleepy.kiq(), timeout=1)


async def test_requeue_runs_the_same_task_id_again(broker: InMemoryBroker) -> None:
    seen: list[tuple[str, str | None]] = []

    @broker.task
    async def flaky(context: Context = TaskiqDepends()) -> int:
        count = context.message.labels.get("X-Taskiq-requeue")
        seen.append((context.message.task_id, count))
        if count is None or int(count) < 2:
            await context.requeue()
        return len(seen)

    handle = await flaky.kiq()
    result = await handle.wait_result(timeout=5)
    assert result.return_value == 3
    assert seen == [(handle.task_id, None), (handle.task_id, "1"), (handle.task_id, "2")]
    assert result.tries == 3


async def test_no_result_error_tells_waiters_instead_of_hanging(broker: InMemoryBroker) -> None:
    release = trio.Event()

    @broker.task
    async def silent() -> None:
        await release.wait()
        raise NoResultError

    handle = await silent.kiq()
    async with trio.open_nursery() as nursery:
        failures: list[BaseException] = []

        async def early_waiter() -> None:
            with pytest.raises(ResultGetError, match="without a result") as raised:
                await handle.wait_result()
            failures.append(raised.value)

        nursery.start_soon(early_waiter)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert len(failures) == 1
    with trio.fail_after(5), pytest.raises(ResultGetError, match="without a result"):
        await handle.wait_result()  # a late waiter too
    assert not await handle.is_ready()


async def test_reject_gives_waiters_an_error_result(broker: InMemoryBroker) -> None:
    runs = 0

    @broker.task
    async def picky(context: Context = TaskiqDepends()) -> None:
        nonlocal runs
        runs += 1
        context.reject()

    result = await (await picky.kiq()).wait_result(timeout=5)
    assert result.is_err and isinstance(result.error, TaskRejectedError)
    await broker.wait_all()
    assert runs == 1


# Dependencies live at module level: the injector resolves (string) annotations there.
events: list[str] = []


async def connection() -> AsyncGenerator[str, None]:
    events.append("open")
    yield "conn"
    events.append("close")


def settings(conn: str = TaskiqDepends(connection)) -> dict[str, str]:
    return {"conn": conn}


async def test_dependencies_state_context_and_teardown(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker()
    events.clear()

    @broker.on_event(TaskiqEvents.WORKER_STARTUP)
    async def setup(state: TaskiqState) -> None:
        state.greeting = "hello"

    broker.add_dependency_context({int: 41})

    @broker.task
    async def uses_everything(
        context: Context = TaskiqDepends(),
        state: TaskiqState = TaskiqDepends(),
        number: int = TaskiqDepends(),
        conn: str = TaskiqDepends(connection),
        config: dict[str, str] = TaskiqDepends(settings),
    ) -> list[Any]:
        events.append("run")
        return [context.message.task_name, state.greeting, number + 1, conn, config]

    async with broker:
        value = await (await uses_everything.kiq())
    assert value == [uses_everything.task_name, "hello", 42, "conn", {"conn": "conn"}]
    assert events == ["open", "run", "close"]  # cached once per run, torn down after


async def test_fire_events_runs_each_events_handlers_with_the_state() -> None:
    broker = InMemoryBroker()
    fired: list[tuple[str, TaskiqState]] = []

    @broker.on_event(TaskiqEvents.WORKER_STARTUP, TaskiqEvents.WORKER_SHUTDOWN)
    async def first(state: TaskiqState) -> None:
        fired.append(("first", state))

    @broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
    def second(state: TaskiqState) -> None:
        fired.append(("second", state))

    await broker.fire_events([TaskiqEvents.WORKER_SHUTDOWN, TaskiqEvents.CLIENT_STARTUP])
    assert fired == [("first", broker.state), ("second", broker.state)]


async def test_progress_is_visible_while_the_task_runs(broker: InMemoryBroker) -> None:
    halfway, finish = trio.Event(), trio.Event()

    @broker.task
    async def long_job(context: Context = TaskiqDepends()) -> str:
        await context.set_progress(TaskProgress(progress=0.5, current=5, total=10))
        halfway.set()
        await finish.wait()
        return "done"

    handle = await long_job.kiq()
    await halfway.wait()
    progress = await handle.get_progress()
    assert progress is not None and progress.progress == 0.5 and progress.current == 5
    finish.set()
    assert await handle == "done"


async def test_events_fire_in_lifecycle_order(make_broker: MakeBroker) -> None:
    fired: list[str] = []
    broker = make_broker()
    for event in TaskiqEvents:

        def record(state: TaskiqState, name: str = event.value) -> None:
            fired.append(name)

        broker.add_event_handler(event, record)
    await broker.startup()
    assert fired == ["worker_startup", "client_startup"]
    await broker.shutdown()
    assert fired[2:] == ["client_shutdown", "worker_shutdown"]


async def test_every_middleware_hook_runs_in_order(make_broker: MakeBroker) -> None:
    calls: list[str] = []

    class Recorder(TaskiqMiddleware):
        async def startup(self) -> None:
            calls.append("startup")

        def shutdown(self) -> None:
            calls.append("shutdown")

        def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
            calls.append("pre_send")
            message.labels["stamped"] = True
            return message

        async def post_send(self, message: TaskiqMessage) -> None:
            calls.append("post_send")

        def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
            calls.append(f"pre_execute stamped={message.labels.get('stamped')}")
            return message

        def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
            calls.append(f"post_execute err={result.is_err}")

        def on_error(
            self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
        ) -> None:
            calls.append(f"on_error {type(exception).__name__}")

        def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
            calls.append("post_save")

    broker = make_broker().with_middlewares(Recorder())

    @broker.task
    async def boom() -> None:
        raise KeyError("k")

    async with broker:
        handle = await boom.kiq()
        await handle.wait_result()
        await broker.wait_all()
    assert calls == [
        "startup",
        "pre_send",
        "post_send",
        "pre_execute stamped=True",
        "post_execute err=True",
        "on_error KeyError",
        "post_save",
        "shutdown",
    ]


async def test_simple_retry_reuses_the_task_id_and_counts_tries(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker().with_middlewares(SimpleRetryMiddleware(default_retry_count=3))
    attempts: list[str] = []

    @broker.task(retry_on_error=True)
    async def shaky(context: Context = TaskiqDepends()) -> str:
        attempts.append(context.message.task_id)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "ok"

    async with broker:
        handle = await shaky.kiq()
        result = await handle.wait_result(timeout=5)
    assert result.return_value == "ok" and result.tries == 3
    assert attempts == [handle.task_id] * 3


async def test_simple_retry_gives_up_after_max_retries(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker().with_middlewares(SimpleRetryMiddleware())
    runs = 0

    @broker.task(retry_on_error=True, max_retries=2)
    async def hopeless() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError(f"run {runs}")

    async with broker:
        result = await (await hopeless.kiq()).wait_result(timeout=5)
    assert runs == 2  # taskiq's count: max_retries bounds the runs
    assert result.is_err and str(result.error) == "run 2"


async def test_smart_retry_waits_its_delay(autojump_clock: Any, make_broker: MakeBroker) -> None:
    middleware = SmartRetryMiddleware(default_delay=2, use_delay_exponent=True)
    broker = make_broker().with_middlewares(middleware)
    started: list[float] = []

    @broker.task(retry_on_error=True)
    async def shaky() -> int:
        started.append(trio.current_time())
        if len(started) < 3:
            raise RuntimeError("again")
        return len(started)

    async with broker:
        assert await (await shaky.kiq()) == 3
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(started)]
    assert gaps == [2.0, 4.0]


@attrs.define
class Point:
    x: int
    y: int


async def test_cast_types_structures_arguments_with_cattrs(
    make_broker: MakeBroker,
) -> None:
    for cast_types, expected in ((True, "Point"), (False, "dict")):
        broker = make_broker(cast_types=cast_types)

        @broker.task
        async def kind(point: Point, count: int) -> list[str]:
            return [type(point).__name__, type(count).__name__]

        async with broker:
            value = await (await kind.kiq({"x": 1, "y": 2}, "3"))  # type: ignore[arg-type]
        assert value[0] == expected
        assert value[1] == ("int" if cast_types else "str")


@pytest.mark.parametrize("serializer", [MsgpackSerializer(), PickleSerializer()])
async def test_other_serializers(serializer: Any, make_broker: MakeBroker) -> None:
    broker = make_broker().with_serializer(serializer)

    @broker.task
    async def double(values: list[int]) -> list[int]:
        return [value * 2 for value in values]

    async with broker:
        assert await (await double.kiq([1, 2])) == [2, 4]


async def test_unserializable_argument_fails_kiq_and_broker_keeps_serving(
    broker: InMemoryBroker,
) -> None:
    @broker.task
    async def identity(value: Any) -> Any:
        return value

    with pytest.raises(SendTaskError, match="identity") as raised:
        await identity.kiq(object())
    assert isinstance(raised.value.__cause__, SerializationError)
    assert await (await identity.kiq(5)) == 5


async def test_unserializable_return_value_is_an_error_result(broker: InMemoryBroker) -> None:
    @broker.task
    async def returns_object() -> object:
        return object()

    result = await (await returns_object.kiq()).wait_result()
    assert result.is_err and isinstance(result.error, SerializationError)


async def test_unknown_task_name_is_refused(broker: InMemoryBroker) -> None:
    kicker: AsyncKicker[[], Any] = AsyncKicker("no.such:task", broker, {})
    with pytest.raises(UnknownTaskError, match=r"no\.such:task"):
        await kicker.kiq()


async def test_kicking_a_stopped_broker_is_a_clear_error(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker()

    @broker.task
    async def nothing() -> None:
        pass

    with pytest.raises(BrokerError, match="not running"):
        await nothing.kiq()


async def test_timeout_label_ends_the_run(broker: InMemoryBroker, autojump_clock: Any) -> None:
    @broker.task(timeout=1)
    async def sleeper() -> None:
        await trio.sleep(5)

    result = await (await sleeper.kiq()).wait_result()
    assert isinstance(result.error, TaskTimeoutError)
    assert isinstance(result.error, TimeoutError)


async def test_sync_tasks_run_in_a_bounded_thread_pool(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker(sync_tasks_pool_size=2)
    lock = threading.Lock()
    running = peak = 0
    pair = threading.Barrier(2, timeout=5)  # two threads must be inside at once

    @broker.task
    def blocking(index: int) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        pair.wait()
        with lock:
            running -= 1
        return threading.current_thread().name

    async with broker:
        handles = [await blocking.kiq(i) for i in range(6)]
        names = [await handle for handle in handles]
    assert peak == 2
    assert threading.main_thread().name not in names


async def test_max_async_tasks_bounds_concurrency(
    autojump_clock: Any, make_broker: MakeBroker
) -> None:
    broker = make_broker(max_async_tasks=3)
    running = peak = 0

    @broker.task
    async def busy() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.01)
        running -= 1

    async with broker:
        for _ in range(10):
            await busy.kiq()
        await broker.wait_all()
    assert peak == 3


async def test_runs_that_block_all_start_at_once(
    autojump_clock: Any, make_broker: MakeBroker
) -> None:
    broker = make_broker(max_async_tasks=40)
    started: list[float] = []

    @broker.task
    async def sleepy() -> None:
        started.append(trio.current_time())
        await trio.sleep(1)

    async with broker:
        begin = trio.current_time()
        handles = [await sleepy.kiq() for _ in range(40)]
        for handle in handles:
            await handle.wait_result()
        # The clock jumps only when every task is asleep: each run found a runner at once.
        assert started == [begin] * 40
        assert trio.current_time() - begin == pytest.approx(1)


class _StepCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


async def test_runs_that_never_block_need_no_wakeup_each(
    make_broker: MakeBroker, request: pytest.FixtureRequest
) -> None:
    cluster_xfail(
        request,
        "each message crossing a link takes task steps of the link tasks; this "
        "counts the in-process runners' wake-ups only",
    )
    broker = make_broker(max_async_tasks=30)

    @broker.task
    async def quick() -> None:
        pass

    counter = _StepCounter()
    async with broker:
        trio.lowlevel.add_instrument(counter)
        handles = [await quick.kiq() for _ in range(30)]
        for handle in handles:
            await handle.wait_result()
        trio.lowlevel.remove_instrument(counter)
    # One runner takes the waiting runs one after another; waking a runner for each
    # would cost a scheduler step per run on top of the actors' own.
    assert counter.steps <= 15


async def test_dummy_backend_still_pushes_to_present_waiters(make_broker: MakeBroker) -> None:
    broker = make_broker().with_result_backend(DummyResultBackend())

    @broker.task
    async def value() -> int:
        return 1

    async with broker:
        handle = await value.kiq()
        assert await handle == 1
        assert not await handle.is_ready()
        with pytest.raises(ResultGetError):
            await handle.get_result()
        with pytest.raises(ResultGetError, match="gone"):
            await handle.wait_result()  # a late waiter is told, it does not hang


async def test_waiting_for_an_evicted_result_is_an_error_not_a_hang(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker(max_stored_results=2, max_async_tasks=1)

    @broker.task
    async def value(x: int) -> int:
        return x

    async with broker:
        handles = [await value.kiq(x) for x in range(4)]
        await broker.wait_all()
        assert [await handle for handle in handles[2:]] == [2, 3]
        with trio.fail_after(5), pytest.raises(ResultGetError, match="gone"):
            await handles[0].wait_result()


class DictBackend(AsyncResultBackend[Any]):
    """A user's own backend, written against the public interface only."""

    def __init__(self) -> None:
        self.results: dict[str, TaskiqResult[Any]] = {}
        self.progress: dict[str, TaskProgress[Any]] = {}

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        self.results[task_id] = result

    async def is_result_ready(self, task_id: str) -> bool:
        return task_id in self.results

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        try:
            return self.results[task_id]
        except KeyError:
            raise ResultGetError(f"no result for {task_id}") from None

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        self.progress[task_id] = progress

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        return self.progress.get(task_id)


async def test_a_users_backend_plugs_in_unchanged(make_broker: MakeBroker) -> None:
    backend = DictBackend()
    broker = make_broker().with_result_backend(backend)

    @broker.task
    async def square(x: int) -> int:
        return x * x

    async with broker:
        handle = await square.kiq(9)
        assert await handle == 81
    assert backend.results[handle.task_id].return_value == 81


async def test_a_users_backend_gets_whole_results_and_answers_the_reads(
    make_broker: MakeBroker,
) -> None:
    backend = DictBackend()
    broker = make_broker().with_result_backend(backend)

    @broker.task
    async def pair() -> Any:
        return (1, "a")

    @broker.task
    async def fails() -> None:
        raise ValueError("no")

    async with broker:
        handle = await pair.kiq()
        assert (await handle.wait_result()).return_value == [1, "a"]
        failed = await (await fails.kiq()).wait_result()
        backend.results[handle.task_id].return_value = "changed"
        assert await handle.is_ready()
        assert (await handle.get_result()).return_value == "changed"
    # On a hub, which has no user types, what the serializer rebuilds (JSON: a list).
    stored = backend.results[handle.task_id]
    assert stored.task_id == handle.task_id and not stored.is_err
    kept_error = backend.results[failed.task_id]
    assert kept_error.is_err and isinstance(kept_error.error, ValueError)
    assert isinstance(failed.error, ValueError) and str(failed.error) == "no"


async def test_propagate_exceptions_false_keeps_the_error_out_of_the_result(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker(propagate_exceptions=False)

    @broker.task
    async def fails() -> None:
        raise ValueError("hidden")

    async with broker:
        result = await (await fails.kiq()).wait_result()
    assert result.is_err and result.error is None


async def test_await_inplace_returns_after_the_task_ran(
    make_broker: MakeBroker,
) -> None:
    broker = make_broker(await_inplace=True)

    @broker.task
    async def quick() -> int:
        return 3

    async with broker:
        handle = await quick.kiq()
        assert await handle.is_ready()


async def test_wait_all_waits_for_every_kicked_task(
    broker: InMemoryBroker, autojump_clock: Any
) -> None:
    done: list[int] = []

    @broker.task
    async def work(index: int) -> None:
        await trio.sleep(0.001 * (index % 3))
        done.append(index)

    for index in range(20):
        await work.kiq(index)
    await broker.wait_all()
    assert sorted(done) == list(range(20))


async def test_async_shared_broker_kicks_through_the_default_broker(
    make_broker: MakeBroker,
) -> None:
    @async_shared_broker.task("shared:triple")
    async def triple(x: int) -> int:
        return 3 * x

    with pytest.raises(SharedBrokerSendTaskError):
        await triple.kiq(1)
    broker = make_broker()
    async_shared_broker.default_broker(broker)
    try:
        async with broker:
            handle = await triple.kiq(4)
            assert handle.broker is broker
            assert await handle == 12
    finally:
        async_shared_broker.tasks.pop("shared:triple")
        async_shared_broker._default = None


async def test_a_crashing_task_does_not_stop_the_broker(broker: InMemoryBroker) -> None:
    @broker.task
    async def crash(x: int) -> int:
        if x == 0:
            raise ZeroDivisionError("x")
        return 10 // x

    handles = [await crash.kiq(x) for x in (0, 1, 2)]
    results = await gather(*handles)
    assert [result.is_err for result in results] == [True, False, False]
    assert [result.return_value for result in results] == [None, 10, 5]


def test_tasks_are_plain_callables_outside_trio(make_broker: MakeBroker) -> None:
    broker = make_broker()

    @broker.task
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 2) == 4
