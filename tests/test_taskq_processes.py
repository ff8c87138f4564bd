"""The task queue over real websockets between real processes: a hub and a worker started
with the ``actors`` command (one pair for the module), and each test's client a
``WebSocketBroker`` in this process. The tasks are tests/process_tasks.py's.

The hub keeps its results in a backend written for taskiq (``--result-backend``), so every
feature here also goes through the rule for such backends (they get rebuilt results).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pendulum
import pytest
import trio

from actors import (
    AsyncTaskiqTask,
    DependencyFailedError,
    TaskAbortedError,
    TaskStatus,
    WebSocketBroker,
    gather,
)
from actors.exceptions import RemoteTaskError

from .process_tasks import SECRET, Tasks, declare
from .programs import ROOT, program_env


def _start(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``actors ARGS`` in a subprocess, and the first line it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "" if it died
    assert line, f"actors {' '.join(args)} exited with {process.wait()}"
    return process, line.strip()


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    """A hub process and a worker process (one slot) serving tests/process_tasks.py."""
    env = program_env() | {"ACTORS_SECRET": SECRET}
    hub_args = ["--listen", "ws://127.0.0.1:0", "--result-backend", "tests.process_tasks:backend"]
    hub, line = _start("hub", *hub_args, env=env)
    try:
        url = line.rsplit(" ", 1)[1]
        worker_args = ["tests.process_tasks:broker", "--max-async-tasks", "1"]
        worker, line = _start("worker", *worker_args, env=env | {"HUB_URL": url})
        try:
            assert "serving 13 tasks" in line
            yield url
        finally:
            _stop(worker)
    finally:
        _stop(hub)


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Tasks]:
    broker = WebSocketBroker(url, secret=SECRET)
    tasks = declare(broker)
    with trio.fail_after(30):
        async with broker:
            yield tasks


async def test_kiq_wait_gather_and_middlewares_on_their_side(hub_url: str) -> None:
    async with client(hub_url) as tasks:
        handles = [await tasks.add.kiq(i, i) for i in range(5)]
        results = await gather(*handles)
        assert [result.return_value for result in results] == [0, 2, 4, 6, 8]
        assert (await handles[0].get_result()).labels["kept_by"] == "TaskiqStyleBackend"
        sent_by, run_by, worker_pid = await (await tasks.where.kiq())
    assert sent_by == os.getpid()  # the client's pre_send ran here
    assert run_by == worker_pid != os.getpid()  # the worker's pre_execute there


async def test_progress_set_in_the_worker_is_read_by_the_client(hub_url: str) -> None:
    async with client(hub_url) as tasks:
        handle = await tasks.report.kiq()
        worker_pid = await handle
        progress = await handle.get_progress()
    assert progress is not None
    assert (progress.progress, progress.status, progress.message) == (
        0.5,
        "HALF",
        f"in {worker_pid}",
    )


async def test_abort_a_task_running_in_the_worker_process(hub_url: str, tmp_path: Path) -> None:
    log = tmp_path / "forever.log"
    async with client(hub_url) as tasks:
        handle = await tasks.forever.kiq(str(log))
        while await handle.status() is not TaskStatus.RUNNING:
            await trio.sleep(0.005)
        assert await handle.abort(timeout=10) is True
        assert isinstance((await handle.wait_result()).error, TaskAbortedError)
        assert await (await tasks.add.kiq(1, 1)) == 2  # the slot was given back
    assert log.read_text().splitlines() == ["started", "cleaned up"]


async def test_status_info_delay_priority_and_unique(hub_url: str, tmp_path: Path) -> None:
    gate_file, order = tmp_path / "open", tmp_path / "order"
    async with client(hub_url) as tasks:
        gate = await tasks.gate.kiq(str(gate_file))
        while await gate.status() is not TaskStatus.RUNNING:
            await trio.sleep(0.005)
        later = await tasks.add.kicker().with_delay(3600).kiq(1, 2)
        assert await later.status() is TaskStatus.SCHEDULED
        info = await later.info()
        assert info is not None and (info.task_name, info.args) == ("add", (1, 2))
        rebuilt: AsyncTaskiqTask[int] = AsyncTaskiqTask(later.task_id, tasks.add.broker)
        assert await rebuilt.abort() is True
        first = await tasks.once.kiq(7)
        assert (await tasks.once.kiq(7)).task_id == first.task_id
        kicked = pendulum.now("UTC")
        delayed = await tasks.add.kicker().with_delay(0.2).kiq(2, 2)
        records = [
            await tasks.record.kicker().with_priority(priority).kiq(str(order), name)
            for name, priority in [("low", 0), ("high", 5), ("mid", 2), ("high-2", 5)]
        ]
        assert await delayed.status() is TaskStatus.SCHEDULED
        gate_file.touch()
        assert await gate == "released"
        assert await first == 7
        assert await delayed == 4
        start = (await delayed.wait_result()).start_time
        await gather(*records)
    assert start is not None and start >= kicked.add(seconds=0.2)
    assert order.read_text().splitlines() == ["high", "high-2", "mid", "low"]


async def test_then_otherwise_retries_and_an_error_nobody_can_rebuild(
    hub_url: str, tmp_path: Path
) -> None:
    async with client(hub_url) as tasks:
        assert await (await (await tasks.pair.kiq()).then(tasks.combine)) == 23
        failing = await tasks.divide.kiq(1, 0)
        assert await (await failing.otherwise(tasks.fallback)) == -1.0
        skipped = await (await tasks.divide.kiq(1, 0)).then(tasks.combine)
        assert isinstance((await skipped.wait_result()).error, DependencyFailedError)
        retried = await (await tasks.flaky.kiq(str(tmp_path / "tries"))).wait_result()
        strange = await (await tasks.strange.kiq()).wait_result()
    assert (retried.return_value, retried.tries) == (3, 3)
    assert strange.is_err and isinstance(strange.error, RemoteTaskError)
    assert "from a local class" in str(strange.error)
