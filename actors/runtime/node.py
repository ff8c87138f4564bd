"""A node: one process's actor system, its registry of names, and its links to peers.

``async with Node.open(...) as node`` runs the root supervisor in a nursery for the
block; ``await nursery.start(node.serve)`` embeds the same thing in a user's nursery.
Messages to actors on other nodes become :mod:`actors.wire` frames on a
:mod:`transports` link; one writer task per link batches frames when the link is busy.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import attrs
import trio

from transports.base import DEFAULT_MAX_FRAME, Link, LinkClosed, Transport

from .. import wire
from .actor import Actor, ActorCell
from .errors import (
    ActorCrashedError,
    ActorError,
    ActorNotFoundError,
    ActorStoppedError,
    AskTimeoutError,
    PeerLostError,
)
from .mailbox import LocalReply, Reply
from .ref import ActorRef, RemoteRef
from .supervisor import ChildSpec, Restart, Supervisor

__all__ = ["Node"]

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
        TypeError,
        wire.WireError,
    )
}
_BATCH = 256
#: Longest error message a fault frame carries.
_FAULT_MESSAGE = 2000


@attrs.define(eq=False)
class _Peer:
    """One live link: the writer's queue and the asks waiting on that peer."""

    name: str
    link: Link
    outbox: trio.MemorySendChannel[wire.Frame]
    pending: dict[int, LocalReply] = attrs.field(factory=dict)


class _RemoteReply(Reply):
    """Sends the answer back over the link the ask came in on."""

    __slots__ = ("_id", "_node", "_peer")

    def __init__(self, node: Node, peer: _Peer, ask_id: int) -> None:
        super().__init__()
        self._node, self._peer, self._id = node, peer, ask_id

    def _deliver(self, value: Any, error: BaseException | None) -> None:
        frame: wire.Frame
        if error is None:
            try:
                body = self._node._encode(value, "")
                frame = wire.Answer("answer", self._id, body)
            except wire.WireError as exc:
                error = wire.WireError(f"reply cannot be sent: {exc}")
        if error is not None:
            message = str(error)[:_FAULT_MESSAGE]
            frame = wire.Fault("fault", self._id, type(error).__name__, message)
        self._node.post(self._peer, frame)


class Node:
    """One process's actor system: a root supervisor, a registry, and peer links.

    Args:
        name: How peers address this node (``node.ref(actor, node=name)``); unique in a
            cluster.
        listen: Accept links here: ``ws://HOST:PORT`` (port 0 picks a free one; see
            :attr:`address`), ``wss://...`` (needs a transport with an ``ssl_context``) or
            ``local://NAME`` (in-process).
        connect: Addresses to dial, and redial with ``reconnect_backoff`` whenever the
            link drops.
        secret: The cluster's shared secret; it never crosses the wire. None means an
            open cluster where every peer also has none.
        transport: Links are made by this transport instead of one chosen from the
            scheme of ``listen`` (or the first ``connect``). Its ``name`` and ``secret``
            are the node's; one transport serves every link of the node.
        shutdown_timeout: How long each actor's ``stopped()`` hook may take at the end.
        reconnect_backoff: ``(first, maximum)`` seconds between redials, doubling.
        root: The root supervisor (default: ``one_for_one``, at most 10 restarts a
            second). If it gives up, :meth:`serve` raises its ``SupervisorFailedError``.
    """

    def __init__(
        self,
        name: str = "node",
        *,
        listen: str | None = None,
        connect: Sequence[str] = (),
        secret: bytes | str | None = None,
        transport: Transport | None = None,
        shutdown_timeout: float = 5.0,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        root: Supervisor | None = None,
    ) -> None:
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
        self._transport = transport
        self.shutdown_timeout = shutdown_timeout
        self.reconnect_backoff = reconnect_backoff
        self.root = root or Supervisor(max_restarts=10, within=1.0)
        #: The address peers reach us at, once listening.
        self.address: str | None = None
        self._registry: dict[str, ActorCell[Any]] = {}
        self._peers: dict[str, _Peer] = {}
        self._peers_changed = trio.Event()
        self._ids = itertools.count(1)
        self._names = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        name: str = "node",
        *,
        listen: str | None = None,
        connect: Sequence[str] = (),
        secret: bytes | str | None = None,
        transport: Transport | None = None,
        shutdown_timeout: float = 5.0,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        root: Supervisor | None = None,
    ) -> AsyncIterator[Node]:
        """Run a node for the block; on exit every actor and link ends.

        The arguments are :class:`Node`'s.
        """
        node = cls(
            name,
            listen=listen,
            connect=connect,
            secret=secret,
            transport=transport,
            shutdown_timeout=shutdown_timeout,
            reconnect_backoff=reconnect_backoff,
            root=root,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve)
            yield node
            nursery.cancel_scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; for ``await nursery.start(node.serve)``."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
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

        return WebSocketTransport(self.name, self.secret)

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
            cell = self._registry.get(name)
            if cell is None:
                raise ActorNotFoundError(f"no actor named {name!r} on {self.name!r}")
            return cell.ref
        return RemoteRef(self, node, name, message_type)

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
        await self._send(peer, wire.Tell("tell", target, self._encode(message, target)))

    async def send_remote_ask(
        self, node: str, target: str, message: Any, timeout: float | None
    ) -> Any:
        peer = self._peer(node)
        frame = wire.Ask("ask", next(self._ids), target, self._encode(message, target))
        reply = LocalReply()
        peer.pending[frame.id] = reply
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout):
                await self._send(peer, frame)
                return await reply.wait()
        finally:
            peer.pending.pop(frame.id, None)
        raise AskTimeoutError(f"no reply from {target!r}@{node!r} within {timeout}s")

    def _peer(self, node: str) -> _Peer:
        peer = self._peers.get(node)
        if peer is None:
            raise PeerLostError(f"no link to node {node!r}")
        return peer

    async def _send(self, peer: _Peer, frame: wire.Frame) -> None:
        # With room in the outbox, queue without a trip through the scheduler, so a busy
        # sender fills the outbox and the writer sends it as one batch. The cancellation
        # check comes first, as in a local tell: a cancelled sender sends nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            try:
                peer.outbox.send_nowait(frame)
            except trio.WouldBlock:
                await peer.outbox.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise PeerLostError(f"link to node {peer.name!r} is closed") from None

    def post(self, peer: _Peer, frame: wire.Frame) -> None:
        """Queue a reply without waiting: replies must not block the actor answering."""
        try:
            peer.outbox.send_nowait(frame)
        except trio.WouldBlock:
            assert self._nursery is not None
            self._nursery.start_soon(self._send_quietly, peer, frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the asker's side fails its pending ask when the link drops

    async def _send_quietly(self, peer: _Peer, frame: wire.Frame) -> None:
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await peer.outbox.send(frame)

    async def _keep_linked(self, address: str) -> None:
        """Dial ``address`` and redial with backoff whenever the link drops."""
        delay, maximum = self.reconnect_backoff
        wait = delay
        while True:
            try:
                async with self.transport.connect(address) as link:
                    wait = delay
                    await self._serve_link(link)
            except (LinkClosed, OSError) as exc:
                log.info("link to %s down: %s; retrying in %.1fs", address, exc, wait)
            await trio.sleep(wait)
            wait = min(maximum, wait * 2)

    async def _serve_link(self, link: Link) -> None:
        """Run one link: a writer batching our frames, a reader dispatching theirs."""
        outbox_send, outbox = trio.open_memory_channel[wire.Frame](_BATCH)
        peer = _Peer(link.peer, link, outbox_send)
        self._peers[peer.name] = peer
        self._notify_peers()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, peer, outbox)
                await self._read(peer)
                nursery.cancel_scope.cancel()
        except* LinkClosed as group:
            log.info("link to %r closed: %s", peer.name, group.exceptions[0])
        finally:
            outbox_send.close()
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

    async def _write(self, peer: _Peer, outbox: trio.MemoryReceiveChannel[wire.Frame]) -> None:
        """Send queued frames, as many per link message as are waiting and fit in one."""
        limit = self.max_frame
        carried: wire.Frame | None = None
        while True:
            if carried is None:
                try:
                    frame = await outbox.receive()
                except trio.EndOfChannel:
                    return
            else:
                frame, carried = carried, None
            batch = [frame]
            size = wire.frame_size(frame)
            while len(batch) < _BATCH:
                try:
                    frame = outbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                frame_size = wire.frame_size(frame)
                if size + frame_size > limit:
                    carried = frame  # opens the next batch
                    break
                batch.append(frame)
                size += frame_size
            await peer.link.send(wire.encode_frames(batch))

    async def _read(self, peer: _Peer) -> None:
        async for data in peer.link:
            try:
                frames = wire.decode_frames(data)
            except wire.WireError as exc:
                log.warning("malformed frame from %r: %s; closing that link", peer.name, exc)
                await peer.link.aclose("malformed frame", 1007)
                return
            for frame in frames:
                await self._dispatch(peer, frame)

    async def _dispatch(self, peer: _Peer, frame: wire.Frame) -> None:
        if isinstance(frame, wire.Answer | wire.Fault):
            reply = peer.pending.get(frame.id)
            if reply is None:
                return  # the asker timed out already
            if isinstance(frame, wire.Fault):
                reply.fail(_FAULTS.get(frame.error, ActorError)(frame.message))
                return
            try:
                reply.resolve(wire.decode_value(frame.body))
            except wire.WireError as exc:
                reply.fail(exc)
            return
        answer: Reply | None = (
            _RemoteReply(self, peer, frame.id) if isinstance(frame, wire.Ask) else None
        )
        try:
            cell = self._registry.get(frame.target)
            if cell is None:
                raise ActorNotFoundError(f"no actor named {frame.target!r} on {self.name!r}")
            message = wire.decode_value(frame.body)
            await cell.mailbox.put(message, answer)
        except (ActorError, TypeError, wire.WireError) as exc:
            if answer is not None:
                answer.fail(exc)
            else:
                log.warning("dropped tell from %r to %r: %s", peer.name, frame.target, exc)
