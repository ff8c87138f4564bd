"""Actors: objects that handle one message at a time from a typed, bounded mailbox.

An :class:`Actor` subclass names its message type in its base, ``Actor[Ping | Stop]``,
and implements :meth:`Actor.receive`. The runtime runs it inside an :class:`ActorCell`,
which owns the mailbox and the ref so both outlive restarts of the actor instance.
"""

from __future__ import annotations

import types
import typing
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import trio

from .. import wire
from .errors import ActorCrashedError, ActorStoppedError
from .mailbox import Mailbox, Reply

if TYPE_CHECKING:
    from .node import Node
    from .ref import ActorRef

__all__ = ["Actor", "ActorCell"]

M = TypeVar("M")
#: Messages an actor handles back to back before it lets other tasks run.
_BATCH = 64


class Actor(Generic[M]):
    """Base class of every actor.

    Subclass with the message type, ``class Counter(Actor[Increment | Get])``, and
    implement :meth:`receive`; its return value answers an ``ask``. An exception escaping
    ``receive`` is a crash: the pending ask fails with :class:`ActorCrashedError` and the
    supervisor decides what happens next.
    """

    #: The runtime type check applied at the sender; inferred from ``Actor[...]``.
    message_type: ClassVar[Any] = object
    #: How many messages may wait before ``tell`` blocks the sender. A class default;
    #: an instance may set its own in ``__init__`` (read when its child slot is created).
    mailbox_size: int = 256

    _cell: ActorCell[M]
    _nursery: trio.Nursery

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Actor:
                (argument,) = typing.get_args(base)
                if not isinstance(argument, TypeVar):
                    cls.message_type = _runtime_type(argument)
                    wire.register_message_type(argument)

    # Hooks -----------------------------------------------------------------------------

    async def started(self) -> None:
        """Runs before the first message; the actor's nursery is open."""

    async def stopped(self) -> None:
        """Runs once the actor stops for any reason, shielded and bounded in time."""

    async def receive(self, message: M) -> Any:
        """Handle one message; the return value is the ask's reply."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement receive()")

    async def drained(self) -> None:
        """Runs after a batch of messages, before the actor waits for more.

        The place for work that is done once for several messages rather than after each
        (the broker hands queued tasks to workers here). A batch ends when the mailbox is
        empty, or after a few dozen messages in a row.
        """

    # What the runtime gives the actor --------------------------------------------------

    @property
    def ref(self) -> ActorRef[M]:
        """This actor's own address, to hand to others."""
        return self._cell.ref

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def node(self) -> Node:
        return self._cell.node

    @property
    def nursery(self) -> trio.Nursery:
        """Background work of this actor; cancelled when the actor stops or restarts."""
        return self._nursery

    def defer_reply(self) -> Reply | None:
        """Take over answering the current ask (None for a tell).

        Call inside :meth:`receive` to answer later with ``reply.resolve(value)``; if the
        actor crashes first, the reply fails with :class:`ActorCrashedError`, and if it
        stops normally first (after its ``stopped()`` hook), with
        :class:`ActorStoppedError`.
        """
        return self._cell.defer_current()

    def stop(self) -> None:
        """Stop normally once the current message is handled."""
        self._cell.stopping = True


class ActorCell(Generic[M]):
    """The runtime's side of an actor: mailbox, ref, and the receive loop."""

    def __init__(self, node: Node, name: str, message_type: Any, mailbox_size: int) -> None:
        from .ref import LocalRef

        self.node = node
        self.name = name
        self.mailbox: Mailbox[M] = Mailbox(name, message_type, mailbox_size)
        self.ref: ActorRef[M] = LocalRef(self)
        self.stopping = False
        self._current: Reply | None = None
        self._deferred: set[Reply] = set()

    def defer_current(self) -> Reply | None:
        reply, self._current = self._current, None
        if reply is not None:
            reply._owner = self._deferred
            self._deferred.add(reply)
        return reply

    async def run(
        self, actor: Actor[M], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one actor instance until it stops, crashes, or is cancelled."""
        actor._cell = self
        self.stopping = False
        try:
            async with trio.open_nursery() as nursery:
                actor._nursery = nursery
                await actor.started()
                task_status.started()
                await self._loop(actor)
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            for reply in list(self._deferred):
                reply.fail(ActorCrashedError(f"actor {self.name!r} stopped: {exc!r}"))
            raise
        finally:
            with trio.move_on_after(self.node.shutdown_timeout, shield=True):
                await actor.stopped()
            # A normal stop: replies that stopped() did not answer never will be.
            for reply in list(self._deferred):
                reply.fail(ActorStoppedError(f"actor {self.name!r} stopped before answering"))

    async def _loop(self, actor: Actor[M]) -> None:
        receiver = self.mailbox.receiver
        in_a_row = 0
        while not self.stopping:
            try:
                # Take queued messages without a scheduler round trip, but let other
                # tasks run at least every _BATCH messages.
                try:
                    if in_a_row == _BATCH:
                        raise trio.WouldBlock  # the batch ends: let other tasks run
                    message, reply = receiver.receive_nowait()
                    in_a_row += 1
                except trio.WouldBlock:
                    if in_a_row:
                        await actor.drained()
                        if self.stopping:
                            return
                        self.node.flush_links()  # what it told leaves now: it waits next
                    message, reply = await receiver.receive()
                    in_a_row = 1
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            self._current = reply
            try:
                result = await actor.receive(message)
            except BaseException as exc:
                if reply is not None:
                    reply.fail(
                        ActorCrashedError(
                            f"actor {self.name!r} crashed handling "
                            f"{type(message).__qualname__}: {exc!r}"
                        )
                    )
                raise
            if reply is not None and self._current is reply:
                reply.resolve(result)
            self._current = None

    def close(self) -> None:
        """Retire the cell for good: refuse messages, fail waiting asks, unregister."""
        self.mailbox.close()
        self.node.unregister(self)


def _runtime_type(argument: Any) -> Any:
    """What ``isinstance`` can check for a message type annotation."""
    if argument is Any:
        return object
    if isinstance(argument, types.UnionType) or typing.get_origin(argument) is typing.Union:
        return tuple(_runtime_type(arg) for arg in typing.get_args(argument))
    origin = typing.get_origin(argument)
    return origin if origin is not None else argument
