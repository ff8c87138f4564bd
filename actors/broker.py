"""The broker role: the actor that owns the queue (what runs on the hub).

:class:`BrokerActor` accepts kicked tasks, orders them (priority, ETA, dependencies,
uniqueness), hands them to workers that have credit, and ends tasks that never run
(aborted, expired, failed dependency) with an error result so no waiter hangs. Its
state lives in a :class:`~actors.queue.TaskQueue` inside :class:`BrokerState`, which its
owner keeps, so a restarted actor continues with every task it had.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import attrs
import pendulum
import trio

from . import introspection
from .exceptions import DependencyFailedError, SendTaskError, TaskAbortedError, TaskExpiredError
from .hubstate import HubStateError, QueueStore
from .inputs import eta_label, ids_label, int_label, seconds_label, ttl_label
from .lifecycle import Phase
from .logs import TASK_EVENTS, task_event
from .protocol import (
    Abort,
    Accepted,
    Barrier,
    BrokerMessage,
    BrokerRequest,
    CancelRun,
    CopyResult,
    EncodedResult,
    Enqueue,
    Finished,
    GetCounters,
    GetOverview,
    GetResult,
    GetSchedules,
    GetTaskEvents,
    Inspect,
    Kick,
    ListTasks,
    LiveTask,
    NodeLost,
    Reannounce,
    ReclaimOver,
    Run,
    RunEnded,
    Runs,
    ScheduleList,
    ScheduleRow,
    SchedulesReport,
    Status,
    StatusReply,
    Stored,
    StoreRequest,
    StoreResult,
    Tick,
    Unschedule,
    Watch,
    WorkerLeaving,
    WorkerReady,
    WorkerRequest,
    WorkerTasks,
)
from .queue import TaskQueue, TaskRecord
from .result import TaskiqResult, result_to_wire
from .runtime import Actor, ActorError, ActorRef, LocalRef, Reply
from .serializers import TaskiqSerializer
from .stats import HubStats

__all__ = [
    "BrokerActor",
    "BrokerState",
    "unique_key",
]


log = logging.getLogger(__name__)

DateTime = pendulum.DateTime
#: How the stats count an end the broker reaches itself (a run's end says its own).
_OUTCOMES = {Phase.DONE: "failed", Phase.ABORTED: "aborted", Phase.EXPIRED: "expired"}
WallClock = Callable[[], DateTime]


def _later(start: DateTime, seconds: float) -> DateTime | None:
    """``seconds`` after ``start``; None after the year 9999."""
    try:
        return start + datetime.timedelta(seconds=seconds)
    except OverflowError:
        return None


async def _forward(to: ActorRef[Any], message: Any, reply: Reply) -> None:
    """Ask ``to`` and answer ``reply`` with its answer (False if it cannot)."""
    try:
        reply.resolve(await to.ask(message, timeout=10))
    except ActorError:
        reply.resolve(False)


def unique_key(task_name: str, arguments: bytes) -> str:
    """Equal task name and serialized arguments give equal keys (``unique=True``)."""
    return hashlib.blake2b(task_name.encode() + b"\0" + arguments, digest_size=16).hexdigest()


@attrs.define(eq=False)
class _WorkerSlot:
    ref: ActorRef[WorkerRequest]
    node: str
    capacity: int
    incarnation: int
    tasks: frozenset[str] | None  # None: every task (a worker of this process's broker)
    running: set[str] = attrs.field(factory=set)
    last_seen: float = attrs.field(factory=time.time)  # wall clock: its start or last report


@attrs.define(eq=False)
class BrokerState:
    """What survives a restart of the broker actor. With a durable ``store``, the queue
    is rebuilt from it at each start instead (see :meth:`BrokerActor.started`)."""

    queue: TaskQueue = attrs.field(factory=TaskQueue)
    store: QueueStore = attrs.field(factory=QueueStore)
    workers: dict[str, _WorkerSlot] = attrs.field(factory=dict)
    drains: list[Reply] = attrs.field(factory=list)
    aborts: dict[str, list[Reply]] = attrs.field(factory=lambda: collections.defaultdict(list))
    #: Kicks held while the queue is full, oldest first (see ``max_queued``).
    parked: dict[str, tuple[Kick | Enqueue, Reply | None]] = attrs.field(factory=dict)
    stats: HubStats = attrs.field(factory=HubStats)
    #: Each scheduler's last report (see ``SchedulesReport``).
    schedules: dict[ActorRef[Any], list[ScheduleRow]] = attrs.field(factory=dict)


class BrokerActor(Actor[BrokerRequest]):
    """Queue and dispatch. Every message is handled whole before the next one.

    It never decodes a task's arguments. The error results it stores itself are
    encoded with ``encode_with`` when the store keeps results encoded (on a hub),
    and kept as they are when it is None (in process)."""

    mailbox_size = 4096

    def __init__(
        self,
        state: BrokerState,
        store: ActorRef[StoreRequest],
        wall_clock: WallClock,
        encode_with: TaskiqSerializer | None = None,
        max_queued: int | None = None,
        reclaim_timeout: float = 10.0,
    ) -> None:
        self.state = state
        self.queue = state.queue
        self.store = store
        self.wall_clock = wall_clock
        self.encode_with = encode_with
        self._rearm = trio.Event()
        self._armed_for: float | None = None
        self._watched: set[str] = set()
        self._accepted: dict[tuple[str, str], list[str]] = {}  # acks owed, by client
        self._answers: list[tuple[Reply, Any]] = []  # Enqueue asks owed, once committed
        self.max_queued = max_queued
        #: Seconds a run recovered from the store waits for its worker to claim it back.
        self.reclaim_timeout = reclaim_timeout
        self.stats = state.stats

    async def started(self) -> None:
        #: Runs recovered from the store, until their worker claims them: task id: (its
        #: worker's id, the delivery it was handed). See _recover.
        self._unclaimed: dict[str, tuple[str, int]] = {}
        self.nursery.start_soon(self._timer)
        for slot in self.state.workers.values():
            self._watch(slot.node)
        await self._recover()

    async def receive(self, message: BrokerRequest) -> Any:
        answer: Any = None
        if isinstance(message, Enqueue):
            if self._full():
                self._park(message.message.task_id, message, self.defer_reply())
                return None
            answer = await self._enqueue(message.message)
            if self.state.store.durable:  # answered once committed (see drained)
                reply = self.defer_reply()
                if reply is not None:
                    self._answers.append((reply, answer))
                return None
            if self._free_worker() is not None:
                await self._dispatch()  # a task kicked while a worker has room starts first
        elif isinstance(message, Finished):
            await self._finished(message)
        elif isinstance(message, Kick):
            await self._kick(message)
        elif isinstance(message, Tick):
            await self._tick()
        elif isinstance(message, ReclaimOver):
            await self._requeue_unclaimed()
        elif isinstance(message, NodeLost):
            self._node_lost(message.node)
        elif isinstance(message, WorkerReady):
            await self._worker_ready(message)
        elif isinstance(message, WorkerTasks):
            slot = self.state.workers.get(message.worker_id)
            if slot is not None and slot.tasks is not None:
                slot.tasks = frozenset(message.tasks)
        elif isinstance(message, Abort):
            answer = await self._abort(message.task_id)
        elif isinstance(message, Inspect):
            answer = self._inspect(message.task_id)
        elif isinstance(message, Status):
            record = self.queue.live(message.task_id)
            answer = StatusReply(None if record is None else record.phase.status)
        elif isinstance(message, GetOverview):
            state = self.state
            answer = introspection.overview(
                self.node, self.queue.counts, state.workers, len(state.parked), self.stats,
                message.minutes,
            )  # fmt: skip
        elif isinstance(message, ListTasks):
            answer = introspection.list_tasks(self.queue.records, self.stats, message)
        elif isinstance(message, GetTaskEvents):
            answer = introspection.task_events(self.stats, self.queue.records, message.task_id)
        elif isinstance(message, GetCounters):
            answer = introspection.counters(self.stats)
        elif isinstance(message, SchedulesReport):
            self.state.schedules[message.scheduler] = message.rows
        elif isinstance(message, GetSchedules):
            answer = ScheduleList(self._schedules())
        elif isinstance(message, Unschedule):
            answer = self._unschedule(message)
        elif isinstance(message, WorkerLeaving):
            for slot in self.state.workers.values():
                if slot.node == message.node:
                    slot.capacity = 0  # its runs end as they would; no new ones
        else:
            self._drain()
        return answer

    async def drained(self) -> None:
        """After a batch of messages: take parked kicks into the room freed in it, have
        the store push the results of the kicks accepted to their clients, hand out the
        workers' room (to the highest priorities waiting), commit (one transaction for the
        batch), acknowledge the kicks, re-arm the timer, and tell ``wait_all`` callers once
        nothing is left."""
        if self.state.parked:
            await self._admit_parked()
        for (node, actor), task_ids in self._accepted.items():
            await self.store.tell(Watch(node, actor, task_ids))
        await self._dispatch()
        await self._commit()
        for reply, answer in self._answers:
            reply.resolve(answer)
        self._answers.clear()
        if self._accepted:
            await self._acknowledge()
        if self.queue.next_timer() != self._armed_for:
            self._rearm.set()
        if not self.queue.records and not self.state.parked and self.state.drains:
            for reply in self.state.drains:
                reply.resolve(None)
            self.state.drains.clear()

    # The store ---------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Rebuild the queue from a durable store (a start of the process, or of this actor
        after a crash): what was committed is all there is.

        A task that was running stays RUNNING, waiting for its worker to claim it back:
        one this actor still knows (it crashed, the links did not) is asked at once
        (:class:`Reannounce`); after a restart of the hub's process, a worker node
        announces its workers again when it has redialled. A run claimed within
        ``reclaim_timeout`` is its worker's again, its report accepted, its tries
        unchanged. A run nobody claims (its worker is gone, or its report was lost in the
        crash) is queued again, its tries kept (the next run counts one more)."""
        state = self.state
        queue = state.store.load(trio.current_time(), self.wall_clock().timestamp())
        if queue is None:
            return
        state.queue = self.queue = queue
        for slot in state.workers.values():
            slot.running.clear()
        for record in queue.records.values():
            if record.phase is Phase.RUNNING:
                assert record.worker_id is not None
                owner = state.workers.get(record.worker_id)
                if owner is not None:
                    owner.running.add(record.task_id)
                self._unclaimed[record.task_id] = (record.worker_id, record.tries)
        if self._unclaimed:
            for slot in state.workers.values():
                with contextlib.suppress(ActorError):  # its node is gone: see NodeLost
                    await slot.ref.tell(Reannounce())
            self.nursery.start_soon(self._reclaim_over)

    async def _claim(self, worker_id: str, slot: _WorkerSlot, holding: list[str]) -> None:
        """A worker announced the runs it holds: those recovered for it are its again;
        any other it does not run for this broker (it was queued again when its link
        went, or ended meanwhile) is cancelled there."""
        for task_id in holding:
            run = self._unclaimed.get(task_id)
            if run is not None and run[0] == worker_id:
                del self._unclaimed[task_id]
                slot.running.add(task_id)
                if task_id in self.state.aborts:  # aborted while nobody held it
                    with contextlib.suppress(ActorError):
                        await slot.ref.tell(CancelRun(task_id))
            elif task_id not in slot.running:
                with contextlib.suppress(ActorError):  # its node is gone: see NodeLost
                    await slot.ref.tell(CancelRun(task_id))

    async def _reclaim_over(self) -> None:
        await trio.sleep(self.reclaim_timeout)
        await self.ref.tell(ReclaimOver())

    async def _requeue_unclaimed(self) -> None:
        now = trio.current_time()
        unclaimed, self._unclaimed = self._unclaimed, {}
        for task_id, (worker_id, delivery) in unclaimed.items():
            record = self.queue.live(task_id)
            if record is None or record.phase is not Phase.RUNNING:
                continue  # it ended: its report came
            if record.worker_id == worker_id and record.tries == delivery:  # not handed out again
                slot = self.state.workers.get(worker_id)
                if slot is not None:
                    slot.running.discard(task_id)
                if task_id in self.state.aborts:
                    await self._run_ended(RunEnded(task_id, "aborted"))
                    continue
                task_event("requeued", task_id, record.message.task_name, worker=worker_id)
                self.queue.place(record, now)

    async def _commit(self) -> bool:
        """Write what changed since the last commit; False if it could not be written:
        then nothing of it is acknowledged (the clients send their kicks again, and an
        ``Enqueue`` ask fails), and the queue is rebuilt from what the store holds."""
        if not self.state.store.durable:
            return True  # nothing to write: spare the two clock readings, twice a batch
        changed = self.queue.changed
        if changed and not changed.keys() <= self.queue.records.keys():
            # Tasks ended in this batch. Their results reached the store before their ends
            # reached this actor (one link, in order): once it has written them, the file
            # may say the tasks ended, and a hub killed after that loses no result.
            await self.store.ask(Barrier())
        try:
            await self.state.store.commit(self.queue, trio.current_time(), self.wall_clock())
        except HubStateError as exc:
            log.error("%s: the kicks of the last moment are not acknowledged", exc)
            for reply, _ in self._answers:
                reply.fail(ActorError(f"the hub could not store the task: {exc}"))
            self._answers.clear()
            self._accepted.clear()
            await self._recover()
            return False
        return True

    # Accepting -------------------------------------------------------------------------

    def _full(self) -> bool:
        """Whether a kick must wait: the queue holds ``max_queued`` tasks, or older kicks
        wait (a new one does not overtake them)."""
        limit = self.max_queued
        return limit is not None and (bool(self.state.parked) or len(self.queue.records) >= limit)

    def _park(self, task_id: str, kick: Kick | Enqueue, reply: Reply | None) -> None:
        """Hold a kick that finds the queue full, unacknowledged (or its ask unanswered)
        until room frees: its sender waits, and the mailbox keeps draining. A kick already
        parked (sent again after a reconnect) is held once."""
        if task_id not in self.state.parked:
            self.state.parked[task_id] = (kick, reply)

    async def _admit_parked(self) -> None:
        parked, limit = self.state.parked, self.max_queued or 0
        while parked and len(self.queue.records) < limit:
            task_id = next(iter(parked))
            kick, reply = parked.pop(task_id)
            answer = await self._enqueue(kick.message)
            if isinstance(kick, Kick):
                self._accepted.setdefault((kick.ack_node, kick.ack_actor), []).append(task_id)
            elif reply is not None and not reply.done:  # failed with a crashed broker
                self._answers.append((reply, answer))

    async def _kick(self, message: Kick) -> None:
        task_id = message.message.task_id
        queue = self.queue
        if not message.resend or (queue.live(task_id) is None and task_id not in queue.finished):
            if self._full():
                self._park(task_id, message, None)
                return
            await self._enqueue(message.message)
        self._accepted.setdefault((message.ack_node, message.ack_actor), []).append(task_id)

    async def _enqueue(self, message: BrokerMessage) -> str:
        queue = self.queue
        if queue.live(message.task_id) is not None:
            return message.task_id  # the same id while live is idempotent
        labels = message.labels
        key = labels.get("unique_key") if labels.get("unique") else None
        if isinstance(key, str):
            live = queue.live_unique(key)
            if live is not None:
                return live.task_id
        else:
            key = None
        self.stats.kicked(message.task_name)
        now = trio.current_time()
        wall = self.wall_clock()
        record = TaskRecord(message, Phase.WAITING, enqueue_time=wall)
        due_in = expire = dependencies = None
        if labels:  # most kicks carry none: nothing to read then
            try:
                record.priority = int_label(labels, "priority") or 0
                due_in = self._due(record, labels, wall)
                expire = seconds_label(labels, "expire")
                if expire is not None:
                    expire -= self._since_kick(labels, wall)
                dependencies = ids_label(labels, "depends_on")
            except SendTaskError as error:  # a label that did not come through kiq's checks
                queue.add(record)
                await self._end(record, Phase.DONE, error)
                return message.task_id
        record.unique_key = key
        if due_in is not None:
            record.eta = now + due_in
        if expire is not None:
            record.expire_at = now + expire
        ended = await self._link_dependencies(record, dependencies) if dependencies else None
        queue.add(record)
        if TASK_EVENTS.isEnabledFor(logging.DEBUG):
            task_event("queued", record.task_id, message.task_name, logging.DEBUG)
        if ended is None:
            queue.place(record, now)
        elif ended[1]:  # a fallback whose parent already succeeded
            await self.store.tell(CopyResult(ended[0], record.task_id, self._ttl(record)))
            queue.finish(record, Phase.DONE, succeeded=True)
        else:
            await self._fail_dependents_of(ended[0], [record])
        return message.task_id

    def _due(self, record: TaskRecord, labels: dict[str, Any], wall: DateTime) -> float | None:
        """Set ``record.due`` from its ``delay`` or ``eta``; the seconds until then."""
        delay = seconds_label(labels, "delay")
        if delay is not None:
            delay -= self._since_kick(labels, wall)
            record.due = _later(wall, delay)
            return delay
        when = eta_label(labels)
        if when is not None:
            record.due = when
            return (when - wall).total_seconds()
        return None

    @staticmethod
    def _since_kick(labels: dict[str, Any], wall: DateTime) -> float:
        """Seconds since the client kicked (``kicked_at``, its wall clock): a delay or an
        expiry counts from the kick, however late the kick got here."""
        kicked = eta_label(labels, "kicked_at")
        return 0.0 if kicked is None else (wall - kicked).total_seconds()

    async def _link_dependencies(
        self, record: TaskRecord, dependencies: list[str]
    ) -> tuple[str, bool] | None:
        """Wire ``record`` to its live dependencies.

        Returns ``(id, succeeded)`` for a dependency that already ended in a way that
        decides ``record`` at once: a failure, or the success of the task it falls back for.
        """
        fallback_of = record.message.labels.get("otherwise_of")
        for dependency in dependencies:
            parent = self.queue.live(dependency)
            if parent is not None:
                record.wait_for(parent)
                continue
            succeeded = self.queue.finished.get(dependency)
            if succeeded is None:
                succeeded = await self._stored_success(dependency)
            if dependency == fallback_of:
                if succeeded:
                    return dependency, True
            elif not succeeded:
                return dependency, False
        return None

    async def _stored_success(self, task_id: str) -> bool:
        result = await self.store.ask(GetResult(task_id))
        return isinstance(result, TaskiqResult | EncodedResult) and not result.is_err

    # Dispatching -----------------------------------------------------------------------

    async def _worker_ready(self, message: WorkerReady) -> None:
        previous = self.state.workers.get(message.worker_id)
        worker = self.node.ref(message.actor, node=message.node)
        local = message.node == self.node.name
        slot = _WorkerSlot(
            worker,
            message.node,
            message.capacity,
            message.incarnation,
            None if local else frozenset(message.tasks),
        )
        self.state.workers[message.worker_id] = slot
        self._watch(message.node)
        if previous is not None and previous.incarnation == message.incarnation:
            slot.running = previous.running  # announced again: the same runs
        elif previous is not None:
            # The worker restarted: what it was running is delivered again, unless it
            # was being aborted (its cancel may have been lost with the old worker).
            now = trio.current_time()
            for task_id in previous.running:
                record = self.queue.live(task_id)
                if record is None or record.phase is not Phase.RUNNING:
                    continue
                if task_id in self.state.aborts:
                    await self._run_ended(RunEnded(task_id, "aborted"))
                else:
                    self.queue.place(record, now)
        if message.holding:
            await self._claim(message.worker_id, slot, message.holding)

    def _free_worker(self, task_name: str | None = None) -> tuple[str, _WorkerSlot] | None:
        """The worker with the most free credit (that has ``task_name``, if given); None
        while every such worker is full."""
        best: tuple[str, _WorkerSlot] | None = None
        most = 0
        for item in self.state.workers.items():
            slot = item[1]
            free = slot.capacity - len(slot.running)
            if free > most and (task_name is None or slot.tasks is None or task_name in slot.tasks):
                best, most = item, free
        return best

    async def _dispatch(self) -> None:
        """Hand ready tasks to workers with room, each worker's share in one message.

        A task goes only to a worker that has its name; one that no worker with room
        has stays queued, in its place."""
        queue = self.queue
        handed: dict[str, list[Run]] = {}
        unplaced: list[TaskRecord] = []
        logged = TASK_EVENTS.isEnabledFor(logging.DEBUG)
        now = self.stats.clock()  # one reading for the runs handed out together
        while queue.has_ready():
            free = self._free_worker()
            if free is None:
                break
            record = queue.pop_ready()
            assert record is not None
            if record.expire_at is not None and record.expire_at <= trio.current_time():
                await self._end(record, Phase.EXPIRED, TaskExpiredError(self._late(record)))
                continue
            tasks = free[1].tasks
            if tasks is not None and record.message.task_name not in tasks:
                free = self._free_worker(record.message.task_name)
                if free is None:
                    unplaced.append(record)
                    continue
            worker_id, slot = free
            queue.move(record, Phase.RUNNING)
            record.tries += 1
            record.worker_id = worker_id
            message = record.message
            slot.running.add(message.task_id)
            self.stats.started(message.task_id, message.task_name, now)
            if logged:
                task_event("dispatched", message.task_id, message.task_name, logging.DEBUG)
            run = Run(message, record.tries, record.enqueue_time)
            handed.setdefault(worker_id, []).append(run)
        for worker_id, runs in handed.items():
            slot = self.state.workers[worker_id]
            try:
                await slot.ref.tell(Runs(runs, slot.incarnation))
            except ActorError:  # its node is gone: its runs go to the others
                self._lost_worker(worker_id)
        for record in unplaced:
            queue.put_back(record)

    async def _acknowledge(self) -> None:
        """Tell each client which of its kicks this batch accepted, in one message."""
        accepted, self._accepted = self._accepted, {}
        for (node, actor), task_ids in accepted.items():
            with contextlib.suppress(ActorError):  # gone: it resends what it kept
                await self.node.ref(actor, node=node).tell(Accepted(task_ids))

    def _watch(self, node: str) -> None:
        """Learn when the link to a worker's node goes (not for workers on this node)."""
        if node != self.node.name and node not in self._watched:
            self._watched.add(node)
            self.nursery.start_soon(self._watch_node, node)

    async def _watch_node(self, node: str) -> None:
        await self.node.wait_for_peer_lost(node, timeout=math.inf)
        await self.ref.tell(NodeLost(node))

    def _node_lost(self, node: str) -> None:
        self._watched.discard(node)
        if node in self.node.peers:
            # Linked again before this was read: its workers announce themselves again
            # (WorkerReady, keeping their runs); the new link is watched in its turn.
            self._watch(node)
            return
        lost = [worker_id for worker_id, slot in self.state.workers.items() if slot.node == node]
        for worker_id in lost:
            self._lost_worker(worker_id)

    def _lost_worker(self, worker_id: str) -> None:
        slot = self.state.workers.pop(worker_id)
        now = trio.current_time()
        for task_id in slot.running:
            record = self.queue.live(task_id)
            if record is not None and record.phase is Phase.RUNNING:
                task_event("requeued", task_id, record.message.task_name, worker=worker_id)
                self.queue.place(record, now)

    async def _finished(self, message: Finished) -> None:
        slot = self.state.workers.get(message.worker_id)
        if slot is not None:
            slot.last_seen = time.time()
        now = self.stats.clock()  # one reading for the runs that ended together
        for ended in message.runs:
            if slot is not None:
                slot.running.discard(ended.task_id)
            await self._run_ended(ended, message.worker_id, now)

    async def _run_ended(
        self, ended: RunEnded, worker_id: str | None = None, ended_at: float | None = None
    ) -> None:
        """``worker_id``: who reports it. A late report of an earlier delivery (one
        presumed lost, since handed out again) is ignored. ``ended_at``: when, by the
        stats' clock (read there if not given)."""
        record = self.queue.live(ended.task_id)
        if record is None or record.phase is not Phase.RUNNING:
            return
        if worker_id is not None and (
            record.worker_id != worker_id or record.tries != ended.delivery
        ):
            return
        aborts = self.state.aborts.pop(ended.task_id, None) if self.state.aborts else None
        if ended.outcome == "again" and aborts is None:
            self.stats.ended(ended.task_id, record.message.task_name, "retried", now=ended_at)
            if ended.labels is not None:
                record.message = attrs.evolve(record.message, labels=ended.labels)
            now = trio.current_time()
            record.eta = record.due = None
            if ended.delay > 0:
                record.eta = now + ended.delay
                record.due = _later(self.wall_clock(), ended.delay)
            self.queue.place(record, now)
            return
        if ended.outcome == "done":
            outcome = "failed" if ended.is_err else "succeeded"
            self.stats.ended(ended.task_id, record.message.task_name, outcome, now=ended_at)
            self.queue.finish(record, Phase.DONE, succeeded=not ended.is_err)
            if record.dependents:
                await self._release_dependents(record, succeeded=not ended.is_err)
        else:
            await self._end(
                record, Phase.ABORTED, TaskAbortedError(f"task {record.task_id} was aborted")
            )
        for reply in aborts or ():
            reply.resolve(ended.outcome != "done")

    # Timers ----------------------------------------------------------------------------

    async def _timer(self) -> None:
        """Sleep until the earliest ETA or expiry, then tick; re-armed on changes."""
        while True:
            self._armed_for = when = self.queue.next_timer()
            with trio.move_on_at(math.inf if when is None else when):
                await self._rearm.wait()
            if self._rearm.is_set():
                self._rearm = trio.Event()
                continue
            await self.ref.tell(Tick())
            await self._rearm.wait()
            self._rearm = trio.Event()

    async def _tick(self) -> None:
        now = trio.current_time()
        came, expired = self.queue.due(now)
        for record in came:
            self.queue.place(record, now)
        for record in expired:
            await self._end(record, Phase.EXPIRED, TaskExpiredError(self._late(record)))
        self._rearm.set()

    @staticmethod
    def _late(record: TaskRecord) -> str:
        return f"task {record.task_id} was not started before it expired"

    # Ending tasks that never ran -------------------------------------------------------

    async def _abort(self, task_id: str) -> bool | None:
        record = self.queue.live(task_id)
        if record is None:
            return False
        if record.phase is Phase.RUNNING:
            # Noted even without a reply (a tell): a run that ends asking to run
            # again, or that a restarted worker lost, then ends aborted.
            replies = self.state.aborts[task_id]
            reply = self.defer_reply()
            if reply is not None:
                replies.append(reply)
            worker_id = record.worker_id or ""
            slot = self.state.workers.get(worker_id)
            if slot is not None:
                try:
                    await slot.ref.tell(CancelRun(task_id))
                except ActorError:
                    self._lost_worker(worker_id)
            return None
        await self._end(record, Phase.ABORTED, TaskAbortedError(f"task {task_id} was aborted"))
        return True

    async def _end(self, record: TaskRecord, phase: Phase, error: BaseException) -> None:
        """End a task with an error result, and fail what depended on it."""
        self.stats.ended(record.task_id, record.message.task_name, _OUTCOMES[phase])
        self.queue.finish(record, phase, succeeded=False)
        await self._store_error(record, error)
        await self._fail_dependents_of(record.task_id, self._dependents(record))

    async def _store_error(self, record: TaskRecord, error: BaseException) -> None:
        result: TaskiqResult[Any] = TaskiqResult(
            is_err=True,
            return_value=None,
            error=error,
            task_id=record.task_id,
            labels=dict(record.message.labels),
            tries=record.tries,
            enqueue_time=record.enqueue_time,
            finish_time=self.wall_clock(),
        )
        stored: Stored = result
        if self.encode_with is not None:
            stored = EncodedResult(result_to_wire(result, self.encode_with), is_err=True)
        await self.store.tell(StoreResult(record.task_id, stored, self._ttl(record)))

    @staticmethod
    def _ttl(record: TaskRecord) -> float | None:
        return ttl_label(record.message.labels)

    def _dependents(self, record: TaskRecord) -> list[TaskRecord]:
        found = (self.queue.live(task_id) for task_id in record.dependents or ())
        return [dependent for dependent in found if dependent is not None]

    async def _release_dependents(self, record: TaskRecord, *, succeeded: bool) -> None:
        if not succeeded:
            await self._fail_dependents_of(record.task_id, self._dependents(record))
            return
        now = trio.current_time()
        for dependent in self._dependents(record):
            if dependent.message.labels.get("otherwise_of") == record.task_id:
                # The parent succeeded: the fallback resolves to the parent's result.
                await self.store.tell(
                    CopyResult(record.task_id, dependent.task_id, self._ttl(dependent))
                )
                self.stats.ended(dependent.task_id, dependent.message.task_name, "succeeded")
                self.queue.finish(dependent, Phase.DONE, succeeded=True)
                await self._release_dependents(dependent, succeeded=True)
                continue
            if not dependent.done_waiting_for(record.task_id):
                self.queue.place(dependent, now)

    async def _fail_dependents_of(self, failed_id: str, dependents: list[TaskRecord]) -> None:
        """A dependency failed: fallbacks may now run, everything else fails, transitively."""
        now = trio.current_time()
        work = [(failed_id, dependent) for dependent in dependents]
        while work:
            failed, dependent = work.pop()
            if self.queue.live(dependent.task_id) is not dependent:
                continue
            if dependent.message.labels.get("otherwise_of") == failed:
                if not dependent.done_waiting_for(failed):
                    self.queue.place(dependent, now)
                continue
            self.stats.ended(dependent.task_id, dependent.message.task_name, "failed", failed)
            self.queue.finish(dependent, Phase.DONE, succeeded=False)
            await self._store_error(
                dependent,
                DependencyFailedError(
                    f"task {dependent.task_id} did not run: dependency {failed} failed",
                    dependency_id=failed,
                ),
            )
            work.extend((dependent.task_id, child) for child in self._dependents(dependent))

    # Questions -------------------------------------------------------------------------

    def _inspect(self, task_id: str) -> LiveTask | None:
        record = self.queue.live(task_id)
        if record is None:
            return None
        scheduled = record.due if record.phase is Phase.SCHEDULED else None
        return LiveTask(
            message=record.message,
            tries=record.tries,
            status=record.phase.status,
            enqueue_time=record.enqueue_time,
            scheduled=scheduled,
            dependencies=sorted(record.waiting_on or ()),
            dependents=list(record.dependents or ()),
        )

    def _schedules(self) -> list[ScheduleRow]:
        """What the schedulers in this process, or on nodes still linked, reported."""
        peers = set(self.node.peers)
        return [
            row
            for scheduler, rows in self.state.schedules.items()
            if isinstance(scheduler, LocalRef) or scheduler.node_name in peers
            for row in rows
        ]

    def _unschedule(self, message: Unschedule) -> bool | None:
        """Hand ``message`` to the scheduler that has the schedule; its answer is ours."""
        for scheduler, rows in self.state.schedules.items():
            if any(row.schedule_id == message.schedule_id for row in rows):
                reply = self.defer_reply()
                if reply is not None:
                    self.nursery.start_soon(_forward, scheduler, message, reply)
                return None
        return False

    def _drain(self) -> None:
        if self.queue.records:
            reply = self.defer_reply()
            if reply is not None:
                self.state.drains.append(reply)
