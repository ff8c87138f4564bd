"""The client of a cluster: a broker whose queue and results live on a hub.

``WebSocketBroker(url)`` runs a node of its own that dials the hub (``ws://``,
``wss://`` or ``local://`` in one process) and sends the same messages
:class:`~actors.inmemory.InMemoryBroker` sends to its own actors. Tasks declared on it
run on worker nodes (:mod:`actors.worker_node`) that import the same broker object.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import ssl
import uuid
from typing import Any, Self

import attrs
import trio

from .client import ActorBroker
from .events import TaskiqEvents
from .exceptions import SendTaskError
from .hub import BROKER_ACTOR, HUB_NODE, STORE_ACTOR, transport_for
from .protocol import BrokerMessage
from .result import TaskiqResult
from .runtime import Node

__all__ = ["WebSocketBroker"]

_TIMES = (datetime.timedelta, datetime.date)


def _plain(value: Any) -> Any:
    """A label value as data that crosses a link and that the label readers accept:
    seconds for a timedelta, ISO text for a date or datetime (naive means UTC)."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


class WebSocketBroker(ActorBroker):
    """taskiq's broker API over a link to a hub.

    Args:
        url: The hub's address.
        secret: The cluster's shared secret (the hub's).
        ssl_context: For ``wss://``: the context that checks the hub's certificate.
        connect_timeout: How long a kick waits for the link to the hub before it
            raises ``SendTaskError``.
        hub: The hub's node name.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        hub: str = HUB_NODE,
    ) -> None:
        super().__init__()
        self.url = url
        self.secret = secret
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.hub = hub
        self._node: Node | None = None
        self._attached: Node | None = None
        self._as_worker = False

    def attach(self, node: Node, *, worker: bool = False) -> Self:
        """Use ``node`` (which dials the hub) instead of a node of its own; ``worker``:
        this is a worker process, so starting fires the ``WORKER_*`` events."""
        self._attached = node
        self._as_worker = worker
        return self

    @property
    def node(self) -> Node | None:
        """The node this broker sends through, while it runs."""
        return self._node

    def _startup_events(self) -> list[TaskiqEvents]:
        return [TaskiqEvents.WORKER_STARTUP if self._as_worker else TaskiqEvents.CLIENT_STARTUP]

    def _shutdown_events(self) -> list[TaskiqEvents]:
        return [TaskiqEvents.WORKER_SHUTDOWN if self._as_worker else TaskiqEvents.CLIENT_SHUTDOWN]

    async def _start_actors(self, stack: contextlib.AsyncExitStack) -> None:
        node = self._attached
        if node is None:
            name = f"client-{uuid.uuid4().hex[:12]}"  # unique per process and start
            transport = transport_for(name, self.secret, self.ssl_context)
            node = await stack.enter_async_context(
                Node.open(name, connect=[self.url], secret=self.secret, transport=transport)
            )
        self._node = node
        self._broker_ref = node.ref(BROKER_ACTOR, node=self.hub)
        self._store_ref = node.ref(STORE_ACTOR, node=self.hub)
        stack.callback(self._forget_actors)

    def _forget_actors(self) -> None:
        self._node = self._attached = self._broker_ref = self._store_ref = None
        self._as_worker = False

    async def _linked(self) -> bool:
        """Whether the hub is linked, waiting for it at most ``connect_timeout`` seconds."""
        node = self._node
        if node is None or self.hub in node.peers:
            return True  # not running: the call fails with the usual BrokerError
        with trio.move_on_after(self.connect_timeout):
            await node.wait_for_peer(self.hub, timeout=math.inf)
            return True
        return False

    async def kick(self, message: BrokerMessage) -> str:
        labels = message.labels
        if any(isinstance(value, _TIMES) for value in labels.values()):
            message = attrs.evolve(message, labels={k: _plain(v) for k, v in labels.items()})
        if not await self._linked():
            raise SendTaskError(
                f"task {message.task_id} was not sent: no link to the hub at {self.url} "
                f"within {self.connect_timeout}s (is it running, with the same secret?)"
            )
        return await super().kick(message)

    async def wait_result(self, task_id: str) -> TaskiqResult[Any]:
        await self._linked()  # if it is not, the store's ref says so (ResultGetError)
        return await super().wait_result(task_id)
