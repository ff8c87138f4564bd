"""What the broker counts for the dashboard and ``/metrics``: per task name counters,
a run-time histogram, outcomes per minute, and a ring of recent ends and retries.

Kept by the broker on its :class:`~actors.broker.BrokerState` (so it survives a restart
of the broker actor), updated with a few dict operations per task event, and read whole
by the hub's introspection asks (:mod:`actors.inspect`). Run times are measured by the
broker, from handing a run to a worker to hearing that it ended: a run's time plus one
link round trip on a hub.
"""

from __future__ import annotations

import collections
import time
from bisect import bisect_left
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
    """One task name's counters, ``counts[i]`` for ``EVENTS[i]``, and its run-time
    histogram (``buckets[i]`` counts runs of at most ``RUN_TIME_BUCKETS[i]`` seconds,
    the last one those longer than all)."""

    counts: list[int] = attrs.field(factory=lambda: [0] * len(EVENTS))
    run_time_sum: float = 0.0
    buckets: list[int] = attrs.field(factory=lambda: [0] * (len(RUN_TIME_BUCKETS) + 1))


_INDEX = {event: index for index, event in enumerate(EVENTS)}
_FIRST_OUTCOME = _INDEX[OUTCOMES[0]]


@attrs.define(eq=False)
class HubStats:
    """Counters since the broker started, and a short memory of recent events. Each
    update is a few dict and list operations, inline: they run for every task."""

    clock: Callable[[], float] = time.time
    by_name: dict[str, NameCounts] = attrs.field(factory=dict)
    #: ``(minute since the epoch, [succeeded, failed, retried, aborted])``, oldest first.
    minutes: collections.deque[tuple[int, list[int]]] = attrs.field(
        factory=lambda: collections.deque(maxlen=_MINUTES_KEPT)
    )
    #: ``(wall time, task id, task name, event, detail)``, oldest first: every end and
    #: retry (kicks and starts are only counted; their times are the task's own).
    events: collections.deque[tuple[float, str, str, str, str]] = attrs.field(
        factory=lambda: collections.deque(maxlen=_EVENTS_KEPT)
    )
    #: Events ever recorded (the newest one's sequence number plus one).
    event_count: int = 0
    #: Wall time each running task was handed to a worker, by task id.
    running_since: dict[str, float] = attrs.field(factory=dict)

    def _new(self, name: str) -> NameCounts:
        counts = self.by_name[name] = NameCounts()
        return counts

    def kicked(self, name: str) -> None:
        """Counted only: a task's kick time is its ``enqueue_time``."""
        (self.by_name.get(name) or self._new(name)).counts[0] += 1

    def started(self, task_id: str, name: str, now: float) -> None:
        """Counted, and timed from ``now`` (a reading of :attr:`clock`) until it ends
        (the start of a timeline is in ``running_since`` while it runs, then in its
        result)."""
        (self.by_name.get(name) or self._new(name)).counts[1] += 1
        self.running_since[task_id] = now

    def ended(
        self, task_id: str, name: str, outcome: str, detail: str = "", now: float | None = None
    ) -> None:
        """A run or a task ended: ``outcome`` is one of :data:`EVENTS` after "started".
        ``now``: a reading of :attr:`clock`, for a caller that ends many at once."""
        if now is None:
            now = self.clock()
        counts = self.by_name.get(name) or self._new(name)
        since = self.running_since.pop(task_id, None)
        if since is not None:
            spent = now - since  # a wall clock stepping back counts in the first bucket
            counts.run_time_sum += spent
            counts.buckets[bisect_left(RUN_TIME_BUCKETS, spent)] += 1
        index = _INDEX[outcome]
        counts.counts[index] += 1
        if outcome != "expired":
            minute = int(now // 60)
            minutes = self.minutes
            if not minutes or minutes[-1][0] != minute:
                minutes.append((minute, [0, 0, 0, 0]))
            minutes[-1][1][index - _FIRST_OUTCOME] += 1
        self.events.append((now, task_id, name, outcome, detail))
        self.event_count += 1

    def per_minute(self, count: int) -> list[tuple[int, list[int]]]:
        """The last ``count`` minutes up to now, oldest first, minutes without events
        included as zeros."""
        now = int(self.clock() // 60)
        seen = dict(self.minutes)
        return [(m, list(seen.get(m, [0, 0, 0, 0]))) for m in range(now - count + 1, now + 1)]
