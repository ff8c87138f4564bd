"""The task of ``bench/chaos.py``: imported by its worker processes and clients.

Each run appends ``start I TIME`` and ``end I TIME`` lines to a file of its own worker
process (``$CHAOS_RUNS/PID``), written straight to the kernel so a SIGKILL loses none:
the runner counts runs per task and finds the late ends of a hung worker from them.
"""

import os
import time
from pathlib import Path
from typing import TextIO

import trio

from actors import WebSocketBroker

broker = WebSocketBroker(os.environ.get("HUB_URL", "ws://127.0.0.1:9000"))
_runs: TextIO | None = None


def expected(i: int) -> int:
    """What task ``i`` returns: checked by the runner."""
    return i * i % 1_000_003


def _record(what: str, i: int) -> None:
    global _runs
    if _runs is None:
        path = Path(os.environ["CHAOS_RUNS"]) / str(os.getpid())
        _runs = path.open("a", buffering=1, encoding="ascii")
    _runs.write(f"{what} {i} {time.time():.6f}\n")


@broker.task("chaos")
async def chaos(i: int, nap: float) -> list[int]:
    """``[expected(i), pid]`` after ``nap`` seconds."""
    _record("start", i)
    await trio.sleep(nap)
    _record("end", i)
    return [expected(i), os.getpid()]
