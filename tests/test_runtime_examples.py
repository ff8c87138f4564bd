"""The runtime's examples, each run as a real program: its output and its exit code."""

from __future__ import annotations

import subprocess
import sys

import trio

from .programs import ROOT

EXAMPLES = ROOT / "examples"


async def run_example(name: str, *args: str) -> tuple[int, str, str]:
    with trio.fail_after(30):
        result: subprocess.CompletedProcess[bytes] = await trio.run_process(
            [sys.executable, str(EXAMPLES / name), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=EXAMPLES.parent,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_supervised_crash() -> None:
    code, out, err = await run_example("supervised_crash.py")
    assert code == 0, err
    assert out.splitlines() == [
        "flaky #1 started",
        "count is 2",
        "ask(Fail()) failed: ActorCrashedError",
        "flaky #2 started (restart 1)",
        "count is 1 (state starts over)",
        "flaky #3 started (restart 2)",
        "count is 3 (the two queued Counts were kept)",
        "ask(Fail()) failed: ActorCrashedError",
        "flaky #4 started (workers supervisor restarted)",
        "workers supervisor replaced by the root: True",
        "count is 1",
        "done",
    ]
    # The runtime logged three crashes of the actor, then the supervisor's failure.
    assert err.count("child 'flaky' crashed") == 3
    assert "child 'workers' crashed: SupervisorFailedError" in err


async def test_one_for_all() -> None:
    code, out, err = await run_example("one_for_all.py")
    assert code == 0, err
    assert out.splitlines() == [
        "  reader started in session 1",
        "  parser started in session 1",
        "  writer started in session 1",
        "sessions: {'reader': 1, 'parser': 1, 'writer': 1}",
        "crashing the parser...",
        "ask(Crash()) failed: ActorCrashedError",
        "  parser stopped",
        "  writer stopped",
        "  reader stopped",
        "  reader started in session 2",
        "  parser started in session 2",
        "  writer started in session 2",
        "sessions: {'reader': 2, 'parser': 2, 'writer': 2}",
        "done",
    ]


async def test_ping_pong_across_two_processes() -> None:
    code, out, err = await run_example("ping_pong.py", "--rounds", "7")
    assert code == 0, err
    lines = out.splitlines()
    # Two processes share the terminal: check each side's lines in its own order.
    ping = [line for line in lines if line.startswith("ping: ")]
    pong = [line for line in lines if line.startswith("pong: ")]
    assert len(ping) + len(pong) == len(lines)
    assert ping[0].startswith("ping: listening on ws://127.0.0.1:")
    assert ping[1:8] == [f"ping: Ping({n}) -> Pong(n={n})" for n in range(7)]
    assert ping[8].startswith("ping: 7 rounds, ")
    assert ping[9:] == ["ping: pong process exited with 0"]
    assert pong == ["pong: linked to 'ping'", "pong: bye after 7 of 7 rounds"]


async def test_ping_pong_pong_side_needs_a_port() -> None:
    code, _, err = await run_example("ping_pong.py", "pong")
    assert code == 2
    assert "pong needs --port" in err
