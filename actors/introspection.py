"""The broker's answers to the introspection asks (``GetOverview``, ``ListTasks``,
``GetTaskEvents``, ``GetCounters``), kept out of :mod:`actors.broker` so its message
loop stays short. Each runs inside the broker actor, between two messages.

Listing live tasks never sorts them: it walks the queue's records in kick order from
the cursor (a C-speed skip), testing each against the filter, and stops at ``limit``
rows or after ``SCAN_BUDGET`` records, whichever comes first; the cursor then says
where to go on. So a page costs the same with a million tasks queued as with ten.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping
from typing import Protocol

import pendulum

from .lifecycle import Phase
from .protocol import (
    Counters,
    ListTasks,
    MinuteRow,
    NameCounters,
    Overview,
    TaskEvent,
    TaskEvents,
    TaskPage,
    TaskRow,
    WorkerRow,
)
from .queue import TaskRecord
from .runtime import Node
from .stats import EVENTS, HubStats

__all__ = ["SCAN_BUDGET", "STATUSES", "counters", "list_tasks", "overview", "task_events"]

#: Live records a page looks at, at most, before it answers with what it found.
SCAN_BUDGET = 100_000

_LIVE = {p.value: p for p in (Phase.WAITING, Phase.SCHEDULED, Phase.QUEUED, Phase.RUNNING)}
_ENDED = set(EVENTS) - {"kicked", "started"}
#: What ``ListTasks.status`` may be (besides None).
STATUSES = (*_LIVE, *sorted(_ENDED))


class WorkerSlot(Protocol):
    """What the overview reads of the broker's worker slots."""

    node: str
    capacity: int
    running: set[str]
    last_seen: float


def overview(
    node: Node,
    counts: Mapping[tuple[Phase, int], int],
    workers: Mapping[str, WorkerSlot],
    parked: int,
    stats: HubStats,
    minutes: int,
) -> Overview:
    queued: dict[int, int] = {}
    scheduled = waiting = 0
    for (phase, priority), count in counts.items():
        if phase is Phase.QUEUED and count:
            queued[priority] = count
        elif phase is Phase.SCHEDULED:
            scheduled += count
        elif phase is Phase.WAITING:
            waiting += count
    peers = set(node.peers)
    rows = [
        WorkerRow(
            worker_id,
            slot.node,
            slot.capacity,
            len(slot.running),
            slot.last_seen,
            slot.node == node.name or slot.node in peers,
        )
        for worker_id, slot in workers.items()
    ]
    mailboxes = {}
    for name in node.names:
        cell = node.lookup(name)
        if cell is not None:
            mailboxes[name] = cell.mailbox.receiver.statistics().current_buffer_used
    return Overview(
        node=node.name,
        queued=sorted(queued.items(), reverse=True),
        running=sum(row.in_use for row in rows),
        scheduled=scheduled,
        waiting=waiting,
        parked=parked,
        minutes=[MinuteRow(minute * 60.0, *counts) for minute, counts in stats.per_minute(minutes)],
        workers=rows,
        links=sorted(peers),
        reconnects=sum(max(opened - 1, 0) for opened in node.links_opened.values()),
        mailboxes=mailboxes,
    )


def list_tasks(records: dict[str, TaskRecord], stats: HubStats, message: ListTasks) -> TaskPage:
    limit = max(1, min(message.limit, 1000))
    if message.status in _ENDED:
        return _ended(stats, message, limit)
    phase = _LIVE.get(message.status or "")
    if message.status is not None and phase is None:
        return TaskPage([], None)  # HubView refuses it; never crash the broker on it
    start = 0
    if message.after is not None:
        position, _, task_id = message.after.partition(":")
        hint = min(int(position) if position.isdigit() else 0, len(records))
        if hint < 1:
            start = 0
        elif task_id not in records:  # it ended since: go on about where it was
            start = hint
        elif next(itertools.islice(records, hint - 1, None), None) == task_id:
            start = hint  # nothing before it ended: one C-speed skip
        else:
            start = operator.indexOf(records, task_id) + 1
    rows: list[TaskRow] = []
    scanned = 0
    last = None
    name = message.name
    for record in itertools.islice(records.values(), start, start + SCAN_BUDGET):
        scanned += 1
        last = record
        if (phase is None or record.phase is phase) and (
            name is None or name in record.message.task_name
        ):
            rows.append(
                TaskRow(
                    record.task_id,
                    record.message.task_name,
                    record.phase.value,
                    record.enqueue_time,
                    record.tries,
                    record.priority,
                    record.worker_id if record.phase is Phase.RUNNING else None,
                )
            )
            if len(rows) == limit:
                break
    if last is None or start + scanned >= len(records):
        return TaskPage(rows, None)
    return TaskPage(rows, f"{start + scanned}:{last.task_id}")


def _ended(stats: HubStats, message: ListTasks, limit: int) -> TaskPage:
    """Recent ends from the stats' event ring, newest first; the cursor is an event's
    sequence number."""
    events = stats.events
    newest = stats.event_count - 1
    after = message.after
    before = int(after) if after is not None and after.isdigit() else newest + 1
    rows: list[TaskRow] = []
    seq = newest + 1
    for seq, (when, task_id, task_name, event, _) in zip(
        itertools.count(newest, -1), reversed(events), strict=False
    ):
        if seq >= before or event != message.status:
            continue
        if message.name is not None and message.name not in task_name:
            continue
        rows.append(TaskRow(task_id, task_name, event, pendulum.from_timestamp(when)))
        if len(rows) == limit:
            break
    oldest = stats.event_count - len(events)
    return TaskPage(rows, str(seq) if len(rows) == limit and seq > oldest else None)


def task_events(stats: HubStats, records: Mapping[str, TaskRecord], task_id: str) -> TaskEvents:
    """The task's retries and end from the ring, and its current run's start."""
    events = [
        TaskEvent(when, name, event, detail)
        for when, id_, name, event, detail in stats.events
        if id_ == task_id
    ]
    record = records.get(task_id)
    since = stats.running_since.get(task_id)
    if record is not None and since is not None:
        events.append(TaskEvent(since, record.message.task_name, "started", record.worker_id or ""))
        events.sort(key=lambda event: event.time)
    return TaskEvents(events)


def counters(stats: HubStats) -> Counters:
    return Counters(
        [
            NameCounters(
                name,
                c.counts[0],
                c.counts[1],
                c.counts[2],
                c.counts[3],
                c.counts[4],
                c.counts[5],
                c.run_time_sum,
                list(c.buckets),
            )
            for name, c in stats.by_name.items()
        ]
    )
