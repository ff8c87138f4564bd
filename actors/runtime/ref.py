"""Addresses of actors: the same ``tell`` / ``ask`` whether the actor is here or remote."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from .. import wire
from .errors import ActorNotFoundError, AskTimeoutError
from .mailbox import LocalReply

if TYPE_CHECKING:
    from .actor import ActorCell
    from .node import Node

__all__ = ["ActorRef", "LocalRef", "RemoteRef"]

M = TypeVar("M")


class ActorRef(Generic[M]):
    """An actor's address. ``tell`` sends; ``ask`` sends and waits for the reply."""

    __slots__ = ("name", "node_name")

    def __init__(self, node_name: str, name: str) -> None:
        self.node_name = node_name
        self.name = name

    async def tell(self, message: M) -> None:
        """Deliver ``message``, waiting only for mailbox (or link) space."""
        raise NotImplementedError

    async def ask(self, message: M, *, timeout: float | None = None) -> Any:
        """Deliver ``message`` and return the actor's reply.

        Raises :class:`AskTimeoutError` past ``timeout`` seconds (None waits as long as
        the actor lives), :class:`ActorCrashedError` if the actor crashes on it, and
        :class:`PeerLostError` if the link to its node drops.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}@{self.node_name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and (self.node_name, self.name) == (
            other.node_name,
            other.name,
        )

    def __hash__(self) -> int:
        return hash((self.node_name, self.name))


class LocalRef(ActorRef[M]):
    """A ref to an actor in this process: one channel hop, no encoding."""

    __slots__ = ("_cell",)

    def __init__(self, cell: ActorCell[M]) -> None:
        super().__init__(cell.node.name, cell.name)
        self._cell = cell

    def _live_cell(self) -> ActorCell[M]:
        # A restarted subtree gets fresh cells under the same names: follow the name.
        if self._cell.mailbox.closed:
            cell = self._cell.node.lookup(self.name)
            if cell is None:
                raise ActorNotFoundError(f"no actor named {self.name!r} on {self.node_name!r}")
            self._cell = cell
        return self._cell

    async def tell(self, message: M) -> None:
        await self._live_cell().mailbox.put(message)

    async def ask(self, message: M, *, timeout: float | None = None) -> Any:
        reply = LocalReply()
        mailbox = self._live_cell().mailbox
        if timeout is None:
            await mailbox.put(message, reply)
            return await reply.wait()
        with trio.move_on_after(timeout):
            await mailbox.put(message, reply)
            return await reply.wait()
        reply.fail(AskTimeoutError())  # so a late answer is dropped
        raise AskTimeoutError(
            f"no reply from {self.name!r} to {type(message).__qualname__} within {timeout}s"
        )


class RemoteRef(ActorRef[M]):
    """A ref to an actor on a linked node; messages cross the link encoded."""

    __slots__ = ("_message_type", "_node")

    def __init__(self, node: Node, node_name: str, name: str, message_type: Any = object) -> None:
        super().__init__(node_name, name)
        self._node = node
        self._message_type = message_type

    def _check(self, message: object) -> None:
        if self._message_type is not object and not isinstance(message, self._message_type):
            raise TypeError(
                f"actor {self.name!r} on {self.node_name!r} accepts "
                f"{getattr(self._message_type, '__qualname__', self._message_type)}, "
                f"not {type(message).__qualname__}"
            )

    async def tell(self, message: M) -> None:
        self._check(message)
        await self._node.send_remote_tell(self.node_name, self.name, message)

    async def ask(self, message: M, *, timeout: float | None = None) -> Any:
        self._check(message)
        return await self._node.send_remote_ask(self.node_name, self.name, message, timeout)


wire.register_address_type(ActorRef)
