"""Nodes linked over real websockets on 127.0.0.1.

Asks and tells across nodes (in one process, and to a peer process), refused peers,
malformed and oversized frames, messages that cannot cross a link, and peers that die: a
real subprocess killed with SIGKILL, or frozen with SIGSTOP so only the heartbeat notices.
Sockets are real, so there is no ``autojump_clock`` here; every wait is bounded.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import msgpack
import pytest
import trio

from actors import (
    Actor,
    ActorCrashedError,
    ActorNotFoundError,
    AskTimeoutError,
    Node,
    PeerLostError,
    wire,
)
from actors.runtime import RemoteRef
from transports import HandshakeError, LinkClosed, WebSocketTransport

from .programs import ROOT, program_env

SECRET = "remote test secret"


@attrs.frozen
class Add:
    value: int


@attrs.frozen
class Total:
    pass


@attrs.frozen
class Blob:
    data: bytes


@attrs.frozen
class Crash:
    pass


@attrs.frozen
class Nap:
    seconds: float


@attrs.frozen
class Weird:
    """Asks for a reply that cannot be encoded."""


@attrs.frozen
class Summary:
    values: list[int]
    blob_bytes: int


class Counter(Actor[Add | Total | Blob | Crash | Nap | Weird]):
    def __init__(self) -> None:
        self.values: list[int] = []
        self.blob_bytes = 0

    async def receive(self, message: Add | Total | Blob | Crash | Nap | Weird) -> Any:
        if isinstance(message, Add):
            self.values.append(message.value)
        elif isinstance(message, Blob):
            self.blob_bytes += len(message.data)
        elif isinstance(message, Crash):
            raise RuntimeError("counter crashed")
        elif isinstance(message, Nap):
            await trio.sleep(message.seconds)
        elif isinstance(message, Weird):
            return object()
        else:
            return Summary(list(self.values), self.blob_bytes)
        return None


# Messages shared with the peer process, registered under tags both sides use.
@attrs.frozen
class Echo:
    text: str


@attrs.frozen
class Hold:
    """The peer prints "holding" and never answers."""


wire.register(Echo, "test-remote.Echo")
wire.register(Hold, "test-remote.Hold")

PEER_SCRIPT = textwrap.dedent(
    """
    import sys
    from typing import Any

    import attrs
    import trio

    from actors import Actor, Node, wire


    @attrs.frozen
    class Echo:
        text: str


    @attrs.frozen
    class Hold:
        pass


    wire.register(Echo, "test-remote.Echo")
    wire.register(Hold, "test-remote.Hold")


    class Holder(Actor[Echo | Hold]):
        async def receive(self, message: Echo | Hold) -> Any:
            if isinstance(message, Hold):
                print("holding", flush=True)
                await trio.sleep_forever()
            return Echo(message.text.upper())


    async def main() -> None:
        mode, secret = sys.argv[1], sys.argv[2]
        if mode == "listen":
            options: dict[str, Any] = {"listen": "ws://127.0.0.1:0"}
        else:
            options = {"connect": [sys.argv[3]]}
        async with Node.open("peer", secret=secret, **options) as node:
            await node.spawn(Holder, name="holder")
            print(node.address or "ready", flush=True)
            if mode != "flood":
                await trio.sleep_forever()
            # Tell the server's sink COUNT messages, then leave the block at once.
            await node.wait_for_peer("server")
            sink = node.ref("sink", node="server")
            for i in range(int(sys.argv[4])):
                await sink.tell(Echo(str(i)))


    trio.run(main)
    """
)


class Lines:
    """Reads a subprocess's stdout line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError("the peer process closed its stdout")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


@asynccontextmanager
async def peer_process(*args: str) -> AsyncIterator[tuple[trio.Process, Lines]]:
    """The peer script in a subprocess; killed (if still alive) and reaped on exit."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", PEER_SCRIPT, *args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=program_env(),
    )
    assert process.stdout is not None
    try:
        yield process, Lines(process.stdout)
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
            await process.stdout.aclose()


class Sink(Actor[Echo | Total]):
    """Counts what it is told; an ask answers the count."""

    def __init__(self) -> None:
        self.count = 0

    async def receive(self, message: Echo | Total) -> Any:
        self.count += isinstance(message, Echo)
        return self.count


async def ask_and_record(ref: Any, message: Any, failures: list[BaseException]) -> None:
    """Ask, and keep the error the ask ends with."""
    try:
        await ref.ask(message, timeout=60)
    except Exception as exc:
        failures.append(exc)


@asynccontextmanager
async def linked_pair() -> AsyncIterator[tuple[Node, Node]]:
    """A server node with a counter, and a client node linked to it over a websocket."""
    async with Node.open("server", listen="ws://127.0.0.1:0", secret=SECRET) as server:
        await server.spawn(Counter, name="counter")
        assert server.address is not None
        async with Node.open("client", connect=[server.address], secret=SECRET) as client:
            await client.wait_for_peer("server", timeout=5)
            await server.wait_for_peer("client", timeout=5)
            yield server, client


async def test_tell_and_ask_cross_node_both_ways() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            # The server is embedded in our nursery; the client uses Node.open.
            server = Node("server", listen="ws://127.0.0.1:0", secret=SECRET)
            await nursery.start(server.serve)
            assert server.address is not None
            assert server.address.startswith("ws://127.0.0.1:")
            assert not server.address.endswith(":0")
            await server.spawn(Counter, name="counter")
            async with Node.open("client", connect=[server.address], secret=SECRET) as client:
                await client.spawn(Counter, name="counter")
                await client.wait_for_peer("server", timeout=5)
                assert client.peers == ["server"]

                ref = client.ref("counter", node="server")
                assert isinstance(ref, RemoteRef)
                for value in range(100):
                    await ref.tell(Add(value))
                # Tells and the ask travel in order on one link, so the ask sees them all.
                assert await ref.ask(Total()) == Summary(list(range(100)), 0)

                # The link carries asks the other way too, to an actor of the same name.
                await server.wait_for_peer("client", timeout=5)
                back = server.ref("counter", node="client")
                await back.tell(Add(7))
                assert await back.ask(Total()) == Summary([7], 0)
                assert await ref.ask(Total()) == Summary(list(range(100)), 0)
            nursery.cancel_scope.cancel()


async def test_a_cancelled_remote_tell_sends_nothing() -> None:
    with trio.fail_after(10):
        async with linked_pair() as (_, client):
            ref = client.ref("counter", node="server")
            with trio.CancelScope() as scope:
                scope.cancel()
                await ref.tell(Add(1))
            assert scope.cancelled_caught
            await ref.tell(Add(2))
            assert await ref.ask(Total()) == Summary([2], 0)


async def test_remote_errors_reach_the_asker(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(10):
        async with linked_pair() as (_, client):
            ref = client.ref("counter", node="server")
            await ref.tell(Add(1))
            with pytest.raises(ActorCrashedError, match="counter crashed"):
                await ref.ask(Crash())
            # The supervisor restarted the counter with fresh state; the link is unharmed.
            assert await ref.ask(Total()) == Summary([], 0)

            with pytest.raises(ActorNotFoundError, match="nobody"):
                await client.ref("nobody", node="server").ask(Total())
            with pytest.raises(PeerLostError, match="elsewhere"):
                await client.ref("counter", node="elsewhere").ask(Total())
            with pytest.raises(PeerLostError, match="elsewhere"):
                await client.ref("counter", node="elsewhere").tell(Add(1))

            # A ref that knows the type refuses at the sender; an untyped one at the far end.
            typed = client.ref("counter", node="server", message_type=(Add, Total))
            with pytest.raises(TypeError, match="accepts"):
                await typed.tell(Echo("no"))
            untyped = client.ref("counter", node="server")
            with pytest.raises(TypeError, match="accepts"):
                await untyped.ask(Echo("no"))
            with caplog.at_level(logging.WARNING, logger="actors.node"):
                await untyped.tell(Echo("dropped"))
                assert await untyped.ask(Total()) == Summary([], 0)  # the tell went first
            assert any("dropped tell" in record.getMessage() for record in caplog.records)

            with pytest.raises(AskTimeoutError):
                await ref.ask(Nap(5), timeout=0.2)


async def test_values_that_cannot_cross_fail_at_the_sender_and_spare_the_link() -> None:
    with trio.fail_after(10):
        async with linked_pair() as (_, client):
            ref: Any = client.ref("counter", node="server")
            with pytest.raises(wire.WireError, match="object"):
                await ref.tell(object())
            with pytest.raises(wire.WireError, match="object"):
                await ref.ask(object())
            # A reply that cannot be encoded fails the ask, on the far side's link.
            with pytest.raises(wire.WireError, match="reply cannot be sent"):
                await ref.ask(Weird())
            # One message bigger than a link message.
            with pytest.raises(wire.WireError, match="does not fit"):
                await ref.tell(Blob(b"x" * (client.max_frame + 1)))
            assert await ref.ask(Total()) == Summary([], 0)
            assert client.peers == ["server"]


async def test_many_large_messages_are_batched_within_the_frame_limit() -> None:
    # Each message fits a link message, but a batch of those waiting would not.
    size, count = 200_000, 40
    with trio.fail_after(10):
        async with linked_pair() as (_, client):
            ref = client.ref("counter", node="server")
            async with trio.open_nursery() as nursery:
                for _ in range(4):

                    async def send_blobs() -> None:
                        for _ in range(count // 4):
                            await ref.tell(Blob(b"y" * size))

                    nursery.start_soon(send_blobs)
            assert await ref.ask(Total()) == Summary([], size * count)


async def test_node_with_an_open_link_shuts_down_promptly() -> None:
    with trio.fail_after(10):
        async with Node.open("server", listen="ws://127.0.0.1:0", secret=SECRET) as server:
            assert server.address is not None
            async with Node.open("client", connect=[server.address], secret=SECRET) as client:
                await client.wait_for_peer("server", timeout=5)
                await server.wait_for_peer("client", timeout=5)
                start = trio.current_time()
            # Both halves of the closing handshake ran: no waiting out a close timeout.
            assert trio.current_time() - start < 0.5
            await server.wait_for_peer_lost("client", timeout=1)


async def test_a_dropped_link_is_redialled_and_old_refs_work_again() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = Node("server", listen="ws://127.0.0.1:0", secret=SECRET)
            first_scope = trio.CancelScope()

            async def run_first(*, task_status: trio.TaskStatus[Node]) -> None:
                with first_scope:
                    await first.serve(task_status=task_status)

            await nursery.start(run_first)
            await first.spawn(Counter, name="counter")
            address = first.address
            assert address is not None
            async with Node.open(
                "client", connect=[address], secret=SECRET, reconnect_backoff=(0.05, 0.2)
            ) as client:
                await client.wait_for_peer("server", timeout=5)
                ref = client.ref("counter", node="server")
                await ref.tell(Add(1))
                assert await ref.ask(Total()) == Summary([1], 0)

                first_scope.cancel()  # the server node goes away...
                await client.wait_for_peer_lost("server", timeout=5)
                with pytest.raises(PeerLostError):
                    await ref.ask(Total())
                # ...and a new one comes up at the same address: the client redials.
                async with Node.open("server", listen=address, secret=SECRET) as second:
                    await second.spawn(Counter, name="counter")
                    await client.wait_for_peer("server", timeout=5)
                    assert await ref.ask(Total()) == Summary([], 0)


async def test_a_transport_must_carry_its_nodes_name_and_secret() -> None:
    with pytest.raises(ValueError, match="named 'other'"):
        Node("node", transport=WebSocketTransport("other"))
    with pytest.raises(ValueError, match="secret"):
        Node("node", secret="one", transport=WebSocketTransport("node", b"two"))
    Node("node", secret="same", transport=WebSocketTransport("node", b"same"))


async def test_wrong_secret_is_refused_and_the_node_keeps_serving() -> None:
    with trio.fail_after(10):
        async with linked_pair() as (server, client):
            assert server.address is not None
            for secret in (b"wrong secret", None):
                with pytest.raises(HandshakeError):
                    async with WebSocketTransport("intruder", secret).connect(server.address):
                        pytest.fail("the handshake must not succeed")  # pragma: no cover
            assert "intruder" not in server.peers
            ref = client.ref("counter", node="server")
            await ref.tell(Add(1))
            assert await ref.ask(Total()) == Summary([1], 0)


def _frames(*frames: wire.Frame) -> bytes:
    return wire.encode_frames(list(frames))


MALFORMED = {
    "not msgpack": b"\xc1\xc1",
    "not a list": msgpack.packb({"kind": "tell"}),
    "unknown kind": msgpack.packb([["spawn", "counter"]]),
    "missing field": msgpack.packb([["tell", "counter"]]),
    "wrong field type": msgpack.packb([["ask", "1", "c", b""]]),
    "extra field": msgpack.packb([["tell", "counter", b"", True]]),
    "a map for a frame": msgpack.packb([{"kind": "tell", "target": "counter", "body": b""}]),
}


@pytest.mark.parametrize("payload", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_frame_closes_only_that_link(payload: bytes) -> None:
    with trio.fail_after(10):
        async with linked_pair() as (server, client):
            assert server.address is not None
            ref = client.ref("counter", node="server")
            rogue = WebSocketTransport("rogue", SECRET.encode())
            async with rogue.connect(server.address) as link:
                await server.wait_for_peer("rogue", timeout=5)
                await link.send(payload)
                with pytest.raises(LinkClosed) as closed:
                    await link.receive()
                assert closed.value.code == 1007
            await server.wait_for_peer_lost("rogue", timeout=5)
            await ref.tell(Add(2))
            assert await ref.ask(Total()) == Summary([2], 0)
            assert server.peers == ["client"]


async def test_oversized_frame_closes_only_that_link() -> None:
    with trio.fail_after(10):
        async with linked_pair() as (server, client):
            assert server.address is not None
            rogue = WebSocketTransport("rogue", SECRET.encode(), max_frame=8 << 20)
            async with rogue.connect(server.address) as link:
                await server.wait_for_peer("rogue", timeout=5)
                await link.send(b"z" * (server.max_frame + 1))
                with pytest.raises(LinkClosed) as closed:
                    await link.receive()
                assert closed.value.code == 1009
            await server.wait_for_peer_lost("rogue", timeout=5)
            assert await client.ref("counter", node="server").ask(Total()) == Summary([], 0)


async def test_a_bad_message_body_fails_that_ask_only() -> None:
    with trio.fail_after(10):
        async with linked_pair() as (server, _):
            assert server.address is not None
            rogue = WebSocketTransport("rogue", SECRET.encode())
            async with rogue.connect(server.address) as link:
                unknown_tag = msgpack.packb(["no.such.Message", {}])
                await link.send(_frames(wire.Ask("ask", 1, "counter", unknown_tag)))
                (fault,) = wire.decode_frames(await link.receive())
                assert isinstance(fault, wire.Fault)
                assert (fault.id, fault.error) == (1, "WireError")
                assert "no.such.Message" in fault.message
                # Same link, a good ask: answered.
                await link.send(_frames(wire.Ask("ask", 2, "counter", wire.encode_value(Total()))))
                (answer,) = wire.decode_frames(await link.receive())
                assert isinstance(answer, wire.Answer)
                assert answer.id == 2
                assert wire.decode_value(answer.body) == Summary([], 0)


async def test_killed_peer_process_fails_asks_in_flight_and_later_tells() -> None:
    with trio.fail_after(20):
        async with peer_process("listen", SECRET) as (process, lines):
            address = await lines.next()
            assert address.startswith("ws://127.0.0.1:")
            async with Node.open("client", connect=[address], secret=SECRET) as client:
                await client.wait_for_peer("peer", timeout=10)
                ref = client.ref("holder", node="peer")
                assert await ref.ask(Echo("across processes")) == Echo("ACROSS PROCESSES")

                failures: list[BaseException] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask_and_record, ref, Hold(), failures)
                    assert await lines.next() == "holding"  # the ask is in the peer's hands
                    nursery.start_soon(ask_and_record, ref, Hold(), failures)  # queued there
                    await ref.tell(Echo("queued behind the hold"))
                    process.send_signal(signal.SIGKILL)
                    with trio.fail_after(3):
                        await client.wait_for_peer_lost("peer")
                assert len(failures) == 2
                assert all(isinstance(exc, PeerLostError) for exc in failures), failures
                with pytest.raises(PeerLostError):
                    await ref.tell(Echo("too late"))
                with pytest.raises(PeerLostError):
                    await ref.ask(Echo("too late"))
            assert await process.wait() == -signal.SIGKILL


@asynccontextmanager
async def dialled_by_a_peer_process() -> AsyncIterator[tuple[Node, trio.Process]]:
    """A server node with a short heartbeat, linked to by the peer process."""
    transport = WebSocketTransport(
        "server", SECRET.encode(), heartbeat_interval=0.1, heartbeat_timeout=0.3
    )
    async with Node.open(
        "server", listen="ws://127.0.0.1:0", secret=SECRET, transport=transport
    ) as server:
        assert server.address is not None
        async with peer_process("connect", SECRET, server.address) as (process, lines):
            assert await lines.next() == "ready"
            await server.wait_for_peer("peer", timeout=10)
            yield server, process


async def test_frozen_peer_is_dropped_by_the_heartbeat() -> None:
    # SIGSTOP keeps the peer's socket open: only missing pongs reveal it. The peer dials
    # us this time, so the failure is seen on the serving side of the link.
    with trio.fail_after(20):
        async with dialled_by_a_peer_process() as (server, process):
            ref = server.ref("holder", node="peer")
            assert await ref.ask(Echo("hello")) == Echo("HELLO")
            failures: list[BaseException] = []
            async with trio.open_nursery() as nursery:
                process.send_signal(signal.SIGSTOP)
                nursery.start_soon(ask_and_record, ref, Echo("never answered"), failures)
                with trio.fail_after(3):
                    await server.wait_for_peer_lost("peer")
            assert len(failures) == 1
            assert isinstance(failures[0], PeerLostError)
            with pytest.raises(PeerLostError):
                await ref.tell(Echo("too late"))


@pytest.mark.parametrize("listen", ["ws://127.0.0.1:0", "local://"])
async def test_tells_sent_just_before_a_clean_exit_are_delivered(listen: str) -> None:
    with trio.fail_after(10):
        async with Node.open("server", listen=listen, secret=SECRET) as server:
            assert server.address is not None
            sink = await server.spawn(Sink, name="sink")
            async with Node.open("client", connect=[server.address], secret=SECRET) as client:
                await client.wait_for_peer("server")
                remote = client.ref("sink", node="server")
                for i in range(2000):
                    await remote.tell(Echo(str(i)))
            await server.wait_for_peer_lost("client")
            assert await sink.ask(Total()) == 2000


async def test_tells_sent_just_before_a_peer_process_exits_are_delivered() -> None:
    with trio.fail_after(20):
        async with Node.open("server", listen="ws://127.0.0.1:0", secret=SECRET) as server:
            assert server.address is not None
            sink = await server.spawn(Sink, name="sink")
            async with peer_process("flood", SECRET, server.address, "5000") as (process, _):
                assert await process.wait() == 0
            await server.wait_for_peer_lost("peer")
            assert await sink.ask(Total()) == 5000


async def test_a_restarted_node_gets_in_once_its_half_open_link_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A frozen process keeps its socket open; a new node under its name is refused (4002)
    until the heartbeat drops the old link, then its redial gets in."""
    with trio.fail_after(20):
        async with dialled_by_a_peer_process() as (server, process):
            assert server.address is not None
            process.send_signal(signal.SIGSTOP)
            async with Node.open(
                "peer",
                connect=[server.address],
                secret=SECRET,
                reconnect_backoff=(0.05, 0.2),
            ) as replacement:
                await replacement.spawn(Sink, name="sink")
                await server.wait_for_peer_lost("peer")  # the heartbeat dropped it
                await server.wait_for_peer("peer")  # the replacement's redial
                assert await server.ref("sink", node="peer").ask(Total()) == 0
            refused = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert any("node 'server' refused our link" in message for message in refused)


class TellThenAnswer(Actor[Any]):
    """Tells the asking node's "inbox" actor, then answers."""

    async def receive(self, message: Any) -> Any:
        await self.node.ref("inbox", node="rogue").tell("told first")
        return "answered second"


async def test_a_reply_does_not_overtake_what_its_actor_sent_before_it() -> None:
    with trio.fail_after(10):
        async with linked_pair() as (server, _):
            assert server.address is not None
            await server.spawn(TellThenAnswer, name="teller")
            rogue = WebSocketTransport("rogue", SECRET.encode())
            async with rogue.connect(server.address) as link:
                await server.wait_for_peer("rogue")
                await link.send(_frames(wire.Ask("ask", 1, "teller", wire.encode_value(None))))
                arrived: list[wire.Frame] = []
                while len(arrived) < 2:
                    arrived += wire.decode_frames(await link.receive())
    assert [frame.kind for frame in arrived] == ["tell", "answer"]
