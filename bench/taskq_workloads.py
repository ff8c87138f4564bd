"""One task-queue workload on one broker, run in a process of its own.

``python bench/taskq_workloads.py WORKLOAD BROKER`` runs it and prints one JSON line;
``bench/taskq_bench.py`` starts one such process per cell of its table. BROKER is
``ours`` (this project's ``InMemoryBroker``, on trio) or ``taskiq`` (taskiq's
``InMemoryBroker``, on asyncio; the optional ``bench`` extra).

Workloads:

* ``w1``: kick 10,000 no-op tasks one by one (each ``kiq`` awaited), then wait for every
  result in order; tasks/s from the first kick to the last result, and the growth of the
  process's peak RSS (``ru_maxrss``) over the run.
* ``w1mem``: the same under ``tracemalloc``; its peak traced memory (slower; no timing).
* ``w2``: 500 sequential round trips (kick one, wait for its result); p50/p99 in ms.
* ``w2poll``: 20 round trips with taskiq's default ``check_interval`` of 0.2 s.
* ``w3``: 2,000 tasks that each sleep 50 ms, 100 running at a time; total seconds.

Both brokers keep every result (``max_stored_results=-1``). taskiq waits by polling, so
its ``wait_result`` gets ``check_interval=0.001`` except in ``w2poll``; ours ignores
``check_interval`` (results are pushed). taskiq's ``InMemoryBroker`` runs each kicked
task at once in an asyncio task and does not apply ``max_async_tasks`` (only a worker's
``listen`` loop does), so in ``w3`` its task body takes an ``asyncio.Semaphore(100)``.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

W1_TASKS = 10_000
W2_ROUND_TRIPS = 500
W2_POLL_ROUND_TRIPS = 20
W3_TASKS = 2_000
W3_SLEEP = 0.05
W3_CONCURRENCY = 100
WARMUP = 200
FAST_POLL = 0.001

Kick = Callable[[], Awaitable[Any]]
Wait = Callable[[Any], Awaitable[Any]]


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def throughput(kick: Kick, wait: Wait, *, traced: bool = False) -> dict[str, Any]:
    """W1 on any broker: kick every task, then wait for every result in order."""
    for handle in [await kick() for _ in range(WARMUP)]:
        await wait(handle)
    if traced:
        tracemalloc.start()
    rss_before = peak_rss_kib()
    started = time.perf_counter()
    handles = [await kick() for _ in range(W1_TASKS)]
    kicked = time.perf_counter()
    for handle in handles:
        await wait(handle)
    elapsed = time.perf_counter() - started
    if traced:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"traced_peak_mib": peak / 2**20}
    return {
        "tasks_per_s": W1_TASKS / elapsed,
        "seconds": elapsed,
        "kick_seconds": kicked - started,
        "rss_growth_mib": (peak_rss_kib() - rss_before) / 1024,
    }


async def latency(kick: Kick, wait: Wait, round_trips: int) -> dict[str, Any]:
    """W2 on any broker: kick one task, wait for its result, repeat."""
    for _ in range(min(WARMUP, round_trips)):
        await wait(await kick())
    samples: list[float] = []
    for _ in range(round_trips):
        started = time.perf_counter()
        await wait(await kick())
        samples.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 0.99),
        "round_trips": round_trips,
    }


async def concurrency(kick: Kick, wait: Wait) -> dict[str, Any]:
    """W3 on any broker: many sleeping tasks, a bounded number at a time."""
    started = time.perf_counter()
    handles = [await kick() for _ in range(W3_TASKS)]
    for handle in handles:
        await wait(handle)
    return {"seconds": time.perf_counter() - started}


async def workload_named(name: str, noop: Kick, nap: Kick, wait: Wait) -> dict[str, Any]:
    """Run workload ``name`` with a broker's no-op and sleeping tasks."""
    if name == "w1":
        return await throughput(noop, wait)
    if name == "w1mem":
        return await throughput(noop, wait, traced=True)
    if name in ("w2", "w2poll"):
        trips = W2_POLL_ROUND_TRIPS if name == "w2poll" else W2_ROUND_TRIPS
        return await latency(noop, wait, trips)
    if name == "w3":
        return await concurrency(nap, wait)
    raise SystemExit(f"unknown workload {name!r}")


# --- this project: trio ---------------------------------------------------------------


def run_ours(workload: str) -> dict[str, Any]:
    import trio

    from actors import AsyncTaskiqTask, InMemoryBroker

    capacity = W3_CONCURRENCY if workload == "w3" else 30
    broker = InMemoryBroker(max_stored_results=-1, max_async_tasks=capacity)

    @broker.task
    async def noop() -> None:
        return None

    @broker.task
    async def nap() -> None:
        await trio.sleep(W3_SLEEP)

    async def wait(handle: AsyncTaskiqTask[Any]) -> Any:
        result = await handle.wait_result()
        assert not result.is_err, result.error
        return result

    async def main() -> dict[str, Any]:
        async with broker:
            return await workload_named(workload, noop.kiq, nap.kiq, wait)

    return trio.run(main)


# --- taskiq: asyncio ------------------------------------------------------------------


def run_taskiq(workload: str) -> dict[str, Any]:
    import asyncio

    from taskiq import InMemoryBroker as TaskiqInMemoryBroker

    broker = TaskiqInMemoryBroker(max_stored_results=-1)  # it ignores max_async_tasks
    poll = 0.2 if workload == "w2poll" else FAST_POLL
    slots: asyncio.Semaphore | None = None

    @broker.task
    async def noop() -> None:
        return None

    @broker.task
    async def nap() -> None:
        assert slots is not None
        async with slots:
            await asyncio.sleep(W3_SLEEP)

    async def wait(handle: Any) -> Any:
        result = await handle.wait_result(check_interval=poll)
        assert not result.is_err, result.error
        return result

    async def main() -> dict[str, Any]:
        nonlocal slots
        slots = asyncio.Semaphore(W3_CONCURRENCY)
        await broker.startup()
        try:
            return await workload_named(workload, noop.kiq, nap.kiq, wait)
        finally:
            await broker.shutdown()

    return asyncio.run(main())


RUNNERS: dict[str, Callable[[str], dict[str, Any]]] = {"ours": run_ours, "taskiq": run_taskiq}


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in RUNNERS:
        raise SystemExit("usage: taskq_workloads.py WORKLOAD {ours,taskiq}")
    workload, broker = argv
    print(json.dumps(RUNNERS[broker](workload)))


if __name__ == "__main__":
    main(sys.argv[1:])
