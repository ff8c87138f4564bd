"""How long the dashboard's asks take with many tasks queued.

    python bench/inspect_bench.py [N]

Kicks N tasks (default 1,000,000) into an ``InMemoryBroker`` without workers (every
one stays queued; one in 1,000 has a name of its own, one in 100 a priority), then
times each ``HubView`` call the dashboard makes: the overview, the first page of tasks,
a page deep in the queue (by its cursor), filtered pages (a rare name, a status no
task has: the broker looks at a bounded number of tasks per page, ``SCAN_BUDGET``),
and one task's detail. Each call is timed as the best of 5. Not a test: numbers depend
on the machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors import InMemoryBroker
from actors.inspect import HubView
from actors.introspection import SCAN_BUDGET
from actors.protocol import BrokerMessage, Enqueue


async def best_ms(call: Callable[[], Awaitable[Any]], runs: int = 5) -> tuple[float, Any]:
    best, answer = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        answer = await call()
        best = min(best, time.perf_counter() - started)
    return best * 1000, answer


async def main(count: int) -> None:
    broker = InMemoryBroker(workers=0)
    async with broker:
        ref = broker.broker_ref
        assert ref is not None
        started = time.perf_counter()
        for i in range(count):
            name = "rare" if i % 1000 == 0 else "common"
            labels = {"priority": 1} if i % 100 == 0 else {}
            await ref.tell(Enqueue(BrokerMessage(f"t{i}", name, b"{}", labels)))
        view = HubView.of_broker(broker, timeout=600)
        overview = await view.overview()
        print(f"kicked {count:,} tasks in {time.perf_counter() - started:.1f} s; "
              f"queued by priority: {overview.queued}")  # fmt: skip
        middle = f"{count // 2 - 1}:t{count // 2 - 1}"
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("overview()", view.overview),
            ("tasks() first page of 50", view.tasks),
            ("tasks(after=middle) a page deep in the queue", lambda: view.tasks(after=middle)),
            ("tasks(name='rare') 50 of 1 in 1,000", lambda: view.tasks(name="rare")),
            (
                f"tasks(status='running') none: {SCAN_BUDGET:,} looked at",
                lambda: view.tasks(status="running"),
            ),
            ("tasks(status='failed') recent ends", lambda: view.tasks(status="failed")),
            ("task(id) in the middle", lambda: view.task(f"t{count // 2}")),
        ]
        for label, call in calls:
            ms, answer = await best_ms(call)
            rows = getattr(answer, "rows", None)
            shown = "" if rows is None else f" ({len(rows)} rows)"
            print(f"{label:<50} {ms:8.2f} ms{shown}")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
