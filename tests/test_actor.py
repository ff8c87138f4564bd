"""Actors and mailboxes: order, bounds, typing, asks, crashes."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from actors import (
    Actor,
    ActorCrashedError,
    ActorRef,
    ActorStoppedError,
    AskTimeoutError,
    Node,
    Restart,
)


@attrs.frozen
class Add:
    value: int


@attrs.frozen
class Get:
    pass


@attrs.frozen
class Boom:
    pass


@attrs.frozen
class Slow:
    seconds: float


class Recorder(Actor[Add | Get | Boom | Slow]):
    mailbox_size = 4

    def __init__(self, log: list[int] | None = None) -> None:
        self.log = log if log is not None else []

    async def receive(self, message: Add | Get | Boom | Slow) -> Any:
        if isinstance(message, Add):
            self.log.append(message.value)
            return None
        if isinstance(message, Slow):
            await trio.sleep(message.seconds)
            return "slept"
        if isinstance(message, Boom):
            raise RuntimeError("boom")
        return list(self.log)


async def test_messages_are_handled_one_at_a_time_in_order() -> None:
    async with Node.open("t") as node:
        ref = await node.spawn(Recorder)
        for value in range(50):
            await ref.tell(Add(value))
        assert await ref.ask(Get()) == list(range(50))


async def test_wrong_message_type_is_refused_at_the_sender() -> None:
    async with Node.open("t") as node:
        ref: ActorRef[Any] = await node.spawn(Recorder)
        with pytest.raises(TypeError, match="accepts"):
            await ref.tell("not a message")
        with pytest.raises(TypeError):
            await ref.ask(42)
        assert await ref.ask(Get()) == []


async def test_full_mailbox_makes_tell_wait(autojump_clock: trio.abc.Clock) -> None:
    async with Node.open("t") as node:
        ref = await node.spawn(Recorder)
        await ref.tell(Slow(10))  # taken out of the mailbox, keeps the actor busy
        await trio.lowlevel.checkpoint()
        for value in range(Recorder.mailbox_size):
            await ref.tell(Add(value))
        with trio.move_on_after(1) as scope:
            await ref.tell(Add(99))
        assert scope.cancelled_caught, "a tell into a full mailbox must wait"
        with trio.fail_after(20):
            await ref.tell(Add(100))  # space opens once the slow message is done
        assert await ref.ask(Get()) == [0, 1, 2, 3, 100]


async def test_a_cancelled_tell_sends_nothing() -> None:
    async with Node.open("t") as node:
        ref = await node.spawn(Recorder)
        with trio.CancelScope() as scope:
            scope.cancel()
            await ref.tell(Add(1))
        assert scope.cancelled_caught
        await ref.tell(Add(2))
        assert await ref.ask(Get()) == [2]


class SizedRecorder(Recorder):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.mailbox_size = size  # an instance may choose its bound (the worker does)


async def test_an_instance_may_set_its_mailbox_size(autojump_clock: trio.abc.Clock) -> None:
    async with Node.open("t") as node:
        ref = await node.spawn(lambda: SizedRecorder(2))
        await ref.tell(Slow(10))
        await trio.lowlevel.checkpoint()
        await ref.tell(Add(0))
        await ref.tell(Add(1))
        with trio.move_on_after(1) as scope:
            await ref.tell(Add(2))
        assert scope.cancelled_caught, "the third tell must wait: the bound is 2"


async def test_a_sender_that_only_tells_still_lets_the_actor_run() -> None:
    handled: list[int] = []

    class Roomy(Recorder):
        mailbox_size = 1000

    async with Node.open("t") as node:
        ref = await node.spawn(lambda: Roomy(handled))
        for value in range(500):  # never more than half full: tell need not wait
            await ref.tell(Add(value))
        assert handled, "the actor got no turn while 500 tells went out"
        assert await ref.ask(Get()) == list(range(500))


class Batcher(Actor[int]):
    """Logs each message, and "drained" at the end of each batch; 0 waits for a gate."""

    mailbox_size = 500

    def __init__(self, log: list[int | str], gate: trio.Event) -> None:
        self.log, self.gate = log, gate

    async def receive(self, message: int) -> None:
        if message == 0:
            await self.gate.wait()
        self.log.append(message)

    async def drained(self) -> None:
        self.log.append("drained")


async def test_drained_runs_once_after_each_batch() -> None:
    log: list[int | str] = []
    gate = trio.Event()
    gate.set()
    async with Node.open("t") as node:
        ref = await node.spawn(lambda: Batcher(log, gate))
        for value in (1, 2, 3):
            await ref.tell(value)
        await trio.testing.wait_all_tasks_blocked()
        assert log == [1, 2, 3, "drained"]
        await ref.tell(4)
        await trio.testing.wait_all_tasks_blocked()
        assert log == [1, 2, 3, "drained", 4, "drained"]


async def test_a_long_backlog_is_handled_in_bounded_batches() -> None:
    log: list[int | str] = []
    gate = trio.Event()
    async with Node.open("t") as node:
        ref = await node.spawn(lambda: Batcher(log, gate))
        for value in range(200):  # 0 holds the actor until all 200 wait in its mailbox
            await ref.tell(value)
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert [item for item in log if item != "drained"] == list(range(200))
    assert _batch_sizes(log) == [64, 64, 64, 8]


def _batch_sizes(log: list[int | str]) -> list[int]:
    sizes, size = [], 0
    for item in log:
        if item == "drained":
            sizes.append(size)
            size = 0
        else:
            size += 1
    return sizes


async def test_ask_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with Node.open("t") as node:
        ref = await node.spawn(Recorder)
        start = trio.current_time()
        with pytest.raises(AskTimeoutError):
            await ref.ask(Slow(60), timeout=2)
        assert trio.current_time() - start == pytest.approx(2)


async def test_crash_fails_the_pending_ask_and_the_actor_restarts() -> None:
    log: list[int] = []
    async with Node.open("t") as node:
        ref = await node.spawn(lambda: Recorder(log))
        await ref.tell(Add(1))
        with pytest.raises(ActorCrashedError, match="boom"):
            await ref.ask(Boom())
        await ref.tell(Add(2))
        assert await ref.ask(Get()) == [1, 2]


class Deferring(Actor[Get | Boom]):
    """Answers asks later from a background task, to show deferred replies."""

    async def receive(self, message: Get | Boom) -> Any:
        if isinstance(message, Boom):
            raise RuntimeError("crash while an answer is owed")
        reply = self.defer_reply()
        assert reply is not None

        async def answer_later() -> None:
            await trio.sleep(1)
            reply.resolve("later")

        self.nursery.start_soon(answer_later)
        return None


async def test_deferred_reply(autojump_clock: trio.abc.Clock) -> None:
    async with Node.open("t") as node:
        ref = await node.spawn(Deferring)
        assert await ref.ask(Get()) == "later"


async def test_crash_fails_deferred_replies(autojump_clock: trio.abc.Clock) -> None:
    async with Node.open("t") as node:
        ref = await node.spawn(Deferring)
        async with trio.open_nursery() as nursery:
            failures: list[BaseException] = []

            async def waiter() -> None:
                try:
                    await ref.ask(Get())
                except ActorCrashedError as exc:
                    failures.append(exc)

            nursery.start_soon(waiter)
            await trio.sleep(0.1)
            with pytest.raises(ActorCrashedError):
                await ref.ask(Boom())
        assert len(failures) == 1


@pytest.mark.parametrize("restart", ["permanent", "temporary"])
async def test_a_normal_stop_fails_deferred_replies(
    autojump_clock: trio.abc.Clock, restart: Restart
) -> None:
    class DeferThenStop(Actor[Get]):
        async def receive(self, message: Get) -> Any:
            self.defer_reply()
            self.stop()

    async with Node.open("t") as node:
        ref = await node.spawn(DeferThenStop, restart=restart)
        with trio.fail_after(5), pytest.raises(ActorStoppedError, match="before answering"):
            await ref.ask(Get())


async def test_node_shuts_down_within_timeout_and_leaves_no_task() -> None:
    class Stubborn(Actor[Get]):
        async def started(self) -> None:
            self.nursery.start_soon(trio.sleep_forever)

        async def receive(self, message: Get) -> Any:
            return "ok"

        async def stopped(self) -> None:
            await trio.sleep_forever()  # bounded by the node's shutdown_timeout

    tasks_before = trio.lowlevel.current_statistics().tasks_living
    start = trio.current_time()
    async with Node.open("t", shutdown_timeout=0.2) as node:
        ref = await node.spawn(Stubborn)
        assert await ref.ask(Get()) == "ok"
        assert trio.lowlevel.current_statistics().tasks_living > tasks_before
    assert trio.current_time() - start < 1.0
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before
