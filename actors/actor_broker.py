"""The client side of the task queue: the facade's calls as messages to the broker and
result store actors, on this node or on a hub.

:class:`ActorBroker` is what :class:`~actors.inmemory.InMemoryBroker` (the actors on
this node) and :class:`~actors.websocket_broker.WebSocketBroker` (the actors on a hub)
have in common: the same messages and replies, only the refs differ. Runtime errors
become taskiq's here, and the store's replies become results.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import trio

from .backends.results import AsyncResultBackend
from .exceptions import BrokerError, ResultGetError, SendTaskError
from .facade import AsyncBroker, _random_id
from .lifecycle import TaskInfo, TaskStatus
from .protocol import (
    Abort,
    BrokerMessage,
    BrokerRequest,
    Drain,
    Enqueue,
    GetProgress,
    GetResult,
    Inspect,
    IsReady,
    LiveTask,
    SetProgress,
    Status,
    StatusReply,
    StopWaiting,
    StoreRequest,
    WaitResult,
)
from .result import TaskiqResult, TaskProgress
from .results import open_result
from .runtime import ActorError, ActorRef, AskTimeoutError
from .wire import WireError

__all__ = ["ActorBroker"]


#: Names a wait at the result store, so a wait given up on can be forgotten: unique
#: across processes by the random prefix, and cheaper per wait than a random id.
_WAITER_PREFIX = _random_id()[:12]
_waiter_numbers = itertools.count()

#: What the runtime raises when a message cannot reach an actor or cross a link.
_RUNTIME_ERRORS = (ActorError, WireError)


class ActorBroker(AsyncBroker):
    """A broker whose queue and results are actors reached through refs.

    A subclass sets ``_broker_ref`` and ``_store_ref`` when it starts, and
    ``_local_backend`` when the store's backend is in this process (then a stored
    result is read straight from it, the in-process fast path).
    """

    await_inplace = False
    _broker_ref: ActorRef[BrokerRequest] | None = None
    _store_ref: ActorRef[StoreRequest] | None = None
    _local_backend: AsyncResultBackend[Any] | None = None

    @property
    def broker_ref(self) -> ActorRef[BrokerRequest] | None:
        """The broker actor, while running (a scheduler reports its schedules there)."""
        return self._broker_ref

    def _actors(self) -> tuple[ActorRef[BrokerRequest], ActorRef[StoreRequest]]:
        if self._broker_ref is None or self._store_ref is None:
            raise BrokerError("the broker is not running: use `async with broker:` or startup()")
        return self._broker_ref, self._store_ref

    async def kick(self, message: BrokerMessage) -> str:
        broker = self._broker_ref or self._actors()[0]
        # Users of the task queue see taskiq's errors, never the runtime's (here and in
        # every call below); try/except rather than a context manager on the hot path.
        try:
            if message.labels.get("unique") or self.await_inplace:
                task_id: str = await broker.ask(Enqueue(message))
            else:
                await broker.tell(Enqueue(message))
                task_id = message.task_id
        except _RUNTIME_ERRORS as exc:
            raise SendTaskError(f"task {message.task_id} was not accepted: {exc}") from exc
        if self.await_inplace:
            await self.wait_result(task_id)
        return task_id

    async def wait_result(self, task_id: str) -> TaskiqResult[Any]:
        store = self._store_ref or self._actors()[1]
        backend = self._local_backend
        if backend is not None:
            # A stored result is read straight from the backend; only waiting needs the store.
            try:
                if await backend.is_result_ready(task_id):
                    return await backend.get_result(task_id)
            except ResultGetError:
                pass
        waiter = f"{_WAITER_PREFIX}-{next(_waiter_numbers)}"
        try:
            stored = await store.ask(WaitResult(task_id, waiter))
        except _RUNTIME_ERRORS as exc:
            raise ResultGetError(f"no result for {task_id}: {exc}") from exc
        except trio.Cancelled:
            # The store forgets this waiter: a wait that times out leaves nothing behind.
            with trio.CancelScope(shield=True), contextlib.suppress(*_RUNTIME_ERRORS):
                await store.tell(StopWaiting(task_id, waiter))
            raise
        if type(stored) is TaskiqResult:
            return stored
        return open_result(stored, task_id, self.serializer)

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        _, store = self._actors()
        try:
            stored = await store.ask(GetResult(task_id, with_logs))
        except _RUNTIME_ERRORS as exc:
            raise ResultGetError(f"no result for {task_id}: {exc}") from exc
        return open_result(stored, task_id, self.serializer)

    async def is_ready(self, task_id: str) -> bool:
        _, store = self._actors()
        try:
            return bool(await store.ask(IsReady(task_id)))
        except _RUNTIME_ERRORS as exc:
            raise ResultGetError(f"cannot tell whether {task_id} is ready: {exc}") from exc

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        _, store = self._actors()
        try:
            await store.tell(SetProgress(task_id, progress))
        except _RUNTIME_ERRORS as exc:
            raise BrokerError(f"progress of {task_id} not stored: {exc}") from exc

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        _, store = self._actors()
        try:
            progress = await store.ask(GetProgress(task_id))
        except _RUNTIME_ERRORS as exc:
            raise ResultGetError(f"no progress for {task_id}: {exc}") from exc
        return progress if isinstance(progress, TaskProgress) else None

    async def task_status(self, task_id: str) -> TaskStatus:
        broker, _ = self._actors()
        try:
            reply = await broker.ask(Status(task_id))
        except _RUNTIME_ERRORS as exc:
            raise BrokerError(f"no status for {task_id}: {exc}") from exc
        if isinstance(reply, StatusReply) and reply.status is not None:
            return reply.status
        if await self.is_ready(task_id):
            return TaskStatus.DONE
        return TaskStatus.NOT_FOUND

    async def task_info(self, task_id: str) -> TaskInfo | None:
        broker, _ = self._actors()
        try:
            live = await broker.ask(Inspect(task_id))
        except _RUNTIME_ERRORS as exc:
            raise BrokerError(f"no info for {task_id}: {exc}") from exc
        if not isinstance(live, LiveTask):
            return None
        message = self.formatter.loads(live.message.message)
        return TaskInfo(
            task_id=task_id,
            task_name=live.message.task_name,
            args=tuple(message.args),
            kwargs=dict(message.kwargs),
            tries=live.tries,
            status=live.status,
            enqueue_time=live.enqueue_time,
            scheduled=live.scheduled,
            dependencies=frozenset(live.dependencies),
            dependents=frozenset(live.dependents),
            labels=dict(live.message.labels),
        )

    async def abort(self, task_id: str, timeout: float = 5) -> bool:
        broker, _ = self._actors()
        try:
            return bool(await broker.ask(Abort(task_id), timeout=timeout))
        except AskTimeoutError:
            return False
        except _RUNTIME_ERRORS as exc:
            raise BrokerError(f"abort of {task_id} failed: {exc}") from exc

    async def wait_all(self) -> None:
        """Wait until every task kicked so far has ended."""
        broker, _ = self._actors()
        try:
            await broker.ask(Drain())
        except _RUNTIME_ERRORS as exc:
            raise BrokerError(f"wait_all failed: {exc}") from exc
