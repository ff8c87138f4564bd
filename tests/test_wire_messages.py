"""What messages may carry across a link: actor refs, stable tags, enums, datetimes."""

from __future__ import annotations

import enum
from typing import Any

import attrs
import msgpack
import pendulum
import pytest
import trio

from actors import Actor, ActorRef, Node, wire
from actors.runtime import RemoteRef

SECRET = "wire test secret"


@attrs.frozen
class Job:
    number: int


@attrs.frozen
class Jobs:
    """Asks a worker what it was told."""


@attrs.frozen
class Announce:
    """A worker announcing itself to a hub on another node."""

    worker: ActorRef[Job | Jobs]
    spares: list[ActorRef[Any]]


@attrs.frozen
class WhoAreYou:
    pass


class Worker(Actor[Job | Jobs]):
    def __init__(self) -> None:
        self.told: list[int] = []

    async def receive(self, message: Job | Jobs) -> Any:
        if isinstance(message, Jobs):
            return list(self.told)
        self.told.append(message.number)
        return message.number * 2


class Hub(Actor[Announce | WhoAreYou]):
    """Replies through the refs it is sent; hands out its own ref when asked."""

    async def receive(self, message: Announce | WhoAreYou) -> Any:
        if isinstance(message, WhoAreYou):
            return self.ref
        await message.worker.tell(Job(1))
        doubled = await message.worker.ask(Job(2), timeout=5)
        kinds = [type(ref).__name__ for ref in [message.worker, *message.spares]]
        return [doubled, kinds]


@pytest.mark.parametrize("listen", ["local://", "ws://127.0.0.1:0"])
async def test_a_ref_in_a_message_is_usable_on_the_node_that_receives_it(listen: str) -> None:
    with trio.fail_after(10):
        async with Node.open("hub", listen=listen, secret=SECRET) as server:
            await server.spawn(Hub, name="hub")
            assert server.address is not None
            async with Node.open("client", connect=[server.address], secret=SECRET) as client:
                await client.wait_for_peer("hub")
                worker = await client.spawn(Worker, name="worker")
                hub = client.ref("hub", node="hub")
                # A ref to the hub's own actor comes back to it as its local ref.
                assert await hub.ask(Announce(worker, [hub])) == [4, ["RemoteRef", "LocalRef"]]
                assert await worker.ask(Jobs()) == [1, 2]
                # A ref as a whole reply: a RemoteRef on the asking node.
                hub_ref = await hub.ask(WhoAreYou())
                assert isinstance(hub_ref, RemoteRef)
                assert (hub_ref.node_name, hub_ref.name) == ("hub", "hub")
                assert await hub_ref.ask(WhoAreYou()) == hub_ref


async def test_a_ref_to_a_third_node_reaches_that_node_over_the_receivers_link() -> None:
    with trio.fail_after(10):
        async with Node.open("hub", listen="local://") as server:
            await server.spawn(Hub, name="hub")
            assert server.address is not None
            async with (
                Node.open("one", connect=[server.address]) as one,
                Node.open("two", connect=[server.address]) as two,
            ):
                await one.wait_for_peer("hub")
                await two.wait_for_peer("hub")
                worker = await one.spawn(Worker, name="worker")
                # "two" is not linked to "one", but can name its worker to the hub.
                hub = two.ref("hub", node="hub")
                announce = Announce(two.ref("worker", node="one"), [])
                assert await hub.ask(announce) == [4, ["RemoteRef"]]
                assert await worker.ask(Jobs()) == [1, 2]


async def test_a_ref_decodes_only_on_a_node() -> None:
    async with Node.open("here") as node:
        worker = await node.spawn(Worker, name="worker")
        body = wire.encode_value(Announce(worker, []))
        assert wire.decode_value(body, lambda node, name: (node, name)).worker == ("here", "worker")
        with pytest.raises(wire.WireError):
            wire.decode_value(body)


class Status(enum.Enum):
    QUEUED = "queued"
    DONE = "done"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Report:
    status: Status
    priority: Priority
    at: pendulum.DateTime
    finished: pendulum.DateTime | None
    history: list[Status]


wire.register(Status, name="test-wire.Status")


@attrs.frozen
class GetStatus:
    pass


@attrs.frozen
class GetTime:
    pass


class Reporter(Actor[Report | GetStatus | GetTime]):
    """Keeps the last report; answers its parts as whole values."""

    def __init__(self) -> None:
        self.report: Report | None = None

    async def receive(self, message: Report | GetStatus | GetTime) -> Any:
        if isinstance(message, Report):
            self.report = message
            return message
        assert self.report is not None
        return self.report.status if isinstance(message, GetStatus) else self.report.at


def moved_class() -> type[Any]:
    """A message class as if defined in another module than where it used to be."""

    @attrs.frozen
    class Moved:
        value: int

    Moved.__module__ = "somewhere.else"
    return Moved


def test_a_registered_name_is_the_tag_wherever_the_class_lives() -> None:
    moved = moved_class()
    wire.register_message_type(moved)  # as an Actor[...] defined first would
    assert wire.register(moved, name="test-wire.Moved") is moved
    body = wire.encode_value(moved(3))
    assert msgpack.unpackb(body)[0] == "test-wire.Moved"
    assert wire.decode_value(body) == moved(3)
    with pytest.raises(ValueError, match="already names"):
        wire.register(moved_class(), name="test-wire.Moved")


async def test_enums_and_datetimes_round_trip_in_messages_and_as_whole_replies() -> None:
    at = pendulum.datetime(2024, 3, 31, 2, 30, tz="Europe/Paris")
    report = Report(Status.DONE, Priority.HIGH, at, None, [Status.QUEUED, Status.DONE])
    with trio.fail_after(10):
        async with Node.open("server", listen="local://") as server:
            await server.spawn(Reporter, name="reporter")
            assert server.address is not None
            async with Node.open("client", connect=[server.address]) as client:
                await client.wait_for_peer("server")
                reporter = client.ref("reporter", node="server")
                echoed = await reporter.ask(report)
                assert echoed == report
                assert echoed.at.timezone_name == "Europe/Paris"
                assert await reporter.ask(GetStatus()) is Status.DONE
                when = await reporter.ask(GetTime())
                assert isinstance(when, pendulum.DateTime)
                assert (when, when.timezone_name) == (at, "Europe/Paris")


def test_a_value_that_fails_to_encode_leaves_nothing_behind_for_the_next() -> None:
    """Every message is packed by one shared packer: a failure midway must not leave
    its first items in front of the next message's."""
    with pytest.raises(wire.WireError):
        wire.encode_value([1, 2, object()])
    assert wire.decode_value(wire.encode_value(Job(3))) == Job(3)
    with pytest.raises(wire.WireError):
        wire.encode_frames([wire.Tell("tell", "a", object())])  # type: ignore[arg-type]
    frames: list[wire.Frame] = [wire.Tell("tell", "b", b"y")]
    assert wire.decode_frames(wire.encode_frames(frames)) == frames
