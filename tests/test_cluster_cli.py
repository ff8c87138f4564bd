"""``actors hub`` and ``actors worker`` as real processes, with a client in this one."""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import trio

from actors import WebSocketBroker, cli
from actors.hub import open_hub

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
async def command(
    *args: str, env: dict[str, str], stop: bool = True, stderr: IO[bytes] | None = None
) -> AsyncIterator[tuple[trio.Process, Lines]]:
    """``actors ARGS`` in a subprocess; with ``stop``, stopped with SIGTERM on exit,
    which must end it with status 0 (else killed). Its stderr goes to ``stderr``."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "actors.cli", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=ROOT,
        env=env,
    )
    assert process.stdout is not None
    try:
        yield process, Lines(process.stdout)
        if stop:
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


STALLING_TASKS = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import trio

    from actors import WebSocketBroker

    broker = WebSocketBroker(os.environ["HUB_URL"])
    MARK = Path(os.environ["MARK"])


    @broker.task("stall_once")
    async def stall_once() -> str:
        if not MARK.exists():
            MARK.write_text("started")
            await trio.sleep_forever()  # this worker process is killed meanwhile
        return "done"
    """
)


async def error_lines(*args: str, env: dict[str, str]) -> list[str]:
    """``actors ARGS``, which must fail with exit status 2: what it wrote on stderr."""
    done = await trio.run_process(
        [sys.executable, "-m", "actors.cli", "--log-level", "WARNING", *args],
        cwd=ROOT,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 2
    return done.stderr.decode().splitlines()


async def test_a_worker_with_no_hub_to_link_to_exits_with_a_one_line_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "cluster_tasks.py").write_text(TASKS)
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{probe.getsockname()[1]}"
    env = program_env(tmp_path) | {"ACTORS_SECRET": SECRET, "HUB_URL": url}
    worker = ["worker", "cluster_tasks:broker", "--connect-timeout", "0.5"]
    assert await error_lines(*worker, env=env) == [
        f"actors worker: error: worker: no link to the hub at {url} within 0.5s "
        "(is it running, with the same secret?)"
    ]


async def test_a_hub_on_a_file_that_is_not_its_state_exits_with_a_one_line_error(
    tmp_path: Path,
) -> None:
    state = tmp_path / "hub.db"
    state.write_text("not a database")
    hub = ["hub", "--listen", "ws://127.0.0.1:0", "--state", str(state)]
    assert await error_lines(*hub, env=program_env() | {"ACTORS_SECRET": SECRET}) == [
        f"actors hub: error: cannot use the state file {state}: file is not a database"
    ]


async def test_the_runs_of_a_killed_worker_process_go_to_another(tmp_path: Path) -> None:
    (tmp_path / "stalling_tasks.py").write_text(STALLING_TASKS)
    mark = tmp_path / "started"
    async with open_hub("ws://127.0.0.1:0") as hub:
        assert hub.address is not None
        env = program_env(tmp_path) | {"HUB_URL": hub.address, "MARK": str(mark)}
        client = WebSocketBroker(hub.address)

        @client.task("stall_once")
        async def stall_once() -> str:
            raise AssertionError("runs in a worker process")

        async with client:
            async with command("worker", "stalling_tasks:broker", env=env, stop=False) as (
                first,
                lines,
            ):
                with trio.fail_after(30):
                    await lines.next()
                    handle = await stall_once.kiq()
                    while not mark.exists():
                        await trio.sleep(0.05)
                first.kill()  # SIGKILL: no goodbye on the link
            async with command("worker", "stalling_tasks:broker", env=env) as (_, lines):
                with trio.fail_after(30):
                    await lines.next()
                    result = await handle.wait_result()
    assert result.return_value == "done" and result.tries == 2


HANGING_TASKS = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import trio

    from actors import WebSocketBroker

    broker = WebSocketBroker(os.environ["HUB_URL"])
    MARKS = Path(os.environ["MARKS"])


    @broker.task("slow_first")
    async def slow_first() -> int:
        first = not MARKS.exists()
        with MARKS.open("a") as marks:
            marks.write(f"{os.getpid()}\\n")
        if first:
            await trio.sleep(1)  # this worker process is stopped meanwhile
        return os.getpid()
    """
)


async def test_the_runs_of_a_hung_worker_process_go_to_another(tmp_path: Path) -> None:
    (tmp_path / "hanging_tasks.py").write_text(HANGING_TASKS)
    marks = tmp_path / "marks"
    env = program_env(tmp_path)
    heartbeat = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "0.5"]
    async with command("hub", "--listen", "ws://127.0.0.1:0", *heartbeat, env=env) as (
        _,
        hub_lines,
    ):
        with trio.fail_after(30):
            url = (await hub_lines.next()).rsplit(" ", 1)[1]
        env |= {"HUB_URL": url, "MARKS": str(marks)}
        client = WebSocketBroker(url)

        @client.task("slow_first")
        async def slow_first() -> int:
            raise AssertionError("runs in a worker process")

        async with client, command("worker", "hanging_tasks:broker", env=env) as (hung, lines):
            with trio.fail_after(30):
                await lines.next()
                handle = await slow_first.kiq()
                while not marks.exists():
                    await trio.sleep(0.05)
            hung.send_signal(signal.SIGSTOP)
            async with command("worker", "hanging_tasks:broker", env=env) as (other, lines):
                with trio.fail_after(10):  # the default heartbeat would take 20 s
                    await lines.next()
                    result = await handle.wait_result()
                assert result.return_value == other.pid and result.tries == 2
                hung.send_signal(signal.SIGCONT)  # its run's end comes late: ignored
                await trio.sleep(1)  # time for it to relink and report
                late = await client.get_result(handle.task_id)
    assert late.return_value == other.pid and late.tries == 2
    assert marks.read_text().split() == [str(hung.pid), str(other.pid)]  # not run again


SCHEDULED_TASKS = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from actors import LabelScheduleSource, TaskiqScheduler, WebSocketBroker

    broker = WebSocketBroker(os.environ["HUB_URL"], secret="not the one the cli reads")
    scheduler = TaskiqScheduler(broker, [LabelScheduleSource(broker)])
    RUNS = Path(os.environ["RUNS"])


    @broker.task("tick", schedule=[{"interval": 1}])
    async def tick() -> None:
        with RUNS.open("a") as runs:
            runs.write(f"{os.getpid()}\\n")
    """
)


async def test_a_scheduler_process_kicks_through_the_hub_to_a_worker_process(
    tmp_path: Path,
) -> None:
    (tmp_path / "scheduled_tasks.py").write_text(SCHEDULED_TASKS)
    runs = tmp_path / "runs"
    env = program_env(tmp_path) | {"ACTORS_SECRET": SECRET, "RUNS": str(runs)}
    async with command("hub", "--listen", "ws://127.0.0.1:0", env=env) as (_, hub_lines):
        with trio.fail_after(30):
            env["HUB_URL"] = (await hub_lines.next()).rsplit(" ", 1)[1]
        async with (
            command("worker", "scheduled_tasks:broker", env=env) as (worker, worker_lines),
            command("scheduler", "scheduled_tasks:scheduler", env=env),
        ):
            with trio.fail_after(30):
                await worker_lines.next()
                while not runs.exists():
                    await trio.sleep(0.05)
    assert set(runs.read_text().split()) == {str(worker.pid)}


def test_a_served_process_freezes_what_exists_when_it_starts() -> None:
    """``actors hub`` and ``actors worker``: the garbage collector's full collections
    then skip the modules and the app, which live as long as the process."""
    frozen: list[int] = []

    async def serve(stopping: trio.Event) -> None:
        frozen.append(gc.get_freeze_count())

    try:
        assert cli._serve_until_signalled(serve, 1.0, RuntimeError) == 0
    finally:
        gc.unfreeze()
    assert frozen[0] > 10_000  # trio, cattrs, pendulum, ... at least
