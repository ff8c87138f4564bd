"""Supervision: strategies, restart kinds, intensity and escalation, backoff."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel

from actors import (
    Actor,
    ActorCrashedError,
    ChildSpec,
    Node,
    Restart,
    Strategy,
    Supervisor,
    SupervisorFailedError,
    exponential_backoff,
)


@attrs.frozen
class Crash:
    pass


@attrs.frozen
class Finish:
    pass


@attrs.frozen
class Ping:
    pass


class Member(Actor[Crash | Finish | Ping]):
    """Logs each start, so tests can see who was restarted and in which order."""

    def __init__(self, name: str, starts: list[str], stops: list[str]) -> None:
        self.label, self.starts, self.stops = name, starts, stops

    async def started(self) -> None:
        self.starts.append(self.label)

    async def stopped(self) -> None:
        self.stops.append(self.label)

    async def receive(self, message: Crash | Finish | Ping) -> Any:
        if isinstance(message, Crash):
            raise RuntimeError(f"{self.label} crashed")
        if isinstance(message, Finish):
            self.stop()
        return "pong"


def group(
    strategy: Strategy,
    starts: list[str],
    stops: list[str],
    restart: Restart = "permanent",
    **options: Any,
) -> Supervisor:
    def spec(name: str) -> ChildSpec:
        return ChildSpec(name, lambda: Member(name, starts, stops), restart)

    return Supervisor([spec("a"), spec("b"), spec("c")], strategy=strategy, **options)


async def crash(node: Node, name: str) -> None:
    with pytest.raises(ActorCrashedError):
        await node.ref(name).ask(Crash())


@pytest.mark.parametrize(
    ("strategy", "restarted", "stopped"),
    [
        ("one_for_one", ["b"], ["b"]),
        ("one_for_all", ["a", "b", "c"], ["b", "c", "a"]),
        ("rest_for_one", ["b", "c"], ["b", "c"]),
    ],
)
async def test_strategy_restarts_exactly_the_right_children_in_order(
    strategy: Strategy, restarted: list[str], stopped: list[str]
) -> None:
    starts: list[str] = []
    stops: list[str] = []
    async with Node.open("t") as node:
        await node.spawn_supervisor(lambda: group(strategy, starts, stops), name="group")
        assert starts == ["a", "b", "c"]
        await crash(node, "b")
        for name in "abc":  # every child answers again once the strategy has run
            assert await node.ref(name).ask(Ping()) == "pong"
        assert starts[3:] == restarted
        # The crashed child stops first; its siblings are stopped in reverse start order.
        assert stops == stopped


async def test_transient_child_that_returns_normally_is_not_restarted() -> None:
    starts: list[str] = []
    stops: list[str] = []
    async with Node.open("t") as node:
        sup = await node.spawn_supervisor(
            lambda: group("one_for_one", starts, stops, restart="transient"), name="g"
        )
        await node.ref("a").tell(Finish())
        with trio.fail_after(1):
            while "a" in sup.children:
                await trio.sleep(0.01)
        await crash(node, "b")  # a transient child *is* restarted after a crash
        assert await node.ref("b").ask(Ping()) == "pong"
        assert starts == ["a", "b", "c", "b"]
        assert "a" not in node.names


async def test_temporary_child_is_never_restarted() -> None:
    starts: list[str] = []
    stops: list[str] = []
    async with Node.open("t") as node:
        sup = await node.spawn_supervisor(
            lambda: group("one_for_one", starts, stops, restart="temporary"), name="g"
        )
        await crash(node, "c")
        with trio.fail_after(1):
            while "c" in sup.children:
                await trio.sleep(0.01)
        assert starts == ["a", "b", "c"]
        assert sup.children == ["a", "b"]


async def test_permanent_child_is_restarted_even_after_a_normal_exit() -> None:
    starts: list[str] = []
    async with Node.open("t") as node:
        await node.spawn_supervisor(lambda: group("one_for_one", starts, []), name="g")
        await node.ref("a").tell(Finish())
        assert await node.ref("a").ask(Ping()) == "pong"
        assert starts == ["a", "b", "c", "a"]


async def test_intensity_exceeded_escalates_to_the_parent() -> None:
    starts: list[str] = []
    async with Node.open("t") as node:
        # The inner group tolerates 2 restarts in 10 s; its parent restarts it whole.
        outer = Supervisor(
            [
                ChildSpec(
                    "inner",
                    lambda: group("one_for_one", starts, [], max_restarts=2, within=10),
                )
            ],
            max_restarts=5,
            within=10,
        )
        await node.spawn_supervisor(lambda: outer, name="outer")
        for _ in range(3):
            await crash(node, "a")
        # The third crash is one restart too many: inner failed, outer restarted it,
        # so all three children started again (a fresh inner supervisor).
        with trio.fail_after(1):
            while len(starts) < 8:
                await trio.sleep(0.01)
        assert await node.ref("c").ask(Ping()) == "pong"
        assert starts == ["a", "b", "c", "a", "a", "a", "b", "c"]


async def test_root_failure_ends_the_node_with_supervisor_failed() -> None:
    starts: list[str] = []
    with pytest.RaisesGroup(pytest.RaisesExc(SupervisorFailedError), flatten_subgroups=True):
        async with Node.open("t") as node:
            node.root.max_restarts = 1
            await node.spawn(lambda: Member("x", starts, []), name="x")
            await crash(node, "x")
            await crash(node, "x")
            await trio.sleep_forever()


async def test_restarts_outside_the_window_do_not_count(autojump_clock: trio.abc.Clock) -> None:
    starts: list[str] = []
    async with Node.open("t") as node:
        await node.spawn_supervisor(
            lambda: group("one_for_one", starts, [], max_restarts=1, within=5), name="g"
        )
        for _ in range(4):
            await crash(node, "a")
            await trio.sleep(6)
        assert await node.ref("a").ask(Ping()) == "pong"
        assert starts.count("a") == 5


async def test_backoff_waits_before_restart(autojump_clock: trio.abc.Clock) -> None:
    starts: list[str] = []
    times: list[float] = []

    class Timed(Member):
        async def started(self) -> None:
            times.append(trio.current_time())
            await super().started()

    async with Node.open("t") as node:
        sup = Supervisor(
            [ChildSpec("a", lambda: Timed("a", starts, []))],
            max_restarts=10,
            within=100,
            backoff=exponential_backoff(initial=1.0, maximum=3.0),
        )
        await node.spawn_supervisor(lambda: sup, name="g")
        for _ in range(3):
            await crash(node, "a")
            await node.ref("a").ask(Ping())
        gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(times)]
        assert gaps == [1.0, 2.0, 3.0]


async def test_messages_waiting_in_the_mailbox_survive_a_restart() -> None:
    answered: list[str] = []
    async with Node.open("t") as node:
        ref = await node.spawn(lambda: Member("m", [], []), name="m")
        async with trio.open_nursery() as nursery:

            async def crash_then_ping() -> None:
                with pytest.raises(ActorCrashedError):
                    await ref.ask(Crash())

            async def ping() -> None:
                answered.append(await ref.ask(Ping()))

            nursery.start_soon(crash_then_ping)
            await trio.lowlevel.checkpoint()
            nursery.start_soon(ping)
        assert answered == ["pong"]
