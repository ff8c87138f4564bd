"""``actors status`` as a real process against a real hub process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from actors import WebSocketBroker
from actors.worker_node import open_worker_node

from .programs import ROOT, program_env
from .test_cluster_cli import SECRET, command


async def _status(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = await trio.run_process(
        [sys.executable, "-m", "actors.cli", "status", *args],
        cwd=ROOT,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


async def test_status_shows_workers_queue_and_failures(tmp_path: Path) -> None:
    env = program_env(tmp_path) | {"ACTORS_SECRET": SECRET, "COLUMNS": "200"}
    async with command("hub", "--listen", "ws://127.0.0.1:0", env=env) as (_, hub_lines):
        with trio.fail_after(30):
            url = (await hub_lines.next()).rsplit(" ", 1)[1]
        client = WebSocketBroker(url, secret=SECRET)
        gate = trio.Event()

        @client.task("hold")
        async def hold() -> None:
            await gate.wait()

        @client.task("boom")
        async def boom() -> None:
            raise ValueError("boom")

        async with client, open_worker_node(client, max_async_tasks=3) as worker:
            with trio.fail_after(30):
                failed = await boom.kiq()
                await failed.wait_result()
                for _ in range(5):
                    await hold.kiq()
                status = await _status("--hub", url, env=env)
                gate.set()
                await client.wait_all()
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert any("queued" in line and "2 (p0: 2)" in line for line in lines), status.stdout
    assert any("running" in line and " 3 " in line for line in lines), status.stdout
    [row] = [line for line in lines if worker.name in line]
    assert [cell.strip() for cell in row.split("│")[3:6]] == ["3", "3", "100%"], row
    assert any(failed.task_id in line and "boom" in line for line in lines), status.stdout


async def test_status_without_the_secret_says_it_cannot_reach_the_hub(tmp_path: Path) -> None:
    env = program_env(tmp_path) | {"ACTORS_SECRET": SECRET}
    async with command("hub", "--listen", "ws://127.0.0.1:0", env=env) as (_, hub_lines):
        with trio.fail_after(30):
            url = (await hub_lines.next()).rsplit(" ", 1)[1]
        env["ACTORS_SECRET"] = "a wrong secret"
        status = await _status("--hub", url, "--timeout", "1", env=env)
    assert status.returncode == 1
    assert "cannot reach the hub" in status.stderr
