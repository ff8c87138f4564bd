"""The result store: the actor in front of a result backend that pushes results to waiters.

Waiters register with an ask that the store answers the moment the result is stored: no
polling on the in-process path, whatever backend is configured (even one that keeps
nothing, like ``DummyResultBackend``: waiters present at that moment still get it).
Results with a ``ttl`` are deleted when it runs out. A hub's store keeps results encoded
(``encoded``): its backend is an :class:`~actors.backends.results.EncodedResultBackend`.
When that backend ``writes_together`` (SQLite), the results of a batch of messages are
written in one transaction at its end, before anyone is told of them.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import math
from typing import Any

import attrs
import trio

from .backends.results import AsyncResultBackend, EncodedResultBackend
from .exceptions import ResultGetError
from .protocol import (
    Barrier,
    EncodedResult,
    GetProgress,
    GetResult,
    IsReady,
    MarkRead,
    NoResult,
    Pushed,
    SetProgress,
    StopWaiting,
    Stored,
    StoreRequest,
    StoreResult,
    WaitResult,
    Watch,
)
from .result import TaskiqResult, TaskProgress, result_from_wire
from .runtime import Actor, ActorError, Reply
from .serializers import TaskiqSerializer

__all__ = ["ResultStore", "StoreState", "open_result"]

log = logging.getLogger("actors.results")

# Why a waiter finds no result for a task that ended (formatted with its id when asked).
_STORED = "the result of {task_id} was stored but is gone (evicted?)"
_NO_RESULT = "task {task_id} ended without a result (NoResultError)"


@attrs.define(eq=False)
class StoreState:
    """What a result store knows besides its backend. Its owner keeps it, so a store that
    crashed and restarts continues with it, as the backend does."""

    #: Ids of tasks that ended lately, with why a waiter finds no result for one (evicted,
    #: expired, a backend that keeps nothing, or a run that stored none): such a waiter
    #: gets that as an error instead of waiting forever. Values are ``_STORED`` or
    #: ``_NO_RESULT``.
    ended: collections.OrderedDict[str, str] = attrs.field(factory=collections.OrderedDict)
    #: The client that kicked each watched task.
    watchers: dict[str, tuple[str, str]] = attrs.field(factory=dict)
    #: When each result with a ``ttl`` is deleted (a heap).
    expiries: list[tuple[float, str]] = attrs.field(factory=list)


class ResultStore(Actor[StoreRequest]):
    """Owns the backend; answers waiters as soon as a result is stored."""

    mailbox_size = 4096

    def __init__(
        self,
        backend: AsyncResultBackend[Any],
        remember: int = 10_000,
        *,
        encoded: bool = False,
        state: StoreState | None = None,
    ) -> None:
        self.backend = backend
        self._encoded: EncodedResultBackend[Any] | None = None
        if encoded:
            if not isinstance(backend, EncodedResultBackend):
                raise TypeError(f"{backend!r} cannot keep encoded results")
            self._encoded = backend
        #: Results waiting for the batch's write, and the Barrier asks waiting for it.
        self._grouped = self._encoded is not None and self._encoded.writes_together
        self._pending: list[tuple[str, EncodedResult, float | None]] = []
        self._barriers: list[Reply] = []
        state = state or StoreState()
        self._ended = state.ended
        self._remember = remember
        self._waiters: dict[str, dict[str, Reply]] = collections.defaultdict(dict)
        self._watchers = state.watchers
        self._pushes: dict[tuple[str, str], Pushed] = {}  # the results owed to each client
        self._expiries = state.expiries
        self._expiry_changed = trio.Event()

    async def started(self) -> None:
        self.nursery.start_soon(self._expire)

    async def receive(self, message: StoreRequest) -> Any:
        if isinstance(message, StoreResult):
            if message.result is None:
                self._no_result(message.task_id)
            elif self._grouped and isinstance(message.result, EncodedResult):
                self._pending.append((message.task_id, message.result, message.ttl))
            else:
                await self._store(message.task_id, message.result, message.ttl)
            return None
        if self._pending:
            if isinstance(message, Barrier):
                reply = self.defer_reply()
                if reply is not None:
                    self._barriers.append(reply)
                return None
            if not isinstance(message, Watch | MarkRead | StopWaiting):
                await self._write_pending()  # what follows may read them
        if isinstance(message, WaitResult):
            return await self._wait(message.task_id, message.waiter)
        if isinstance(message, Watch):
            client = (message.node, message.actor)
            for task_id in message.task_ids:
                if task_id not in self._ended:  # else the client asks (a resent kick)
                    self._watchers[task_id] = client
            return None
        if isinstance(message, MarkRead):
            for task_id in message.task_ids:
                await self._mark_read(task_id)
            return None
        if isinstance(message, StopWaiting):
            self._stop_waiting(message.task_id, message.waiter)
            return None
        if isinstance(message, Barrier):
            return None
        if isinstance(message, GetResult):
            return await self._get(message.task_id, message.with_logs)
        if isinstance(message, IsReady):
            return await self._ready(message.task_id)
        if isinstance(message, SetProgress):
            await self._set_progress(message.task_id, message.progress)
            return None
        if isinstance(message, GetProgress):
            return await self._get_progress(message.task_id)
        source = await self._get(message.source)
        if isinstance(source, TaskiqResult):
            await self._store(
                message.target, attrs.evolve(source, task_id=message.target), message.ttl
            )
        elif isinstance(source, EncodedResult):  # its reader takes the id it asked for
            await self._store(message.target, source, message.ttl)
        return None

    async def _store(self, task_id: str, result: Stored, ttl: float | None) -> None:
        try:
            if isinstance(result, TaskiqResult):
                await self.backend.set_result(task_id, result)
            elif self._encoded is not None:
                await self._encoded.set_encoded(task_id, result)
            else:
                raise TypeError("an encoded result for a store that keeps them decoded")
        except Exception:
            # The waiters below still get the result; later readers will not find it.
            log.exception("result backend failed to store the result of %s", task_id)
        await self._stored(task_id, result, ttl)

    async def _write_pending(self) -> None:
        """Write the results received since the last write in one go (one transaction),
        then hand them out as :meth:`_store` does and answer the barriers."""
        pending, self._pending = self._pending, []
        assert self._encoded is not None
        try:
            await self._encoded.set_encoded_many([(task_id, r) for task_id, r, _ in pending])
        except Exception:
            log.exception("result backend failed to store %d results", len(pending))
        for task_id, result, ttl in pending:
            await self._stored(task_id, result, ttl)
        barriers, self._barriers = self._barriers, []
        for reply in barriers:
            reply.resolve(None)

    async def _stored(self, task_id: str, result: Stored, ttl: float | None) -> None:
        """The result is written: give it to its waiters or its client, expire it."""
        waiters = self._waiters.pop(task_id, None)
        if waiters:
            for reply in waiters.values():
                reply.resolve(result)
        self._remember_end(task_id, _STORED)
        client = self._watchers.pop(task_id, None) if self._watchers else None
        if waiters:
            await self._mark_read(task_id)
        elif client is not None and ttl is None:
            # Not pushed when its waiters have it, or a client's copy would outlive the ttl.
            # It stays unread until the client's wait takes it (``MarkRead``).
            self._push(client, task_id, result)
        if ttl is not None:
            heapq.heappush(self._expiries, (trio.current_time() + ttl, task_id))
            self._expiry_changed.set()

    async def _wait(self, task_id: str, waiter: str) -> Stored | NoResult | None:
        if await self._ready(task_id):
            result = await self._get(task_id)
            if not isinstance(result, NoResult):
                return result
        gone = self._ended.get(task_id)
        if gone is not None:
            return NoResult(gone.format(task_id=task_id))
        reply = self.defer_reply()
        if reply is not None:
            self._waiters[task_id][waiter] = reply
        return None

    def _stop_waiting(self, task_id: str, waiter: str) -> None:
        waiters = self._waiters.get(task_id)
        if waiters is None:
            return
        reply = waiters.pop(waiter, None)
        if reply is not None:
            reply.resolve(None)  # nobody reads it: this frees the reply
        if not waiters:
            del self._waiters[task_id]

    def _no_result(self, task_id: str) -> None:
        no_result = NoResult(_NO_RESULT.format(task_id=task_id))
        waiters = self._waiters.pop(task_id, None)
        if waiters:
            for reply in waiters.values():
                reply.resolve(no_result)
        self._remember_end(task_id, _NO_RESULT)
        client = self._watchers.pop(task_id, None)
        if client is not None and not waiters:
            self._push(client, task_id, no_result)

    def _push(self, client: tuple[str, str], task_id: str, result: Stored | NoResult) -> None:
        pushed = self._pushes.get(client)
        if pushed is None:
            pushed = self._pushes[client] = Pushed([], [])
        pushed.task_ids.append(task_id)
        pushed.results.append(result)

    async def _mark_read(self, task_id: str) -> None:
        try:
            await self.backend.mark_read(task_id)
        except Exception:
            log.exception("result backend failed mark_read(%s)", task_id)

    async def drained(self) -> None:
        """After a batch: write its results, and push each watching client its results,
        in one message."""
        if self._pending:
            await self._write_pending()
        if self._pushes:
            pushes, self._pushes = self._pushes, {}
            for (node, actor), pushed in pushes.items():
                # A client that is gone asks for what it still waits for (WaitResult).
                with contextlib.suppress(ActorError):
                    await self.node.ref(actor, node=node).tell(pushed)

    def _remember_end(self, task_id: str, reason: str) -> None:
        self._ended[task_id] = reason
        if len(self._ended) > self._remember:
            self._ended.popitem(last=False)

    async def _ready(self, task_id: str) -> bool:
        try:
            return await self.backend.is_result_ready(task_id)
        except Exception:
            log.exception("result backend failed is_result_ready(%s)", task_id)
            return False

    async def _get(self, task_id: str, with_logs: bool = False) -> Stored | NoResult:
        """The result, or why there is none (a value, not a crash)."""
        try:
            result: Stored
            if self._encoded is not None:
                result = await self._encoded.get_encoded(task_id)
            else:
                result = await self.backend.get_result(task_id, with_logs=with_logs)
        except ResultGetError as exc:
            return NoResult(str(exc))
        except Exception as exc:
            return NoResult(f"cannot get the result of {task_id}: {exc!r}")
        return result

    async def _set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        try:
            await self.backend.set_progress(task_id, progress)
        except Exception:
            log.exception("result backend failed to store the progress of %s", task_id)

    async def _get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        try:
            return await self.backend.get_progress(task_id)
        except Exception:
            log.exception("result backend failed get_progress(%s)", task_id)
            return None

    async def _expire(self) -> None:
        while True:
            when = self._expiries[0][0] if self._expiries else math.inf
            with trio.move_on_at(when):
                await self._expiry_changed.wait()
                self._expiry_changed = trio.Event()
                continue
            _, task_id = heapq.heappop(self._expiries)
            try:
                await self.backend.delete_result(task_id)
            except Exception:
                log.exception("result backend failed to delete the expired result of %s", task_id)


def open_result(value: object, task_id: str, serializer: TaskiqSerializer) -> TaskiqResult[Any]:
    """A store's reply as the result it stands for; ``ResultGetError`` if there is none.

    An :class:`EncodedResult` is decoded here, on the side that holds the user's types."""
    if isinstance(value, TaskiqResult):
        return value
    if isinstance(value, EncodedResult):
        result = result_from_wire(value.data, serializer)
        if result.task_id != task_id:  # stored under a second id (``otherwise``)
            result = attrs.evolve(result, task_id=task_id)
        return result
    if isinstance(value, NoResult):
        raise ResultGetError(value.reason)
    raise ResultGetError(f"no result for {task_id}: the store answered {value!r:.100}")
