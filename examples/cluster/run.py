"""Start a hub and two worker processes, run the client against them, stop them all.

    python examples/cluster/run.py

The same as running, in four terminals (with ACTORS_SECRET set in each):

    actors hub --listen ws://127.0.0.1:9000
    actors worker tasks:broker --workers 2 --max-async-tasks 10   # twice
    python client.py
"""

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``actors ARGS`` in a subprocess, and the first line it prints (it is ready then)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "actors.cli", *args],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def main() -> None:
    env = dict(os.environ, ACTORS_SECRET=secrets.token_hex(16), PYTHONUNBUFFERED="1")
    processes: list[subprocess.Popen[str]] = []
    try:
        hub, ready = start("hub", "--listen", "ws://127.0.0.1:0", env=env)
        processes.append(hub)
        print(ready)
        env["HUB_URL"] = ready.rsplit(" ", 1)[1]
        for _ in range(2):
            worker, ready = start(
                "worker", "tasks:broker", "--workers", "2", "--max-async-tasks", "2", env=env
            )
            processes.append(worker)
            print(ready.split(" ", 2)[2])  # "serving N tasks": its name is random
        client = subprocess.run([sys.executable, "client.py"], cwd=HERE, env=env, check=False)
        if client.returncode:
            sys.exit(client.returncode)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            process.wait(timeout=30)
    print("stopped: hub and 2 workers")


if __name__ == "__main__":
    main()
