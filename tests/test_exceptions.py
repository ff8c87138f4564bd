"""The exception tree keeps taskiq's names and shape, and every member rebuilds from args."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import actors.exceptions as exc_mod
from actors import InMemoryBroker, Node
from actors.exceptions import (
    BrokerError,
    DependencyFailedError,
    NoResultError,
    RemoteTaskError,
    ResultBackendError,
    ResultGetError,
    ResultIsReadyError,
    SecurityError,
    SendTaskError,
    SerializationError,
    TaskAbortedError,
    TaskExpiredError,
    TaskiqError,
    TaskiqResultTimeoutError,
    TaskRejectedError,
    TaskTimeoutError,
    UnknownTaskError,
)
from actors.runtime import ActorError


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (TaskiqError, Exception),
        (BrokerError, TaskiqError),
        (SendTaskError, BrokerError),
        (UnknownTaskError, BrokerError),
        (ResultBackendError, TaskiqError),
        (ResultGetError, ResultBackendError),
        (ResultIsReadyError, ResultBackendError),
        (TaskiqResultTimeoutError, TaskiqError),
        (TaskiqResultTimeoutError, TimeoutError),
        (NoResultError, TaskiqError),
        (TaskRejectedError, TaskiqError),
        (SecurityError, TaskiqError),
        (SerializationError, TaskiqError),
        (TaskAbortedError, TaskiqError),
        (TaskTimeoutError, TaskiqError),
        (TaskTimeoutError, TimeoutError),
        (TaskExpiredError, TaskiqError),
        (DependencyFailedError, TaskiqError),
        (RemoteTaskError, TaskiqError),
    ],
)
def test_tree(child: type[BaseException], parent: type[BaseException]) -> None:
    assert issubclass(child, parent)


def test_all_names_are_exported() -> None:
    for name in exc_mod.__all__:
        assert isinstance(getattr(exc_mod, name), type)


def test_timeouts_are_caught_as_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        raise TaskTimeoutError("too slow", timeout=2.5)
    with pytest.raises(TimeoutError) as info:
        raise TaskiqResultTimeoutError(timeout=1.0)
    caught = info.value
    assert isinstance(caught, TaskiqResultTimeoutError)
    assert caught.timeout == 1.0
    assert "timed out" in str(caught)


def test_unknown_task_error_names_the_task() -> None:
    err = UnknownTaskError("tasks:add")
    assert err.task_name == "tasks:add"
    assert "tasks:add" in str(err)


def test_default_message_and_explicit_message() -> None:
    assert str(TaskAbortedError()) == "The task was aborted"
    assert str(TaskAbortedError("stopped by admin")) == "stopped by admin"
    assert str(TaskRejectedError()) != ""
    assert str(NoResultError()) == ""


def test_remote_task_error_keeps_type_name_and_message() -> None:
    err = RemoteTaskError("mylib.CustomError", "boom")
    assert (err.type_name, err.message) == ("mylib.CustomError", "boom")
    assert str(err) == "mylib.CustomError: boom"
    assert str(RemoteTaskError("mylib.CustomError")) == "mylib.CustomError"


@pytest.mark.parametrize(
    "error",
    [
        UnknownTaskError("t"),
        TaskiqResultTimeoutError("waited 3s"),
        TaskTimeoutError("ran 3s"),
        DependencyFailedError("parent failed"),
        RemoteTaskError("x.Y", "msg"),
        TaskAbortedError(),
        SerializationError("bad"),
    ],
)
def test_rebuilds_from_args(error: BaseException) -> None:
    rebuilt = type(error)(*error.args)
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)


async def test_runtime_errors_reach_task_queue_users_as_taskiq_errors() -> None:
    """An embedded broker whose actors the app stopped: a pending wait, a kick, status and
    abort fail with taskiq's errors (the runtime's as their cause), never the runtime's."""
    broker = InMemoryBroker()

    @broker.task
    async def forever() -> None:
        await trio.sleep_forever()

    async with Node.open("app") as node, broker.attach(node):
        handle = await forever.kiq()
        [broker_actor] = [name for name in node.names if name.endswith(".broker")]
        errors: list[BaseException] = []

        async def wait() -> None:
            try:
                await handle.wait_result()
            except Exception as error:
                errors.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            await node.root.stop_child(broker_actor.removesuffix(".broker"))
        [waited] = errors
        assert isinstance(waited, ResultGetError)
        assert isinstance(waited.__cause__, ActorError)
        with pytest.raises(SendTaskError) as kicked:
            await forever.kiq()
        assert isinstance(kicked.value.__cause__, ActorError)
        with pytest.raises(BrokerError):
            await handle.status()
        with pytest.raises(BrokerError):
            await handle.abort()
