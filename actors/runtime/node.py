"""A node: one process's actor system, its registry of names, and its links to peers.

``async with Node.open(...) as node`` runs the root supervisor in a nursery for the
block; ``await nursery.start(node.serve)`` embeds the same thing in a user's nursery.
Messages to actors on other nodes become :mod:`actors.wire` frames on a
:mod:`transports` link; one writer task per link batches frames when the link is busy.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from transports.base import (
    DEFAULT_MAX_FRAME,
    NAME_IN_USE,
    Link,
    LinkClosed,
    Transport,
    check_exposure,
)

from .. import wire
from .actor import Actor, ActorCell
from .errors import (
    ActorCrashedError,
    ActorError,
    ActorNotFoundError,
    ActorStoppedError,
    AskTimeoutError,
    MailboxFullError,
    PeerLostError,
)
from .mailbox import LocalReply, Reply
from .ref import ActorRef, RemoteRef
from .supervisor import ChildSpec, Restart, Supervisor

__all__ = ["Node", "unique_node_name"]

M = TypeVar("M")
log = logging.getLogger("actors.node")

#: Runtime errors a fault frame may name; anything else arrives as ActorError.
_FAULTS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        ActorCrashedError,
        ActorNotFoundError,
        ActorStoppedError,
        ActorError,
        MailboxFullError,
        TypeError,
        wire.WireError,
    )
}
_BATCH = 256
#: Seconds a lazy tell (see :func:`actors.wire.register_lazy`) may wait in an outbox for
#: other frames to share its link message.
_LAZY_DELAY = 0.005
#: Longest error message a fault frame carries.
_FAULT_MESSAGE = 2000
#: Replies a link may hold unsent (or this many link messages' worth of bytes) before its
#: reader stops taking new asks from the peer.
_REPLY_QUEUE = 256
_REPLY_QUEUE_FRAMES = 4
#: Tells from one link to one actor that wait for room in its full mailbox, in order,
#: before the link's reader itself waits (and TCP slows the peer down).
_TELL_OVERFLOW = 64
#: Seconds between the retries of an ask that found a remote mailbox full: first, longest.
_BUSY_BACKOFF = (0.005, 0.25)
#: A link logs the first of a run of like warnings, then at most one summary this often.
_WARNING_INTERVAL = 10.0


def unique_node_name(prefix: str = "node") -> str:
    """``PREFIX-HOST-PID-RANDOM6``: a name for one of many like processes (clients,
    workers) that nobody names by hand, unique in a cluster since peers refuse a second
    link under a name already linked."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{prefix}-{host}-{os.getpid()}-{secrets.token_hex(3)}"


class _Warnings:
    """One link's warnings, rate-limited per kind: a peer sending thousands of bad
    messages must not flood the log nor stall the node writing it."""

    def __init__(self, peer: str) -> None:
        self._peer = peer
        self._last: dict[str, float] = {}
        self._muted: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        now = trio.current_time()
        last = self._last.get(kind)
        if last is not None and now - last < _WARNING_INTERVAL:
            self._muted[kind] = self._muted.get(kind, 0) + 1
            return
        self._last[kind] = now
        muted = self._muted.pop(kind, 0)
        more = f" ({muted} more like it from {self._peer!r} not logged)" if muted else ""
        log.warning("%s%s", message, more)

    def close(self) -> None:
        for kind, muted in self._muted.items():
            log.warning("%d more %s from %r were not logged", muted, kind, self._peer)
        self._muted.clear()


class _Outbox:
    """A link's frames in the order they were queued, for its one writer.

    ``put`` (tells and asks) waits while ``_BATCH`` frames wait, so a fast sender goes at
    the link's pace. ``post`` (replies) never waits: a reply must not block the actor
    giving it. Replies stay bounded all the same: the link's reader takes no new ask
    while :meth:`replies_full` (see :meth:`Node._read`).

    A lazy frame does not wake the writer: it goes with the next frame that does, or
    ``_LAZY_DELAY`` seconds after it was queued (see :meth:`send_lazy_frames`),
    whichever comes first. A task about to wait may send the oldest frames itself
    (:meth:`flush`, from :meth:`Node.flush_links`).
    """

    def __init__(self, max_frame: int, link: Link, due: set[_Outbox]) -> None:
        self._frames: deque[wire.Frame] = deque()
        self._max_frame = max_frame
        self._link = link
        #: The node's outboxes with frames to send (see :meth:`Node.flush_links`).
        self._due_outboxes = due
        #: Replies among the waiting frames, and their size.
        self.replies = 0
        self.reply_bytes = 0
        self.closed = False
        #: Whether a waiting frame is not lazy (or was left over from the last batch).
        self._due = False
        #: When the oldest waiting lazy frame must go (inf: none waits).
        self._lazy_deadline = math.inf
        #: When the lazy timer (send_lazy_frames) wakes, and what wakes it sooner.
        self._timer_at = math.inf
        self._earlier = trio.Event()
        self._pushed = trio.Event()
        self._taken = trio.Event()

    def replies_full(self) -> bool:
        return (
            self.replies >= _REPLY_QUEUE
            or self.reply_bytes >= _REPLY_QUEUE_FRAMES * self._max_frame
        )

    async def put(self, frame: wire.Frame, lazy: bool = False) -> None:
        """Queue a frame once fewer than ``_BATCH`` wait; ``ClosedResourceError`` once
        closed. With room, no trip through the scheduler."""
        while not self.closed and len(self._frames) >= _BATCH:
            await self._taken.wait()
        if self.closed:
            raise trio.ClosedResourceError
        if lazy:
            self._frames.append(frame)
            if self._lazy_deadline == math.inf:
                self._lazy_deadline = trio.current_time() + _LAZY_DELAY
                if self._lazy_deadline < self._timer_at:
                    self._earlier.set()
        else:
            self._push(frame)

    def post(self, frame: wire.Answer | wire.Fault) -> None:
        """Queue a reply at once; dropped once closed."""
        if not self.closed:
            self.replies += 1
            self.reply_bytes += wire.frame_size(frame)
            self._push(frame)

    def _push(self, frame: wire.Frame) -> None:
        self._frames.append(frame)
        self._push_due()

    def _push_due(self) -> None:
        self._due = True
        self._pushed.set()
        self._due_outboxes.add(self)

    async def room_for_replies(self) -> None:
        while self.replies_full():
            await self._taken.wait()

    async def take(self) -> list[wire.Frame]:
        """The oldest frames, as many as fit one link message; ``[]`` once closed and
        empty."""
        if not self._due:
            while not (self._due or self.closed):
                self._pushed = trio.Event()
                await self._pushed.wait()
            if not self._frames:
                return []
        batch = self._oldest()
        self._remove(batch)
        return batch

    def flush(self) -> None:
        """Send the oldest frames from the calling task if the link takes them now
        (:meth:`Link.try_send`); else they stay for the writer."""
        if self._due and not self.closed:
            batch = self._oldest()
            if self._link.try_send(wire.encode_frames(batch)):
                self._remove(batch)

    def _oldest(self) -> list[wire.Frame]:
        """The oldest frames, as many as fit one link message."""
        batch: list[wire.Frame] = []
        size = 0
        for frame in self._frames:
            frame_size = wire.frame_size(frame)
            if batch and (size + frame_size > self._max_frame or len(batch) == _BATCH):
                break
            batch.append(frame)
            size += frame_size
        return batch

    def _remove(self, batch: list[wire.Frame]) -> None:
        for _ in batch:
            frame = self._frames.popleft()
            if isinstance(frame, wire.Answer | wire.Fault):
                self.replies -= 1
                self.reply_bytes -= wire.frame_size(frame)
        self._due = bool(self._frames)
        if not self._frames:
            self._lazy_deadline = math.inf
        self._wake_takers()

    async def send_lazy_frames(self) -> None:
        """Wake the writer for lazy frames that waited ``_LAZY_DELAY`` seconds.

        A task of its own, so the writer waits without a deadline (a cancel scope for
        every wait cost 3% of a W2 round trip) and is not woken to set one. Lazy
        deadlines only grow, so while this sleeps until an earlier one (whose frames
        have gone since) nothing wakes it: in W2 it wakes every ``_LAZY_DELAY`` seconds,
        not once per round trip."""
        while True:
            if self._lazy_deadline <= trio.current_time():
                self._push_due()  # the next lazy frame after the writer empties us wakes us
                self._timer_at = math.inf
            else:
                self._timer_at = self._lazy_deadline
            self._earlier = trio.Event()
            with trio.move_on_at(self._timer_at):
                await self._earlier.wait()

    def close(self) -> None:
        """Refuse new frames; the writer still sends those already queued."""
        self.closed = True
        self._pushed.set()
        self._wake_takers()

    def _wake_takers(self) -> None:
        self._taken.set()
        self._taken = trio.Event()


class _Overflow:
    """Tells from one link to one actor whose mailbox was full, in arrival order.

    One delivery task hands them on as room frees and ends once the overflow is empty;
    meanwhile later tells to that actor queue here too, so none overtakes another.
    """

    def __init__(self) -> None:
        self.messages: deque[Any] = deque()
        self.delivered = trio.Event()
        self._taken = trio.Event()

    def full(self) -> bool:
        return len(self.messages) >= _TELL_OVERFLOW

    async def wait_taken(self) -> None:
        await self._taken.wait()

    def taken(self) -> None:
        self.messages.popleft()
        self._taken.set()
        self._taken = trio.Event()


@attrs.define(eq=False)
class _Peer:
    """One live link: its outbox, the asks waiting on that peer, and the tells from it
    waiting for room in full mailboxes (delivered by tasks in ``deliveries``, the link's
    nursery)."""

    name: str
    link: Link
    outbox: _Outbox
    pending: dict[int, LocalReply] = attrs.field(factory=dict)
    overflow: dict[str, _Overflow] = attrs.field(factory=dict)
    deliveries: trio.Nursery = attrs.field(init=False)
    warnings: _Warnings = attrs.field(init=False)
    #: Set once the writer has sent everything and closed the link (a node's clean exit).
    closed_by_us: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self.warnings = _Warnings(self.name)


class _RemoteReply(Reply):
    """Sends the answer back over the link the ask came in on."""

    __slots__ = ("_id", "_node", "_peer")

    def __init__(self, node: Node, peer: _Peer, ask_id: int) -> None:
        super().__init__()
        self._node, self._peer, self._id = node, peer, ask_id

    def _deliver(self, value: Any, error: BaseException | None) -> None:
        frame: wire.Answer | wire.Fault
        if error is None:
            try:
                body = self._node._encode(value, "")
                frame = wire.Answer("answer", self._id, body)
            except wire.WireError as exc:
                error = wire.WireError(f"reply cannot be sent: {exc}")
        if error is not None:
            message = str(error)[:_FAULT_MESSAGE]
            frame = wire.Fault("fault", self._id, type(error).__name__, message)
        self._peer.outbox.post(frame)


class Node:
    """One process's actor system: a root supervisor, a registry, and peer links.

    Args:
        name: How peers address this node (``node.ref(actor, node=name)``); unique in a
            cluster: a link from a name that a live link already carries is refused
            (close code 4002), as is a peer claiming our own name. None: the name of
            ``transport`` if one is given, else :func:`unique_node_name`.
        listen: Accept links here: ``ws://HOST:PORT`` (port 0 picks a free one; see
            :attr:`address`), ``wss://...`` (needs a transport with an ``ssl_context``) or
            ``local://NAME`` (in-process).
        connect: Addresses to dial, and redial with ``reconnect_backoff`` whenever the
            link drops.
        secret: The cluster's shared secret; it never crosses the wire. None means an
            open cluster where every peer also has none.
        insecure: Allow listening on a non-loopback address with no secret (anyone who
            reaches it can message every actor here); without it that is a ``ValueError``.
        transport: Links are made by this transport instead of one chosen from the
            scheme of ``listen`` (or the first ``connect``). Its ``name`` and ``secret``
            are the node's; one transport serves every link of the node.
        shutdown_timeout: How long each actor's ``stopped()`` hook may take at the end,
            and how long a clean exit of :meth:`open` spends sending what the links'
            outboxes still hold.
        reconnect_backoff: ``(first, maximum)`` seconds between redials, doubling.
        root: The root supervisor (default: ``one_for_one``, at most 10 restarts a
            second). If it gives up, :meth:`serve` raises its ``SupervisorFailedError``.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        listen: str | None = None,
        connect: Sequence[str] = (),
        secret: bytes | str | None = None,
        insecure: bool = False,
        transport: Transport | None = None,
        shutdown_timeout: float = 5.0,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        root: Supervisor | None = None,
    ) -> None:
        if name is None:
            name = getattr(transport, "name", None) or unique_node_name()
        self.name = name
        self.listen = listen
        self.connect = list(connect)
        self.secret = secret.encode() if isinstance(secret, str) else secret
        if transport is not None and getattr(transport, "name", name) != name:
            # Peers know a node by the name its transport announces in the handshake.
            raise ValueError(
                f"transport {transport!r} is named {getattr(transport, 'name', None)!r}, "
                f"not {name!r} like its node"
            )
        if secret is not None and getattr(transport, "secret", self.secret) != self.secret:
            raise ValueError("the node's secret differs from its transport's")
        self.insecure = insecure or bool(getattr(transport, "insecure", False))
        if listen is not None:
            secured = self.secret or getattr(transport, "secret", None)
            check_exposure(listen, secured, insecure=self.insecure)
        self._transport = transport
        self.shutdown_timeout = shutdown_timeout
        self.reconnect_backoff = reconnect_backoff
        self.root = root or Supervisor(max_restarts=10, within=1.0)
        #: The address peers reach us at, once listening.
        self.address: str | None = None
        self._registry: dict[str, ActorCell[Any]] = {}
        self._peers: dict[str, _Peer] = {}
        self._due_outboxes: set[_Outbox] = set()
        self._peers_changed = trio.Event()
        #: Links opened, by peer name (one more than a peer's reconnects).
        self.links_opened: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)
        self._names = itertools.count(1)
        self._closing = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        name: str | None = None,
        *,
        listen: str | None = None,
        connect: Sequence[str] = (),
        secret: bytes | str | None = None,
        insecure: bool = False,
        transport: Transport | None = None,
        shutdown_timeout: float = 5.0,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        root: Supervisor | None = None,
    ) -> AsyncIterator[Node]:
        """Run a node for the block; on exit every actor and link ends.

        Leaving the block normally first sends what the links' outboxes hold (for at
        most ``shutdown_timeout`` seconds) and closes each link with 1001; leaving it by
        an exception or a cancellation drops that. The arguments are :class:`Node`'s.
        """
        node = cls(
            name,
            listen=listen,
            connect=connect,
            secret=secret,
            insecure=insecure,
            transport=transport,
            shutdown_timeout=shutdown_timeout,
            reconnect_backoff=reconnect_backoff,
            root=root,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve)
            yield node
            await node._flush()
            nursery.cancel_scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; for ``await nursery.start(node.serve)``."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.root.run, self)
            if self.listen is not None:
                self.address = await nursery.start(
                    self.transport.serve, self.listen, self._serve_link
                )
            for address in self.connect:
                nursery.start_soon(self._keep_linked, address)
            task_status.started(self)

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = self._default_transport()
        return self._transport

    def _default_transport(self) -> Transport:
        address = self.listen or (self.connect[0] if self.connect else "ws://")
        if address.startswith("local://"):
            from transports.local import LocalTransport

            return LocalTransport(self.name, self.secret)
        from transports.websocket import WebSocketTransport

        return WebSocketTransport(self.name, self.secret, insecure=self.insecure)

    # Actors ----------------------------------------------------------------------------

    async def spawn(
        self,
        start: Callable[[], Actor[M]],
        *,
        name: str | None = None,
        restart: Restart = "permanent",
        supervisor: Supervisor | None = None,
    ) -> ActorRef[M]:
        """Start an actor under ``supervisor`` (the root by default); returns its ref."""
        if name is None:
            name = f"{getattr(start, '__name__', 'actor')}-{next(self._names)}"
        child = await (supervisor or self.root).start_child(ChildSpec(name, start, restart))
        assert child.cell is not None
        return child.cell.ref

    async def spawn_supervisor(
        self,
        supervisor: Callable[[], Supervisor],
        *,
        name: str,
        restart: Restart = "permanent",
        parent: Supervisor | None = None,
    ) -> Supervisor:
        """Start a supervisor (with its children) under ``parent``; returns it."""
        child = await (parent or self.root).start_child(ChildSpec(name, supervisor, restart))
        assert child.supervisor is not None
        return child.supervisor

    def ref(self, name: str, node: str | None = None, message_type: Any = object) -> ActorRef[Any]:
        """The ref of actor ``name`` on this node, or on the linked node ``node``."""
        if node is None or node == self.name:
            return self._cell(name).ref
        return RemoteRef(self, node, name, message_type)

    def _wire_ref(self, node: str, name: str) -> ActorRef[Any]:
        """A ref that arrived in a message, made usable here: our own actor's local ref
        (which must exist), else a RemoteRef to its node (usable while we link to it)."""
        return self.ref(name, node=node)

    def new_cell(self, name: str, message_type: Any, mailbox_size: int) -> ActorCell[Any]:
        if name in self._registry:
            raise ValueError(f"an actor named {name!r} already runs on {self.name!r}")
        cell: ActorCell[Any] = ActorCell(self, name, message_type, mailbox_size)
        self._registry[name] = cell
        return cell

    def lookup(self, name: str) -> ActorCell[Any] | None:
        return self._registry.get(name)

    def unregister(self, cell: ActorCell[Any]) -> None:
        if self._registry.get(cell.name) is cell:
            del self._registry[cell.name]

    @property
    def names(self) -> list[str]:
        """Names of the actors registered on this node."""
        return list(self._registry)

    # Peers -----------------------------------------------------------------------------

    @property
    def peers(self) -> list[str]:
        return list(self._peers)

    async def wait_for_peer(self, name: str, timeout: float = 10.0) -> None:
        """Wait until a link to node ``name`` is open; ``trio.TooSlowError`` past
        ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while name not in self._peers:
                await self._peers_changed.wait()

    async def wait_for_peer_lost(self, name: str, timeout: float = 10.0) -> None:
        """Wait until no link to node ``name`` is open (returns at once if none is)."""
        with trio.fail_after(timeout):
            while name in self._peers:
                await self._peers_changed.wait()

    @property
    def max_frame(self) -> int:
        """The largest link message this node sends or accepts."""
        return int(getattr(self.transport, "max_frame", DEFAULT_MAX_FRAME))

    def _encode(self, value: Any, target: str) -> bytes:
        """A message's body, checked to fit one link message, in the sender's task."""
        body = wire.encode_value(value)
        room = self.max_frame - wire.FRAME_OVERHEAD - 4 * len(target)
        if len(body) > room:
            raise wire.WireError(
                f"a {type(value).__qualname__} of {len(body)} encoded bytes does not fit a "
                f"link message (max_frame {self.max_frame})"
            )
        return body

    async def send_remote_tell(self, node: str, target: str, message: Any) -> None:
        peer = self._peer(node)
        frame = wire.Tell("tell", target, self._encode(message, target))
        await self._send(peer, frame, lazy=type(message) in wire.lazy_types)

    async def send_remote_ask(
        self, node: str, target: str, message: Any, timeout: float | None
    ) -> Any:
        """Ask, and ask again while the far side answers that the mailbox is full: a
        remote ask waits for room like a local one, without holding the link's reader."""
        peer = self._peer(node)
        body = self._encode(message, target)
        if timeout is None:  # no cancel scope to enter and leave, as in a local ask
            return await self._ask_while_busy(node, peer, target, body)
        with trio.move_on_after(timeout):
            return await self._ask_while_busy(node, peer, target, body)
        raise AskTimeoutError(f"no reply from {target!r}@{node!r} within {timeout}s")

    async def _ask_while_busy(self, node: str, peer: _Peer, target: str, body: bytes) -> Any:
        delay, longest = _BUSY_BACKOFF
        while True:
            try:
                return await self._ask_once(peer, target, body)
            except MailboxFullError:
                await trio.sleep(delay)
                delay = min(longest, delay * 2)
                peer = self._peer(node)

    async def _ask_once(self, peer: _Peer, target: str, body: bytes) -> Any:
        frame = wire.Ask("ask", next(self._ids), target, body)
        reply = LocalReply()
        peer.pending[frame.id] = reply
        try:
            await self._send(peer, frame)
            self.flush_links()  # we wait now: the writer need not wake to send it
            return await reply.wait()
        finally:
            peer.pending.pop(frame.id, None)

    def flush_links(self) -> None:
        """Send the frames waiting for each link from the calling task, where the link
        takes them without waiting; the rest stay for the links' writers.

        For a task about to wait (an actor that handled its messages, an asker): its
        frames then leave before the writer, woken to send them, gets its turn, one task
        step and one scheduler pass before. A writer finding nothing left waits again."""
        due = self._due_outboxes
        while due:
            due.pop().flush()

    def _peer(self, node: str) -> _Peer:
        peer = self._peers.get(node)
        if peer is None:
            raise PeerLostError(f"no link to node {node!r}")
        return peer

    async def _send(self, peer: _Peer, frame: wire.Frame, lazy: bool = False) -> None:
        # With room in the outbox, queue without a trip through the scheduler, so a busy
        # sender fills the outbox and the writer sends it as one batch. The cancellation
        # check comes first, as in a local tell: a cancelled sender sends nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            await peer.outbox.put(frame, lazy)
        except trio.ClosedResourceError:
            raise PeerLostError(f"link to node {peer.name!r} is closed") from None

    async def _flush(self) -> None:
        """Send what the outboxes hold, for at most ``shutdown_timeout`` seconds; each
        writer then closes its link with 1001. No link is made or redialled after."""
        self._closing = True
        with trio.move_on_after(self.shutdown_timeout):
            for peer in list(self._peers.values()):
                peer.outbox.close()
            while self._peers:
                await self._peers_changed.wait()

    async def _keep_linked(self, address: str) -> None:
        """Dial ``address`` and redial with backoff whenever the link drops."""
        delay, maximum = self.reconnect_backoff
        wait = delay
        while not self._closing:
            try:
                async with self.transport.connect(address) as link:
                    wait = delay
                    await self._serve_link(link)
            except (LinkClosed, OSError) as exc:
                log.info("link to %s down: %s; retrying in %.1fs", address, exc, wait)
            if self._closing:
                return
            await trio.sleep(wait)
            wait = min(maximum, wait * 2)

    async def _serve_link(self, link: Link) -> None:
        """Run one link: a writer batching our frames, a reader dispatching theirs."""
        if self._closing:
            await link.aclose("node shutting down", 1001)
            return
        if link.peer in self._peers:
            # The first link stays: the newcomer may be a second process with the same
            # name. A node whose old link died gets in once that link is seen down.
            log.error(
                "refusing a second link from node %r: a live link already carries that name (%d)",
                link.peer,
                NAME_IN_USE,
            )
            await link.aclose(f"a node named {link.peer!r} is already linked", NAME_IN_USE)
            return
        peer = _Peer(link.peer, link, _Outbox(self.max_frame, link, self._due_outboxes))
        self._peers[peer.name] = peer
        self.links_opened[peer.name] += 1
        self._notify_peers()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, peer)
                nursery.start_soon(peer.outbox.send_lazy_frames)
                peer.deliveries = nursery
                await self._read(peer)
                with trio.move_on_after(self.shutdown_timeout):
                    # The peer closed the link: what it told still reaches the mailboxes.
                    for overflow in list(peer.overflow.values()):
                        await overflow.delivered.wait()
                    if self._closing:
                        # We are closing: the writer waits for the peer's half of the
                        # closing handshake, which proves the peer read all we sent. Cut
                        # short, the connection could be reset with our frames unread.
                        await peer.closed_by_us.wait()
                nursery.cancel_scope.cancel()
        except* LinkClosed as group:
            closed = group.exceptions[0]
            assert isinstance(closed, LinkClosed)
            if closed.code == NAME_IN_USE:
                log.error("node %r refused our link: %s", peer.name, closed.reason)
            else:
                log.info("link to %r closed: %s", peer.name, closed)
        finally:
            peer.outbox.close()
            peer.warnings.close()
            if self._peers.get(peer.name) is peer:
                del self._peers[peer.name]
                self._notify_peers()
            lost = PeerLostError(f"link to node {peer.name!r} dropped")
            for reply in list(peer.pending.values()):
                reply.fail(lost)
            with trio.move_on_after(1, shield=True):
                await link.aclose()

    def _notify_peers(self) -> None:
        self._peers_changed.set()
        self._peers_changed = trio.Event()

    async def _write(self, peer: _Peer) -> None:
        """Send queued frames, as many per link message as are waiting and fit in one.
        Once the outbox is closed and empty (:meth:`_flush`), close the link with 1001."""
        while batch := await peer.outbox.take():
            await peer.link.send(wire.encode_frames(batch))
        await peer.link.aclose("node shutting down", 1001)
        peer.closed_by_us.set()

    async def _read(self, peer: _Peer) -> None:
        malformed: list[wire.WireError] = []

        async def handle(data: bytes) -> bool:
            # Runs in the transport's reader task when it can (Link.deliver).
            try:
                frames = wire.decode_frames(data)
            except wire.WireError as exc:
                malformed.append(exc)
                return False
            for frame in frames:
                if isinstance(frame, wire.Ask):
                    # Meanwhile nothing more is read from the link: a peer that asks
                    # faster than it reads the answers is slowed down by TCP (or loses
                    # the link to the heartbeat), and our memory stays bounded.
                    await peer.outbox.room_for_replies()
                await self._dispatch(peer, frame)
            return True

        await peer.link.deliver(handle)
        if malformed:
            log.warning("malformed frame from %r: %s; closing that link", peer.name, malformed[0])
            await peer.link.aclose("malformed frame", 1007)

    async def _dispatch(self, peer: _Peer, frame: wire.Frame) -> None:
        if isinstance(frame, wire.Answer | wire.Fault):
            reply = peer.pending.get(frame.id)
            if reply is None:
                return  # the asker timed out already
            if isinstance(frame, wire.Fault):
                reply.fail(_FAULTS.get(frame.error, ActorError)(frame.message))
                return
            try:
                reply.resolve(wire.decode_value(frame.body, self._wire_ref))
            except wire.WireError as exc:
                reply.fail(exc)
            return
        answer: Reply | None = (
            _RemoteReply(self, peer, frame.id) if isinstance(frame, wire.Ask) else None
        )
        try:
            cell = self._cell(frame.target)
            message = wire.decode_value(frame.body, self._wire_ref)
            if answer is None:
                await self._deliver_tell(peer, cell, message)
            elif frame.target in peer.overflow or not cell.mailbox.offer(message, answer):
                # Busy: the asker retries (send_remote_ask); the reader goes on at once.
                raise MailboxFullError(f"the mailbox of {frame.target!r} is full")
        except (ActorError, TypeError, wire.WireError) as exc:
            if answer is not None:
                answer.fail(exc)
            else:
                self._drop_tell(peer, frame.target, exc)

    def _cell(self, name: str) -> ActorCell[Any]:
        cell = self._registry.get(name)
        if cell is None:
            raise ActorNotFoundError(f"no actor named {name!r} on {self.name!r}")
        return cell

    async def _deliver_tell(self, peer: _Peer, cell: ActorCell[Any], message: Any) -> None:
        """Into the mailbox if it has room and no earlier tell waits, else into the
        link's overflow for that actor; the reader waits only when that is full."""
        # The overflow may empty and end while we wait for room in it: look again.
        while (overflow := peer.overflow.get(cell.name)) is not None and overflow.full():
            await overflow.wait_taken()
        if overflow is None:
            if cell.mailbox.offer(message):
                return
            overflow = _Overflow()
            try:
                peer.deliveries.start_soon(self._drain, peer, cell.name, overflow)
            except RuntimeError:  # the link's nursery closed while we waited for room
                raise PeerLostError(f"link to node {peer.name!r} closed") from None
            peer.overflow[cell.name] = overflow
        overflow.messages.append(message)

    async def _drain(self, peer: _Peer, target: str, overflow: _Overflow) -> None:
        """Hand one actor's overflowing tells to its mailbox, in order, as room frees."""
        while overflow.messages:
            try:
                await self._cell(target).mailbox.put(overflow.messages[0])
            except (ActorError, TypeError) as exc:
                self._drop_tell(peer, target, exc)
            overflow.taken()
        del peer.overflow[target]
        overflow.delivered.set()

    def _drop_tell(self, peer: _Peer, target: str, exc: Exception) -> None:
        peer.warnings.warn(
            f"dropped tells ({type(exc).__name__})",
            f"dropped tell from {peer.name!r} to {target!r}: {exc}",
        )
