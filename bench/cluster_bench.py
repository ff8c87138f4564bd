"""The task-queue workloads across processes: a hub, one worker process and a client.

    python bench/cluster_bench.py [w1 w2 w3]

Starts ``actors hub`` and ``actors worker`` on loopback, runs each workload of
``taskq_workloads.py`` from this process through a ``WebSocketBroker``, and prints one
line per workload. Not a test: numbers depend on the machine. (Not yet: the same
workloads on taskiq with taskiq-redis in the same run.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import taskq_workloads as workloads  # noqa: E402


def start(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``actors ARGS``, and the first line it prints (it is ready then)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actors.cli",
            "--log-level",
            "WARNING",
            "--app-dir",
            str(HERE),
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def run(workload: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", NAP=str(workloads.W3_SLEEP))
    capacity = workloads.W3_CONCURRENCY if workload == "w3" else 30
    hub, ready = start("hub", "--listen", "ws://127.0.0.1:0", "--max-stored-results", "-1", env=env)
    processes = [hub]
    try:
        env["HUB_URL"] = os.environ["HUB_URL"] = ready.rsplit(" ", 1)[1]
        worker, _ = start(
            "worker", "cluster_tasks:broker", "--max-async-tasks", str(capacity), env=env
        )
        processes.append(worker)
        import cluster_tasks

        cluster_tasks.broker.url = env["HUB_URL"]

        async def wait(handle: Any) -> Any:
            result = await handle.wait_result()
            assert not result.is_err, result.error
            return result

        async def main() -> dict[str, Any]:
            async with cluster_tasks.broker:
                return await workloads.workload_named(
                    workload, cluster_tasks.noop.kiq, cluster_tasks.nap.kiq, wait
                )

        return trio.run(main)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def main(argv: list[str]) -> None:
    for workload in argv or ["w1", "w2", "w3"]:
        print(json.dumps({"workload": workload, **run(workload)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
