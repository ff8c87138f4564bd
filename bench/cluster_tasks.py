"""The tasks of ``bench/cluster_bench.py``: imported by its worker process and client."""

import os

import trio

from actors import WebSocketBroker

broker = WebSocketBroker(os.environ.get("HUB_URL", "ws://127.0.0.1:9000"))


@broker.task("noop")
async def noop() -> None:
    return None


@broker.task("nap")
async def nap() -> None:
    await trio.sleep(float(os.environ.get("NAP", "0.05")))
