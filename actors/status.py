"""``actors status``: a hub's overview as tables in the terminal.

It dials the hub as a client node (the cluster's secret, TLS as for ``actors worker``),
asks it through a :class:`~actors.inspect.HubView`, prints, and leaves.
"""

from __future__ import annotations

import ssl
from typing import IO

import pendulum
import trio
from rich.console import Console
from rich.table import Table

from .exceptions import BrokerError
from .hub import HUB_NODE, transport_for
from .inspect import HubView
from .protocol import Overview, TaskPage
from .runtime import Node, unique_node_name

__all__ = ["fetch_status", "render_status"]


async def fetch_status(
    url: str,
    *,
    secret: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    failures: int = 10,
) -> tuple[Overview, TaskPage]:
    """The hub's overview and its latest ``failures`` failed tasks. Raises
    ``BrokerError`` when the hub does not answer within ``timeout`` seconds."""
    name = unique_node_name("status")
    transport = transport_for(name, secret, ssl_context)
    # Errors leave the node's block first: raised inside, they would come out grouped.
    answer: tuple[Overview, TaskPage] | BrokerError
    async with Node.open(name, connect=[url], secret=secret, transport=transport) as node:
        try:
            await node.wait_for_peer(HUB_NODE, timeout=timeout)
            view = HubView.of_hub(node, timeout=timeout)
            answer = await view.overview(), await view.tasks(status="failed", limit=failures)
        except trio.TooSlowError:
            answer = BrokerError(f"no link to the hub within {timeout} s")
        except BrokerError as exc:
            answer = exc
    if isinstance(answer, BrokerError):
        raise answer
    return answer


def _when(epoch: float) -> str:
    return pendulum.from_timestamp(epoch).format("YYYY-MM-DD HH:mm:ss")


def render_status(overview: Overview, failed: TaskPage, file: IO[str] | None = None) -> None:
    """Print the overview as tables (plain text when ``file`` is not a terminal)."""
    console = Console(file=file, width=None if file is None else 160)
    queued = sum(count for _, count in overview.queued)
    by_priority = ", ".join(f"p{priority}: {count}" for priority, count in overview.queued)
    queue = Table(title=f"hub {overview.node}", show_header=False)
    queue.add_row("queued", f"{queued}" + (f" ({by_priority})" if by_priority else ""))
    for label, value in (
        ("running", overview.running),
        ("scheduled", overview.scheduled),
        ("waiting on dependencies", overview.waiting),
        ("kicks waiting for room", overview.parked),
        ("links", len(overview.links)),
        ("reconnects", overview.reconnects),
    ):
        queue.add_row(label, str(value))
    console.print(queue)

    workers = Table(title="workers")
    for column in ("worker", "node", "capacity", "in use", "load", "last seen (UTC)", "linked"):
        workers.add_column(column)
    for row in overview.workers:
        load = f"{row.in_use / row.capacity:.0%}" if row.capacity else "-"
        workers.add_row(
            row.worker_id,
            row.node,
            str(row.capacity),
            str(row.in_use),
            load,
            _when(row.last_seen),
            "yes" if row.linked else "no",
        )
    console.print(workers)

    minutes = Table(title="last minutes")
    for column in ("minute (UTC)", "succeeded", "failed", "retried", "aborted"):
        minutes.add_column(column)
    for minute in overview.minutes[-5:]:
        minutes.add_row(
            _when(minute.start)[:-3],
            str(minute.succeeded),
            str(minute.failed),
            str(minute.retried),
            str(minute.aborted),
        )
    console.print(minutes)

    failures = Table(title="recent failures")
    for column in ("failed at (UTC)", "task", "id"):
        failures.add_column(column)
    for task in failed.rows:
        at = "" if task.time is None else task.time.format("YYYY-MM-DD HH:mm:ss")
        failures.add_row(at, task.task_name, task.task_id)
    console.print(failures)
