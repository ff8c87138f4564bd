"""Running the project's programs (examples, the command line) as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def program_env(*import_paths: Path) -> dict[str, str]:
    """This environment, with the repository (and ``import_paths``) importable."""
    env = dict(os.environ)
    paths = [*map(str, import_paths), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_program(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/NAME.py ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, str(Path("examples") / f"{name}.py"), *args],
        cwd=ROOT,
        env=program_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_example(name: str, *args: str, timeout: float = 60) -> str:
    """Run an example that must succeed; its standard output."""
    done = run_program(name, *args, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout
