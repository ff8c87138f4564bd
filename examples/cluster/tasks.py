"""The tasks of the cluster example: a client kicks them, worker processes run them."""

import os

import trio

from actors import WebSocketBroker

broker = WebSocketBroker(
    os.environ.get("HUB_URL", "ws://127.0.0.1:9000"), secret=os.environ["ACTORS_SECRET"]
)


@broker.task
async def add(a: int, b: int) -> int:
    return a + b


@broker.task
async def slow_square(x: int) -> int:
    await trio.sleep(0.2)  # long enough that both worker processes get some
    return x * x


@broker.task
async def fails() -> None:
    raise ValueError("raised on a worker, seen by the client")
