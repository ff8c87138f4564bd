"""A durable hub (``actors hub --state``) killed with SIGKILL and started again on the
same file, between real processes: every task it acknowledged still runs, and handles
made before the kill get their results. The tasks are tests/process_tasks.py's."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import trio

from actors import AsyncTaskiqTask, WebSocketBroker, gather

from .process_tasks import SECRET, declare
from .programs import program_env
from .test_taskq_processes import _start, _stop


def _hub(state: Path, listen: str, *options: str) -> tuple[subprocess.Popen[str], str]:
    env = program_env() | {"ACTORS_SECRET": SECRET}
    return _start("hub", "--listen", listen, "--state", str(state), *options, env=env)


def _worker(url: str, slots: int) -> subprocess.Popen[str]:
    env = program_env() | {"ACTORS_SECRET": SECRET, "HUB_URL": url}
    args = ["tests.process_tasks:broker", "--max-async-tasks", str(slots)]
    return _start("worker", *args, env=env)[0]


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


def _first_hub(state: Path) -> tuple[subprocess.Popen[str], str]:
    """A durable hub on a free port, and its address (a restart reuses it)."""
    hub, line = _hub(state, "ws://127.0.0.1:0")
    return hub, line.rsplit(" ", 1)[1]


async def _until_running(*handles: AsyncTaskiqTask[Any]) -> None:
    for handle in handles:
        while (await handle.status()).name != "RUNNING":
            await trio.sleep(0.01)


async def _until_acknowledged(broker: WebSocketBroker) -> None:
    # The client keeps each kick until the hub acknowledges it (committed, with --state).
    while broker._unacked:
        await trio.sleep(0.01)


async def test_a_killed_hub_restarted_on_its_state_file_runs_every_acknowledged_task(
    tmp_path: Path,
) -> None:
    state = tmp_path / "hub.db"
    hub, url = _first_hub(state)
    worker = _worker(url, 2)
    gate, early_gate, log = tmp_path / "gate", tmp_path / "early-gate", tmp_path / "log"
    try:
        broker = WebSocketBroker(url, secret=SECRET, connect_timeout=30)
        tasks = declare(broker)
        with trio.fail_after(60):
            async with broker:
                # The two hold the worker's two slots.
                running = await tasks.gate.kiq(str(gate))
                ends_early = await tasks.gate.kiq(str(early_gate))
                queued = [await tasks.record.kiq(str(log), f"q{i}") for i in range(20)]
                kicked = time.time()
                delayed = [
                    await tasks.add.kicker().with_labels(delay=1.5).kiq(i, i) for i in range(3)
                ]
                await _until_acknowledged(broker)
                await _until_running(running, ends_early)
                _kill(hub)
                early_gate.touch()  # it ends while the hub is down: its worker keeps the end
                await trio.sleep(0.5)
                hub, _ = _hub(state, url, "--reclaim-timeout", "1")
                await trio.sleep(2)  # past the reclaim timeout: unclaimed, it would run again
                gate.touch()
                # Their worker redialled and claimed them: the first runs' results count.
                assert (await running.wait_result()).tries == 1
                assert (await ends_early.wait_result()).tries == 1
                await gather(*queued)
                sums = [result.return_value for result in await gather(*delayed)]
                assert sums == [0, 2, 4]
                assert time.time() >= kicked + 1.5  # the delay kept its wall-clock time
                names = sorted(log.read_text().split())
                assert names == sorted(f"q{i}" for i in range(20))
    finally:
        _stop(worker)
        _stop(hub)


async def test_a_running_task_whose_worker_does_not_come_back_runs_again(
    tmp_path: Path,
) -> None:
    """The hub and the worker running a task are both killed: the restarted hub waits
    ``--reclaim-timeout`` for the worker to claim the run, then queues it again, tries
    counted, and a new worker runs it."""
    state = tmp_path / "hub.db"
    hub, url = _first_hub(state)
    worker = _worker(url, 1)
    gate = tmp_path / "gate"
    try:
        broker = WebSocketBroker(url, secret=SECRET, connect_timeout=30)
        tasks = declare(broker)
        with trio.fail_after(60):
            async with broker:
                running = await tasks.gate.kiq(str(gate))
                await _until_running(running)
                _kill(hub)
                _kill(worker)
                hub, _ = _hub(state, url, "--reclaim-timeout", "1")
                gate.touch()
                worker = _worker(url, 1)
                assert (await running.wait_result()).tries == 2
    finally:
        _stop(worker)
        _stop(hub)
