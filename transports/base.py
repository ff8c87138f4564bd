"""The link protocol every transport satisfies.

A *link* is an authenticated, ordered, bidirectional pipe of byte frames between two
nodes. Transports know nothing about actors: a node encodes its wire messages into
frames and hands them to a link. Every transport runs the same handshake
(:func:`handshake`) so a peer proves it knows the shared secret without ever sending it.

Life of a link (h11-style, one explicit table)::

    CONNECTING --open--> HANDSHAKING --hello ok--> OPEN --close/error--> CLOSED
         \\______________________\\___________________________________/^

Close codes every transport uses: 1000 normal, 1001 going away, 1002 protocol error
(bad hello, handshake timeout), 1006 connection lost or never made, 1007 malformed link
message, 1009 frame over ``max_frame``, 4001 failed authentication, 4002
(:data:`NAME_IN_USE`) the peer's name is our own or already carried by a live link.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable
from urllib.parse import urlsplit

import msgpack
import trio

__all__ = [
    "DEFAULT_MAX_FRAME",
    "NAME_IN_USE",
    "Address",
    "FrameHandler",
    "HandshakeError",
    "Link",
    "LinkBase",
    "LinkClosed",
    "LinkHandler",
    "LinkState",
    "Role",
    "Transport",
    "check_exposure",
    "handshake",
]

#: Largest frame a link accepts; a bigger one closes that link (never the node).
DEFAULT_MAX_FRAME = 1 << 20

Address = str


class LinkClosed(Exception):
    """The link is closed: the peer went away, misbehaved, or we closed it."""

    def __init__(self, reason: str, code: int = 1000) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class HandshakeError(LinkClosed):
    """The peer failed the handshake (wrong secret, wrong protocol, bad hello)."""


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSED = "closed"


#: Allowed transitions of a link's life; anything else is a bug.
LINK_TRANSITIONS: dict[LinkState, frozenset[LinkState]] = {
    LinkState.CONNECTING: frozenset({LinkState.HANDSHAKING, LinkState.CLOSED}),
    LinkState.HANDSHAKING: frozenset({LinkState.OPEN, LinkState.CLOSED}),
    LinkState.OPEN: frozenset({LinkState.CLOSED}),
    LinkState.CLOSED: frozenset(),
}


@runtime_checkable
class Link(Protocol):
    """One authenticated connection to a peer node."""

    @property
    def peer(self) -> str:
        """The peer node's name, known once the handshake succeeded."""
        ...

    @property
    def state(self) -> LinkState: ...

    async def send(self, frame: bytes) -> None:
        """Send one frame; raises :class:`LinkClosed` once the link is closed."""
        ...

    def try_send(self, frame: bytes) -> bool:
        """Send one frame from the calling task without waiting, if the link can take it
        now; False, with nothing sent, if it cannot (closed, busy sending, too big, or a
        transport that always waits), and :meth:`send` is then the way. A frame taken is
        sent before any frame sent after it."""
        ...

    async def receive(self) -> bytes:
        """Receive one frame; raises :class:`LinkClosed` once the link is closed."""
        ...

    async def aclose(self, reason: str = "closed", code: int = 1000) -> None:
        """Close the link; idempotent."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def deliver(self, handle: FrameHandler) -> None:
        """Hand each received frame to ``handle``, in order, until the link closes
        (returns when cleanly, 1000 or 1001, else raises :class:`LinkClosed`) or
        ``handle`` returns False (returns; the link stays open)."""
        ...


#: Takes one received frame; False stops the link's delivery (see :meth:`Link.deliver`).
FrameHandler = Callable[[bytes], Awaitable[bool]]

LinkHandler = Callable[[Link], Awaitable[None]]


class LinkBase:
    """What every transport's link shares: its name, its peer, its state machine, the
    handshake, and how it reports being closed. Subclasses provide the I/O methods."""

    #: Each transport logs under its own module's name.
    _logger: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(self, name: str) -> None:
        self._name = name
        self._peer = ""
        self._state = LinkState.CONNECTING
        self._closed: LinkClosed | None = None

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def state(self) -> LinkState:
        return self._state

    async def send(self, frame: bytes) -> None:
        raise NotImplementedError

    def try_send(self, frame: bytes) -> bool:
        return False

    async def receive(self) -> bytes:
        raise NotImplementedError

    async def aclose(self, reason: str = "closed", code: int = 1000) -> None:
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def deliver(self, handle: FrameHandler) -> None:
        async for frame in self:
            if not await handle(frame):
                return

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except LinkClosed as exc:
            if exc.code in (1000, 1001):
                raise StopAsyncIteration from None
            raise

    def _set_state(self, new: LinkState) -> None:
        if new not in LINK_TRANSITIONS[self._state]:
            raise RuntimeError(f"{self!r}: illegal transition to {new.value}")
        self._state = new

    def _closed_error(self) -> LinkClosed:
        # A fresh exception each time: re-raising one instance would pile up tracebacks.
        if self._closed is None:
            return LinkClosed("link closed", 1006)
        return LinkClosed(self._closed.reason, self._closed.code)

    def _mark_closed(self, reason: str, code: int) -> bool:
        if self._closed is not None:
            return False
        self._closed = LinkClosed(reason, code)
        self._set_state(LinkState.CLOSED)
        return True

    async def _handshake(self, secret: bytes | None, role: Role, timeout: float) -> None:
        self._set_state(LinkState.HANDSHAKING)
        try:
            self._peer = await handshake(
                self.send, self.receive, name=self._name, secret=secret, role=role, timeout=timeout
            )
        except HandshakeError as exc:
            self._logger.warning("%r: handshake failed: %s (%d)", self, exc.reason, exc.code)
            await self.aclose(exc.reason, exc.code)
            raise
        except LinkClosed as exc:
            self._logger.warning("%r: peer closed the link during handshake: %s", self, exc.reason)
            await self.aclose(exc.reason, exc.code)
            raise HandshakeError(f"closed during handshake: {exc.reason}", exc.code) from exc
        # The peer may already have closed after its last handshake frame: the link stays
        # closed, and its user learns it from the first receive.
        if self._state is LinkState.HANDSHAKING:
            self._set_state(LinkState.OPEN)


def check_exposure(address: Address, secret: bytes | None, *, insecure: bool) -> None:
    """Refuse to listen beyond this host with no secret, unless the caller said
    ``insecure=True``: anyone who reaches such an address could send messages to every
    actor of the node. Loopback addresses and ``local://`` need no secret. Called before
    binding anything."""
    if secret or insecure:
        return
    parts = urlsplit(address)
    if parts.scheme == "local":
        return
    host = parts.hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass  # a host name: it may resolve anywhere
    raise ValueError(
        f"refusing to listen on {address} with no secret: anyone who can reach it could "
        "message every actor of this node. Pass a secret, listen on a loopback address "
        "(127.0.0.1, ::1, localhost), or pass insecure=True to accept an open node."
    )


class Transport(Protocol):
    """Makes links: ``connect`` dials a peer, ``serve`` accepts peers."""

    def connect(self, address: Address) -> AbstractAsyncContextManager[Link]:
        """Open a link to ``address``; the link closes when the block exits."""
        ...

    async def serve(
        self,
        address: Address,
        handler: LinkHandler,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept links forever; ``task_status.started`` reports the bound address."""
        ...


PROTOCOL = "trio-actors/4"

#: Close code of a link refused because its peer's name is taken: it is our own name, or
#: another live link already carries it.
NAME_IN_USE = 4002

Role = Literal["dialler", "listener"]


def _proof(secret: bytes, role: Role, dialler: list[Any], listener: list[Any]) -> bytes:
    """The HMAC one side sends: its role, then both names and both nonces, each side's
    pair in a fixed order, so a proof is valid on one link, in one direction only."""
    transcript = msgpack.packb([PROTOCOL, role, *dialler, *listener])
    return hmac.new(secret, transcript, hashlib.sha256).digest()


async def handshake(
    send: Callable[[bytes], Awaitable[None]],
    receive: Callable[[], Awaitable[bytes]],
    *,
    name: str,
    secret: bytes | None,
    role: Role,
    timeout: float = 10.0,
) -> str:
    """Mutual challenge-response; returns the peer's name.

    Each side sends its name and a fresh nonce, then proves knowledge of ``secret`` with
    an HMAC over its role (dialler or listener), both names and both nonces. The secret
    never crosses the wire, and a proof cannot be replayed: not reflected back to the
    node that made it (the role differs), nor relayed to another link (the nonces and
    names differ). A peer that claims our own name is refused with :data:`NAME_IN_USE`.
    With ``secret=None`` both sides must also have no secret (an open cluster).
    """
    key = secret or b""
    nonce = os.urandom(16)
    try:
        with trio.fail_after(timeout):
            await send(msgpack.packb([PROTOCOL, name, nonce]))
            try:
                protocol, peer, peer_nonce = msgpack.unpackb(await receive())
                if not (isinstance(peer, str) and isinstance(peer_nonce, bytes)):
                    raise TypeError("bad hello fields")
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise HandshakeError(f"malformed hello: {exc}", code=1002) from exc
            if protocol != PROTOCOL:
                raise HandshakeError(f"peer speaks {protocol!r}, not {PROTOCOL!r}", code=1002)
            if peer == name:
                raise HandshakeError(f"peer claims our own name {name!r}", code=NAME_IN_USE)
            ours, theirs = [name, nonce], [peer, peer_nonce]
            peer_role: Role
            if role == "dialler":
                dialler, listener, peer_role = ours, theirs, "listener"
            else:
                dialler, listener, peer_role = theirs, ours, "dialler"
            await send(_proof(key, role, dialler, listener))
            proof = await receive()
            if not hmac.compare_digest(proof, _proof(key, peer_role, dialler, listener)):
                raise HandshakeError(f"peer {peer!r} failed authentication", code=4001)
    except trio.TooSlowError:
        # A silent peer is a failed handshake, not a timeout the caller must know about.
        raise HandshakeError(f"no handshake within {timeout}s", code=1002) from None
    return peer
