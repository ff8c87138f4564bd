"""Flow across one link: an actor whose mailbox is full must not hold up the others.

Asks to a full mailbox are answered "busy" at once and retried by the asker; tells wait
in a bounded per-actor overflow. Timed tests run on ``local://`` under ``autojump_clock``;
the heartbeat test needs a real websocket on 127.0.0.1, so it runs in real time with
short heartbeat settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import Actor, Node, wire
from actors.runtime.node import _LAZY_DELAY
from transports import Link, LocalTransport, WebSocketTransport
from transports.local import LocalLink

SECRET = b"flow test secret"


@attrs.frozen
class Put:
    value: int


@attrs.frozen
class Get:
    pass


@attrs.frozen
class Noted:
    """A lazy tell: nobody waits on it."""

    value: int


wire.register_lazy(Noted)


@attrs.frozen
class Block:
    """The keeper waits for its gate before taking anything else."""


class Keeper(Actor[Put | Get | Block]):
    """Keeps what it is told, in order; a small mailbox so it fills up."""

    mailbox_size = 2

    def __init__(self, gate: trio.Event) -> None:
        self.gate = gate
        self.values: list[int] = []

    async def receive(self, message: Put | Get | Block) -> Any:
        if isinstance(message, Block):
            await self.gate.wait()
        elif isinstance(message, Put):
            self.values.append(message.value)
        else:
            return list(self.values)
        return None


def open_gate() -> trio.Event:
    gate = trio.Event()
    gate.set()
    return gate


@asynccontextmanager
async def linked(
    listen: str, transports: tuple[WebSocketTransport, WebSocketTransport] | None = None
) -> AsyncIterator[tuple[Node, Node]]:
    """A server node with a "fast" keeper, and a client node linked to it."""
    server_transport, client_transport = transports or (None, None)
    async with Node.open("server", listen=listen, transport=server_transport) as server:
        await server.spawn(lambda: Keeper(open_gate()), name="fast")
        assert server.address is not None
        async with Node.open(
            "client", connect=[server.address], transport=client_transport
        ) as client:
            await client.wait_for_peer("server")
            yield server, client


@pytest.mark.parametrize("timeout", [60, None])
async def test_a_full_mailbox_holds_up_neither_other_actors_nor_asks_to_it(
    autojump_clock: trio.testing.MockClock, timeout: float | None
) -> None:
    gate = trio.Event()
    async with linked("local://") as (server, client):
        await server.spawn(lambda: Keeper(gate), name="slow")
        slow = client.ref("slow", node="server")
        fast = client.ref("fast", node="server")
        await slow.tell(Block())
        for i in range(10):  # two fill the mailbox, the rest wait in the link's overflow
            await slow.tell(Put(i))
        answers: list[list[int]] = []

        async def ask_slow() -> None:
            answers.append(await slow.ask(Get(), timeout=timeout))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_slow)
            with trio.fail_after(1):
                await fast.tell(Put(1))
                assert await fast.ask(Get()) == [1]
            await trio.sleep(20)  # the ask to the full mailbox keeps being retried
            assert answers == []
            for i in range(10, 15):  # after the overflow, though the mailbox may have room
                await slow.tell(Put(i))
            gate.set()
        assert answers[0][:10] == list(range(10))
        assert await slow.ask(Get(), timeout=1) == list(range(15))


async def test_a_blocked_actor_does_not_cost_the_link_its_heartbeat() -> None:
    def transport(name: str) -> WebSocketTransport:
        return WebSocketTransport(
            name, SECRET, heartbeat_interval=0.1, heartbeat_timeout=0.5, queue_size=2
        )

    gate = trio.Event()
    with trio.fail_after(20):
        pair = (transport("server"), transport("client"))
        async with linked("ws://127.0.0.1:0", pair) as (server, client):
            await server.spawn(lambda: Keeper(gate), name="slow")
            slow = client.ref("slow", node="server")
            fast = client.ref("fast", node="server")
            await slow.tell(Block())
            for i in range(5):
                await slow.tell(Put(i))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(slow.ask, Get(), timeout=20))
                for i in range(60):  # 1.5 s of separate link messages, three heartbeats
                    await fast.tell(Put(i))
                    await trio.sleep(0.025)
                gate.set()
            assert await fast.ask(Get()) == list(range(60))
            assert await slow.ask(Get()) == list(range(5))
            assert client.peers == ["server"]


async def received_values(link: Link) -> list[Any]:
    """The values of one link message's frames."""
    frames = wire.decode_frames(await link.receive())
    return [wire.decode_value(frame.body) for frame in frames]  # type: ignore[union-attr]


async def test_a_lazy_tell_travels_with_the_next_frame_or_after_a_short_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Node.open("server", listen="local://", secret=SECRET) as server:
        assert server.address is not None
        async with LocalTransport("peer", SECRET).connect(server.address) as peer:
            await server.wait_for_peer("peer")
            ref = server.ref("anyone", node="peer")
            await ref.tell(Noted(1))
            await trio.sleep(_LAZY_DELAY / 2)
            await ref.tell(Put(2))
            assert await received_values(peer) == [Noted(1), Put(2)]  # one link message, in order
            await ref.tell(Noted(3))
            sent_at = trio.current_time()
            assert await received_values(peer) == [Noted(3)]  # alone, once the delay is over
            assert trio.current_time() - sent_at == pytest.approx(_LAZY_DELAY)


@attrs.frozen
class Forward:
    """Tell ``count`` Puts to the actor "anyone" on node "peer"."""

    count: int


class Relay(Actor[Forward]):
    async def receive(self, message: Forward) -> None:
        for i in range(message.count):
            await self.node.ref("anyone", node="peer").tell(Put(i))


@pytest.fixture
def slow_sends(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The frames that links of node "server" sent through ``Link.send`` (their writer's
    way), not ``try_send``."""
    sent: list[bytes] = []
    send = LocalLink.send

    async def counted(self: LocalLink, frame: bytes) -> None:
        if self._name == "server":
            sent.append(frame)
        await send(self, frame)

    monkeypatch.setattr(LocalLink, "send", counted)
    return sent


async def test_an_actor_sends_what_it_told_itself_once_its_batch_is_handled(
    slow_sends: list[bytes],
) -> None:
    """One link message, from the actor's own task: the link's writer sends nothing."""
    async with Node.open("server", listen="local://", secret=SECRET) as server:
        assert server.address is not None
        async with LocalTransport("peer", SECRET).connect(server.address) as peer:
            await server.wait_for_peer("peer")
            slow_sends.clear()  # the handshake's
            relay = await server.spawn(Relay, name="relay")
            with trio.fail_after(5):
                await relay.tell(Forward(5))
                assert await received_values(peer) == [Put(i) for i in range(5)]
            assert slow_sends == []


async def test_an_asker_sends_its_ask_before_it_waits(slow_sends: list[bytes]) -> None:
    async with Node.open("server", listen="local://", secret=SECRET) as server:
        assert server.address is not None
        async with LocalTransport("peer", SECRET).connect(server.address) as peer:
            await server.wait_for_peer("peer")
            slow_sends.clear()  # the handshake's

            async def answer() -> None:
                [ask] = wire.decode_frames(await peer.receive())
                assert isinstance(ask, wire.Ask)
                assert wire.decode_value(ask.body) == Get()
                body = wire.encode_value([7])
                await peer.send(wire.encode_frames([wire.Answer("answer", ask.id, body)]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer)
                with trio.fail_after(5):
                    assert await server.ref("anyone", node="peer").ask(Get()) == [7]
            assert slow_sends == []
