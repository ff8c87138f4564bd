"""Typed, bounded mailboxes and the one-shot reply slots that asks wait on."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import trio

from .errors import ActorStoppedError

__all__ = ["Envelope", "LocalReply", "Mailbox", "Reply"]

M = TypeVar("M")

_PUTS_PER_YIELD = 64


class Reply:
    """Where an ask's answer goes; answered once, later answers are ignored.

    Subclasses decide where the answer travels (a waiting task here, or a link).
    """

    __slots__ = ("_done", "_owner")

    def __init__(self) -> None:
        self._done = False
        self._owner: set[Reply] | None = None

    @property
    def done(self) -> bool:
        return self._done

    def resolve(self, value: Any) -> None:
        if self._finish():
            self._deliver(value, None)

    def fail(self, error: BaseException) -> None:
        if self._finish():
            self._deliver(None, error)

    def _finish(self) -> bool:
        if self._done:
            return False
        self._done = True
        if self._owner is not None:
            self._owner.discard(self)
        return True

    def _deliver(self, value: Any, error: BaseException | None) -> None:
        raise NotImplementedError


class LocalReply(Reply):
    """A reply awaited by a task in this process."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        super().__init__()
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def _deliver(self, value: Any, error: BaseException | None) -> None:
        self._value, self._error = value, error
        self._event.set()

    async def wait(self) -> Any:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value


Envelope = tuple[Any, Reply | None]


class Mailbox(Generic[M]):
    """A bounded queue that refuses messages of the wrong type at the sender.

    The mailbox belongs to the supervisor's child slot, not to one actor instance, so
    messages waiting in it survive a restart of the actor.
    """

    def __init__(self, owner: str, message_type: Any, size: int) -> None:
        self.owner = owner
        self.message_type = message_type
        self._send, self.receiver = trio.open_memory_channel[Envelope](size)
        self.closed = False
        self._puts_since_yield = 0

    async def put(self, message: M, reply: Reply | None = None) -> None:
        """Wait for space, then enqueue; raises once the mailbox is closed."""
        if not isinstance(message, self.message_type):  # ``object`` accepts anything
            raise self._wrong_type(message)
        # With room in the mailbox, mostly only a cancellation check (before sending: a
        # cancelled sender sends nothing): a trip through the scheduler only every
        # _PUTS_PER_YIELD puts, so senders stay fast and a sender that only tells still
        # lets the receiver run. A full mailbox makes the sender wait.
        self._puts_since_yield += 1
        if self._puts_since_yield < _PUTS_PER_YIELD:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            self._puts_since_yield = 0
            await trio.lowlevel.checkpoint()
        try:
            try:
                self._send.send_nowait((message, reply))
            except trio.WouldBlock:
                await self._send.send((message, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._stopped() from None

    def offer(self, message: M, reply: Reply | None = None) -> bool:
        """Enqueue at once if there is room; False if the mailbox is full. For a link's
        reader, which must not wait on one actor while the link carries others' messages.
        """
        if not isinstance(message, self.message_type):
            raise self._wrong_type(message)
        try:
            self._send.send_nowait((message, reply))
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._stopped() from None
        return True

    def _wrong_type(self, message: object) -> TypeError:
        return TypeError(
            f"actor {self.owner!r} accepts {_type_name(self.message_type)}, "
            f"not {type(message).__qualname__}"
        )

    def _stopped(self) -> ActorStoppedError:
        return ActorStoppedError(f"actor {self.owner!r} has stopped")

    def close(self) -> None:
        """Refuse new messages and fail the asks still waiting inside."""
        self.closed = True
        self._send.close()
        while True:
            try:
                _, reply = self.receiver.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if reply is not None:
                reply.fail(ActorStoppedError(f"actor {self.owner!r} stopped before answering"))


def _type_name(message_type: Any) -> str:
    return getattr(message_type, "__qualname__", None) or str(message_type)
