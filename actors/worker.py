"""The worker: runs tasks on a pool of runners, one per unit of capacity.

It announces its capacity to the broker, runs every task it is handed on one of its
runners (long-lived tasks), stores the result through the result store, and has a
reporter task tell the broker how runs ended (all that ended together in one message).
Sync tasks run in a bounded thread pool (:class:`SyncThreads`); an aborted or timed-out
one is abandoned and its result ignored. Dependency injection is taskiq-dependencies, as
in taskiq.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
import outcome
import trio

from .context import Context, RunControl, current_run, request_rerun
from .events import TaskiqState
from .exceptions import (
    NoResultError,
    ResultGetError,
    SerializationError,
    TaskiqError,
    TaskTimeoutError,
    UnknownTaskError,
)
from .inputs import check_labels, int_label, seconds_label, ttl_label
from .logs import TASK_EVENTS, task_event
from .middlewares import FINAL_ERRORS, TaskiqMiddleware, maybe_await
from .protocol import (
    BrokerRequest,
    EncodedResult,
    Finished,
    FinishRuns,
    GetResult,
    Reannounce,
    Run,
    RunEnded,
    Runs,
    StoreRequest,
    StoreResult,
    WorkerReady,
    WorkerRequest,
)
from .result import TaskiqMessage, TaskiqResult, result_to_wire, utc_now
from .results import open_result
from .roles import Broker
from .runtime import Actor, ActorError, ActorRef, Reply
from .runtime.contexts import in_context

if TYPE_CHECKING:
    from .formatter import TaskiqFormatter
    from .serializers import TaskiqSerializer
    from .tasks import AsyncTaskiqDecoratedTask

__all__ = ["SyncThreads", "WorkerActor"]

log = logging.getLogger("actors.worker")

T = TypeVar("T")


class TaskHost(Broker, Protocol):
    """What a worker uses of its broker: the registered tasks and how to run them."""

    middlewares: list[TaskiqMiddleware]
    formatter: TaskiqFormatter
    serializer: TaskiqSerializer
    dependency_context: dict[Any, Any]
    cast_types: bool
    propagate_exceptions: bool

    def find_task(self, task_name: str) -> AsyncTaskiqDecoratedTask[Any, Any] | None: ...

    def task_names(self) -> list[str]: ...


_incarnations = itertools.count(1)

#: Result label marking a tuple return value (serializers turn tuples into lists).
RETURNED_TUPLE = "returned_tuple"


class SyncThreads:
    """The threads sync tasks run in: ``size`` runs at a time, and at most ``2 * size``
    threads in all.

    Python cannot kill a thread, so a run that is aborted or times out abandons its
    thread, which goes on until its function returns. The run's slot is freed at once,
    so the next sync task does not wait for it. Up to ``size`` abandoned threads cost
    nothing more; beyond that, each one still going holds back one run until it ends
    (with a warning), so a task that never returns cannot pile up threads.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._runs = trio.CapacityLimiter(size)
        # trio releases a thread's token only when the thread has really ended.
        self._threads = trio.CapacityLimiter(2 * size)

    async def run(self, call: Callable[[], T]) -> T:
        async with self._runs:
            if self._threads.available_tokens == 0:
                log.warning(
                    "a sync task waits for a thread: more than %d threads of aborted or "
                    "timed-out sync tasks are still running",
                    self.size,
                )
            return await trio.to_thread.run_sync(
                call, limiter=self._threads, abandon_on_cancel=True
            )


class WorkerActor(Actor[WorkerRequest]):
    """Runs up to ``capacity`` tasks at once; the broker never sends more.

    With ``encode_results`` it hands the store results encoded with the broker's
    serializer (a store on a hub, which never decodes user data)."""

    #: Seconds between tellings of the runs' ends while the broker cannot be reached.
    retry_interval = 0.5

    def __init__(
        self,
        broker: TaskHost,
        broker_ref: ActorRef[BrokerRequest],
        store: ActorRef[StoreRequest],
        worker_id: str,
        capacity: int,
        sync_threads: SyncThreads,
        *,
        encode_results: bool = False,
    ) -> None:
        self.broker = broker
        self.broker_ref = broker_ref
        self.store = store
        self.worker_id = worker_id
        self.capacity = capacity
        self.mailbox_size = 2 * capacity + 16  # runs are credit-bounded; cancels are few
        self.sync_threads = sync_threads
        self.encode_results = encode_results
        self.incarnation = next(_incarnations)  # a restart builds a new instance
        self._scopes: dict[str, trio.CancelScope] = {}

    async def started(self) -> None:
        # Runs waiting for a runner: the broker's credit keeps them at most ``capacity``
        # (a restart may briefly add the runs it delivers again).
        self._pending: collections.deque[Run] = collections.deque()
        self._idle: list[trio.lowlevel.Task] = []  # runners asleep in _wait_for_a_run
        self._waking = 0  # runners woken that have not yet looked at _pending
        self._ended: list[RunEnded] = []  # for the broker, at the reporter's next turn
        # Results told to the store since the reporter's last turn (their ends are in
        # _ended), and results to tell it again before those ends: see _reporter.
        self._told: list[StoreResult] = []
        self._unsent: list[StoreResult] = []
        self._reporter_asleep: trio.lowlevel.Task | None = None
        self._held = 0  # runs handed to this worker whose end is not yet reported
        self._finishing: list[Reply] = []  # FinishRuns asks, answered once _held is 0
        for _ in range(self.capacity):
            self.nursery.start_soon(self._runner)
        self.nursery.start_soon(self._reporter)
        try:
            await self._announce([])
        except ActorError as exc:  # a remote broker's link is down: see Reannounce
            log.warning("worker %s could not announce itself: %s", self.worker_id, exc)

    async def _announce(self, holding: list[str]) -> None:
        ref, tasks = self.ref, self.broker.task_names()
        ready = WorkerReady(
            ref.node_name, ref.name, self.worker_id, self.capacity, self.incarnation, tasks, holding
        )
        await self.broker_ref.tell(ready)

    async def receive(self, message: WorkerRequest) -> None:
        if isinstance(message, Runs):
            if message.incarnation != self.incarnation:
                return  # meant for this worker before it restarted (see Runs)
            self._pending.extend(message.runs)
            self._held += len(message.runs)
            self._wake_runners(1, by_runner=False)
        elif isinstance(message, Reannounce):
            held = [run.message.task_id for run in self._pending]
            held += self._scopes
            held += [ended.task_id for ended in self._ended]
            with contextlib.suppress(ActorError):  # the link went again: so will this
                await self._announce(held)
        elif isinstance(message, FinishRuns):
            reply = self.defer_reply()
            if reply is not None:
                self._finishing.append(reply)
                self._answer_finishing()
        else:
            self._cancel(message.task_id)

    def _answer_finishing(self) -> None:
        """Answer the FinishRuns asks once every run held has ended and been reported."""
        if self._finishing and not self._held:
            for reply in self._finishing:
                reply.resolve(None)
            self._finishing.clear()

    def _cancel(self, task_id: str) -> None:
        """Cancel a run, or drop it if no runner has taken it yet. A run that is not
        found has ended: the broker learns how from its report."""
        scope = self._scopes.pop(task_id, None)  # taken: its run learns it was aborted
        if scope is not None:
            scope.cancel()
            return
        for run in self._pending:
            if run.message.task_id == task_id:
                self._pending.remove(run)
                task_event("aborted", task_id, run.message.task_name)
                self._run_ended(RunEnded(task_id, "aborted", delivery=run.tries))
                return

    async def _runner(self) -> None:
        """Run tasks one after another, each in a fresh copy of this task's context.

        An abort cancels the runner's scope, which ends the runner (a new one takes its
        place): cheaper than a task and a cancel scope for every run.
        """
        base = contextvars.copy_context()
        run: Run | None = None
        with trio.CancelScope() as scope:
            while True:
                woken_by_runner = False
                while not self._pending:
                    self.node.flush_links()  # its report leaves now: it waits next
                    woken_by_runner = await self._wait_for_a_run()
                run = self._pending.popleft()
                if self._pending:  # in case this run blocks: see _wake_runners
                    wanted = min(len(self._pending), self._waking + 2) if woken_by_runner else 1
                    self._wake_runners(wanted, by_runner=True)
                if await in_context(self._run(run, scope), base.copy()):
                    break  # an abort came as the run ended: retire this runner anyway
        if scope.cancel_called:
            self.nursery.start_soon(self._runner)
        if scope.cancelled_caught and run is not None:
            task_event("aborted", run.message.task_id, run.message.task_name)
            self._run_ended(RunEnded(run.message.task_id, "aborted", delivery=run.tries))

    def _run_ended(self, ended: RunEnded) -> None:
        self._ended.append(ended)
        self._wake_reporter()

    def _wake_reporter(self) -> None:
        if self._reporter_asleep is not None:
            trio.lowlevel.reschedule(self._reporter_asleep)
            self._reporter_asleep = None

    async def _reporter(self) -> None:
        """Tell the broker how runs ended: all that ended since its last turn in one
        message. Runs that never block end many to a turn (see ``_wake_runners``).

        While the hub's link is down, the ends wait here (with their results, told again
        first: their first telling may have been lost with the link), and are told again
        every ``retry_interval`` seconds: a hub that comes back within its reclaim timeout
        takes them (see :meth:`~actors.broker.BrokerActor._recover`)."""

        def cancelled(_: object) -> trio.lowlevel.Abort:
            self._reporter_asleep = None
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            if not self._ended:
                self._reporter_asleep = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(cancelled)
            if not await self._tell_ends():
                await trio.sleep(self.retry_interval)

    async def _tell_ends(self) -> bool:
        """Tell the store the results not yet told, then the broker the ends waiting;
        False if the hub's link is down (they wait for the reporter's next turn)."""
        ended, self._ended = self._ended, []
        told, self._told = self._told, []
        unsent, self._unsent = self._unsent, []
        try:
            for stored in unsent:
                await self.store.tell(stored)
            await self.broker_ref.tell(Finished(self.worker_id, ended))
        except ActorError:
            self._unsent[:0] = unsent + told
            self._ended[:0] = ended
            return False
        self._held -= len(ended)
        self._answer_finishing()
        return True

    def _wake_runners(self, wanted: int, *, by_runner: bool) -> None:
        """Have ``wanted`` runners on their way to the waiting runs, counting those woken.

        A runner that takes a run while more wait wakes one other first, in case its run
        blocks: runs that never block are then taken one after another by the same
        runner, and the one it woke finds nothing left. A runner woken by another that
        still finds runs waiting knows that one blocked, so it wakes two: the runners on
        their way double each round, until every waiting run has one.
        """
        while self._waking < wanted and self._idle:
            self._waking += 1
            trio.lowlevel.reschedule(self._idle.pop(), outcome.Value(by_runner))

    async def _wait_for_a_run(self) -> bool:
        """Sleep until woken; True if another runner woke this one.

        trio's own low-level sleep, as a parking lot does, with less work on the path
        every run takes.
        """
        task = trio.lowlevel.current_task()

        def cancelled(_: object) -> trio.lowlevel.Abort:
            self._idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        self._idle.append(task)
        woken_by_runner: bool = await trio.lowlevel.wait_task_rescheduled(cancelled)
        self._waking -= 1
        return woken_by_runner

    async def _run(self, run: Run, scope: trio.CancelScope) -> bool:
        """One run, start to report; True if an abort cancelled ``scope`` as it ended."""
        task_id = run.message.task_id
        control = RunControl()
        current_run.set(control)
        self._scopes[task_id] = scope
        try:
            result = await self._execute(run)
        finally:
            # Gone: _cancel took it and cancelled ``scope``. (Asking ``scope.cancel_called``
            # reads trio's clock: 2.5k instructions a run.)
            aborted = self._scopes.pop(task_id, None) is None
        if aborted:
            with trio.CancelScope(shield=True):
                await self._report(run, result, control)
            return True
        await self._report(run, result, control)
        return False

    async def _report(
        self, run: Run, result: TaskiqResult[Any] | None, control: RunControl
    ) -> None:
        """Store the result (unless the run asked to run again) and tell the broker."""
        task_id = run.message.task_id
        if control.rerun is not None:
            task_event("retried", task_id, run.message.task_name, delay=control.rerun.delay)
            self._run_ended(
                RunEnded(
                    task_id,
                    "again",
                    delay=control.rerun.delay,
                    labels=control.rerun.labels,
                    delivery=run.tries,
                )
            )
            return
        ttl = ttl_label(run.message.labels) if run.message.labels else None  # most have none
        if self.encode_results and result is not None:
            stored = StoreResult(task_id, self._encoded(result), ttl)
        else:
            stored = StoreResult(task_id, result, ttl)
        told: StoreResult | None = None
        try:
            await self.store.tell(stored)
        except ActorError:  # the hub's link is down: the reporter tells it again
            self._unsent.append(stored)
        else:
            told = stored
        if result is not None:
            for middleware in self.broker.middlewares:
                await maybe_await(middleware.post_save(self._message_of(run), result))
        is_err = result is None or result.is_err
        if told is not None:  # with its end, in case the reporter finds the link gone
            self._told.append(told)
        ended = RunEnded(task_id, "done", is_err=is_err, delivery=run.tries)
        if self._held == 1 and not self._ended and self._reporter_asleep is not None:
            # The only run held: its end goes now, in the link message that carries its
            # result, rather than at the reporter's turn (often a message of its own).
            self._ended.append(ended)
            if not await self._tell_ends():
                self._wake_reporter()  # it tells them again
            return
        self._run_ended(ended)

    def _encoded(self, result: TaskiqResult[Any]) -> EncodedResult:
        """The result as bytes for the store; a serializer failure stored in its place."""
        serializer = self.broker.serializer
        try:
            return EncodedResult(result_to_wire(result, serializer), result.is_err)
        except SerializationError as exc:
            failed = attrs.evolve(result, is_err=True, return_value=None, error=exc)
            return EncodedResult(result_to_wire(failed, serializer), True)

    def _message_of(self, run: Run) -> TaskiqMessage:
        return TaskiqMessage(
            task_id=run.message.task_id,
            task_name=run.message.task_name,
            labels=dict(run.message.labels),
        )

    async def _execute(self, run: Run) -> TaskiqResult[Any] | None:
        """Run one task; None when no result is to be stored (``NoResultError``)."""
        broker = self.broker
        start_time = utc_now()
        started = time.perf_counter()
        task_name = run.message.task_name
        logged = TASK_EVENTS.isEnabledFor(logging.INFO)  # "started" and "succeeded"
        if logged:
            task_event("started", run.message.task_id, task_name, tries=run.tries)
        message: TaskiqMessage | None = None
        error: BaseException | None = None
        value: Any = None
        returned_tuple = False
        max_tries: int | None = None
        try:
            message = broker.formatter.loads(run.message.message)
            message.labels = dict(run.message.labels)
            for middleware in broker.middlewares:
                message = await maybe_await(middleware.pre_execute(message))
            if message.labels:  # most tasks carry none: nothing to check or read then
                check_labels(message.labels)  # kiq checked them, but a middleware may change them
                max_tries = int_label(message.labels, "max_tries", minimum=0)
            value = await self._call(message, run)
            returned_tuple = type(value) is tuple
            if type(value) not in _PLAIN:  # plain values come back unchanged
                value = _round_trip(broker, message.task_name, value)
        except NoResultError:
            return None
        except BaseException as exc:
            if _cancellation(exc):
                raise
            error = exc  # KeyboardInterrupt and SystemExit too: they end this task only
        finish_time = utc_now()
        duration = time.perf_counter() - started
        if error is None:
            if logged:
                task_event("succeeded", run.message.task_id, task_name, duration=duration)
        else:
            level = logging.WARNING
            task_event("failed", run.message.task_id, task_name, level, error=repr(error))
        labels = dict(run.message.labels)
        if error is None and returned_tuple:
            labels[RETURNED_TUPLE] = True  # so ``then`` unpacks it, as streaq does
        result: TaskiqResult[Any] = TaskiqResult(
            is_err=error is not None,
            return_value=value if error is None else None,
            execution_time=duration,
            labels=labels,
            error=error if broker.propagate_exceptions or error is None else None,
            task_id=run.message.task_id,
            tries=run.tries,
            worker_id=self.worker_id,
            enqueue_time=run.enqueue_time,
            start_time=start_time,
            finish_time=finish_time,
        )
        if message is None:
            message = self._message_of(run)
        for middleware in broker.middlewares:
            await maybe_await(middleware.post_execute(message, result))
        if error is not None:
            for middleware in broker.middlewares:
                await maybe_await(middleware.on_error(message, result, error))
            if (
                max_tries is not None
                and run.tries < max_tries
                and current_run.get().rerun is None
                and not isinstance(error, FINAL_ERRORS)
            ):
                request_rerun(0.0, dict(run.message.labels))  # streaq's max_tries
        if current_run.get().rerun is not None:
            return None
        return result

    async def _call(self, message: TaskiqMessage, run: Run) -> Any:
        broker = self.broker
        task = broker.find_task(message.task_name)
        if task is None:
            raise UnknownTaskError(task_name=message.task_name)
        args = list(message.args)
        parent = message.labels.get("then_of")
        if parent:
            stored = await self.store.ask(GetResult(parent))
            args = [*_parent_value(stored, parent, broker.serializer), *args]
        kwargs = dict(message.kwargs)
        if broker.cast_types:
            args, kwargs = task.cast_arguments(args, kwargs)
        timeout = seconds_label(message.labels, "timeout") if message.labels else None
        if task.dependency_graph.is_empty():
            return await self._invoke(task.original_func, task.is_async, args, kwargs, timeout)
        context = Context(message, broker)
        dependencies = task.dependency_graph.async_ctx(
            {Context: context, TaskiqState: broker.state, **broker.dependency_context}
        )
        try:
            kwargs.update(await dependencies.resolve_kwargs())
            return await self._invoke(task.original_func, task.is_async, args, kwargs, timeout)
        finally:
            await dependencies.close()

    async def _invoke(
        self,
        func: Callable[..., Any],
        is_async: bool,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Call the task function, in a worker thread if it is sync, within ``timeout``."""
        if timeout is None and is_async:
            return await func(*args, **kwargs)
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                if is_async:
                    return await func(*args, **kwargs)
                return await self.sync_threads.run(functools.partial(func, *args, **kwargs))
        except trio.TooSlowError:
            raise TaskTimeoutError(f"task timed out after {timeout}s", timeout=timeout) from None


#: Values every serializer gives back unchanged: no round trip needed.
_PLAIN = frozenset({type(None), bool, int, float, str})


def _round_trip(broker: TaskHost, task_name: str, value: Any) -> Any:
    """Send the return value through the serializer, as it would cross a cluster."""
    serializer = broker.serializer
    try:
        return serializer.loadb(serializer.dumpb(value))
    except Exception as exc:
        raise SerializationError(
            f"task {task_name!r} returned a {type(value).__qualname__} that cannot be serialized"
        ) from exc


def _cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is trio's cancellation (alone or grouped), which must propagate."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def _parent_value(stored: object, parent: str, serializer: TaskiqSerializer) -> list[Any]:
    """``then``: the parent's return value as positional arguments (tuples unpacked)."""
    try:
        result = open_result(stored, parent, serializer)
    except ResultGetError as exc:
        raise TaskiqError(f"the parent's result is gone: {exc}") from None
    value = result.return_value
    return list(value) if result.labels.get(RETURNED_TUPLE) else [value]
