"""What only the websocket transport has: heartbeats, close codes on the wire, raw peers.

Timed tests run over ``trio.testing`` memory streams under ``autojump_clock``, so a
15-second timeout costs nothing; tests with a raw trio-websocket peer use real sockets on
127.0.0.1.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import cast
from urllib.parse import urlsplit

import msgpack
import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Request,
)

from transports import HandshakeError, Link, LinkClosed, LinkState, WebSocketTransport
from transports.base import handshake
from transports.websocket import WebSocketLink, _ReadWhenReadable

SECRET = b"cluster secret"


#: Messages each test websocket queues, as WebSocketTransport's default ``queue_size``.
QUEUE = 64


@asynccontextmanager
async def memory_ws_pair() -> AsyncIterator[
    tuple[WebSocketConnection, WebSocketConnection, trio.testing.MemorySendStream]
]:
    """A client and a server websocket joined by memory streams.

    The third item is the server-to-client stream: set its ``send_all_hook`` to None and
    nothing the server sends (pongs included) reaches the client any more.
    """
    to_server, server_inbox = trio.testing.memory_stream_one_way_pair()
    to_client, client_inbox = trio.testing.memory_stream_one_way_pair()
    client_stream = trio.StapledStream(to_server, client_inbox)
    server_stream = trio.StapledStream(to_client, server_inbox)
    found: dict[str, WebSocketConnection] = {}
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            request = await trio_websocket.wrap_server_stream(
                nursery, server_stream, message_queue_size=QUEUE
            )
            found["server"] = await request.accept()

        async def dial() -> None:
            # Annotated as needing a socket stream, it only uses the Stream interface.
            stream = cast(trio.SocketStream, client_stream)
            found["client"] = await trio_websocket.wrap_client_stream(
                nursery, stream, "test", "/", message_queue_size=QUEUE
            )

        async with trio.open_nursery() as setup:
            setup.start_soon(accept)
            setup.start_soon(dial)
        try:
            yield found["client"], found["server"], to_client
        finally:
            await trio.aclose_forcefully(client_stream)
            await trio.aclose_forcefully(server_stream)
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_client(address: str) -> AsyncIterator[WebSocketConnection]:
    """A bare trio-websocket client that knows nothing of links; it owns its socket."""
    parts = urlsplit(address)
    assert parts.hostname == "127.0.0.1" and parts.port
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, parts.netloc, "/")
            try:
                yield ws
            finally:
                with trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def receive_bytes(ws: WebSocketConnection) -> bytes:
    message = await ws.get_message()
    assert isinstance(message, bytes)
    return message


async def close_of(ws: WebSocketConnection) -> tuple[int, str]:
    """Read until the websocket closes; the close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    reason = closed.value.reason
    assert reason is not None
    return reason.code, reason.reason or ""


def warned(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(
        r.levelno == logging.WARNING and r.name == "transports.websocket" and text in r.getMessage()
        for r in caplog.records
    )


async def test_heartbeat_timeout_closes_a_silent_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = WebSocketTransport("client", SECRET, heartbeat_interval=1.0, heartbeat_timeout=3.0)
    server = WebSocketTransport("server", SECRET, heartbeat_interval=600, heartbeat_timeout=600)
    server_saw: list[tuple[int, str]] = []

    async def run_server(ws: WebSocketConnection) -> None:
        async with server.open_link(ws) as link:
            try:
                await link.receive()
            except LinkClosed as exc:
                server_saw.append((exc.code, exc.reason))

    async with memory_ws_pair() as (client_ws, server_ws, silence), trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_ws)
        async with client.open_link(client_ws) as link:
            silence.send_all_hook = None  # the server's pongs stop arriving
            start = trio.current_time()
            with trio.fail_after(60), pytest.raises(LinkClosed) as closed:
                await link.receive()
            elapsed = trio.current_time() - start
    assert (closed.value.code, closed.value.reason) == (1011, "heartbeat timeout")
    assert elapsed == pytest.approx(4.0, abs=0.1)  # first ping at 1 s, given up 3 s later
    assert server_saw == [(1011, "heartbeat timeout")]


async def test_unread_frames_do_not_stop_pongs(autojump_clock: trio.testing.MockClock) -> None:
    """Frames the link's queue holds unread do not stop trio-websocket's reader, so it
    still answers pings."""
    client = WebSocketTransport("client", SECRET, heartbeat_interval=1.0, heartbeat_timeout=3.0)
    server = WebSocketTransport("server", SECRET, heartbeat_interval=1.0, heartbeat_timeout=3.0)
    server_got: list[bytes] = []

    async def run_server(ws: WebSocketConnection) -> None:
        async with server.open_link(ws) as link:
            for i in range(20):
                await link.send(b"%d" % i)
            server_got.append(await link.receive())

    async with memory_ws_pair() as (client_ws, server_ws, _), trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_ws)
        async with client.open_link(client_ws) as link:
            await trio.sleep(30)  # ten heartbeat timeouts, nothing read
            states = [link.state]
            frames = [await link.receive() for _ in range(20)]
            await link.send(b"still here")
    assert states == [LinkState.OPEN]
    assert frames == [b"%d" % i for i in range(20)]
    assert server_got == [b"still here"]


async def test_silent_peer_fails_the_handshake(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = WebSocketTransport("server", SECRET, handshake_timeout=10.0)
    async with memory_ws_pair() as (raw, server_ws, _):
        start = trio.current_time()
        with pytest.raises(HandshakeError) as failed:
            async with server.open_link(server_ws):
                pytest.fail("a link opened without a handshake")
        elapsed = trio.current_time() - start
        hello = msgpack.unpackb(await receive_bytes(raw))
        code, reason = await close_of(raw)
    assert failed.value.code == 1002
    assert "no handshake within" in failed.value.reason
    assert elapsed == pytest.approx(10.0, abs=0.1)
    assert hello[1] == "server"
    assert (code, reason) == (1002, failed.value.reason)
    assert warned(caplog, "handshake failed")


async def test_malformed_hello_fails_handshake_and_server_keeps_serving(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = WebSocketTransport("server", SECRET)
    handled: list[str] = []

    async def handler(link: Link) -> None:
        handled.append(link.peer)
        await link.send(b"welcome")
        async for _ in link:
            pass

    address = await nursery.start(server.serve, "ws://127.0.0.1:0", handler)
    assert address.startswith("ws://127.0.0.1:")
    assert not address.endswith(":0")
    with trio.fail_after(5):
        async with raw_client(address) as raw:
            await raw.send_message(b"\xc1 this is not msgpack")
            hello = msgpack.unpackb(await receive_bytes(raw))
            code, reason = await close_of(raw)
    assert hello[1] == "server"
    assert code == 1002
    assert "malformed hello" in reason
    assert warned(caplog, "malformed hello")

    async with WebSocketTransport("good", SECRET).connect(address) as link:
        with trio.fail_after(5):
            assert await link.receive() == b"welcome"
    assert handled == ["good"]


async def refuse_all(frame: bytes) -> bool:
    return False


@pytest.mark.parametrize("reading", ["receive", "deliver"])
@pytest.mark.parametrize(
    ("frame", "code", "log"),
    [("text is not a frame", 1003, "text frame"), (b"x" * 2048, 1009, "frame too big")],
)
async def test_bad_frame_after_handshake_closes_with_its_code(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    frame: str | bytes,
    code: int,
    log: str,
    reading: str,
) -> None:
    server = WebSocketTransport("server", SECRET, max_frame=1024)
    handler_saw: list[int] = []

    async def handler(link: Link) -> None:
        try:
            if reading == "receive":
                await link.receive()
            else:
                await link.deliver(refuse_all)
        except LinkClosed as exc:
            handler_saw.append(exc.code)
            raise

    address = await nursery.start(server.serve, "ws://127.0.0.1:0", handler)
    with trio.fail_after(5):
        async with raw_client(address) as raw:
            peer = await handshake(
                raw.send_message,
                lambda: receive_bytes(raw),
                name="raw",
                secret=SECRET,
                role="dialler",
            )
            await raw.send_message(frame)
            closed_with, _ = await close_of(raw)
        while not handler_saw:
            await trio.sleep(0.01)
    assert peer == "server"
    assert closed_with == code
    assert handler_saw == [code]
    assert warned(caplog, log)


class RawPeer:
    """A websocket client speaking wsproto by hand, to send what trio-websocket won't."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: deque[Event] = deque()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def event(self) -> Event:
        while not self.pending:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.popleft()

    async def frame(self) -> bytes:
        event = await self.event()
        assert isinstance(event, BytesMessage) and event.message_finished
        return bytes(event.data)

    async def open(self, host: str) -> str:
        """Upgrade, then run the link handshake; the server's name."""
        await self.send(Request(host=host, target="/"))
        assert isinstance(await self.event(), AcceptConnection)
        return await handshake(
            lambda data: self.send(BytesMessage(data=data)),
            self.frame,
            name="raw",
            secret=SECRET,
            role="dialler",
        )


async def test_ping_during_server_close_does_not_crash_the_server(nursery: trio.Nursery) -> None:
    """trio-websocket's reader raises on a ping that arrives after it sent its close
    (python-trio/trio-websocket#184); that must cost one connection, not the server."""
    server = WebSocketTransport("server", SECRET)

    async def handler(link: Link) -> None:
        if await link.receive() == b"close please":
            await link.aclose("bye", 4000)
        else:
            await link.send(b"welcome")

    address = await nursery.start(server.serve, "ws://127.0.0.1:0", handler)
    parts = urlsplit(address)
    assert parts.hostname == "127.0.0.1" and parts.port
    with trio.fail_after(5):
        async with await trio.open_tcp_stream(parts.hostname, parts.port) as stream:
            raw = RawPeer(stream)
            assert await raw.open(parts.netloc) == "server"
            late_ping = raw.ws.send(Ping(payload=b"late"))  # framed while still open
            await raw.send(BytesMessage(data=b"close please"))
            close = await raw.event()
            assert isinstance(close, CloseConnection)
            assert close.code == 4000
            await stream.send_all(late_ping)  # no close reply: the server stays closing
            with pytest.raises(EOFError):
                while True:
                    await raw.event()

        async with WebSocketTransport("good", SECRET).connect(address) as link:
            await link.send(b"hello")
            assert await link.receive() == b"welcome"


async def test_deliver_runs_the_handler_in_the_reader_task(nursery: trio.Nursery) -> None:
    """No hand-over to the task that called ``deliver``: each frame costs no task switch
    and no scheduler pass more than trio-websocket's reading it."""
    server = WebSocketTransport("server", SECRET)
    handled_in: list[trio.lowlevel.Task] = []

    async def handler(link: Link) -> None:
        await trio.testing.wait_all_tasks_blocked()  # the client waits in deliver
        for _ in range(3):
            await link.send(b"frame")

    async def handle(frame: bytes) -> bool:
        handled_in.append(trio.lowlevel.current_task())
        return True

    address = await nursery.start(server.serve, "ws://127.0.0.1:0", handler)
    async with WebSocketTransport("client", SECRET).connect(address) as link:
        with trio.fail_after(5):
            await link.deliver(handle)
    assert len(handled_in) == 3
    assert trio.lowlevel.current_task() not in handled_in


class _StepsOf(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_send_the_socket_takes_at_once_does_not_go_through_the_scheduler(
    nursery: trio.Nursery,
) -> None:
    """No trip through the scheduler for trio-websocket's send lock, nor for trio's
    socket after a send that did not wait; the peer gets every message in order."""
    server = WebSocketTransport("server", SECRET)
    got: list[bytes] = []

    async def handler(link: Link) -> None:
        got.extend([frame async for frame in link])

    address = await nursery.start(server.serve, "ws://127.0.0.1:0", handler)
    async with WebSocketTransport("client", SECRET).connect(address) as link:
        steps = _StepsOf(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(steps)
        try:
            for i in range(5):
                await link.send(b"%d" % i)
        finally:
            trio.lowlevel.remove_instrument(steps)
        await link.aclose()
    with trio.fail_after(5):
        while len(got) < 5:
            await trio.sleep(0.01)
    assert steps.steps == 0
    assert got == [b"%d" % i for i in range(5)]


async def test_the_rest_of_a_frame_try_send_began_goes_before_anything_else(
    nursery: trio.Nursery,
) -> None:
    """The socket takes part of a big frame; the link's task sends the rest, holding the
    send lock, so the next message and the heartbeat's pings wait their turn."""
    size = 16 * 2**20
    server = WebSocketTransport("server", SECRET, max_frame=size + 1024)
    client = WebSocketTransport(
        "client", SECRET, max_frame=size + 1024, heartbeat_interval=0.02, heartbeat_timeout=10
    )
    got: list[bytes] = []

    async def handler(link: Link) -> None:
        await trio.sleep(0.3)  # the socket's buffers fill meanwhile, pings queue up
        got.extend([frame async for frame in link])

    message = bytes(range(256)) * (size // 256)
    address = await nursery.start(server.serve, "ws://127.0.0.1:0", handler)
    async with client.connect(address) as link:
        assert isinstance(link, WebSocketLink)
        assert link.try_send(message)
        assert link._send_lock.value == 0  # the rest is still being sent
        assert not link.try_send(b"busy")  # nothing may go between
        with trio.fail_after(20):
            await link.send(b"after it")
            await trio.sleep(0.1)  # pings and pongs go on after the big frame
        await link.aclose()
    with trio.fail_after(20):
        while len(got) < 2:
            await trio.sleep(0.01)
    assert got == [message, b"after it"]


async def test_a_message_bigger_than_the_sockets_buffers_arrives_whole(
    nursery: trio.Nursery,
) -> None:
    """The socket takes part of it at once; the rest waits for room, in order."""
    size = 16 * 2**20
    server = WebSocketTransport("server", SECRET, max_frame=size + 1024)
    got: list[bytes] = []

    async def handler(link: Link) -> None:
        await trio.sleep(0.2)  # the client's send fills the socket's buffers meanwhile
        got.extend([frame async for frame in link])

    message = bytes(range(256)) * (size // 256)
    address = await nursery.start(server.serve, "ws://127.0.0.1:0", handler)
    async with WebSocketTransport("client", SECRET, max_frame=size + 1024).connect(address) as link:
        with trio.fail_after(20):
            await link.send(message)
            await link.send(b"after it")
        await link.aclose()
    with trio.fail_after(20):
        while len(got) < 2:
            await trio.sleep(0.01)
    assert got == [message, b"after it"]


async def test_both_ends_read_data_frames_on_the_short_path(nursery: trio.Nursery) -> None:
    """``LeanFrames`` takes over once wsproto holds no bytes, a check that reads wsproto's
    private state: on the installed wsproto both ends of a link read their messages on the
    short path (with another, they would all go through wsproto, only slower)."""
    server = WebSocketTransport("server", SECRET)
    server_lean: list[bool] = []

    async def handler(link: Link) -> None:
        await link.send(await link.receive())
        assert isinstance(link, WebSocketLink)
        server_lean.append(link._frames._lean)

    address = await nursery.start(server.serve, "ws://127.0.0.1:0", handler)
    async with WebSocketTransport("client", SECRET).connect(address) as link:
        with trio.fail_after(5):
            await link.send(b"there")
            assert await link.receive() == b"there"
        assert link._frames._lean
    assert server_lean == [True]


async def test_a_links_tcp_stream_reads_once_readable_and_reports_its_end() -> None:
    """What trio's stream does, read after a wait instead of before: the bytes, b"" when
    the peer closed, ClosedResourceError once closed here (its descriptor may be reused)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        near = await trio.testing.open_stream_to_socket_listener(listener)
        far = await listener.accept()
        stream = _ReadWhenReadable(near)
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def read() -> None:
                got.append(await stream.receive_some())

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            await far.send_all(b"hello")
        assert got == [b"hello"]
        await far.aclose()
        with trio.fail_after(5):
            assert await stream.receive_some() == b""
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()


@pytest.mark.parametrize("reads_the_request", [True, False])
async def test_a_connection_closed_during_the_upgrade_fails_the_dial_at_once(
    nursery: trio.Nursery, reads_the_request: bool
) -> None:
    """Not at the connect timeout: a proxy cutting links or a hub killed during the
    upgrade would make a starting worker spend its whole budget on one attempt."""

    async def close_early(stream: trio.SocketStream) -> None:
        if reads_the_request:
            await stream.receive_some()
        await trio.aclose_forcefully(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, close_early, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    client = WebSocketTransport("client", SECRET, connect_timeout=60)
    with trio.fail_after(5), pytest.raises(LinkClosed) as closed:
        async with client.connect(f"ws://127.0.0.1:{port}"):
            pass
    assert closed.value.code == 1006
