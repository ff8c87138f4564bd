"""The runtime's examples, each run as a real program: its output and its exit code."""

from __future__ import annotations

from .programs import run_example, run_program


def test_supervised_crash() -> None:
    done = run_program("supervised_crash")  # its log shows crashes: stderr is checked below
    assert done.returncode == 0, done.stderr
    out, err = done.stdout, done.stderr
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


def test_one_for_all() -> None:
    out = run_example("one_for_all")
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


def test_ping_pong_across_two_processes() -> None:
    out = run_example("ping_pong", "--rounds", "7")
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


def test_ping_pong_pong_side_needs_a_port() -> None:
    done = run_program("ping_pong", "pong")
    assert done.returncode == 2
    assert "pong needs --port" in done.stderr
