"""``/metrics`` and ``/healthz`` for a hub or an in-process broker, read from a
:class:`~actors.inspect.HubView` at scrape time.

Each scrape asks the broker once for its overview and once for its counters, then
renders them with prometheus-client through a registry of its own (never the global
one), so two hubs in one process report each their own numbers. The web server mounts
:func:`metrics_text` and :func:`health`; nothing here knows about HTTP.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .exceptions import BrokerError
from .inspect import HubView
from .protocol import NameCounters, Overview
from .stats import RUN_TIME_BUCKETS

__all__ = ["CONTENT_TYPE", "HubCollector", "health", "metrics_text"]

#: The content type of :func:`metrics_text`'s bytes (Prometheus' text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTED = ("kicked", "started", "succeeded", "failed", "retried", "aborted")


class HubCollector(Collector):
    """One scrape's metrics, from an overview and the counters read just before."""

    def __init__(self, overview: Overview, counters: list[NameCounters]) -> None:
        self.overview = overview
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        yield from self._tasks()
        yield from self._queue()
        yield from self._workers()
        yield from self._links()

    def _tasks(self) -> Iterator[Metric]:
        for what in _COUNTED:
            family = CounterMetricFamily(
                f"taskq_tasks_{what}", f"Tasks {what}, by task name.", labels=["task_name"]
            )
            for row in self.counters:
                family.add_metric([row.task_name], getattr(row, what))
            yield family
        runs = HistogramMetricFamily(
            "taskq_task_run_seconds",
            "Run time, from handing a run to a worker to hearing it ended.",
            labels=["task_name"],
        )
        for row in self.counters:
            cumulative = list(itertools.accumulate(row.buckets))
            bounds = [*(repr(bound) for bound in RUN_TIME_BUCKETS), "+Inf"]
            runs.add_metric(
                [row.task_name], list(zip(bounds, cumulative, strict=True)), row.run_time_sum
            )
        yield runs

    def _queue(self) -> Iterator[Metric]:
        seen = self.overview
        queued = GaugeMetricFamily(
            "taskq_queue_depth", "Tasks ready to run, by priority.", labels=["priority"]
        )
        for priority, count in seen.queued:
            queued.add_metric([str(priority)], count)
        yield queued
        states = GaugeMetricFamily(
            "taskq_tasks", "Live tasks that are not ready to run, by state.", labels=["state"]
        )
        for state, count in (
            ("running", seen.running),
            ("scheduled", seen.scheduled),
            ("waiting", seen.waiting),
            ("parked", seen.parked),
        ):
            states.add_metric([state], count)
        yield states

    def _workers(self) -> Iterator[Metric]:
        workers = self.overview.workers
        yield GaugeMetricFamily("taskq_workers", "Workers known to the broker.", len(workers))
        labels = ["worker", "node"]
        capacity = GaugeMetricFamily("taskq_worker_capacity", "Runs at once.", labels=labels)
        in_use = GaugeMetricFamily("taskq_worker_in_use", "Runs now.", labels=labels)
        seen = GaugeMetricFamily(
            "taskq_worker_last_seen_timestamp_seconds",
            "When the broker last heard from the worker.",
            labels=labels,
        )
        for row in workers:
            capacity.add_metric([row.worker_id, row.node], row.capacity)
            in_use.add_metric([row.worker_id, row.node], row.in_use)
            seen.add_metric([row.worker_id, row.node], row.last_seen)
        yield from (capacity, in_use, seen)

    def _links(self) -> Iterator[Metric]:
        seen = self.overview
        yield GaugeMetricFamily("taskq_links", "Nodes linked to the hub.", len(seen.links))
        yield CounterMetricFamily(
            "taskq_link_reconnects", "Links that came back after dropping.", seen.reconnects
        )
        depths = GaugeMetricFamily(
            "taskq_mailbox_depth", "Messages waiting in an actor's mailbox.", labels=["actor"]
        )
        for actor, depth in sorted(seen.mailboxes.items()):
            depths.add_metric([actor], depth)
        yield depths


async def metrics_text(view: HubView) -> bytes:
    """The hub's metrics now, in Prometheus' text format (:data:`CONTENT_TYPE`)."""
    collector = HubCollector(await view.overview(minutes=1), await view.counters())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


async def health(view: HubView) -> tuple[bool, dict[str, Any]]:
    """Whether the broker answers, and a few numbers to show (for ``/healthz``: 200
    when True, 503 when False)."""
    try:
        seen = await view.overview(minutes=1)
    except BrokerError as exc:
        return False, {"ok": False, "error": str(exc)}
    return True, {
        "ok": True,
        "node": seen.node,
        "queued": sum(count for _, count in seen.queued),
        "running": seen.running,
        "workers": len(seen.workers),
        "links": len(seen.links),
    }
