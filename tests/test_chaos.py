"""bench/chaos.py at a small scale: real processes on loopback, faults meanwhile, and
not one acknowledged task lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .programs import ROOT, program_env

#: A few thousand tasks kicked over 10 s, so every fault lands while tasks are in flight.
SMALL = ["--tasks", "2000", "--kick-for", "10", "--cuts", "2", "--deadline", "40", "--json"]


@pytest.mark.parametrize("hub", ["memory", "state"])
def test_no_acknowledged_task_is_lost_under_faults(tmp_path: Path, hub: str) -> None:
    """With ``--state`` the hub is also killed with SIGKILL twice and restarted on its file."""
    durable = ["--state"] if hub == "state" else []
    log = tmp_path / "stderr"
    with log.open("w") as stderr:
        runner = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "chaos.py"), *SMALL, *durable],
            cwd=ROOT,
            env=program_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its processes are killed with it on a timeout
        )
        try:
            out, _ = runner.communicate(timeout=90)
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
    assert runner.returncode == 0, f"{out}\n{log.read_text()[-5000:]}"
    figures = json.loads(out)
    assert figures["kicked"] == figures["acknowledged"] == figures["completed"] == 2000
    assert figures["lost"] == figures["wrong"] == figures["late_ends_accepted"] == 0
    assert figures["worker_kills"] >= 1 and figures["link_cuts"] == 2
    assert figures["hangs"] == 1 and figures["late_ends"] >= 1
    assert figures["hub_kills"] == (2 if durable else 0)
