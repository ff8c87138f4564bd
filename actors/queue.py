"""The broker's queue: priorities, ETAs, expiries, dependencies and uniqueness.

A plain data structure with no I/O, so the broker actor stays short and a property test
can drive it directly. It lives outside the actor instance: a restarted broker actor
picks up the same queue, and no task is lost.

Ready tasks sit in a heap ordered by (-priority, sequence): higher priority first, FIFO
within a priority. Timed events (an ETA coming due, an expiry) sit in a second heap.
Both heaps are lazy: an entry whose task has moved on is skipped when popped.
"""

from __future__ import annotations

import collections
import heapq
import itertools

import attrs
import pendulum

from .lifecycle import TRANSITIONS, Phase, check_transition
from .protocol import BrokerMessage
from .result import utc_now

__all__ = ["TaskQueue", "TaskRecord"]

_LIVE = frozenset({Phase.WAITING, Phase.SCHEDULED, Phase.QUEUED, Phase.RUNNING})


@attrs.define(eq=False)
class TaskRecord:
    """Everything the broker knows about one live task."""

    message: BrokerMessage
    phase: Phase
    priority: int = 0
    seq: int = 0
    tries: int = 0
    #: When it is due, on the wall clock (what ``TaskInfo.scheduled`` says); None past
    #: the year 9999.
    due: pendulum.DateTime | None = None
    #: The trio-clock times of its timers, derived from wall-clock instants on arrival.
    eta: float | None = None
    expire_at: float | None = None
    #: Ids it waits for, and ids that wait for it: None until it has any (most tasks
    #: never do, and an empty set and list cost a hub 272 bytes per queued task).
    waiting_on: set[str] | None = None
    dependents: list[str] | None = None
    unique_key: str | None = None
    enqueue_time: pendulum.DateTime = attrs.field(factory=utc_now)
    worker_id: str | None = None

    @property
    def task_id(self) -> str:
        return self.message.task_id

    def move(self, phase: Phase) -> None:
        check_transition(self.phase, phase)
        self.phase = phase

    def wait_for(self, parent: TaskRecord) -> None:
        """Make this task wait for ``parent``."""
        if self.waiting_on is None:
            self.waiting_on = set()
        self.waiting_on.add(parent.task_id)
        if parent.dependents is None:
            parent.dependents = []
        parent.dependents.append(self.task_id)

    def done_waiting_for(self, task_id: str) -> bool:
        """Stop waiting for ``task_id``; whether it still waits for anything."""
        if self.waiting_on:
            self.waiting_on.discard(task_id)
        return bool(self.waiting_on)


class TaskQueue:
    """Live tasks by id, a ready heap, a timer heap, and what finished recently."""

    def __init__(self, remember_finished: int = 10_000) -> None:
        self.records: dict[str, TaskRecord] = {}
        self._ready: list[tuple[int, int, TaskRecord]] = []
        self._timers: list[tuple[float, int, TaskRecord, Phase]] = []
        self._unique: dict[str, str] = {}
        self._seq = itertools.count()
        #: task id -> succeeded, for dependencies on tasks that already ended.
        self.finished: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self._remember = remember_finished
        #: Live tasks by phase, then priority, kept as they move: the dashboard's overview
        #: reads them (:attr:`counts`) instead of walking every record. Plain dicts keyed
        #: by phase, for speed: every task moves three times, and a ``Counter`` keyed by
        #: ``(phase, priority)`` cost 3,700 instructions an update (a tuple built and
        #: hashed each time, and stores through Python, as ``Counter`` defines
        #: ``__delitem__``), about 20k per task in all.
        self._counts: dict[Phase, dict[int, int]] = {phase: {} for phase in _LIVE}
        #: Ids of tasks added, moved or ended since the last commit, in that order (a
        #: dict as an ordered set), for a durable hub's store (see :mod:`actors.hubstate`);
        #: None: not noted.
        self.changed: dict[str, None] | None = None

    @property
    def counts(self) -> collections.Counter[tuple[Phase, int]]:
        """Live tasks by (phase, priority)."""
        return collections.Counter(
            {
                (phase, priority): count
                for phase, by_priority in self._counts.items()
                for priority, count in by_priority.items()
                if count
            }
        )

    def restore(self, records: list[TaskRecord], now: float) -> None:
        """Take tasks rebuilt from a durable hub's file, oldest first, all WAITING and
        linked to each other: as :meth:`add` then :meth:`place` each would, but with each
        heap built once (a restart may bring back millions). A task with a ``worker_id``
        was running: it stays RUNNING, for its worker to claim back."""
        ready, timers, seq = self._ready, self._timers, self._seq
        counts = self._counts
        waiting, scheduled, queued = (
            counts[Phase.WAITING], counts[Phase.SCHEDULED], counts[Phase.QUEUED]
        )  # fmt: skip
        running = counts[Phase.RUNNING]
        for record in records:
            task_id = record.message.task_id
            self.records[task_id] = record
            if record.unique_key is not None:
                self._unique[record.unique_key] = task_id
            if record.expire_at is not None:
                timers.append((record.expire_at, next(seq), record, Phase.EXPIRED))
            priority = record.priority
            if record.worker_id is not None:
                record.phase = Phase.RUNNING
                running[priority] = running.get(priority, 0) + 1
            elif record.waiting_on:
                waiting[priority] = waiting.get(priority, 0) + 1
            elif record.eta is not None and record.eta > now:
                record.phase = Phase.SCHEDULED
                timers.append((record.eta, next(seq), record, Phase.QUEUED))
                scheduled[priority] = scheduled.get(priority, 0) + 1
            else:
                record.phase = Phase.QUEUED
                record.seq = next(seq)
                ready.append((-priority, record.seq, record))
                queued[priority] = queued.get(priority, 0) + 1
        heapq.heapify(ready)
        heapq.heapify(timers)

    def live(self, task_id: str) -> TaskRecord | None:
        return self.records.get(task_id)

    def live_unique(self, key: str) -> TaskRecord | None:
        task_id = self._unique.get(key)
        return None if task_id is None else self.records.get(task_id)

    def add(self, record: TaskRecord) -> None:
        """Track a new task; the caller then calls :meth:`place`."""
        task_id = record.message.task_id  # not the property: this runs for every task
        self.records[task_id] = record
        by_priority = self._counts[record.phase]
        by_priority[record.priority] = by_priority.get(record.priority, 0) + 1
        if self.changed is not None:
            self.changed[task_id] = None
        if record.unique_key is not None:
            self._unique[record.unique_key] = task_id
        if record.expire_at is not None:
            self._push_timer(record.expire_at, record, Phase.EXPIRED)

    def place(self, record: TaskRecord, now: float) -> None:
        """Put a task where it belongs now: waiting, scheduled or ready."""
        if record.waiting_on:
            if record.phase is not Phase.WAITING:
                self.move(record, Phase.WAITING)
            else:
                self.note(record)
        elif record.eta is not None and record.eta > now:
            self.move(record, Phase.SCHEDULED)
            self._push_timer(record.eta, record, Phase.QUEUED)
        else:
            self.move(record, Phase.QUEUED)
            record.seq = next(self._seq)
            heapq.heappush(self._ready, (-record.priority, record.seq, record))

    def move(self, record: TaskRecord, phase: Phase) -> None:
        """Move a live task to ``phase``, keeping :attr:`counts`, and note the change.

        Every task moves three times, so the note is inline: in process (no journal)
        it costs one attribute test."""
        old = record.phase
        if phase not in TRANSITIONS[old]:
            check_transition(old, phase)  # raises
        record.phase = phase
        priority = record.priority
        was = self._counts[old]
        was[priority] = was.get(priority, 0) - 1  # TaskRecord.move is uncounted
        now = self._counts.get(phase)
        if now is not None:  # None: an end
            now[priority] = now.get(priority, 0) + 1
        if self.changed is not None:
            self.changed[record.message.task_id] = None

    def pop_ready(self) -> TaskRecord | None:
        """The next task to run, highest priority first."""
        while self._ready:
            _, seq, record = heapq.heappop(self._ready)
            if record.phase is Phase.QUEUED and record.seq == seq:
                return record
        return None

    def put_back(self, record: TaskRecord) -> None:
        """Return a task from :meth:`pop_ready` to its place (no worker could take it)."""
        heapq.heappush(self._ready, (-record.priority, record.seq, record))

    def has_ready(self) -> bool:
        while self._ready:
            _, seq, record = self._ready[0]
            if record.phase is Phase.QUEUED and record.seq == seq:
                return True
            heapq.heappop(self._ready)
        return False

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def due(self, now: float) -> tuple[list[TaskRecord], list[TaskRecord]]:
        """Pop timers up to ``now``: (tasks whose ETA came, tasks that expired)."""
        came: list[TaskRecord] = []
        expired: list[TaskRecord] = []
        while self._timers and self._timers[0][0] <= now:
            when, _, record, kind = heapq.heappop(self._timers)
            if self.records.get(record.task_id) is not record:
                continue
            if kind is Phase.EXPIRED:
                if record.phase in (Phase.WAITING, Phase.SCHEDULED, Phase.QUEUED):
                    expired.append(record)
            elif record.phase is Phase.SCHEDULED and record.eta == when:
                came.append(record)
        return came, expired

    def finish(self, record: TaskRecord, phase: Phase, succeeded: bool) -> None:
        """Forget a live task that reached an end; remember whether it succeeded."""
        self.move(record, phase)
        task_id = record.message.task_id
        self.records.pop(task_id, None)
        if record.unique_key is not None and self._unique.get(record.unique_key) == task_id:
            del self._unique[record.unique_key]
        self.finished[task_id] = succeeded
        if len(self.finished) > self._remember:
            self.finished.popitem(last=False)

    def note(self, record: TaskRecord) -> None:
        """Note that ``record`` changed without moving (a move notes itself)."""
        if self.changed is not None:
            self.changed[record.task_id] = None

    def _push_timer(self, when: float, record: TaskRecord, kind: Phase) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), record, kind))
