"""W1 or W2 across a hub, a worker node and a client in one process, for instruction
counts.

    valgrind --tool=callgrind python bench/cluster_cg.py N [w1|w2]

Runs ``N`` no-op tasks of W1 (``taskq_workloads.throughput``), or ``N`` round trips of
W2 (``taskq_workloads.latency``), through a hub on a loopback websocket, a worker node
(30 tasks at a time) and a client, all in one ``trio.run``, as ``cluster_bench.py`` does
in three processes. Instructions per task (or round trip) are the difference between two
sizes divided by the difference in N (start and stop cancel out). Lazy tells wait longer
and heartbeats are off, since valgrind runs 50 times slower.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import taskq_workloads as workloads

from actors import WebSocketBroker
from actors.hub import open_hub
from actors.runtime import node as node_module
from actors.worker_node import open_worker_node


def broker_at(url: str) -> WebSocketBroker:
    broker = WebSocketBroker(url)

    @broker.task("noop")
    async def noop() -> None:
        return None

    return broker


async def main(tasks: int, workload: str = "w1") -> dict[str, Any]:
    workloads.W1_TASKS = tasks
    node_module._LAZY_DELAY = 0.25
    async with open_hub("ws://127.0.0.1:0", heartbeat=(3600.0, 3600.0)) as hub:
        assert hub.address is not None
        client, worker = broker_at(hub.address), broker_at(hub.address)
        async with open_worker_node(worker, max_async_tasks=30), client:
            noop: Any = client.find_task("noop")

            async def wait(handle: Any) -> Any:
                result = await handle.wait_result()
                assert not result.is_err, result.error
                return result

            if workload == "w2":
                return await workloads.latency(noop.kiq, wait, tasks)
            return await workloads.throughput(noop.kiq, wait)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(trio.run(main, count, sys.argv[2] if len(sys.argv) > 2 else "w1"))
