"""The client of a cluster: a broker whose queue and results live on a hub.

``WebSocketBroker(url)`` runs a node of its own that dials the hub (``ws://``,
``wss://`` or ``local://`` in one process) and sends the same messages
:class:`~actors.inmemory.InMemoryBroker` sends to its own actors. Tasks declared on it
run on worker nodes (:mod:`actors.worker_node`) that import the same broker object.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import logging
import math
import ssl
import uuid
from typing import Any, Self

import attrs
import trio

from .actor_broker import ActorBroker
from .broker import WallClock
from .events import TaskiqEvents
from .exceptions import ResultGetError, SendTaskError
from .hub import BROKER_ACTOR, HUB_NODE, STORE_ACTOR, transport_for
from .protocol import Accepted, BrokerMessage, Kick, MarkRead, NoResult, Pushed, Stored
from .result import TaskiqResult, utc_now
from .results import open_result
from .runtime import Actor, ActorError, Node, PeerLostError, unique_node_name
from .wire import WireError

__all__ = ["ACKS_ACTOR", "WebSocketBroker"]

log = logging.getLogger("actors.websocket_broker")

#: The client's actor the hub acknowledges kicks and pushes results to (a random
#: suffix per start).
ACKS_ACTOR = "taskq.acks"

#: How many pushed results a client keeps for a wait to come (the oldest go first;
#: a wait for one that went asks the hub).
PUSHED_KEPT = 100_000

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
        connect_timeout: How long a kick waits for the link to the hub, or for room
            among the kicks in flight, before it raises ``SendTaskError``.
        hand_over_timeout: How long leaving waits for the hub to accept every kick.
        resend_after: A kick the hub has not acknowledged within this many seconds (at
            most twice that) is sent again, in case the hub's broker actor restarted and
            lost it or its acknowledgement.
        max_in_flight: Kicks the hub has not acknowledged yet, at most; a kick beyond
            waits for an acknowledgement (a hub whose queue is full holds them back).
        hub: The hub's node name.
        wall_clock: What "now" is for ``delay`` and ``expire`` (UTC); the hub's and the
            clients' clocks are assumed in step (NTP).

    Results live on the hub (``open_hub(result_backend=...)``, ``actors hub
    --result-backend``): this broker's own ``result_backend`` is neither used nor started.
    """

    uses_result_backend = False

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        hand_over_timeout: float = 10.0,
        resend_after: float = 5.0,
        max_in_flight: int = 1000,
        hub: str = HUB_NODE,
        wall_clock: WallClock = utc_now,
    ) -> None:
        super().__init__()
        self.url = url
        self.secret = secret
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.hand_over_timeout = hand_over_timeout
        self.resend_after = resend_after
        self.max_in_flight = max_in_flight
        self.hub = hub
        self.wall_clock = wall_clock
        self._node: Node | None = None
        self._attached: Node | None = None
        self._as_worker = False
        #: Kicks the hub has not acknowledged yet, oldest first: resent after a reconnect
        #: or when overdue.
        self._unacked: dict[str, BrokerMessage] = {}
        #: The ids of the kicks the hub had not accepted when the broker last shut down.
        self.not_handed_over: list[str] = []
        self._all_acked = trio.Event()
        self._kicks_pending = trio.Event()  # set while _unacked holds kicks
        self._acked = trio.Event()  # set (and replaced) on each acknowledgement
        #: Results of this client's kicks the hub pushed, until a wait takes them.
        self._pushed: collections.OrderedDict[str, Stored | NoResult] = collections.OrderedDict()
        #: Pushed results waits took, to tell the hub's store (``MarkRead``).
        self._taken: list[str] = []
        self._taken_any = trio.Event()

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
            name = unique_node_name("client")  # unique per process and start
            transport = transport_for(name, self.secret, self.ssl_context)
            node = await stack.enter_async_context(
                Node.open(name, connect=[self.url], secret=self.secret, transport=transport)
            )
        self._node = node
        self._broker_ref = node.ref(BROKER_ACTOR, node=self.hub)
        self._store_ref = node.ref(STORE_ACTOR, node=self.hub)
        stack.callback(self._forget_actors)
        acks = await node.spawn(lambda: _Acks(self), name=f"{ACKS_ACTOR}-{uuid.uuid4().hex[:8]}")
        self._ack_to = acks.name
        stack.push_async_callback(node.root.stop_child, acks.name)
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        nursery.start_soon(self._resend_after_reconnects, node)
        nursery.start_soon(self._resend_overdue, node)
        nursery.start_soon(self._tell_taken)
        stack.push_async_callback(self._hand_over)

    async def _resend_after_reconnects(self, node: Node) -> None:
        await node.wait_for_peer(self.hub, timeout=math.inf)  # kicks wait for the first
        while True:
            await node.wait_for_peer_lost(self.hub, timeout=math.inf)
            await node.wait_for_peer(self.hub, timeout=math.inf)
            await self._resend(node, list(self._unacked))

    async def _resend_overdue(self, node: Node) -> None:
        """Send again the kicks still unacknowledged a sweep later: the hub's broker actor
        may have crashed (and restarted) owing their acknowledgements, or before taking
        them. The hub drops those it has."""
        kept: set[str] = set()
        while True:
            await self._kicks_pending.wait()  # no timer while idle
            await trio.sleep(self.resend_after)
            if self.hub in node.peers:  # else the next link-up resends them all
                await self._resend(node, [task_id for task_id in self._unacked if task_id in kept])
            kept = set(self._unacked)

    async def _resend(self, node: Node, task_ids: list[str]) -> None:
        broker = self._broker_ref
        for task_id in task_ids:
            message = self._unacked.get(task_id)
            if broker is None or message is None:
                continue  # stopped, or acknowledged meanwhile
            try:
                await broker.tell(Kick(message, node.name, self._ack_to, resend=True))
            except ActorError:
                return  # the link went: the next link-up resends

    def _accepted(self, task_ids: list[str]) -> None:
        for task_id in task_ids:
            self._unacked.pop(task_id, None)
        self._acked.set()
        self._acked = trio.Event()
        if not self._unacked:
            self._all_acked.set()
            self._kicks_pending = trio.Event()

    async def _hand_over(self) -> None:
        """On shutdown: wait (``hand_over_timeout`` at most) until the hub has accepted
        every kick, and say which it has not."""
        if self._unacked:
            with trio.move_on_after(self.hand_over_timeout):
                await self._all_acked.wait()
        self.not_handed_over = list(self._unacked)
        if self._unacked:
            log.warning(
                "the hub at %s did not accept %d kicked tasks: %s",
                self.url,
                len(self._unacked),
                ", ".join(self._unacked),
            )
            self._unacked.clear()
            self._kicks_pending = trio.Event()

    async def _tell_taken(self) -> None:
        """Tell the hub's store, in batches, which pushed results waits took: it keeps a
        result unread (not evicted before read ones) until then."""
        while True:
            await self._taken_any.wait()
            self._taken_any = trio.Event()
            await self._flush_taken()

    async def _flush_taken(self) -> None:
        """Called before reading from the store too, so it sees reads in their order."""
        store = self._store_ref
        if self._taken and store is not None:
            taken, self._taken = self._taken, []
            with contextlib.suppress(ActorError):  # then they stay unread on the hub
                await store.tell(MarkRead(taken))

    def _keep_pushed(self, pushed: Pushed) -> None:
        kept = self._pushed
        kept.update(zip(pushed.task_ids, pushed.results, strict=True))
        while len(kept) > PUSHED_KEPT:
            kept.popitem(last=False)

    def _forget_actors(self) -> None:
        self._pushed.clear()
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
            labels = {k: _plain(v) for k, v in labels.items()}
        if "delay" in labels or "expire" in labels:
            # They count from now, however late the hub gets the kick (a reconnect).
            labels = {**labels, "kicked_at": self.wall_clock().isoformat()}
        if labels is not message.labels:
            message = attrs.evolve(message, labels=labels)
        if not await self._linked():
            raise SendTaskError(
                f"task {message.task_id} was not sent: no link to the hub at {self.url} "
                f"within {self.connect_timeout}s (is it running, with the same secret?)"
            )
        node, broker = self._node, self._broker_ref
        if node is None or broker is None or message.labels.get("unique") or self.await_inplace:
            return await super().kick(message)  # an ask: its answer is the acknowledgement
        task_id = message.task_id
        if len(self._unacked) >= self.max_in_flight:
            await self._wait_for_room(task_id)
        if not self._unacked:
            self._all_acked = trio.Event()
            self._kicks_pending.set()
        self._unacked[task_id] = message
        try:
            await broker.tell(Kick(message, node.name, self._ack_to))
        except WireError as exc:
            self._accepted([task_id])
            raise SendTaskError(f"task {task_id} was not accepted: {exc}") from exc
        except ActorError:
            pass  # the link just went: it is resent when it is back
        return task_id

    async def _wait_for_room(self, task_id: str) -> None:
        with trio.move_on_after(self.connect_timeout):
            while len(self._unacked) >= self.max_in_flight:
                await self._acked.wait()
            return
        raise SendTaskError(
            f"task {task_id} was not sent: the hub at {self.url} accepted none of the "
            f"{len(self._unacked)} kicks in flight within {self.connect_timeout}s (queue full?)"
        )

    async def wait_result(self, task_id: str) -> TaskiqResult[Any]:
        pushed = self._pushed.pop(task_id, None)
        if pushed is not None:
            self._taken.append(task_id)
            self._taken_any.set()
            return open_result(pushed, task_id, self.serializer)
        while True:
            await self._linked()  # if it is not, the store's ref says so (ResultGetError)
            await self._flush_taken()
            try:
                result = await super().wait_result(task_id)
            except ResultGetError as exc:
                # The link went while waiting (a restart of the hub): wait again once it
                # is back, since a durable hub still has the task.
                if isinstance(exc.__cause__, PeerLostError) and await self._linked():
                    continue
                raise
            self._pushed.pop(task_id, None)  # pushed before this wait asked: not kept
            return result

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        await self._flush_taken()
        return await super().get_result(task_id, with_logs)


class _Acks(Actor[Accepted | Pushed]):
    """Takes the hub's acknowledgements of this client's kicks, and their results."""

    def __init__(self, broker: WebSocketBroker) -> None:
        self.broker = broker

    async def receive(self, message: Accepted | Pushed) -> None:
        if isinstance(message, Pushed):
            self.broker._keep_pushed(message)
        else:
            self.broker._accepted(message.task_ids)
