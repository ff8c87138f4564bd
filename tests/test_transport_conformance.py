"""One behaviour, every transport: each test runs over local channels and real websockets.

Websocket servers bind 127.0.0.1 port 0 only. Everything that waits is bounded by
``trio.fail_after`` so a broken transport fails instead of hanging.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from transports import (
    DEFAULT_MAX_FRAME,
    Address,
    HandshakeError,
    Link,
    LinkClosed,
    LinkState,
    LocalTransport,
    Transport,
    WebSocketTransport,
)
from transports.base import NAME_IN_USE

SECRET = b"cluster secret"


@dataclass(frozen=True)
class Net:
    """Makes transports of one kind and knows where a server of that kind may listen."""

    kind: str

    @property
    def listen_at(self) -> Address:
        return "ws://127.0.0.1:0" if self.kind == "websocket" else "local://"

    def make(
        self,
        name: str,
        *,
        secret: bytes | None = SECRET,
        max_frame: int = DEFAULT_MAX_FRAME,
        queue_size: int = 64,
    ) -> Transport:
        if self.kind == "websocket":
            return WebSocketTransport(name, secret, max_frame=max_frame, queue_size=queue_size)
        return LocalTransport(name, secret, max_frame, queue_size=queue_size)

    def pair(
        self,
        *,
        server_secret: bytes | None = SECRET,
        client_secret: bytes | None = SECRET,
        server_max_frame: int = DEFAULT_MAX_FRAME,
        queue_size: int = 64,
    ) -> tuple[Transport, Transport]:
        server = self.make(
            "server", secret=server_secret, max_frame=server_max_frame, queue_size=queue_size
        )
        client = self.make("client", secret=client_secret, queue_size=queue_size)
        return server, client


@pytest.fixture(params=["local", "websocket"])
def net(request: pytest.FixtureRequest) -> Net:
    kind = request.param
    assert isinstance(kind, str)
    return Net(kind)


async def echo(link: Link) -> None:
    async for frame in link:
        await link.send(frame)


async def test_frames_arrive_in_order_both_ways(net: Net, nursery: trio.Nursery) -> None:
    server, client = net.pair()

    async def handler(link: Link) -> None:
        for i in range(20):
            await link.send(b"s%d" % i)
        async for frame in link:
            await link.send(b"echo:" + frame)

    address = await nursery.start(server.serve, net.listen_at, handler)
    async with client.connect(address) as link:
        with trio.fail_after(5):
            pushed = [await link.receive() for _ in range(20)]
            for i in range(50):
                await link.send(b"c%d" % i)
            echoed = [await link.receive() for _ in range(50)]
    assert pushed == [b"s%d" % i for i in range(20)]
    assert echoed == [b"echo:c%d" % i for i in range(50)]


def collecting(got: list[bytes], ended: trio.Event) -> Callable[[Link], Awaitable[None]]:
    """A server's handler that keeps every frame in ``got`` and sets ``ended`` once the
    link has closed."""

    async def handler(link: Link) -> None:
        try:
            got.extend([frame async for frame in link])
        finally:
            ended.set()

    return handler


async def test_try_send_sends_at_once_in_order_with_send(net: Net, nursery: trio.Nursery) -> None:
    """A frame try_send takes needs no trip through the scheduler, and keeps its place
    among frames sent either way."""
    server, client = net.pair()
    got: list[bytes] = []
    ended = trio.Event()
    address = await nursery.start(server.serve, net.listen_at, collecting(got, ended))
    async with client.connect(address) as link:
        with trio.fail_after(5):
            for i in range(30):
                if i % 3:
                    assert link.try_send(b"%d" % i)
                else:
                    await link.send(b"%d" % i)
    with trio.fail_after(5):
        await ended.wait()
    assert got == [b"%d" % i for i in range(30)]


async def test_try_send_refuses_what_it_cannot_send_and_sends_nothing(
    net: Net, nursery: trio.Nursery
) -> None:
    server, client = net.make("server"), net.make("client", max_frame=100)
    got: list[bytes] = []
    ended = trio.Event()
    address = await nursery.start(server.serve, net.listen_at, collecting(got, ended))
    async with client.connect(address) as link:
        assert not link.try_send(b"x" * 101)  # too big: send() closes the link (1009)
        assert link.state is LinkState.OPEN
        assert link.try_send(b"last")
        await link.aclose()
        assert not link.try_send(b"after the close")
    with trio.fail_after(5):
        await ended.wait()
    assert got == [b"last"]


async def test_peer_names_known_after_handshake(net: Net, nursery: trio.Nursery) -> None:
    server = net.make("server")
    client = net.make("client-a")
    seen: list[tuple[str, LinkState]] = []

    async def handler(link: Link) -> None:
        seen.append((link.peer, link.state))
        await link.send(link.peer.encode())
        async for _ in link:
            pass

    address = await nursery.start(server.serve, net.listen_at, handler)
    async with client.connect(address) as link:
        assert isinstance(link, Link)
        assert link.peer == "server"
        states = [link.state]
        with trio.fail_after(5):
            assert await link.receive() == b"client-a"
    states.append(link.state)
    assert states == [LinkState.OPEN, LinkState.CLOSED]
    assert seen == [("client-a", LinkState.OPEN)]


@pytest.mark.parametrize("wrong", ["client", "server"])
async def test_wrong_secret_is_refused_and_server_keeps_serving(
    net: Net, nursery: trio.Nursery, wrong: str
) -> None:
    server_secret = b"not the secret" if wrong == "server" else SECRET
    client_secret = b"not the secret" if wrong == "client" else SECRET
    server, bad_client = net.pair(server_secret=server_secret, client_secret=client_secret)
    handled: list[str] = []

    async def handler(link: Link) -> None:
        handled.append(link.peer)
        await link.send(b"welcome")
        async for _ in link:
            pass

    address = await nursery.start(server.serve, net.listen_at, handler)
    with trio.fail_after(5), pytest.raises(HandshakeError) as refused:
        async with bad_client.connect(address):
            pytest.fail("a peer with the wrong secret got a link")
    assert refused.value.code == 4001

    good_client = net.make("good", secret=server_secret)
    async with good_client.connect(address) as link:
        with trio.fail_after(5):
            assert await link.receive() == b"welcome"
    assert handled == ["good"]


async def test_a_peer_claiming_our_own_name_is_refused(net: Net, nursery: trio.Nursery) -> None:
    server = net.make("server")
    address = await nursery.start(server.serve, net.listen_at, echo)
    with trio.fail_after(5), pytest.raises(HandshakeError) as refused:
        async with net.make("server").connect(address):
            pytest.fail("a peer with our own name got a link")
    assert refused.value.code == NAME_IN_USE


async def test_oversized_frame_closes_only_that_link(net: Net, nursery: trio.Nursery) -> None:
    server, client = net.pair(server_max_frame=1024)

    async def sizes(link: Link) -> None:
        # Replies stay small, so only the server's receiving limit is under test.
        async for frame in link:
            await link.send(b"%d" % len(frame))

    address = await nursery.start(server.serve, net.listen_at, sizes)
    async with client.connect(address) as steady, client.connect(address) as doomed:
        with trio.fail_after(5):
            await steady.send(b"before")
            assert await steady.receive() == b"6"
            await doomed.send(b"x" * 1024)  # exactly the limit is fine
            assert await doomed.receive() == b"1024"

            with pytest.raises(LinkClosed) as closed:
                await doomed.send(b"x" * 1025)
                await doomed.receive()
            assert closed.value.code == 1009
            assert doomed.state is LinkState.CLOSED
            with pytest.raises(LinkClosed):
                await doomed.send(b"small")

            await steady.send(b"after")
            assert await steady.receive() == b"5"
    async with client.connect(address) as fresh:
        with trio.fail_after(5):
            await fresh.send(b"fresh")
            assert await fresh.receive() == b"5"


async def test_sending_a_frame_over_own_limit_closes_the_link(
    net: Net, nursery: trio.Nursery
) -> None:
    server = net.make("server")
    client = net.make("client", max_frame=100)
    ended: list[int] = []
    closed = trio.Event()

    async def handler(link: Link) -> None:
        try:
            await link.receive()
        except LinkClosed as exc:
            ended.append(exc.code)
            closed.set()
            raise

    address = await nursery.start(server.serve, net.listen_at, handler)
    async with client.connect(address) as link:
        with trio.fail_after(5), pytest.raises(LinkClosed) as refused:
            await link.send(b"x" * 101)
        assert refused.value.code == 1009
        assert link.state is LinkState.CLOSED
    with trio.fail_after(5):
        await closed.wait()
    assert ended == [1009]


@pytest.mark.parametrize("closer", ["client", "server"])
async def test_close_by_one_side_wakes_the_other(
    net: Net, nursery: trio.Nursery, closer: str
) -> None:
    server, client = net.pair()
    server_saw: list[LinkClosed] = []
    server_done = trio.Event()

    async def handler(link: Link) -> None:
        try:
            await link.receive()  # the client's "go", or its close
            if closer == "server":
                await link.aclose("server done", 4000)
            else:
                await link.receive()
        except LinkClosed as exc:
            server_saw.append(exc)
        finally:
            server_done.set()

    address = await nursery.start(server.serve, net.listen_at, handler)
    async with client.connect(address) as link:
        if closer == "server":
            await link.send(b"go")
            with trio.fail_after(2), pytest.raises(LinkClosed) as closed:
                await link.receive()
            assert (closed.value.code, closed.value.reason) == (4000, "server done")
            assert link.state is LinkState.CLOSED
        else:
            await link.send(b"go")
            await link.aclose("client done", 4000)
            with trio.fail_after(2):
                await server_done.wait()
            assert [(e.code, e.reason) for e in server_saw] == [(4000, "client done")]


async def test_frames_sent_before_close_are_delivered(net: Net, nursery: trio.Nursery) -> None:
    server, client = net.pair()

    async def handler(link: Link) -> None:
        for i in range(5):
            await link.send(b"%d" % i)
        await link.aclose()

    address = await nursery.start(server.serve, net.listen_at, handler)
    async with client.connect(address) as link:
        with trio.fail_after(5):
            got = [frame async for frame in link]  # a normal close ends the iteration
    assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_many_frames_through_a_small_queue(net: Net, nursery: trio.Nursery) -> None:
    server, client = net.pair(queue_size=2)
    address = await nursery.start(server.serve, net.listen_at, echo)
    count = 2000
    received: list[int] = []
    async with client.connect(address) as link:

        async def send_all() -> None:
            for i in range(count):
                await link.send(i.to_bytes(4, "big"))

        with trio.fail_after(8):
            async with trio.open_nursery() as inner:
                inner.start_soon(send_all)
                for _ in range(count):
                    received.append(int.from_bytes(await link.receive(), "big"))
    assert received == list(range(count))


async def test_aclose_is_idempotent(net: Net, nursery: trio.Nursery) -> None:
    server, client = net.pair()
    address = await nursery.start(server.serve, net.listen_at, echo)
    async with client.connect(address) as link:
        with trio.fail_after(5):
            await link.aclose()
            await link.aclose("again", 4000)
        assert link.state is LinkState.CLOSED
        with pytest.raises(LinkClosed) as closed:
            await link.send(b"x")
        assert closed.value.code == 1000  # the first close wins
        with pytest.raises(LinkClosed):
            await link.receive()
    # leaving the block closed it a third time, quietly
    assert link.state is LinkState.CLOSED


async def test_connecting_to_nothing_raises_link_closed(net: Net) -> None:
    server, client = net.pair()
    async with trio.open_nursery() as gone:
        address = await gone.start(server.serve, net.listen_at, echo)
        gone.cancel_scope.cancel()
    with trio.fail_after(5), pytest.raises(LinkClosed) as refused:
        async with client.connect(address):
            pytest.fail("connected to a server that is gone")
    assert refused.value.code == 1006


async def test_foreign_address_is_a_value_error(net: Net) -> None:
    _, client = net.pair()
    foreign = "local://x" if net.kind == "websocket" else "ws://127.0.0.1:1"
    with pytest.raises(ValueError, match="address"):
        async with client.connect(foreign):
            pytest.fail("connected to a foreign address")


async def test_error_in_the_block_propagates_bare_and_closes_the_link(
    net: Net, nursery: trio.Nursery
) -> None:
    server, client = net.pair()
    ended: list[int] = []
    closed = trio.Event()

    async def handler(link: Link) -> None:
        try:
            await link.receive()
        except LinkClosed as exc:
            ended.append(exc.code)
            closed.set()

    address = await nursery.start(server.serve, net.listen_at, handler)
    with trio.fail_after(5), pytest.raises(KeyError, match="boom"):
        async with client.connect(address):
            raise KeyError("boom")
    with trio.fail_after(5):
        await closed.wait()
    assert ended == [1000]


async def test_cancelled_block_closes_the_link(net: Net, nursery: trio.Nursery) -> None:
    server, client = net.pair()
    ended: list[int] = []
    closed = trio.Event()

    async def handler(link: Link) -> None:
        await link.send(b"hello")
        try:
            await link.receive()
        except LinkClosed as exc:
            ended.append(exc.code)
            closed.set()

    address = await nursery.start(server.serve, net.listen_at, handler)
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with client.connect(address) as link:
                assert await link.receive() == b"hello"
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        await closed.wait()
    assert len(ended) == 1  # a graceful close is not promised under cancellation


@pytest.mark.parametrize(("code", "raises"), [(1000, False), (4000, True)])
async def test_deliver_hands_frames_in_order_until_the_close(
    net: Net, nursery: trio.Nursery, code: int, raises: bool
) -> None:
    """Frames queued before ``deliver`` starts come first, then those read while it runs;
    a normal close ends it, any other raises."""
    server, client = net.pair()
    sent_first = trio.Event()

    async def handler(link: Link) -> None:
        for i in range(5):
            await link.send(b"%d" % i)
        sent_first.set()
        assert await link.receive() == b"go"
        for i in range(5, 10):
            await link.send(b"%d" % i)
        await link.aclose("done", code)

    address = await nursery.start(server.serve, net.listen_at, handler)
    got: list[bytes] = []

    async def handle(frame: bytes) -> bool:
        got.append(frame)
        return True

    async with client.connect(address) as link:
        with trio.fail_after(5):
            await sent_first.wait()
            await trio.testing.wait_all_tasks_blocked()  # the first five wait in the link
            await link.send(b"go")
            if raises:
                with pytest.raises(LinkClosed) as closed:
                    await link.deliver(handle)
                assert closed.value.code == code
            else:
                await link.deliver(handle)
    assert got == [b"%d" % i for i in range(10)]


async def test_deliver_stops_when_the_handler_refuses(net: Net, nursery: trio.Nursery) -> None:
    server, client = net.pair()

    async def handler(link: Link) -> None:
        for frame in (b"a", b"bad", b"c"):
            await link.send(frame)
        assert await link.receive() == b"still open"

    address = await nursery.start(server.serve, net.listen_at, handler)
    got: list[bytes] = []

    async def handle(frame: bytes) -> bool:
        got.append(frame)
        return frame != b"bad"

    async with client.connect(address) as link:
        with trio.fail_after(5):
            await link.deliver(handle)
            assert link.state is LinkState.OPEN
            await link.send(b"still open")
    assert got == [b"a", b"bad"]
