"""``actors hub`` and ``actors worker`` as real processes, with a client in this one."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from actors import WebSocketBroker

from .programs import ROOT, program_env
from .test_remote import Lines

SECRET = "a secret from the environment"

TASKS = textwrap.dedent(
    """
    import os

    from actors import WebSocketBroker

    broker = WebSocketBroker(os.environ["HUB_URL"], secret="not the one the cli reads")


    @broker.task("add")
    async def add(a: int, b: int) -> int:
        return a + b
    """
)


@asynccontextmanager
async def command(*args: str, env: dict[str, str]) -> AsyncIterator[tuple[trio.Process, Lines]]:
    """``actors ARGS`` in a subprocess; stopped with SIGTERM on exit, which must end it
    with status 0."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "actors.cli", *args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert process.stdout is not None
    try:
        yield process, Lines(process.stdout)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
            await process.stdout.aclose()


async def test_a_hub_and_a_worker_process_serve_a_client(tmp_path: Path) -> None:
    (tmp_path / "cluster_tasks.py").write_text(TASKS)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    env = program_env(tmp_path) | {"ACTORS_SECRET": SECRET}
    async with command("hub", "--listen", "ws://127.0.0.1:0", env=env) as (_, hub_lines):
        with trio.fail_after(30):
            line = await hub_lines.next()
        assert line.startswith("hub listening at ws://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        worker_env = program_env(tmp_path) | {"HUB_URL": url}  # the secret from a file
        worker_args = ["--workers", "2", "--max-async-tasks", "5", "--secret-file"]
        async with command(
            "worker", "cluster_tasks:broker", *worker_args, str(secret_file), env=worker_env
        ) as (_, worker_lines):
            with trio.fail_after(30):
                assert "serving 1 tasks" in await worker_lines.next()
            client = WebSocketBroker(url, secret=SECRET)

            @client.task("add")
            async def add(a: int, b: int) -> int:
                raise AssertionError("runs in the worker process, not here")

            async with client:
                with trio.fail_after(30):
                    results = [await (await add.kiq(i, i)).wait_result() for i in range(5)]
    assert [result.return_value for result in results] == [0, 2, 4, 6, 8]
    assert all(result.worker_id and result.worker_id.startswith("worker-") for result in results)
