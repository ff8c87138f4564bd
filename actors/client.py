"""Kick tasks and read results from code that is not trio: plain threads, asyncio apps.

``connect`` starts a thread that runs ``trio.run`` and holds one broker for the client's
life. A call from any thread is handed to that loop with ``trio.from_thread.run_sync``,
runs there as a task of the client's nursery, and the calling thread blocks on a
``concurrent.futures.Future`` for its answer, so many threads can call at once. A thread
rather than ``trio.lowlevel.start_guest_run``: a guest run needs a host event loop to
drive it, and synchronous code (Django, scripts) has none; an asyncio app calls the
blocking methods through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import trio

from .actor_broker import ActorBroker
from .exceptions import ResultGetError, SendTaskError
from .lifecycle import TaskInfo, TaskStatus
from .result import TaskiqResult, TaskProgress
from .tasks import AsyncKicker, AsyncTaskiqDecoratedTask, AsyncTaskiqTask
from .websocket_broker import WebSocketBroker

__all__ = ["Client", "SyncTaskiqTask", "connect"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: What a call raises when the client is closed (or closes while it waits).
_Closed = type[SendTaskError] | type[ResultGetError]


def connect(
    target: str | ActorBroker, *, secret: bytes | str | None = None, **options: Any
) -> Client:
    """A started client: for the hub at URL ``target`` (``options`` are
    ``WebSocketBroker``'s), or running the broker object ``target`` (not started: an
    ``InMemoryBroker``, or your own ``WebSocketBroker`` with its serializer and tasks).
    Use it as ``with connect(...) as client:``, or call ``close()``."""
    if isinstance(target, str):
        broker: ActorBroker = _AnyTaskName(target, secret=secret, **options)
    elif secret is not None or options:
        raise TypeError("secret and options are for a URL; set them on the broker instead")
    else:
        broker = target
    return Client(broker).start()


def _unwrapped(exc: BaseException) -> BaseException:
    """The error itself, out of the groups of one that trio's nurseries wrap it in (a
    caller outside trio does not expect a group)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _AnyTaskName(WebSocketBroker):
    """A client by URL alone knows none of the workers' tasks: it sends any name, and
    the hub keeps a task until a worker that has its name takes it."""

    def find_task(self, task_name: str) -> AsyncTaskiqDecoratedTask[Any, Any] | None:
        found = super().find_task(task_name)
        if found is None:
            found = self._stand_ins.get(task_name)
        if found is None:
            found = self._stand_ins[task_name] = AsyncTaskiqDecoratedTask(
                self, task_name, _elsewhere, {}
            )
        return found

    @functools.cached_property
    def _stand_ins(self) -> dict[str, AsyncTaskiqDecoratedTask[Any, Any]]:
        return {}


def _elsewhere() -> None:
    raise NotImplementedError("this task runs on the workers only")


class Client:
    """A broker run in a thread of its own, for callers outside trio; thread-safe.

    Closing waits until the hub has accepted the kicks made so far (as leaving
    ``async with broker`` does), cancels the waits still running in other threads (they
    raise ``ResultGetError``) and stops the thread.
    """

    def __init__(self, broker: ActorBroker) -> None:
        self.broker = broker
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._calls: trio.Nursery | None = None  # None once closing
        self._waits: set[trio.CancelScope] = set()
        self._closing = trio.Event()
        self._close_lock = threading.Lock()
        self._failure: BaseException | None = None

    def start(self) -> Self:
        """Start the thread and the broker; raises what starting the broker raised."""
        started: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._main, args=(started,), name="actors-client", daemon=True
        )
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            raise
        return self

    def _main(self, started: Future[None]) -> None:
        try:
            trio.run(self._serve, started)
        except BaseException as exc:
            if started.done():
                self._failure = _unwrapped(exc)  # raised by close()
            else:
                started.set_exception(_unwrapped(exc))

    async def _serve(self, started: Future[None]) -> None:
        async with self.broker, trio.open_nursery() as calls:
            self._token = trio.lowlevel.current_trio_token()
            self._calls = calls
            started.set_result(None)
            await self._closing.wait()
            self._calls = None
            for scope in self._waits:
                scope.cancel()

    def close(self) -> None:
        """Stop the client (once; later calls do nothing)."""
        with self._close_lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):  # it failed: raised below
            trio.from_thread.run_sync(self._closing.set, trio_token=self._token)
        thread.join()
        if self._failure is not None:
            raise self._failure

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, afn: Callable[[], Awaitable[T]], *, closed: _Closed = ResultGetError) -> T:
        """``await afn()`` on the client's loop, from any thread but that one; what the
        loop raised is raised here. A wait still running when the client closes is
        cancelled and raises ``closed``."""
        return self._call(afn, closed, cancellable=True)

    def _call(self, afn: Callable[[], Awaitable[T]], closed: _Closed, *, cancellable: bool) -> T:
        answer: Future[T] = Future()
        if self._token is None:
            raise closed("the client is not started")
        try:
            one_call = functools.partial(self._one_call, afn, answer, closed, cancellable)
            trio.from_thread.run_sync(self._start_call, one_call, closed, trio_token=self._token)
        except trio.RunFinishedError:
            raise closed("the client is closed") from None
        return answer.result()

    def _start_call(self, one_call: Callable[[], Awaitable[None]], closed: _Closed) -> None:
        if self._calls is None:
            raise closed("the client is closed")
        self._calls.start_soon(one_call)

    async def _one_call(
        self,
        afn: Callable[[], Awaitable[T]],
        answer: Future[T],
        closed: _Closed,
        cancellable: bool,
    ) -> None:
        scope = trio.CancelScope()
        if cancellable:
            self._waits.add(scope)
        try:
            with scope:
                answer.set_result(await afn())
        except Exception as exc:
            answer.set_exception(_unwrapped(exc))
        finally:
            self._waits.discard(scope)
            if not answer.done():  # cancelled: by close(), or the loop is going down
                answer.set_exception(closed("the client closed while waiting"))

    @overload
    def kicker(
        self, task: AsyncTaskiqDecoratedTask[P, R] | AsyncKicker[P, R]
    ) -> AsyncKicker[P, R]: ...

    @overload
    def kicker(self, task: str) -> AsyncKicker[..., Any]: ...

    def kicker(
        self, task: AsyncTaskiqDecoratedTask[Any, Any] | AsyncKicker[Any, Any] | str
    ) -> AsyncKicker[Any, Any]:
        """A kicker that sends through this client: ``with_labels``, ``with_delay``,
        ``with_priority``... then pass it to :meth:`kiq`. A task's kicker keeps its labels."""
        if isinstance(task, str):
            return AsyncKicker(task, self.broker, {})
        source = task.kicker() if isinstance(task, AsyncTaskiqDecoratedTask) else task
        kicker: AsyncKicker[Any, Any] = AsyncKicker(
            source.task_name, self.broker, dict(source.labels), source.return_type
        )
        kicker.task_id = source.task_id
        return kicker

    @overload
    def kiq(
        self,
        task: AsyncTaskiqDecoratedTask[P, R] | AsyncKicker[P, R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> SyncTaskiqTask[R]: ...

    @overload
    def kiq(self, task: str, /, *args: Any, **kwargs: Any) -> SyncTaskiqTask[Any]: ...

    def kiq(
        self,
        task: AsyncTaskiqDecoratedTask[Any, Any] | AsyncKicker[Any, Any] | str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> SyncTaskiqTask[Any]:
        """Send ``task`` (a decorated task, its name, or a kicker with labels) with these
        arguments; returns once the broker has it. Raises as ``kiq`` does
        (``SendTaskError``, ``UnknownTaskError``)."""
        kiq = functools.partial(self.kicker(task).kiq, *args, **kwargs)
        handle = self._call(kiq, SendTaskError, cancellable=False)  # close waits for kicks
        return SyncTaskiqTask(self, handle)

    def task(self, task_id: str) -> SyncTaskiqTask[Any]:
        """The handle of a task kicked earlier, from its id."""
        return SyncTaskiqTask(self, AsyncTaskiqTask(task_id, self.broker))


class SyncTaskiqTask(Generic[R]):
    """The blocking handle of a kicked task: ``AsyncTaskiqTask``'s calls, each run on
    the client's loop."""

    def __init__(self, client: Client, handle: AsyncTaskiqTask[R]) -> None:
        self.client = client
        self.handle = handle

    @property
    def task_id(self) -> str:
        return self.handle.task_id

    def __repr__(self) -> str:
        return f"<SyncTaskiqTask {self.task_id}>"

    def is_ready(self) -> bool:
        return self.client.run(self.handle.is_ready)

    def get_result(self, with_logs: bool = False) -> TaskiqResult[R]:
        """The stored result; ``ResultGetError`` if there is none (yet)."""
        return self.client.run(functools.partial(self.handle.get_result, with_logs))

    def wait_result(
        self, check_interval: float = 0.2, timeout: float | None = -1.0, with_logs: bool = False
    ) -> TaskiqResult[R]:
        """Block until the result comes; ``TaskiqResultTimeoutError`` past a positive
        ``timeout``."""
        wait = functools.partial(self.handle.wait_result, check_interval, timeout, with_logs)
        return self.client.run(wait)

    def get_progress(self) -> TaskProgress[Any] | None:
        return self.client.run(self.handle.get_progress)

    def status(self) -> TaskStatus:
        return self.client.run(self.handle.status)

    def info(self) -> TaskInfo | None:
        return self.client.run(self.handle.info)

    def abort(self, timeout: float | None = 5) -> bool:
        """Remove a waiting task, or cancel a running one; False if it already ended."""
        return self.client.run(functools.partial(self.handle.abort, timeout))
