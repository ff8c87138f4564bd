"""Running the command line's processes: banners, graceful shutdown on SIGINT/SIGTERM,
``actors worker --reload``, and task events as JSON log lines."""

from __future__ import annotations

import json
import logging
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import InMemoryBroker, SendTaskError, WebSocketBroker
from actors.cli import main
from actors.hub import open_hub
from actors.logs import JSONFormatter
from actors.tasks import AsyncTaskiqDecoratedTask

from .programs import program_env
from .test_cluster_cli import SCHEDULED_TASKS, SECRET, STALLING_TASKS, command

HOLDING_TASKS = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import trio

    from actors import WebSocketBroker

    broker = WebSocketBroker(os.environ["HUB_URL"])
    MARK = Path(os.environ["MARK"])


    @broker.task("hold")
    async def hold() -> int:
        MARK.write_text("started")
        while not Path(os.environ["RELEASE"]).exists():
            await trio.sleep(0.05)
        return os.getpid()


    @broker.task("pid")
    async def pid() -> int:
        return os.getpid()
    """
)


async def wait_for(path: Path, text: str = "") -> None:
    """Until ``path`` exists and holds ``text``."""
    with trio.fail_after(30):
        while not (path.exists() and text in path.read_text()):  # noqa: ASYNC240
            await trio.sleep(0.05)


Kicker = AsyncTaskiqDecoratedTask[[], Any]


def client_of(url: str, **options: Any) -> tuple[WebSocketBroker, dict[str, Kicker]]:
    """A client of the hub at ``url``, and the tasks the worker processes run."""
    client = WebSocketBroker(url, **options)

    async def runs_elsewhere() -> Any:
        raise AssertionError("runs in a worker process")

    names = ("hold", "pid", "stall_once", "version")
    return client, {name: client.register_task(runs_elsewhere, name) for name in names}


async def test_sigterm_lets_a_worker_finish_its_running_task_and_take_no_new_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "holding_tasks.py").write_text(HOLDING_TASKS)
    mark, release, log = tmp_path / "mark", tmp_path / "release", tmp_path / "log"
    async with open_hub("ws://127.0.0.1:0") as hub:
        assert hub.address is not None
        env = program_env(tmp_path) | {
            "HUB_URL": hub.address,
            "MARK": str(mark),
            "RELEASE": str(release),
        }
        client, tasks = client_of(hub.address)
        args = ["holding_tasks:broker", "--max-async-tasks", "2", "--shutdown-timeout", "60"]
        async with client:
            with log.open("wb") as stderr:
                async with command("worker", *args, env=env, stop=False, stderr=stderr) as (
                    first,
                    lines,
                ):
                    with trio.fail_after(30):
                        await lines.next()
                        held = await tasks["hold"].kiq()
                        await wait_for(mark)
                    first.send_signal(signal.SIGTERM)
                    await wait_for(log, "takes no more tasks")
                    later = await tasks["pid"].kiq()
                    release.write_text("go")
                    with trio.fail_after(30):  # well within its 60 s of grace
                        assert (await held.wait_result()).return_value == first.pid
                        assert await first.wait() == 0
            async with command("worker", "holding_tasks:broker", env=env) as (second, lines):
                with trio.fail_after(30):
                    result = await later.wait_result()
    assert result.return_value == second.pid  # the stopping worker had room, yet not for it


async def test_a_task_longer_than_the_grace_period_is_rerun_by_another_worker(
    tmp_path: Path,
) -> None:
    (tmp_path / "stalling_tasks.py").write_text(STALLING_TASKS)
    mark = tmp_path / "started"
    async with open_hub("ws://127.0.0.1:0") as hub:
        assert hub.address is not None
        env = program_env(tmp_path) | {"HUB_URL": hub.address, "MARK": str(mark)}
        client, tasks = client_of(hub.address)
        args = ["stalling_tasks:broker", "--shutdown-timeout", "0.5"]
        async with client:
            async with command("worker", *args, env=env, stop=False) as (first, lines):
                with trio.fail_after(30):
                    await lines.next()
                    handle = await tasks["stall_once"].kiq()
                    await wait_for(mark)
                first.send_signal(signal.SIGTERM)
                with trio.fail_after(30):
                    assert await first.wait() == 0
            async with command("worker", "stalling_tasks:broker", env=env) as (_, lines):
                with trio.fail_after(30):
                    await lines.next()
                    result = await handle.wait_result()
    assert result.return_value == "done" and result.tries == 2


async def test_a_second_signal_stops_a_worker_at_once(tmp_path: Path) -> None:
    (tmp_path / "holding_tasks.py").write_text(HOLDING_TASKS)
    mark, log = tmp_path / "mark", tmp_path / "log"
    async with open_hub("ws://127.0.0.1:0") as hub:
        assert hub.address is not None
        env = program_env(tmp_path) | {
            "HUB_URL": hub.address,
            "MARK": str(mark),
            "RELEASE": str(tmp_path / "never"),
        }
        client, tasks = client_of(hub.address)
        async with client:
            with log.open("wb") as stderr:
                async with command(
                    "worker", "holding_tasks:broker", env=env, stop=False, stderr=stderr
                ) as (worker, lines):
                    with trio.fail_after(30):
                        await lines.next()
                        await tasks["hold"].kiq()
                        await wait_for(mark)
                    worker.send_signal(signal.SIGINT)
                    await wait_for(log, "takes no more tasks")
                    worker.send_signal(signal.SIGINT)
                    with trio.fail_after(30):  # its grace period is 15 s
                        assert await worker.wait() == 1
    assert "received SIGINT again: stopping at once" in log.read_text()


async def test_sigint_stops_a_hub_which_says_so_to_its_clients(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = program_env(tmp_path) | {"ACTORS_SECRET": SECRET}
    async with command("hub", "--listen", "ws://127.0.0.1:0", env=env, stop=False) as (
        hub,
        lines,
    ):
        with trio.fail_after(30):
            url = (await lines.next()).rsplit(" ", 1)[1]
            banner = [await lines.next(), await lines.next()]
        assert "secret: from $ACTORS_SECRET" in banner[0] and SECRET not in "".join(banner)
        client, tasks = client_of(url, secret=SECRET, connect_timeout=0.5)
        caplog.set_level(logging.DEBUG, logger="transports.websocket")
        async with client:
            assert client.node is not None
            await client.node.wait_for_peer(client.hub)
            hub.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                assert await hub.wait() == 0
                await client.node.wait_for_peer_lost(client.hub)
            with pytest.raises(SendTaskError, match="no link to the hub"):
                await tasks["pid"].kiq()
    closed = [record.getMessage() for record in caplog.records if "by peer" in record.msg]
    assert [message.split(": ", 1)[1] for message in closed] == [
        "link closed by peer: node shutting down (1001)"  # going away, not 1000 (done)
    ]


async def test_a_scheduler_says_where_it_kicks_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "scheduled_tasks.py").write_text(SCHEDULED_TASKS)
    async with open_hub("ws://127.0.0.1:0") as hub:
        assert hub.address is not None
        env = program_env(tmp_path) | {"HUB_URL": hub.address, "RUNS": str(tmp_path / "runs")}
        env["ACTORS_SECRET"] = ""  # none, whatever this process has
        async with command("scheduler", "scheduled_tasks:scheduler", env=env) as (_, lines):
            with trio.fail_after(30):
                banner = [await lines.next() for _ in range(3)]
    assert banner == [
        f"scheduler scheduled_tasks:scheduler running on the hub at {hub.address}",
        "  schedule sources: LabelScheduleSource",
        "  secret: none",
    ]


RELOADED_TASKS = textwrap.dedent(
    """
    import os

    from actors import WebSocketBroker

    broker = WebSocketBroker(os.environ["HUB_URL"])


    @broker.task("version")
    async def version() -> int:
        return VERSION


    VERSION = 1
    """
)


async def test_reload_restarts_the_worker_when_its_module_changes(tmp_path: Path) -> None:
    module = tmp_path / "reloaded_tasks.py"
    module.write_text(RELOADED_TASKS)
    async with open_hub("ws://127.0.0.1:0") as hub:
        assert hub.address is not None
        env = program_env(tmp_path) | {"HUB_URL": hub.address}
        args = ["reloaded_tasks:broker", "--reload", "--shutdown-timeout", "1"]
        client, tasks = client_of(hub.address)
        async with (
            client,
            command("worker", *args, env=env) as (_, lines),
        ):
            version = tasks["version"]
            with trio.fail_after(30):
                await lines.next()
                assert (await (await version.kiq()).wait_result()).return_value == 1
                module.write_text(RELOADED_TASKS.replace("VERSION = 1", "VERSION = 2"))
                while (await (await version.kiq()).wait_result()).return_value == 1:
                    await trio.sleep(0.05)


async def test_task_events_are_json_lines_with_the_task_id_and_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "holding_tasks.py").write_text(HOLDING_TASKS)
    log = tmp_path / "log"
    caplog.set_level(logging.DEBUG, logger="actors.task_events")
    async with open_hub("ws://127.0.0.1:0") as hub:
        assert hub.address is not None
        env = program_env(tmp_path) | {"HUB_URL": hub.address, "MARK": "", "RELEASE": ""}
        args = ["holding_tasks:broker", "--log-format", "json"]
        client, tasks = client_of(hub.address)
        async with client:
            with log.open("wb") as stderr:
                async with command("worker", *args, env=env, stderr=stderr) as (_, lines):
                    with trio.fail_after(30):
                        banner = [await lines.next() for _ in range(3)]
                        handle = await tasks["pid"].kiq()
                        await handle.wait_result()
    assert banner[0].endswith("serving 2 tasks") and banner[1:] == [
        f"  hub: {hub.address}",
        "  tasks: hold, pid",
    ]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    events = [entry for entry in entries if entry["logger"] == "actors.task_events"]
    assert [(e["event"], e["task_id"], e["task_name"]) for e in events] == [
        ("started", handle.task_id, "pid"),
        ("succeeded", handle.task_id, "pid"),
    ]
    assert events[0]["tries"] == 1 and events[1]["duration"] >= 0
    assert events[0]["level"] == "INFO" and events[0]["message"].startswith("task pid ")
    here = [
        (record.event, record.task_id)  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "actors.task_events"
    ]
    # The client's and the hub's, in this process (their order is the links' business).
    assert sorted(here) == [(event, handle.task_id) for event in ("dispatched", "kicked", "queued")]


async def test_a_worker_logs_failed_retried_and_aborted_runs(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actors.task_events")
    started = trio.Event()
    async with InMemoryBroker() as broker:

        @broker.task("broken", max_tries=2)
        async def broken() -> None:
            raise RuntimeError("broken")

        @broker.task("forever")
        async def forever() -> None:
            started.set()
            await trio.sleep_forever()

        failing = await broken.kiq()
        await failing.wait_result()
        running = await forever.kiq()
        await started.wait()
        assert await running.abort()
    records = [record for record in caplog.records if record.name == "actors.task_events"]
    events = [(r.event, r.task_name, r.task_id) for r in records]  # type: ignore[attr-defined]
    f, r = failing.task_id, running.task_id
    assert events == [
        ("started", "broken", f),
        ("failed", "broken", f),
        ("retried", "broken", f),
        ("started", "broken", f),
        ("failed", "broken", f),
        ("started", "forever", r),
        ("aborted", "forever", r),
    ]
    assert records[1].levelname == "WARNING"
    assert records[1].error == "RuntimeError('broken')"  # type: ignore[attr-defined]


def test_the_json_formatter_adds_extra_fields_and_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "it %s", ("failed",), sys.exc_info(), extra={"n": 1}
        )
    entry = json.loads(JSONFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"], entry["n"]) == (
        "ERROR",
        "x",
        "it failed",
        1,
    )
    assert entry["exc_info"].endswith("ValueError: boom")


def test_a_negative_grace_period_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "tasks:broker", "--shutdown-timeout", "-1"])
    assert exited.value.code == 2
    assert "--shutdown-timeout: expected seconds, 0 or more" in capsys.readouterr().err
