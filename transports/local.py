"""In-process links: two bounded trio memory channels per link.

Nodes in one process (tests, a single-process cluster) talk through the same
:class:`~transports.base.Link` contract as over the network: the same handshake, the same
frame limit and the same close semantics, so code tested locally behaves alike on
websockets. A process-wide registry maps ``local://NAME`` addresses to servers.
"""

from __future__ import annotations

import errno
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from .base import (
    DEFAULT_MAX_FRAME,
    Address,
    LinkBase,
    LinkClosed,
    LinkHandler,
)

__all__ = ["LocalLink", "LocalTransport"]

logger = logging.getLogger(__name__)

SCHEME = "local://"

_anonymous = itertools.count(1)


@attrs.frozen
class _Server:
    transport: LocalTransport
    handler: LinkHandler
    nursery: trio.Nursery
    token: trio.lowlevel.TrioToken


#: Listening address -> server. Process-wide, like a port table.
_REGISTRY: dict[Address, _Server] = {}


def _check_address(address: Address) -> str:
    if not address.startswith(SCHEME):
        raise ValueError(f"not a local address: {address!r} (expected local://NAME)")
    return address.removeprefix(SCHEME)


class LocalLink(LinkBase):
    """One end of an in-process link.

    Each end owns the send side of the channel towards its peer and the receive side of
    the channel from it. Closing an end closes both, so the peer's ``receive`` sees
    end-of-channel (after the frames already queued) and its ``send`` fails at once.
    """

    _logger = logger

    def __init__(
        self,
        *,
        name: str,
        outbox: trio.MemorySendChannel[bytes],
        inbox: trio.MemoryReceiveChannel[bytes],
        max_frame: int,
    ) -> None:
        super().__init__(name)
        self._outbox = outbox
        self._inbox = inbox
        self._max_frame = max_frame
        self._other: LocalLink | None = None

    def __repr__(self) -> str:
        return f"<LocalLink {self._name}->{self._peer or '?'} {self._state.value}>"

    async def send(self, frame: bytes) -> None:
        if self._closed is not None:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()
        if len(frame) > self._max_frame:
            reason = f"frame of {len(frame)} bytes exceeds max_frame {self._max_frame}"
            logger.warning("%r: refusing to send: %s", self, reason)
            await self.aclose(reason, 1009)
            raise LinkClosed(reason, 1009)
        other = self._other
        if other is not None and len(frame) > other._max_frame:
            # What a websocket peer does: it drops the frame and closes the link with 1009;
            # we learn it from our next send or receive.
            other._reject_frame(len(frame))
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._outbox.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed_error() from None

    def try_send(self, frame: bytes) -> bool:
        other = self._other
        if self._closed is not None or len(frame) > self._max_frame:
            return False
        if other is not None and len(frame) > other._max_frame:
            return False  # send() closes the link, as a websocket peer would
        try:
            self._outbox.send_nowait(frame)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def receive(self) -> bytes:
        try:
            return await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed_error() from None

    async def aclose(self, reason: str = "closed", code: int = 1000) -> None:
        self._shutdown(reason, code, drain=False)
        await trio.lowlevel.checkpoint()

    # -- internals -------------------------------------------------------------------

    def _shutdown(self, reason: str, code: int, *, drain: bool) -> None:
        """Close this end; with ``drain`` frames already queued for us stay readable."""
        first = self._mark_closed(reason, code)
        self._outbox.close()
        if not drain:
            self._inbox.close()
        other = self._other
        if first and other is not None:
            other._peer_closed(reason, code)

    def _peer_closed(self, reason: str, code: int) -> None:
        if self._mark_closed(reason, code):
            logger.debug("%r: closed by peer: %s (%d)", self, reason, code)
        self._outbox.close()

    def _reject_frame(self, size: int) -> None:
        reason = f"frame of {size} bytes exceeds max_frame {self._max_frame}"
        logger.warning("%r: closing link (1009): %s", self, reason)
        self._shutdown(reason, 1009, drain=True)


class LocalTransport:
    """Links between nodes of one process, addressed ``local://NAME``.

    ``serve("local://")`` (no name) picks a fresh unique address, like binding port 0.
    """

    def __init__(
        self,
        name: str,
        secret: bytes | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        queue_size: int = 64,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.secret = secret
        self.max_frame = max_frame
        self.queue_size = queue_size
        self.handshake_timeout = handshake_timeout

    def __repr__(self) -> str:
        return f"LocalTransport({self.name!r})"

    @asynccontextmanager
    async def connect(self, address: Address) -> AsyncIterator[LocalLink]:
        """Open a link to ``address``.

        Raises :class:`LinkClosed` (code 1006) when nothing serves there and
        :class:`HandshakeError` when the handshake fails.
        """
        _check_address(address)
        server = _REGISTRY.get(address)
        if server is None or server.token is not trio.lowlevel.current_trio_token():
            await trio.lowlevel.checkpoint()
            raise LinkClosed(f"cannot connect to {address}: nothing serves there", 1006)
        peer = server.transport
        # Each direction is bounded by the receiving end's queue size.
        to_peer, peer_inbox = trio.open_memory_channel[bytes](peer.queue_size)
        to_us, our_inbox = trio.open_memory_channel[bytes](self.queue_size)
        ours = LocalLink(name=self.name, outbox=to_peer, inbox=our_inbox, max_frame=self.max_frame)
        theirs = LocalLink(name=peer.name, outbox=to_us, inbox=peer_inbox, max_frame=peer.max_frame)
        ours._other, theirs._other = theirs, ours
        server.nursery.start_soon(server.transport._run_link, theirs, server.handler)
        try:
            await ours._handshake(self.secret, "dialler", self.handshake_timeout)
            yield ours
        finally:
            await ours.aclose()

    async def serve(
        self,
        address: Address,
        handler: LinkHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept links at ``address`` until cancelled; each runs ``handler`` after the
        handshake, in this call's nursery, and is closed when the handler returns."""
        if not _check_address(address):
            address = f"{SCHEME}{self.name}-{next(_anonymous)}"
        if address in _REGISTRY:
            raise OSError(errno.EADDRINUSE, f"{address} is already being served")
        async with trio.open_nursery() as nursery:
            server = _Server(self, handler, nursery, trio.lowlevel.current_trio_token())
            _REGISTRY[address] = server
            try:
                task_status.started(address)
                await trio.sleep_forever()
            finally:
                if _REGISTRY.get(address) is server:
                    del _REGISTRY[address]

    async def _run_link(self, link: LocalLink, handler: LinkHandler) -> None:
        try:
            await link._handshake(self.secret, "listener", self.handshake_timeout)
        except LinkClosed:
            return  # already logged and closed
        try:
            await handler(link)
        except LinkClosed as exc:
            logger.debug("%r: handler ended on a closed link: %s", link, exc.reason)
        finally:
            await link.aclose()
