"""What a peer cannot do to a node: reflect or relay the handshake, flood it with asks it
never reads the answers of, flood its log, or get in under a name already linked.

Websocket servers bind 127.0.0.1 only; peers that misbehave are raw trio-websocket
clients or links driven by hand.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings, strategies as st
from trio_websocket import ConnectionClosed, WebSocketConnection

from actors import Actor, Node, wire
from actors.runtime.node import _REPLY_QUEUE, _WARNING_INTERVAL
from transports import Link, LinkClosed, LocalTransport, WebSocketTransport
from transports.base import PROTOCOL, check_exposure

from .test_websocket_link import raw_client, receive_bytes

SECRET = "security test secret"


class Recorder(Actor[Any]):
    """Keeps every message; answers an ask with the number kept so far."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def receive(self, message: Any) -> Any:
        self.seen.append(message)
        return len(self.seen)


async def close_code(raw: WebSocketConnection) -> int | None:
    """Read until the raw websocket closes: its close code, or None if still open after a
    second."""
    with trio.move_on_after(1):
        try:
            while True:
                await raw.get_message()
        except ConnectionClosed as exc:
            assert exc.reason is not None
            return exc.reason.code
    return None


async def hello(raw: WebSocketConnection, name: str, nonce: bytes) -> list[Any]:
    """Send our hello as ``name``; the node's hello ``[protocol, name, nonce]``."""
    await raw.send_message(msgpack.packb([PROTOCOL, name, nonce]))
    theirs = msgpack.unpackb(await receive_bytes(raw))
    assert isinstance(theirs, list)
    return theirs


def tell(target: str, value: Any) -> bytes:
    return wire.encode_frames([wire.Tell("tell", target, wire.encode_value(value))])


async def test_the_handshake_cannot_be_reflected_to_the_node_that_made_it() -> None:
    """Without the secret: claim the node's name on one connection, replay its nonce on a
    second, and hand the proof the node gives there back on the first."""
    with trio.fail_after(10):
        async with Node.open("victim", listen="ws://127.0.0.1:0", secret=SECRET) as node:
            assert node.address is not None
            recorder = await node.spawn(Recorder, name="recorder")
            async with raw_client(node.address) as first, raw_client(node.address) as second:
                with suppress(ConnectionClosed):  # the node may refuse at any step
                    _, _, first_nonce = await hello(first, "victim", b"n" * 16)
                    await hello(second, "victim", first_nonce)
                    own_proof = await receive_bytes(second)
                    await receive_bytes(first)  # the node's proof on the first connection
                    await first.send_message(own_proof)
                    await first.send_message(tell("recorder", "reflected"))
                codes = [await close_code(first), await close_code(second)]
            assert codes == [4002, 4002]
            assert "victim" not in node.peers
            assert await recorder.ask("count") == 1  # only our own ask arrived


async def test_a_proof_cannot_be_relayed_between_two_members() -> None:
    """Without the secret: pass member A's challenge to member B as if from A, and hand
    B's answer back to A, to get into A as B."""
    with trio.fail_after(10):
        async with (
            Node.open("a", listen="ws://127.0.0.1:0", secret=SECRET) as a,
            Node.open("b", listen="ws://127.0.0.1:0", secret=SECRET) as b,
        ):
            assert a.address is not None and b.address is not None
            recorder = await a.spawn(Recorder, name="recorder")
            async with raw_client(a.address) as to_a, raw_client(b.address) as to_b:
                with suppress(ConnectionClosed):
                    _, _, a_nonce = await hello(to_a, "b", b"n" * 16)
                    await hello(to_b, "a", a_nonce)
                    b_proof = await receive_bytes(to_b)
                    await receive_bytes(to_a)  # A's own proof
                    await to_a.send_message(b_proof)
                    await to_a.send_message(tell("recorder", "relayed"))
                assert await close_code(to_a) == 4001
            assert "b" not in a.peers
            assert await recorder.ask("count") == 1


class Big(Actor[Any]):
    """Answers every ask with 4 KiB."""

    async def receive(self, message: Any) -> Any:
        return b"x" * 4096


def ask_frame(ask_id: int, target: str, value: Any = None) -> bytes:
    return wire.encode_frames([wire.Ask("ask", ask_id, target, wire.encode_value(value))])


async def test_a_peer_that_never_reads_its_answers_is_back_pressured() -> None:
    """The node's unsent replies stay bounded (no task per reply, no growing queue), the
    peer's sends stall in TCP, and the node's other links are still served."""
    with trio.fail_after(20):
        async with Node.open("server", listen="ws://127.0.0.1:0", secret=SECRET) as server:
            assert server.address is not None
            big = await server.spawn(Big, name="big")
            async with (
                Node.open("client", connect=[server.address], secret=SECRET) as client,
                trio.open_nursery() as nursery,
            ):
                tasks_before = trio.lowlevel.current_statistics().tasks_living
                # Cancelled at the end: a peer that reads nothing cannot close cleanly.
                nursery.start_soon(flood_until_cancelled, server.address)
                await trio.testing.wait_all_tasks_blocked(0.2)
                # No task per reply: only the new link's own dozen tasks.
                tasks = trio.lowlevel.current_statistics().tasks_living - tasks_before
                assert tasks < 30
                assert flooded < 10_000  # TCP pushed back on the flood
                unsent = server._peers["greedy"].outbox.replies
                assert 0 < unsent <= _REPLY_QUEUE + Big.mailbox_size
                answer = await client.ref("big", node="server").ask("hello", timeout=5)
                assert answer == b"x" * 4096
                assert await big.ask("local too") == b"x" * 4096
                nursery.cancel_scope.cancel()


flooded = 0


async def flood_until_cancelled(address: str) -> None:
    """40 MB of asks, far more than the sockets' buffers hold, and as many answers,
    never read."""
    global flooded
    flooded = 0
    greedy = WebSocketTransport("greedy", SECRET.encode(), queue_size=1)
    async with greedy.connect(address) as link:
        for ask_id in range(10_000):
            await link.send(ask_frame(ask_id, "big", b"p" * 4096))
            flooded += 1
        await trio.sleep_forever()


def dropped_tell_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "actors.node" and r.levelno == logging.WARNING and "tell" in r.getMessage()
    ]


async def test_a_flood_of_bad_tells_logs_a_bounded_number_of_lines(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actors.node")
    async with Node.open("server", listen="local://", secret=SECRET) as server:
        assert server.address is not None
        async with LocalTransport("rogue", SECRET.encode()).connect(server.address) as rogue:

            async def flood(count: int, ask_id: int) -> None:
                for _ in range(count // 100):
                    bad = wire.Tell("tell", "missing", wire.encode_value(0))
                    await rogue.send(wire.encode_frames([bad] * 100))
                await rogue.send(ask_frame(ask_id, "missing"))
                (fault,) = wire.decode_frames(await rogue.receive())  # all handled by now
                assert isinstance(fault, wire.Fault)

            await flood(1000, 1)
            assert len(dropped_tell_warnings(caplog)) == 1
            await trio.sleep(_WARNING_INTERVAL)
            await flood(100, 2)
            first, summary = dropped_tell_warnings(caplog)
            assert "dropped tell from 'rogue' to 'missing'" in first
            assert "999 more like it" in summary
            await flood(500, 3)
        await server.wait_for_peer_lost("rogue")
        *_, last = dropped_tell_warnings(caplog)
        assert last.startswith("599 more dropped tells (ActorNotFoundError) from 'rogue'")
        assert len(dropped_tell_warnings(caplog)) == 3


@pytest.mark.parametrize("address", ["ws://0.0.0.0:0", "ws://192.0.2.1:9000", "ws://example.com:1"])
async def test_listening_beyond_loopback_needs_a_secret_or_insecure(address: str) -> None:
    with pytest.raises(ValueError, match="insecure=True"):
        Node("open", listen=address)
    with pytest.raises(ValueError, match="insecure=True"):
        Node("open", listen=address, secret="")
    # The transport refuses before binding: 192.0.2.1 (TEST-NET-1) is no address of this
    # host, so a bind would fail with OSError instead.
    with pytest.raises(ValueError, match="insecure=True"):
        await WebSocketTransport("open").serve("ws://192.0.2.1:0", echo_nothing)
    with pytest.raises(OSError):
        await WebSocketTransport("open", insecure=True).serve("ws://192.0.2.1:0", echo_nothing)
    assert Node("open", listen=address, insecure=True).insecure
    Node("closed", listen=address, secret="s")
    Node("closed", listen=address, transport=WebSocketTransport("closed", b"s"))
    node = Node("open", listen=address, transport=WebSocketTransport("open", insecure=True))
    assert node.insecure


async def echo_nothing(link: Any) -> None:
    pass


@pytest.mark.parametrize(
    "address",
    ["ws://127.0.0.1:0", "ws://127.8.9.10:0", "ws://[::1]:0", "ws://localhost:0", "local://x"],
)
def test_loopback_and_local_addresses_need_no_secret(address: str) -> None:
    check_exposure(address, None, insecure=False)
    assert not Node("n", listen=address).insecure


class Who(Actor[Any]):
    """Answers with the label its node was started with."""

    def __init__(self, label: str) -> None:
        self.label = label

    async def receive(self, message: Any) -> Any:
        return self.label


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


async def test_a_second_node_with_a_linked_name_is_refused_until_the_first_leaves(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        Node.open("server", listen="local://", secret=SECRET) as server,
        trio.open_nursery() as nursery,
    ):
        assert server.address is not None
        async with Node.open("twin", connect=[server.address], secret=SECRET) as first:
            await first.spawn(lambda: Who("first"), name="who")
            await server.wait_for_peer("twin")
            second = Node(
                "twin", connect=[server.address], secret=SECRET, reconnect_backoff=(1.0, 1.0)
            )
            await nursery.start(second.serve)
            await second.spawn(lambda: Who("second"), name="who")
            await trio.sleep(0.5)  # the second dialled and was refused
            assert await server.ref("who", node="twin").ask("who?") == "first"
            refused = errors(caplog)
            assert any("refusing a second link from node 'twin'" in e for e in refused)
            assert any("node 'server' refused our link" in e for e in refused)
            assert second.peers == []
        # The first left: the second gets in at its next redial.
        await server.wait_for_peer("twin")
        assert await server.ref("who", node="twin").ask("who?") == "second"
        nursery.cancel_scope.cancel()


# Any msgpack data: what a peer that knows the secret may put in a link message.
packable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
targets = st.sampled_from(["recorder", "missing", ""]) | st.text(max_size=8)
bodies = (
    st.binary(max_size=24)
    | packable.map(lambda value: msgpack.packb([None, value]))
    | st.tuples(st.text(max_size=12), packable).map(lambda pair: msgpack.packb(list(pair)))
)
ids = st.integers(0, 2**64 - 1)
frames = st.one_of(
    st.builds(wire.Tell, st.just("tell"), targets, bodies),
    st.builds(wire.Ask, st.just("ask"), ids, targets, bodies),
    st.builds(wire.Answer, st.just("answer"), ids, bodies),
    st.builds(wire.Fault, st.just("fault"), ids, st.text(max_size=12), st.text(max_size=24)),
)
well_formed = st.lists(frames, min_size=1, max_size=6).map(wire.encode_frames)
FUZZ_MAX_FRAME = 4096
payloads = st.one_of(
    well_formed,
    st.binary(max_size=64),
    packable.map(msgpack.packb),
    st.tuples(well_formed, st.integers(0, 10**6)).map(lambda cut: cut[0][: cut[1] % len(cut[0])]),
    st.integers(1, 64).map(lambda extra: b"\x91" * (FUZZ_MAX_FRAME + extra)),
)
PROBE = 2**64 - 1


async def probe(link: Link) -> None:
    """An ask to the recorder after the payload; read until its answer, or the close."""
    await link.send(ask_frame(PROBE, "recorder"))
    while True:
        for frame in wire.decode_frames(await link.receive()):
            if isinstance(frame, wire.Answer) and frame.id == PROBE:
                return


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=5))
def test_random_authenticated_frames_never_harm_the_node(sent: list[bytes]) -> None:
    async def scenario() -> None:
        server_transport = LocalTransport("server", SECRET.encode(), FUZZ_MAX_FRAME)
        with trio.fail_after(10):
            async with Node.open(
                "server", listen="local://", secret=SECRET, transport=server_transport
            ) as server:
                assert server.address is not None
                await server.spawn(Recorder, name="recorder")
                async with Node.open("good", connect=[server.address], secret=SECRET) as good:
                    await good.wait_for_peer("server")
                    recorder = good.ref("recorder", node="server")
                    await trio.testing.wait_all_tasks_blocked()
                    tasks = trio.lowlevel.current_statistics().tasks_living
                    rogue = LocalTransport("rogue", SECRET.encode())
                    for payload in sent:
                        with suppress(LinkClosed):
                            async with rogue.connect(server.address) as link:
                                await link.send(payload)
                                await probe(link)
                        await server.wait_for_peer_lost("rogue")
                        assert server.peers == ["good"]
                        assert isinstance(await recorder.ask("still there?"), int)
                    await trio.testing.wait_all_tasks_blocked()
                    assert trio.lowlevel.current_statistics().tasks_living == tasks
                    peer = server._peers["good"]
                    assert peer.outbox.replies == 0 and not peer.pending

    trio.run(scenario)
