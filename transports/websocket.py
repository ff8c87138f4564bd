"""Links over websockets (trio-websocket), addressed ``ws://HOST:PORT`` or ``wss://``.

A link's messages queue in trio-websocket's own channel, bounded by ``queue_size``,
and :meth:`WebSocketLink.receive` takes them from there: no task of ours sits between
the socket and the node's reader (an earlier pump task and a second channel cost each
received message two task switches; a W2 round trip crosses four links).
:meth:`WebSocketLink.deliver`, which a node uses, goes further: the node's handler runs
in trio-websocket's reader task as each message is read, with no channel and no task
switch. While that channel is full, or the handler waits, trio-websocket's reader
stops, so it answers no pings: back-pressure moves to TCP, and a consumer that leaves
it stopped longer than the peer's heartbeat timeout loses the link: the buffer fails
loudly instead of growing. Next to
the code that uses the link, in the nursery of the ``connect()`` block or of the
server's per-connection handler (so it never outlives it), a *heartbeat* task pings
every ``heartbeat_interval`` and closes the link with 1011 ("heartbeat timeout") when
no pong comes within ``heartbeat_timeout``.

Close codes: 1009 frame bigger than ``max_frame`` (the receiver closes), 4001 failed
authentication, 4002 name in use (the peer claims our name, or a live link already
carries its name: see :data:`~transports.base.NAME_IN_USE`), 1002 protocol error (bad
hello, handshake timeout), 1003 text frame, 1011 heartbeat timeout, 1006 connection
lost or never made; a node also closes with 1007 (malformed link message) and 1001
(shutting down, after its outbox was flushed).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Literal
from urllib.parse import urlsplit

import trio
import trio_websocket
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.utilities import LocalProtocolError

from .base import (
    DEFAULT_MAX_FRAME,
    Address,
    FrameHandler,
    LinkBase,
    LinkClosed,
    LinkHandler,
    Role,
    check_exposure,
)
from .wsframes import LeanFrames

__all__ = ["WebSocketLink", "WebSocketTransport"]

logger = logging.getLogger(__name__)

#: Bytes trio-websocket's reader asks of the socket at a time. Its default, 4 KiB, cost a
#: busy link (a batch of frames is often tens of KiB) several recv calls and wsproto
#: passes per message; 64 KiB is what trio reads by default.
RECEIVE_BUFFER = 65536

#: Longest wait for the peer's half of the closing handshake before dropping TCP.
CLOSE_TIMEOUT = 2.0


def _parse(address: Address) -> tuple[str, str, int, str]:
    """``ws://host:port/path`` -> (scheme, host, port, resource)."""
    parts = urlsplit(address)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a websocket address: {address!r} (expected ws:// or wss://)")
    if not parts.hostname:
        raise ValueError(f"no host in {address!r}")
    port = parts.port if parts.port is not None else (443 if parts.scheme == "wss" else 80)
    return parts.scheme, parts.hostname, port, parts.path or "/"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _wire_code(code: int) -> int:
    """Close codes a peer accepts on the wire; others (1005, 1006, ...) become 1011."""
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1011


def _wire_reason(reason: str) -> str:
    # A close frame carries at most 123 bytes of reason.
    return reason.encode()[:123].decode("utf-8", "ignore")


@contextmanager
def _collapse_groups() -> Iterator[None]:
    """Unwrap the exception group a link's nursery puts around a lone error.

    The link's own tasks never raise, so a group holds the body's error plus perhaps
    ``Cancelled`` from the same cancellation; callers can then write ``except LinkClosed``.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
        if len(errors) > 1:
            raise
        lone = errors[0] if errors else group.exceptions[0]
        context = lone.__context__
        try:
            raise lone
        finally:
            lone.__context__ = context


class WebSocketLink(LinkBase):
    """One websocket connection after (and during) the handshake.

    Made by :meth:`WebSocketTransport.open_link`, which also runs its tasks.
    """

    _logger = logger

    def __init__(self, ws: WebSocketConnection, *, name: str, max_frame: int) -> None:
        super().__init__(name)
        self._ws = ws
        self._frames = LeanFrames.install(ws)
        # trio-websocket's send lock (it only enters it with ``async with``), as a
        # semaphore: a frame try_send began is finished by another task, which releases it.
        ws._stream_lock = self._send_lock = trio.Semaphore(1)  # type: ignore[assignment]
        #: Frames go out with one os.write on a plain TCP stream (not through TLS).
        self._socket: trio.socket.SocketType | None = None
        if type(ws._stream) is trio.SocketStream:
            self._socket = ws._stream.socket
            ws._stream = _ReadWhenReadable(ws._stream)
        #: Where the rest of a frame the socket took only part of is sent (open_link's).
        self._tasks: trio.Nursery | None = None
        self._max_frame = max_frame
        self._close_done: trio.Event | None = None

    def __repr__(self) -> str:
        role = "client" if self._ws.is_client else "server"
        return f"<WebSocketLink {role} {self._name}->{self._peer or '?'} {self._state.value}>"

    async def send(self, frame: bytes) -> None:
        if self._closed is not None:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()
        if len(frame) > self._max_frame:
            reason = f"frame of {len(frame)} bytes exceeds max_frame {self._max_frame}"
            logger.warning("%r: refusing to send: %s", self, reason)
            await self.aclose(reason, 1009)
            raise LinkClosed(reason, 1009)
        try:
            await self._send_message(bytes(frame))
        except ConnectionClosed as exc:
            self._on_ws_closed(exc.reason)
            raise self._closed_error() from None

    async def _send_message(self, frame: bytes) -> None:
        """``ws.send_message``, without its trip through the scheduler when nothing else
        is being sent (see :meth:`try_send`)."""
        if not self.try_send(frame):
            await self._ws.send_message(frame)  # waits its turn; raises once closed

    def try_send(self, frame: bytes) -> bool:
        """On a plain TCP stream with nothing else being sent: one ``os.write``, and no
        trip through the scheduler (trio's socket makes one after every send, and
        trio-websocket another for its free lock: a task step and a scheduler pass per
        link message). What the socket does not take at once, a task of the link sends,
        holding the send lock meanwhile."""
        ws = self._ws
        lock = self._send_lock
        if (
            self._socket is None
            or self._tasks is None
            or self._closed is not None
            or ws._close_reason
            or lock.value == 0
            or len(frame) > self._max_frame
        ):
            return False
        data = self._frames.send_binary(frame)
        lock.acquire_nowait()
        try:
            # The socket's descriptor now: -1 once closed (its number may be reused).
            sent = os.write(self._socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError:  # broken: send() reports it, as trio-websocket does
            lock.release()
            return False
        if sent == len(data):
            lock.release()
        else:
            self._tasks.start_soon(self._send_rest, data[sent:])
        return True

    async def _send_rest(self, data: bytes) -> None:
        try:
            await self._ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._ws._abort_web_socket()  # the reader reports the close
        finally:
            self._send_lock.release()

    async def receive(self) -> bytes:
        if self._closed is not None:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()
        try:
            message = await self._ws.get_message()
        except ConnectionClosed as exc:
            self._on_ws_closed(exc.reason)
            raise self._closed_error() from None
        if not isinstance(message, bytes):
            raise await self._refuse_text()
        return message

    async def _refuse_text(self) -> LinkClosed:
        logger.warning("%r: text frame received; closing (1003)", self)
        await self.aclose("text frames are not part of the protocol", 1003)
        return self._closed_error()

    async def deliver(self, handle: FrameHandler) -> None:
        """Like ``async for``, but ``handle`` runs in trio-websocket's reader task, the
        moment a message is read: no hand-over through trio-websocket's channel to a
        task of ours (a task switch and a scheduler pass per message).

        trio-websocket reads on while ``handle`` returns without waiting (mostly it
        only puts messages into mailboxes); while ``handle`` waits, its reader stops,
        as it does when its channel is full (see the module's docstring).
        """
        ws = self._ws
        # What arrived before goes first, through the channel.
        while ws._recv_channel.statistics().current_buffer_used:
            if not await handle(await self.receive()):
                return
        sink = _Sink(ws._send_channel, handle)
        ws._send_channel = sink  # type: ignore[assignment]
        try:
            # The sink takes every message: the channel only reports the close.
            with contextlib.suppress(trio.EndOfChannel, trio.ClosedResourceError):
                await ws._recv_channel.receive()
        finally:
            sink.stopped = True
            ws._send_channel = sink.channel
        if sink.ended == "refused":
            return
        if sink.ended == "text":
            raise await self._refuse_text()
        self._on_ws_closed(ws.closed)
        closed = self._closed_error()
        if closed.code not in (1000, 1001):
            raise closed

    async def aclose(self, reason: str = "closed", code: int = 1000) -> None:
        if self._close_done is not None:
            await self._close_done.wait()
            return
        self._close_done = trio.Event()
        try:
            self._mark_closed(reason, code)
            with trio.move_on_after(CLOSE_TIMEOUT):
                # Returns at once when the peer closed first; on timeout or cancellation
                # trio-websocket still closes the stream.
                await self._ws.aclose(_wire_code(code), _wire_reason(reason))
        finally:
            self._close_done.set()

    # -- internals -------------------------------------------------------------------

    def _on_ws_closed(self, close: CloseReason | None) -> None:
        """The websocket closed under us: the peer closed, vanished, or trio-websocket
        refused an oversized frame."""
        code = close.code if close is not None else 1006
        reason = (close.reason or close.name) if close is not None else "connection lost"
        if not self._mark_closed(reason, code):
            return
        if code == 1009:
            logger.warning("%r: link closed, frame too big (1009): %s", self, reason)
        else:
            logger.debug("%r: link closed by peer: %s (%d)", self, reason, code)

    async def _heartbeat(self, interval: float, timeout: float) -> None:
        for n in itertools.count():
            await trio.sleep(interval)
            with trio.move_on_after(timeout) as waiting:
                try:
                    # Our own payloads never repeat, so ping() never sees a duplicate.
                    await self._ws.ping(n.to_bytes(8, "big"))
                except ConnectionClosed:
                    return  # receive() reports the close
            if waiting.cancelled_caught:
                logger.warning("%r: no pong within %ss; closing (1011)", self, timeout)
                await self.aclose("heartbeat timeout", 1011)
                return


class _ReadWhenReadable(trio.abc.HalfCloseableStream):
    """A TCP stream whose ``receive_some`` waits until its socket is readable, then
    reads, instead of trying first: a link waits for most of its messages (in W2 every
    time), and the try that finds nothing (a system call and an exception) plus trio's
    two context managers cost a quarter of each received message's time in the reader.
    The rest is the stream's own."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        socket = self.stream.socket
        while True:
            if socket.fileno() == -1:  # closed (its number may be reused since)
                await trio.lowlevel.checkpoint()
                raise trio.ClosedResourceError("the stream was closed")
            await trio.lowlevel.wait_readable(socket)
            try:
                return os.read(socket.fileno(), max_bytes or RECEIVE_BUFFER)
            except BlockingIOError:
                pass  # woken for nothing (another reader took it): wait again
            except OSError as exc:
                raise trio.BrokenResourceError(exc) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


class _Sink:
    """Stands in for trio-websocket's message channel (its reader calls ``send`` for
    each message and ``aclose`` when the websocket closes): hands each message to a
    link's frame handler instead."""

    def __init__(self, channel: trio.MemorySendChannel[bytes | str], handle: FrameHandler) -> None:
        self.channel = channel
        self._handle = handle
        #: Why delivery stopped before the websocket closed: the handler refused a
        #: message, or a text frame came.
        self.ended: Literal["refused", "text"] | None = None
        #: Whether delivery ended: later messages are dropped.
        self.stopped = False

    async def send(self, message: bytes | str) -> None:
        if self.stopped:
            return
        if not isinstance(message, bytes):
            self.ended = "text"
        elif not await self._handle(message):
            self.ended = "refused"
        if self.ended is not None:
            self.stopped = True
            self.channel.close()  # wakes deliver(), which reports it

    async def aclose(self) -> None:
        await self.channel.aclose()


class WebSocketTransport:
    """Links over trio-websocket; binary frames, one link per websocket connection.

    Built on trio-websocket's stream wrappers rather than ``open_websocket_url`` and
    ``serve_websocket``: we own each TCP stream, so the client socket is closed even when
    the server closes first (``open_websocket_url`` leaves it to the garbage collector),
    and trio-websocket's reader runs in a nursery of its own, so its known crash on a ping
    that arrives while we close (python-trio/trio-websocket#184) ends that one connection
    instead of cancelling the code using the link or the whole server.
    """

    def __init__(
        self,
        name: str,
        secret: bytes | None = None,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
        queue_size: int = 64,
        handshake_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        insecure: bool = False,
    ) -> None:
        self.name = name
        self.secret = secret
        self.max_frame = max_frame
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.ssl_context = ssl_context
        self.queue_size = queue_size
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        #: Allows serving a non-loopback address with no secret (see ``check_exposure``).
        self.insecure = insecure

    def __repr__(self) -> str:
        return f"WebSocketTransport({self.name!r})"

    @asynccontextmanager
    async def open_link(self, ws: WebSocketConnection) -> AsyncIterator[WebSocketLink]:
        """Run a link over an already open websocket: handshake, pump and heartbeat.

        :meth:`connect` and :meth:`serve` use it; tests drive it over
        ``trio.testing.memory_stream_pair``. The websocket's ``message_queue_size`` is
        the link's receive buffer (:meth:`connect` and :meth:`serve` make it
        ``queue_size``). The websocket is closed on exit.
        """
        link = WebSocketLink(ws, name=self.name, max_frame=self.max_frame)
        with _collapse_groups():
            async with trio.open_nursery() as nursery:
                link._tasks = nursery
                try:
                    role: Role = "dialler" if ws.is_client else "listener"
                    await link._handshake(self.secret, role, self.handshake_timeout)
                    nursery.start_soon(
                        link._heartbeat, self.heartbeat_interval, self.heartbeat_timeout
                    )
                    yield link
                finally:
                    try:
                        await link.aclose()
                    finally:
                        nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def connect(self, address: Address) -> AsyncIterator[WebSocketLink]:
        """Open a link to ``address``.

        Raises :class:`LinkClosed` (code 1006) when the peer cannot be reached and
        :class:`HandshakeError` when the handshake fails.
        """
        scheme, host, port, resource = _parse(address)
        ssl_context: ssl.SSLContext | None = None
        if scheme == "wss":
            ssl_context = self.ssl_context or ssl.create_default_context()
        host_header = host if port in (80, 443) else _netloc(host, port)
        opened = False
        try:
            with _collapse_groups():
                async with trio.open_nursery() as nursery:
                    with trio.fail_after(self.connect_timeout):
                        stream = await _dial(host, port, ssl_context)
                    try:

                        async def upgrade(reader_nursery: trio.Nursery) -> WebSocketConnection:
                            # trio_websocket.wrap_client_stream, but see _opened.
                            ws = WebSocketConnection(
                                stream,
                                WSConnection(ConnectionType.CLIENT),
                                host=host_header,
                                path=resource,
                                max_message_size=self.max_frame,
                                receive_buffer_size=RECEIVE_BUFFER,
                                message_queue_size=self.queue_size,
                            )
                            reader_nursery.start_soon(ws._reader_task)
                            await _opened(ws)
                            return ws

                        with trio.fail_after(self.connect_timeout):
                            ws, reader = await nursery.start(_run_websocket, stream, upgrade)
                        try:
                            async with self.open_link(ws) as link:
                                opened = True
                                yield link
                        finally:
                            reader.cancel()
                    finally:
                        await trio.aclose_forcefully(stream)
        except (
            OSError,
            trio.TooSlowError,
            trio.BrokenResourceError,
            trio_websocket.HandshakeError,
            ConnectionClosed,
        ) as exc:
            if opened:
                raise
            raise LinkClosed(f"cannot connect to {address}: {exc!r}", 1006) from exc

    async def serve(
        self,
        address: Address,
        handler: LinkHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept links until cancelled; reports ``ws://HOST:PORT`` with the bound port.

        Each link runs ``handler`` after a successful handshake and closes when it
        returns; a handler that raises anything but :class:`LinkClosed` crashes the
        server, as in :func:`trio.serve_listeners`. Bind one IP address: with port 0 a
        name such as ``localhost`` may bind several listeners on different ports, and
        only the first is reported.

        Raises ``ValueError`` before binding when ``address`` is not a loopback one and
        there is no secret, unless the transport was made with ``insecure=True``.
        """
        scheme, host, port, _ = _parse(address)
        check_exposure(address, self.secret, insecure=self.insecure)
        serve_one = partial(self._serve_connection, handler)
        if scheme == "wss":
            if self.ssl_context is None:
                raise ValueError("serving wss:// needs an ssl_context")
            tls = await trio.open_ssl_over_tcp_listeners(
                port, self.ssl_context, host=host, https_compatible=True
            )
            sockets = [listener.transport_listener for listener in tls]
            run_listeners = partial(trio.serve_listeners, serve_one, tls)
        else:
            tcp = await trio.open_tcp_listeners(port, host=host)
            sockets = list(tcp)
            run_listeners = partial(trio.serve_listeners, serve_one, tcp)
        first = sockets[0]
        assert isinstance(first, trio.SocketListener)
        bound = f"{scheme}://{_netloc(host, first.socket.getsockname()[1])}"
        async with trio.open_nursery() as nursery:
            await nursery.start(run_listeners)  # from here on serve_listeners owns the listeners
            logger.info("%r: serving at %s", self, bound)
            task_status.started(bound)

    async def _serve_connection(self, handler: LinkHandler, stream: trio.abc.Stream) -> None:
        async def upgrade(reader_nursery: trio.Nursery) -> WebSocketConnection:
            request = await trio_websocket.wrap_server_stream(
                reader_nursery,
                stream,
                max_message_size=self.max_frame,
                receive_buffer_size=RECEIVE_BUFFER,
                message_queue_size=self.queue_size,
            )
            return await request.accept()

        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(self.connect_timeout):
                    ws, reader = await nursery.start(_run_websocket, stream, upgrade)
            except (trio.TooSlowError, ConnectionClosed) as exc:
                logger.debug("%r: no websocket upgrade: %r", self, exc)
                await trio.aclose_forcefully(stream)  # ends trio-websocket's reader
                return
            try:
                async with self.open_link(ws) as link:
                    await handler(link)
            except LinkClosed as exc:  # a failed handshake included; the link logged it
                logger.debug("%r: a served link ended: %s (%d)", self, exc.reason, exc.code)
            finally:
                reader.cancel()
                await trio.aclose_forcefully(stream)


async def _opened(ws: WebSocketConnection) -> None:
    """Wait for the opening handshake, as trio-websocket's client does, and raise
    ``ConnectionClosed`` if the connection ends first.

    trio-websocket waits on for ever when the TCP connection closes during the upgrade
    (a proxy cutting links, a hub killed): a worker starting then waited out its whole
    connect timeout on that one attempt and exited, instead of dialling again."""
    async with trio.open_nursery() as race:

        async def until_closed() -> None:
            await ws._close_handshake.wait()
            race.cancel_scope.cancel()

        race.start_soon(until_closed)
        await ws._open_handshake.wait()
        race.cancel_scope.cancel()
    if not ws._open_handshake.is_set():
        raise ConnectionClosed(ws._close_reason)


async def _run_websocket(
    stream: trio.abc.Stream,
    upgrade: Callable[[trio.Nursery], Awaitable[WebSocketConnection]],
    *,
    task_status: trio.TaskStatus[
        tuple[WebSocketConnection, trio.CancelScope]
    ] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Host trio-websocket's reader for one connection; report the open websocket and
    the reader's cancel scope.

    The reader raises ``LocalProtocolError`` when a ping arrives after we sent our close
    (python-trio/trio-websocket#184). Here that ends this connection only.

    Once the websocket is open the reader is shielded from cancellation: a node that is
    shutting down (its whole nursery cancelled) still reads the peer's half of the closing
    handshake, so the link closes cleanly and at once instead of waiting out the close
    timeout. Every caller cancels the reader when its link block exits: closing the
    stream is not enough, since a reader whose one-message queue is full (nobody read
    it) waits on that queue, not on the stream.
    """
    started = False
    try:
        with _collapse_groups(), trio.CancelScope() as reader_scope:
            async with trio.open_nursery() as nursery:
                ws = await upgrade(nursery)
                reader_scope.shield = True
                task_status.started((ws, reader_scope))
                started = True
    except LocalProtocolError as exc:
        if not started:
            raise
        logger.debug("trio-websocket reader failed while closing: %s", exc)
        await trio.aclose_forcefully(stream)


async def _dial(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream(host, port)
    if ssl_context is None:
        return tcp
    tls = trio.SSLStream(tcp, ssl_context, server_hostname=host, https_compatible=True)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    return tls
