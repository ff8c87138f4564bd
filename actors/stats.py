"""What the broker counts for the dashboard and ``/metrics``: per task name counters,
a run-time histogram, outcomes per minute, and a ring of recent task events.

Kept by the broker on its :class:`~actors.broker.BrokerState` (so it survives a restart
of the broker actor), updated with a few dict operations per task event, and read whole
by the hub's introspection asks (:mod:`actors.inspect`). Run times are measured by the
broker, from handing a run to a worker to hearing that it ended: a run's time plus one
link round trip on a hub.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Callable

import attrs

__all__ = ["EVENTS", "RUN_TIME_BUCKETS", "HubStats", "NameCounts"]

#: Upper bounds (seconds) of the run-time histogram's buckets (Prometheus' defaults).
RUN_TIME_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

#: The outcomes counted per minute, in the order of :attr:`HubStats.minutes`' lists.
OUTCOMES = ("succeeded", "failed", "retried", "aborted")
#: Every event a task's timeline may show.
EVENTS = ("kicked", "started", *OUTCOMES, "expired")

_MINUTES_KEPT = 15
_EVENTS_KEPT = 10_000


@attrs.define(eq=False)
class NameCounts:
    """One task name's counters and run-time histogram (``buckets[i]`` counts runs of at
    most ``RUN_TIME_BUCKETS[i]`` seconds, the last one those longer than all)."""

    kicked: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    aborted: int = 0
    run_time_sum: float = 0.0
    buckets: list[int] = attrs.field(factory=lambda: [0] * (len(RUN_TIME_BUCKETS) + 1))


@attrs.define(eq=False)
class HubStats:
    """Counters since the broker started, and a short memory of recent events."""

    clock: Callable[[], float] = time.time
    by_name: dict[str, NameCounts] = attrs.field(factory=dict)
    #: ``(minute since the epoch, [succeeded, failed, retried, aborted])``, oldest first.
    minutes: collections.deque[tuple[int, list[int]]] = attrs.field(
        factory=lambda: collections.deque(maxlen=_MINUTES_KEPT)
    )
    #: ``(wall time, task id, task name, event, detail)``, oldest first.
    events: collections.deque[tuple[float, str, str, str, str]] = attrs.field(
        factory=lambda: collections.deque(maxlen=_EVENTS_KEPT)
    )
    #: Events ever recorded (the newest one's sequence number plus one).
    event_count: int = 0
    #: Wall time each running task was handed to a worker, by task id.
    running_since: dict[str, float] = attrs.field(factory=dict)

    def _counts(self, name: str) -> NameCounts:
        counts = self.by_name.get(name)
        if counts is None:
            counts = self.by_name[name] = NameCounts()
        return counts

    def kicked(self, task_id: str, name: str) -> None:
        self._counts(name).kicked += 1
        self._event(self.clock(), task_id, name, "kicked", "")

    def started(self, task_id: str, name: str, worker: str) -> None:
        now = self.clock()
        self._counts(name).started += 1
        self.running_since[task_id] = now
        self._event(now, task_id, name, "started", worker)

    def ended(self, task_id: str, name: str, outcome: str, detail: str = "") -> None:
        """A run or a task ended: ``outcome`` is one of :data:`EVENTS` after "started"."""
        now = self.clock()
        counts = self._counts(name)
        since = self.running_since.pop(task_id, None)
        if since is not None:
            spent = max(now - since, 0.0)
            counts.run_time_sum += spent
            counts.buckets[bisect.bisect_left(RUN_TIME_BUCKETS, spent)] += 1
        if outcome != "expired":
            setattr(counts, outcome, getattr(counts, outcome) + 1)
            minute = int(now // 60)
            minutes = self.minutes
            if not minutes or minutes[-1][0] != minute:
                minutes.append((minute, [0, 0, 0, 0]))
            minutes[-1][1][OUTCOMES.index(outcome)] += 1
        self._event(now, task_id, name, outcome, detail)

    def _event(self, when: float, task_id: str, name: str, event: str, detail: str) -> None:
        self.events.append((when, task_id, name, event, detail))
        self.event_count += 1

    def per_minute(self, count: int) -> list[tuple[int, list[int]]]:
        """The last ``count`` minutes up to now, oldest first, minutes without events
        included as zeros."""
        now = int(self.clock() // 60)
        seen = dict(self.minutes)
        return [(m, list(seen.get(m, [0, 0, 0, 0]))) for m in range(now - count + 1, now + 1)]
