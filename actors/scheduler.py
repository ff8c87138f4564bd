"""The scheduler: an actor that kicks tasks when their schedules come due.

Theory of operation. The :class:`SchedulerActor` keeps, for every schedule of every
source, the next *due time* (a wall-clock ``pendulum.DateTime`` computed by the schedule:
cron, one-off time or interval). A timer task sleeps on trio's clock until the earliest
due time (converted from the wall clock when it goes to sleep), then tells the actor
``Tick``; the actor kicks what is due and the timer sleeps again. Nothing polls: a source
change (``notify_changed``) wakes a watcher that tells the actor ``Reload``, and every
message re-arms the timer. The timer also wakes every ``clock_check_interval`` seconds
(60 by default) to notice a wall clock that jumped (suspend, NTP).

For each due time the actor asks the schedule's source to ``claim`` it; only the
scheduler whose claim succeeds runs ``pre_send``, kicks the task on the broker and runs
``post_send``. So two schedulers reading one source kick each due time once.

Backlogs: a schedule the actor has not seen yet starts at its first due time from now;
one with ``max_schedule_drift`` resumes after its last claimed due time instead (the
source remembers it), kicking each missed due time once, at most that far back. While
running, a due time reached more than ``max_schedule_drift`` late (the scheduler's, 1
second by default, or the schedule's if larger) is skipped, not kicked. One-off times
fire once, also when already past.

Errors are contained: a source whose ``startup`` or ``get_schedules`` raises is logged
and retried every ``source_retry_interval`` seconds, keeping the schedules it last gave;
a claim, hook or kick that raises is logged and skips that due time. The actor's state
lives on the :class:`TaskiqScheduler`, so a restart by its supervisor continues with the
same due times.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Self

import attrs
import pendulum
import trio

from .middlewares import maybe_await
from .protocol import ScheduleRow, SchedulesReport, Unschedule
from .runtime import Actor, ActorError, ActorRef, ChildSpec, Node, Supervisor, exponential_backoff
from .schedules import ScheduledTask, ScheduledTaskCancelledError, ScheduleSource
from .service import Service
from .tasks import AsyncKicker, AsyncTaskiqDecoratedTask

if TYPE_CHECKING:
    from .facade import AsyncBroker

__all__ = ["Inspect", "Reload", "SchedulerActor", "TaskiqScheduler", "Tick"]

log = logging.getLogger("actors.scheduler")

WallClock = Callable[[], pendulum.DateTime]


# Messages ----------------------------------------------------------------------------


@attrs.frozen
class Tick:
    """The timer: something may be due."""


@attrs.frozen
class Reload:
    """Source number ``index`` changed: read its schedules again."""

    index: int


@attrs.frozen
class Inspect:
    """Reply: ``{schedule_id: next due time or None}`` over every source."""


SchedulerRequest = Tick | Reload | Inspect | Unschedule


# State that survives a restart of the actor -------------------------------------------


@attrs.define(eq=False)
class _Entry:
    task: ScheduledTask
    next_due: pendulum.DateTime | None


@attrs.define(eq=False)
class _SourceState:
    source: ScheduleSource
    started: bool = False
    entries: dict[str, _Entry] = attrs.field(factory=dict)
    #: trio times at which to retry a failed source, or to re-read it.
    retry_at: float | None = None
    refresh_at: float | None = None
    #: A Reload is on its way: a burst of changes is read once, not once per change.
    reload_pending: bool = False


class SchedulerActor(Actor[SchedulerRequest]):
    """Due times, claims and kicks for one :class:`TaskiqScheduler`."""

    def __init__(self, scheduler: TaskiqScheduler) -> None:
        self.scheduler = scheduler
        self.sources = scheduler._sources
        self._rearm = trio.Event()

    async def started(self) -> None:
        for index, state in enumerate(self.sources):
            state.reload_pending = False
            self.nursery.start_soon(self._watch, index)
            await self._load(index)
        self.nursery.start_soon(self._timer)
        await self._report()

    async def receive(self, message: SchedulerRequest) -> Any:
        answer: Any = None
        if isinstance(message, Tick):
            await self._tick()
        elif isinstance(message, Reload):
            self.sources[message.index].reload_pending = False
            await self._load(message.index)
        elif isinstance(message, Unschedule):
            answer = await self._unschedule(message.schedule_id)
        else:
            answer = {
                schedule_id: entry.next_due
                for state in self.sources
                for schedule_id, entry in state.entries.items()
            }
        self._rearm.set()
        if not isinstance(message, Inspect):
            await self._report()
        return answer

    # Reporting to the broker (the dashboard lists and deletes schedules there) ---------

    async def _report(self) -> None:
        """Tell the broker our schedules and their next due times: after every look at
        them, so a restarted hub learns them at the next tick (a minute at most)."""
        broker = getattr(self.scheduler.broker, "broker_ref", None)
        if broker is None:
            return
        node = self.node.name
        rows = [
            ScheduleRow(schedule_id, entry.task.task_name, _when(entry.task), entry.next_due, node)
            for state in self.sources
            for schedule_id, entry in state.entries.items()
        ]
        with contextlib.suppress(ActorError):  # no hub now: the next report tells it
            await broker.tell(SchedulesReport(self.ref, rows))

    async def _unschedule(self, schedule_id: str) -> bool:
        for index, state in enumerate(self.sources):
            if schedule_id in state.entries:
                try:
                    await state.source.delete_schedule(schedule_id)
                except Exception:
                    log.exception(
                        "schedule %r: deleting it from %r failed", schedule_id, state.source
                    )
                    return False
                await self._load(index)
                return True
        return False

    # Loading sources -------------------------------------------------------------------

    async def _load(self, index: int) -> None:
        state = self.sources[index]
        source = state.source
        try:
            if not state.started:
                await source.startup()
                state.started = True
            schedules = await source.get_schedules()
        except Exception:
            retry = self.scheduler.source_retry_interval
            log.exception("schedule source %r failed; retrying in %ss", source, retry)
            state.retry_at = trio.current_time() + retry
            return
        state.retry_at = None
        if source.refresh_interval is not None:
            state.refresh_at = trio.current_time() + source.refresh_interval
        now = self.scheduler.now()
        entries: dict[str, _Entry] = {}
        for task in schedules:
            if task.schedule_id in entries:
                log.warning("source %r: duplicate schedule id %r", source, task.schedule_id)
            old = state.entries.get(task.schedule_id)
            if old is not None and old.task == task:
                entries[task.schedule_id] = old
                continue
            try:
                first = await self._first_due(source, task, now)
            except ValueError as exc:
                log.error("schedule %r of %r: %s", task.schedule_id, task.task_name, exc)
                continue
            entries[task.schedule_id] = _Entry(task, first)
        state.entries = entries

    async def _first_due(
        self, source: ScheduleSource, task: ScheduledTask, now: dt.datetime
    ) -> pendulum.DateTime | None:
        """Where a schedule the actor has not seen yet starts.

        A one-off: its time, unless already claimed. Otherwise the first due time at or
        after now, except that a schedule with ``max_schedule_drift`` resumes after its
        last claimed due time, at most that far back: the backlog it asked for.
        """
        try:
            last = await source.last_claim(task)
        except Exception:
            log.exception("source %r: reading the last claim of %r failed", source, task)
            last = None
        if task.time is not None:
            first = task.first_due(now, 0.0)  # the time, in UTC
            return None if first is None or (last is not None and last >= first) else first
        drift = task.max_schedule_drift
        if last is None or not drift:
            return task.first_due(now, 0.0)
        floor = now - dt.timedelta(seconds=drift) - dt.timedelta(microseconds=1)
        return task.next_due(max(last, floor))

    async def _watch(self, index: int) -> None:
        state = self.sources[index]
        while True:
            await state.source.changed_event().wait()
            if not state.reload_pending:
                state.reload_pending = True
                await self.ref.tell(Reload(index))

    # Time ------------------------------------------------------------------------------

    def _drift(self, task: ScheduledTask) -> float:
        """How late a due time may be kicked while running: the scheduler's bound, or the
        schedule's own if larger (a real scheduler always wakes a little late)."""
        return max(self.scheduler.max_schedule_drift, task.max_schedule_drift or 0.0)

    def _deadline(self) -> float:
        """The trio time of the next thing to do."""
        now = trio.current_time()
        wall = self.scheduler.now()
        check = self.scheduler.clock_check_interval
        deadline = math.inf if check is None else now + check
        for state in self.sources:
            for at in (state.retry_at, state.refresh_at):
                if at is not None:
                    deadline = min(deadline, at)
            for entry in state.entries.values():
                if entry.next_due is not None:
                    wait = (entry.next_due - wall).total_seconds()
                    deadline = min(deadline, now + max(0.0, wait))
        return deadline

    async def _timer(self) -> None:
        while True:
            with trio.move_on_at(self._deadline()):
                await self._rearm.wait()
            if not self._rearm.is_set():
                await self.ref.tell(Tick())
                await self._rearm.wait()
            self._rearm = trio.Event()

    async def _tick(self) -> None:
        now_trio = trio.current_time()
        for index, state in enumerate(self.sources):
            if (state.retry_at is not None and state.retry_at <= now_trio) or (
                state.refresh_at is not None and state.refresh_at <= now_trio
            ):
                await self._load(index)
        now = self.scheduler.now()
        while True:
            found = self._earliest_due(now)
            if found is None:
                return
            state, entry = found
            await self._advance(state, entry, now)

    def _earliest_due(self, now: dt.datetime) -> tuple[_SourceState, _Entry] | None:
        best: tuple[_SourceState, _Entry] | None = None
        best_due = now
        for state in self.sources:
            for entry in state.entries.values():
                due = entry.next_due
                if due is not None and (due < best_due or (best is None and due == best_due)):
                    best, best_due = (state, entry), due
        return best

    async def _advance(self, state: _SourceState, entry: _Entry, now: dt.datetime) -> None:
        """Handle the entry's next due time (fire or skip it) and compute the one after."""
        task, due = entry.task, entry.next_due
        assert due is not None
        drift = self._drift(task)
        try:
            if not task.one_off and due < now - dt.timedelta(seconds=drift):
                entry.next_due = task.first_due(now, drift)
                log.warning(
                    "schedule %r of %r: skipped due times from %s to before %s "
                    "(more than %ss late)",
                    task.schedule_id,
                    task.task_name,
                    due,
                    entry.next_due,
                    drift,
                )
                return
            entry.next_due = task.next_due(due)
        except ValueError as exc:
            log.error("schedule %r of %r: %s", task.schedule_id, task.task_name, exc)
            entry.next_due = None
            return
        await self._fire(state.source, task, due)

    async def _fire(self, source: ScheduleSource, task: ScheduledTask, due: dt.datetime) -> None:
        try:
            if not await source.claim(task, due):
                log.debug("schedule %r due %s was claimed elsewhere", task.schedule_id, due)
                return
            await maybe_await(source.pre_send(task))
        except ScheduledTaskCancelledError:
            log.info("schedule %r due %s cancelled by its source", task.schedule_id, due)
            return
        except Exception:
            log.exception("schedule %r due %s: source %r failed", task.schedule_id, due, source)
            return
        try:
            labels = {
                **task.labels,
                "schedule_id": task.schedule_id,
                "schedule_due": pendulum.instance(due).in_tz("UTC").isoformat(),
            }
            kicker: AsyncKicker[Any, Any] = AsyncKicker(
                task.task_name, self.scheduler.broker, labels
            )
            await kicker.kiq(*task.args, **task.kwargs)
        except Exception:
            log.exception("schedule %r due %s: kicking %r failed", task.schedule_id, due, task)
            return
        self.scheduler.kicked += 1
        try:
            await maybe_await(source.post_send(task))
        except Exception:
            log.exception("schedule %r: post_send of %r failed", task.schedule_id, source)


def _when(task: ScheduledTask) -> str:
    if task.cron is not None:
        offset = f" ({task.cron_offset})" if task.cron_offset is not None else ""
        return f"cron {task.cron}{offset}"
    if task.interval is not None:
        return f"every {task.interval:g} s"
    return f"once at {task.time}"


class TaskiqScheduler(Service):
    """Kicks tasks on ``broker`` when schedules from ``sources`` come due.

    ``async with scheduler:`` runs the scheduler actor (under its own supervisor) for the
    block, beside ``async with broker:``; ``await scheduler.run()`` runs it until
    cancelled. ``startup()``/``shutdown()`` are the taskiq-style pair.

    ``wall_clock`` returns the current time (``pendulum``); by default the broker's
    ``wall_clock`` if it has one, else ``pendulum.now("UTC")``. Tests inject one that
    follows trio's clock. ``max_schedule_drift`` (seconds) bounds how late a due time may
    still be kicked while running (a schedule's own ``max_schedule_drift`` extends it).
    ``clock_check_interval`` caps each sleep, to notice wall-clock jumps (None: no cap);
    a failing source is retried every ``source_retry_interval`` seconds. ``node`` runs the
    actor on an existing node instead of a node of its own.
    """

    def __init__(
        self,
        broker: AsyncBroker,
        sources: Sequence[ScheduleSource],
        *,
        wall_clock: WallClock | None = None,
        max_schedule_drift: float = 1.0,
        clock_check_interval: float | None = 60.0,
        source_retry_interval: float = 5.0,
        node: Node | None = None,
        name: str | None = None,
    ) -> None:
        self.broker = broker
        self.sources = list(sources)
        if wall_clock is None:
            wall_clock = getattr(broker, "wall_clock", None) or (lambda: pendulum.now("UTC"))
        self.wall_clock: WallClock = wall_clock
        self.max_schedule_drift = max_schedule_drift
        self.clock_check_interval = clock_check_interval
        self.source_retry_interval = source_retry_interval
        self.name = name or f"scheduler-{uuid.uuid4().hex[:8]}"
        #: How many tasks this scheduler has kicked.
        self.kicked = 0
        self._node = node
        self._sources = [_SourceState(source) for source in self.sources]
        self._actor_name = f"{self.name}.actor"
        self._running_on: Node | None = None

    def now(self) -> pendulum.DateTime:
        """The wall clock, in UTC (the scheduler compares every time in UTC)."""
        return pendulum.instance(self.wall_clock()).in_tz("UTC")

    def attach(self, node: Node) -> Self:
        """Run the scheduler actor on ``node`` (embedding in your own actor system)."""
        self._node = node
        return self

    @property
    def ref(self) -> ActorRef[SchedulerRequest]:
        """The scheduler actor's address (its current incarnation)."""
        if self._running_on is None:
            raise RuntimeError("the scheduler is not running: use `async with scheduler:`")
        return self._running_on.ref(self._actor_name)

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """The actor, under a supervisor of its own; sources are started and read before
        startup returns, and shut down after the actor stops."""
        # A fresh start: due times are computed again (from the sources' claims).
        self._sources = [_SourceState(source) for source in self.sources]
        # On a running WebSocketBroker's node, the hub can reach the actor (to unschedule).
        node = self._node or getattr(self.broker, "node", None)
        if node is None:
            node = await stack.enter_async_context(Node.open(self.name))
        stack.push_async_callback(self._shutdown_sources)
        actor_name = self._actor_name

        def supervisor() -> Supervisor:
            return Supervisor(
                [ChildSpec(actor_name, lambda: SchedulerActor(self))],
                max_restarts=5,
                within=10.0,
                backoff=exponential_backoff(0.1, 5.0),
            )

        await node.spawn_supervisor(supervisor, name=self.name)
        stack.push_async_callback(node.root.stop_child, self.name)
        self._running_on = node
        stack.callback(setattr, self, "_running_on", None)

    async def run(self) -> NoReturn:
        """Run until cancelled (what ``actors scheduler MODULE:SCHEDULER`` calls)."""
        async with self:
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def next_due_times(self) -> dict[str, pendulum.DateTime | None]:
        """``{schedule_id: next due time}`` as the actor sees it now (None: no more)."""
        answer = await self.ref.ask(Inspect())
        assert isinstance(answer, dict)
        return answer

    async def unschedule(self, target: str | AsyncTaskiqDecoratedTask[Any, Any]) -> int:
        """Delete a schedule by id, or every schedule of a task, from every source that
        holds it (streaq's ``unschedule``); returns how many were deleted.

        ``await scheduler.unschedule(nightly)`` also stops a ``crontab=`` or ``schedule=``
        label of ``nightly`` (for the life of that ``LabelScheduleSource``).
        """
        deleted = 0
        for source in self.sources:
            for schedule in await source.get_schedules():
                if isinstance(target, str):
                    wanted = schedule.schedule_id == target
                else:
                    wanted = schedule.task_name == target.task_name
                if wanted:
                    await source.delete_schedule(schedule.schedule_id)
                    deleted += 1
        return deleted

    async def _shutdown_sources(self) -> None:
        for state in self._sources:
            if state.started:
                state.started = False
                try:
                    await state.source.shutdown()
                except Exception:
                    log.exception("schedule source %r failed to shut down", state.source)
