"""The task-queue workloads across processes: a hub, one worker process and a client.

    python bench/cluster_bench.py [--state] [w1 w2 w3]
    python bench/cluster_bench.py mem [N]
    python bench/cluster_bench.py recover [N]

Starts ``actors hub`` and ``actors worker`` on loopback, runs each workload of
``taskq_workloads.py`` from this process through a ``WebSocketBroker``, and prints one
line per workload. When ``taskiq_redis`` is importable and ``redis-server`` is on PATH,
it then runs the same workloads on taskiq: a ``redis-server`` on a free loopback port
(no persistence), taskiq-redis's stream broker and result backend, one ``taskiq worker``
process, and the client polling every millisecond. ``mem`` instead kicks N no-op tasks
(default 1,000,000) into a hub without workers and prints the hub's resident memory per
queued task. ``--state`` adds a line per workload with a durable hub (``actors hub
--state`` on a file in a temporary directory, ``synchronous=FULL``). ``recover`` kicks N
no-op tasks (default 1,000,000) into a durable hub without workers, kills it with SIGKILL,
starts it again on its file, and prints the seconds until it answers a kick (its queue
rebuilt). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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


def run_ours(workload: str, state: str | None = None) -> dict[str, Any]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", NAP=str(workloads.W3_SLEEP))
    capacity = workloads.W3_CONCURRENCY if workload == "w3" else 30
    durable = ["--state", state] if state else ["--max-stored-results", "-1"]
    hub, ready = start("hub", "--listen", "ws://127.0.0.1:0", *durable, env=env)
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
        stop(processes)


def resident_bytes(pid: int) -> int:
    """The process's resident set (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def run_memory(count: int) -> dict[str, Any]:
    """The hub's memory per queued task: COUNT no-op kicks and no worker to take them."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    hub, ready = start(
        *("hub", "--listen", "ws://127.0.0.1:0", "--max-queued", str(count + 1)), env=env
    )
    try:
        import cluster_tasks

        cluster_tasks.broker.url = ready.rsplit(" ", 1)[1]
        # Leaving the broker waits until the hub has accepted every kick.
        cluster_tasks.broker.hand_over_timeout = 60.0

        async def main() -> tuple[int, float]:
            async with cluster_tasks.broker:
                # The first kick links the client: the baseline includes the link.
                await cluster_tasks.noop.kiq()
                before = resident_bytes(hub.pid)
                start_time = time.perf_counter()
                for _ in range(count - 1):
                    await cluster_tasks.noop.kiq()
            return before, time.perf_counter() - start_time

        before, seconds = trio.run(main)
        after = resident_bytes(hub.pid)
        return {
            "queued": count,
            "kick_seconds": round(seconds, 1),
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "bytes_per_task": round((after - before) / (count - 1)),
        }
    finally:
        stop([hub])


def run_recovery(count: int, state: str) -> dict[str, Any]:
    """Seconds for a durable hub killed with COUNT tasks queued to take kicks again."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = ("hub", "--listen", "ws://127.0.0.1:0", "--max-queued", str(count + 1))
    hub, ready = start(*args, "--state", state, env=env)
    url = ready.rsplit(" ", 1)[1]
    import cluster_tasks

    cluster_tasks.broker.url = url
    cluster_tasks.broker.hand_over_timeout = 600.0  # leaving waits for every acknowledgement
    cluster_tasks.broker.connect_timeout = 600.0

    async def kick_all() -> float:
        start_time = time.perf_counter()
        async with cluster_tasks.broker:
            for _ in range(count):
                await cluster_tasks.noop.kiq()
        return time.perf_counter() - start_time

    async def probe() -> None:
        async with cluster_tasks.broker:  # a unique kick is answered once committed
            await cluster_tasks.noop.kicker().with_labels(unique=True).kiq()

    try:
        kick_seconds = trio.run(kick_all)
        hub.send_signal(signal.SIGKILL)
        hub.wait()
        started = time.perf_counter()
        hub, _ = start(*args[:2], url, *args[3:], "--state", state, env=env)
        listening = time.perf_counter() - started
        trio.run(probe)
        recovered = time.perf_counter() - started
    finally:
        stop([hub])
    return {
        "queued": count,
        "kick_seconds": round(kick_seconds, 1),
        "file_mb": round(os.path.getsize(state) / 2**20, 1),
        "listening_seconds": round(listening, 2),
        "recovery_seconds": round(recovered, 2),
    }


def stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in reversed(processes):
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` on loopback, without persistence; yields its URL."""
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop([server])


#: Seconds a taskiq workload may take before its row says it hung.
TASKIQ_TIMEOUT = 120


def run_taskiq_redis(workload: str, url: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", NAP=str(workloads.W3_SLEEP), REDIS_URL=url)
    os.environ["REDIS_URL"] = url
    capacity = workloads.W3_CONCURRENCY if workload == "w3" else 30
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "taskiq", "worker", "taskiq_redis_tasks:broker"),
            *("--workers", "1", "--max-async-tasks", str(capacity), "--log-level", "WARNING"),
        ],
        env=env,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        import taskiq_redis_tasks as tasks

        async def wait(handle: Any) -> Any:
            result = await handle.wait_result(check_interval=workloads.FAST_POLL)
            assert not result.is_err, result.error
            return result

        async def main() -> dict[str, Any]:
            await tasks.broker.startup()
            try:
                await wait(await tasks.noop.kiq())  # the worker is listening
                return await asyncio.wait_for(
                    workloads.workload_named(workload, tasks.noop.kiq, tasks.nap.kiq, wait),
                    TASKIQ_TIMEOUT,
                )
            except TimeoutError:
                # Seen on these machines: its worker process stops taking tasks.
                return {"error": f"no end within {TASKIQ_TIMEOUT} s (the worker hung)"}
            finally:
                await tasks.broker.shutdown()

        return asyncio.run(main())
    finally:
        # Killed with its worker processes: after SIGINT or SIGTERM ``taskiq worker``
        # takes tens of seconds to exit; the figures are in by now.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def main(argv: list[str]) -> None:
    if argv[:1] == ["mem"]:
        count = int(argv[1]) if len(argv) > 1 else 1_000_000
        print(json.dumps({"broker": "ours", "workload": "mem", **run_memory(count)}), flush=True)
        return
    if argv[:1] == ["recover"]:
        count = int(argv[1]) if len(argv) > 1 else 1_000_000
        with tempfile.TemporaryDirectory() as folder:
            figures = run_recovery(count, os.path.join(folder, "hub.db"))
        print(json.dumps({"broker": "ours --state", "workload": "recover", **figures}), flush=True)
        return
    durable = argv[:1] == ["--state"]
    names = argv[durable:] or ["w1", "w2", "w3"]
    for workload in names:
        print(
            json.dumps({"broker": "ours", "workload": workload, **run_ours(workload)}), flush=True
        )
        if durable:
            with tempfile.TemporaryDirectory() as folder:
                figures = run_ours(workload, os.path.join(folder, "hub.db"))
            print(json.dumps({"broker": "ours --state", "workload": workload, **figures}))
    if importlib.util.find_spec("taskiq_redis") is None or shutil.which("redis-server") is None:
        print("taskiq-redis or redis-server missing: no taskiq column", file=sys.stderr)
        return
    with redis_server() as url:
        for workload in names:
            figures = run_taskiq_redis(workload, url)
            print(
                json.dumps({"broker": "taskiq-redis", "workload": workload, **figures}), flush=True
            )


if __name__ == "__main__":
    main(sys.argv[1:])
