"""Task-queue bench: this project's ``InMemoryBroker`` beside taskiq's, one table.

    python bench/taskq_bench.py [--repeat N] [--only ours|taskiq]

Every cell runs in a fresh process (``bench/taskq_workloads.py WORKLOAD BROKER``), so
neither broker inherits the other's heap, imports or event loop. Timed cells (W1, W2,
W3) run ``--repeat`` times, interleaved, and show the best run; the memory cell and the
default-poll cell run once. taskiq is the optional ``bench`` extra
(``pip install -e '.[bench]'``); without it only this project's column is shown.
See ``bench/taskq_workloads.py`` for exactly what each workload does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "taskq_workloads.py"
TIMEOUT = 120

Cell = dict[str, Any]


def run_cell(workload: str, broker: str) -> Cell | None:
    """Run one workload on one broker in its own process; None if it failed."""
    env = dict(os.environ)
    root = str(HERE.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            [sys.executable, str(WORKLOADS), workload, broker],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"  {workload} on {broker}: timed out after {TIMEOUT}s", file=sys.stderr)
        return None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"  {workload} on {broker} failed (exit {done.returncode}):\n{tail}", file=sys.stderr)
        return None
    cell: Cell = json.loads(done.stdout.strip().splitlines()[-1])
    return cell


def best(runs: list[Cell], key: str, *, highest: bool) -> Cell | None:
    if not runs:
        return None
    choose = max if highest else min
    return choose(runs, key=lambda run: float(run[key]))


def show(cell: Cell | None, render: Callable[[Cell], str]) -> str:
    return "failed" if cell is None else render(cell)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per timed cell (best shown)")
    parser.add_argument("--only", choices=["ours", "taskiq"], help="run one broker only")
    options = parser.parse_args()

    brokers = ["ours", "taskiq"] if options.only is None else [options.only]
    taskiq_note = ""
    if "taskiq" in brokers and importlib.util.find_spec("taskiq") is None:
        brokers.remove("taskiq")
        taskiq_note = "taskiq is not installed (pip install -e '.[bench]'): ours only"
        print(taskiq_note)
    if not brokers:
        return

    started = time.perf_counter()
    timed: dict[tuple[str, str], list[Cell]] = {}
    for _ in range(max(1, options.repeat)):
        for workload in ("w1", "w2", "w3"):
            for broker in brokers:
                cell = run_cell(workload, broker)
                if cell is not None:
                    timed.setdefault((workload, broker), []).append(cell)
    once: dict[tuple[str, str], Cell | None] = {}
    for broker in brokers:
        once["w1mem", broker] = run_cell("w1mem", broker)
    if "taskiq" in brokers:
        once["w2poll", "taskiq"] = run_cell("w2poll", "taskiq")

    def cells(workload: str, key: str, *, highest: bool) -> list[Cell | None]:
        return [best(timed.get((workload, b), []), key, highest=highest) for b in brokers]

    w1 = cells("w1", "tasks_per_s", highest=True)
    w2 = cells("w2", "p50_ms", highest=False)
    w3 = cells("w3", "seconds", highest=False)
    rows: list[list[str]] = [
        [
            "W1 throughput (10,000 no-op tasks)",
            *(show(c, lambda c: f"{c['tasks_per_s']:,.0f} tasks/s") for c in w1),
        ],
        [
            "W1 peak RSS growth",
            *(show(c, lambda c: f"{c['rss_growth_mib']:.1f} MiB") for c in w1),
        ],
        [
            "W1 tracemalloc peak",
            *(show(once["w1mem", b], lambda c: f"{c['traced_peak_mib']:.1f} MiB") for b in brokers),
        ],
        [
            "W2 latency p50 / p99 (500 trips)",
            *(show(c, lambda c: f"{c['p50_ms']:.3f} / {c['p99_ms']:.3f} ms") for c in w2),
        ],
    ]
    if "taskiq" in brokers:
        rows.append(
            [
                "W2 at taskiq's default 0.2 s poll (20)",
                *(
                    "n/a (pushed)"
                    if b == "ours"
                    else show(
                        once["w2poll", b], lambda c: f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms"
                    )
                    for b in brokers
                ),
            ]
        )
    rows.append(
        [
            "W3 2,000 x 50 ms, 100 at once (ideal 1.0)",
            *(show(c, lambda c: f"{c['seconds']:.3f} s") for c in w3),
        ]
    )

    names = {"ours": "trio-actors (trio)", "taskiq": ""}
    if "taskiq" in brokers:
        names["taskiq"] = f"taskiq {importlib.metadata.version('taskiq')} (asyncio)"
    header = ["workload", *(names[b] for b in brokers)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True))
            + " |"
        )

    print()
    print(
        f"InMemoryBroker bench: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"best of {max(1, options.repeat)} runs per timed cell, one process per run"
    )
    print(line(header))
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for row in rows:
        print(line(row))
    print()
    print("Every result is kept (max_stored_results=-1). Ours pushes results to waiters")
    print("(no polling) and runs W3 with max_async_tasks=100.")
    if "taskiq" in brokers:
        print("taskiq's wait_result polls: check_interval=0.001 except in the default-poll")
        print("row. Its InMemoryBroker does not apply max_async_tasks, so its W3 task body")
        print("takes an asyncio.Semaphore(100).")
    if taskiq_note:
        print(taskiq_note)
    print(f"(bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
