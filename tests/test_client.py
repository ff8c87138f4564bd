"""The blocking client (``actors.client``) driven from plain threads and from asyncio,
against a real hub and worker on 127.0.0.1 run by a trio loop in a thread of their own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import trio

from actors import (
    Context,
    InMemoryBroker,
    ResultGetError,
    SendTaskError,
    TaskAbortedError,
    TaskiqDepends,
    TaskiqEvents,
    TaskiqResultTimeoutError,
    TaskiqState,
    TaskStatus,
    UnknownTaskError,
    WebSocketBroker,
    client as actors_client,
)
from actors.hub import open_hub
from actors.worker_node import open_worker_node

SECRET = "the client tests' secret"

#: The workers' tasks (a worker process would import them); its URL is set to the hub's.
tasks = WebSocketBroker("ws://127.0.0.1:1", secret=SECRET)


@tasks.task("add")
async def add(a: int, b: int) -> int:
    return a + b


@tasks.task("note")
async def note(context: Context = TaskiqDepends()) -> str:
    return str(context.message.labels["note"])


@tasks.task("sleepy")
async def sleepy() -> None:
    await trio.sleep_forever()


@contextlib.contextmanager
def hub_and_worker() -> Iterator[str]:
    """A hub and a worker node for ``tasks`` in a thread; yields the hub's URL."""
    ready: Future[tuple[str, trio.lowlevel.TrioToken]] = Future()
    stop = trio.Event()

    async def serve() -> None:
        async with open_hub("ws://127.0.0.1:0", secret=SECRET) as hub:
            assert hub.address is not None
            tasks.url = hub.address
            async with open_worker_node(tasks, max_async_tasks=100):
                ready.set_result((hub.address, trio.lowlevel.current_trio_token()))
                await stop.wait()

    thread = threading.Thread(target=trio.run, args=(serve,))
    thread.start()
    try:
        url, token = ready.result(timeout=30)
        yield url
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join()


@pytest.fixture
def hub_url() -> Iterator[str]:
    with hub_and_worker() as url:
        yield url


def test_many_threads_kick_and_wait_at_once(hub_url: str) -> None:
    with actors_client.connect(hub_url, secret=SECRET) as client:

        def one(i: int) -> int:
            handle = client.kiq(add, i, 1) if i % 2 else client.kiq("add", i, 1)
            result = handle.wait_result(timeout=10)
            assert handle.is_ready() and handle.status() == TaskStatus.DONE
            assert handle.get_result().return_value == result.return_value
            return int(result.return_value)

        with ThreadPoolExecutor(max_workers=16) as pool:
            assert list(pool.map(one, range(64))) == [i + 1 for i in range(64)]


def test_labels_go_with_a_kicker(hub_url: str) -> None:
    with actors_client.connect(hub_url, secret=SECRET) as client:
        by_task = client.kiq(note.kicker().with_labels(note="from the task's kicker"))
        by_name = client.kiq(client.kicker("note").with_labels(note="by name"))
        assert by_task.wait_result(timeout=10).return_value == "from the task's kicker"
        assert by_name.wait_result(timeout=10).return_value == "by name"


def test_abort_a_running_task_and_read_its_end(hub_url: str) -> None:
    with actors_client.connect(hub_url, secret=SECRET) as client:
        handle = client.kiq(sleepy)
        with pytest.raises(TaskiqResultTimeoutError):
            handle.wait_result(timeout=0.2)
        assert not handle.is_ready()
        assert handle.abort() is True
        result = client.task(handle.task_id).wait_result(timeout=10)
        assert result.is_err and isinstance(result.error, TaskAbortedError)
        assert handle.status() == TaskStatus.DONE and handle.abort() is False


def test_an_asyncio_app_kicks_through_to_thread(hub_url: str) -> None:
    async def app() -> list[int]:
        with actors_client.connect(hub_url, secret=SECRET) as client:

            async def request(i: int) -> int:
                handle = await asyncio.to_thread(client.kiq, add, i, i)
                result = await asyncio.to_thread(handle.wait_result, timeout=10)
                return int(result.return_value)

            return list(await asyncio.gather(*(request(i) for i in range(20))))

    assert asyncio.run(app()) == [2 * i for i in range(20)]


def test_closing_hands_every_kick_over_first(hub_url: str) -> None:
    with actors_client.connect(hub_url, secret=SECRET) as client:
        ids = [client.kiq(add, i, 0).task_id for i in range(200)]
    with actors_client.connect(hub_url, secret=SECRET) as client:
        values = [client.task(task_id).wait_result(timeout=10).return_value for task_id in ids]
    assert values == list(range(200))


def test_closing_ends_waits_in_other_threads_and_later_calls(hub_url: str) -> None:
    client = actors_client.connect(hub_url, secret=SECRET)
    handle = client.kiq(sleepy)
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(handle.wait_result)
        with pytest.raises(TimeoutError):
            waiting.result(timeout=0.2)  # it waits
        client.close()
        with pytest.raises(ResultGetError, match="closed"):
            waiting.result(timeout=10)
    with pytest.raises(SendTaskError, match="closed"):
        client.kiq(add, 1, 2)
    with pytest.raises(ResultGetError, match="closed"):
        handle.status()
    client.close()  # again: nothing


def test_a_wrong_secret_is_a_send_task_error() -> None:
    with hub_and_worker() as url:
        client = actors_client.connect(url, secret="not it", connect_timeout=0.5)
        with client, pytest.raises(SendTaskError, match="secret"):
            client.kiq(add, 1, 2)


def test_no_hub_is_a_send_task_error_after_the_connect_timeout() -> None:
    client = actors_client.connect("ws://127.0.0.1:1", secret=SECRET, connect_timeout=0.5)
    with client, pytest.raises(SendTaskError, match="no link to the hub"):
        client.kiq(add, 1, 2)


def test_an_unknown_name_waits_on_the_hub_when_the_client_knows_no_tasks(hub_url: str) -> None:
    with actors_client.connect(hub_url, secret=SECRET) as client:
        handle = client.kiq("no such task")
        with pytest.raises(TaskiqResultTimeoutError):
            handle.wait_result(timeout=0.3)
        assert handle.status() == TaskStatus.QUEUED


def test_a_broker_object_runs_in_the_clients_thread() -> None:
    broker = InMemoryBroker()

    @broker.task
    def double(x: int) -> int:  # a sync task: run in a worker thread of the client's loop
        return 2 * x

    with actors_client.connect(broker) as client:
        assert client.kiq(double, 21).wait_result(timeout=10).return_value == 42
        with pytest.raises(UnknownTaskError):
            client.kiq("not a task of this broker")
    with pytest.raises(TypeError, match="secret"):
        actors_client.connect(broker, secret=SECRET)


def test_a_broker_that_fails_to_start_fails_connect() -> None:
    broker = InMemoryBroker()

    def refuse(state: TaskiqState) -> None:
        raise SendTaskError("no start today")

    broker.add_event_handler(TaskiqEvents.CLIENT_STARTUP, refuse)
    with pytest.raises(SendTaskError, match="no start today"):
        actors_client.connect(broker)
