"""What a message costs in the actor runtime, next to a bare trio memory channel.

Run it::

    python bench/runtime_bench.py [--scale 1.0]

Prints one row per case: messages sent, wall time, microseconds per message and messages
per second. The cases:

* ``trio channel``: a task sends into a ``trio.open_memory_channel(256)`` and another
  receives; every ``send`` and ``receive`` is a trip through trio's scheduler. The second
  row uses ``send_nowait`` / ``receive_nowait`` first, as mailboxes do, so a busy sender
  fills the channel and the receiver drains it without a task switch per message: the
  floor a local tell stands on.
* ``local tell``: N tells to an actor on this node, then one ask that returns once the
  last tell was handled.
* ``local ask``: N sequential request/reply round trips to an actor on this node.
* ``remote ask``: N sequential round trips to an actor on another node, over a real
  websocket link on 127.0.0.1 (both nodes in this process, so one core does both ends).
* ``remote tell``: N tells across that link, then one ask behind them; the node batches
  waiting frames into one websocket message.

``--scale`` multiplies every N (0.1 for a quick look).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from actors import Actor, ActorRef, Node


@attrs.frozen
class Bump:
    pass


@attrs.frozen
class Count:
    pass


class Counter(Actor[Bump | Count]):
    mailbox_size = 1024

    def __init__(self) -> None:
        self.count = 0

    async def receive(self, message: Bump | Count) -> Any:
        if isinstance(message, Bump):
            self.count += 1
            return None
        return self.count


@attrs.frozen
class Row:
    case: str
    messages: int
    seconds: float

    @property
    def micros(self) -> float:
        return self.seconds / self.messages * 1e6

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


async def timed(case: str, messages: int, run: Callable[[], Awaitable[None]]) -> Row:
    start = time.perf_counter()
    await run()
    return Row(case, messages, time.perf_counter() - start)


async def bench_channel(n: int) -> Row:
    send, receive = trio.open_memory_channel[int](256)

    async def run() -> None:
        async with trio.open_nursery() as nursery:

            async def producer() -> None:
                async with send:
                    for i in range(n):
                        await send.send(i)

            nursery.start_soon(producer)
            async with receive:
                async for _ in receive:
                    pass

    return await timed("trio channel send+receive", n, run)


async def bench_channel_nowait(n: int) -> Row:
    """The same channel used as a mailbox is: ``*_nowait`` first, waiting only when needed."""
    send, receive = trio.open_memory_channel[int](256)

    async def run() -> None:
        async with trio.open_nursery() as nursery:

            async def producer() -> None:
                async with send:
                    for i in range(n):
                        try:
                            send.send_nowait(i)
                        except trio.WouldBlock:
                            await send.send(i)

            nursery.start_soon(producer)
            async with receive:
                while True:
                    try:
                        receive.receive_nowait()
                    except trio.WouldBlock:
                        try:
                            await receive.receive()
                        except trio.EndOfChannel:
                            return
                    except trio.EndOfChannel:
                        return

    return await timed("trio channel, nowait when possible", n, run)


async def bench_tells(case: str, ref: ActorRef[Bump | Count], n: int) -> Row:
    before: int = await ref.ask(Count())

    async def run() -> None:
        for _ in range(n):
            await ref.tell(Bump())
        # Tells from one sender are handled in order: this answer comes after the last.
        assert await ref.ask(Count()) == before + n

    return await timed(case, n, run)


async def bench_asks(case: str, ref: ActorRef[Bump | Count], n: int) -> Row:
    async def run() -> None:
        for _ in range(n):
            await ref.ask(Count())

    return await timed(case, n, run)


async def main(scale: float) -> list[Row]:
    def n(base: int) -> int:
        return max(10, int(base * scale))

    rows = [await bench_channel(n(300_000)), await bench_channel_nowait(n(300_000))]
    async with Node.open("server", listen="ws://127.0.0.1:0", secret="bench") as server:
        local = await server.spawn(Counter, name="counter")
        rows.append(await bench_tells("local actor tell", local, n(200_000)))
        rows.append(await bench_asks("local actor ask (sequential)", local, n(100_000)))
        assert server.address is not None
        async with Node.open("client", connect=[server.address], secret="bench") as client:
            await client.wait_for_peer("server")
            remote: ActorRef[Bump | Count] = client.ref("counter", node="server")
            await remote.ask(Count())  # warm up the link
            rows.append(await bench_asks("remote ask over ws (sequential)", remote, n(5_000)))
            rows.append(await bench_tells("remote tell over ws", remote, n(100_000)))
    return rows


def render(rows: list[Row]) -> str:
    header = f"{'case':<34} {'messages':>9} {'seconds':>8} {'us/msg':>8} {'msgs/s':>10}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.case:<34} {row.messages:>9} {row.seconds:>8.3f} "
            f"{row.micros:>8.2f} {row.rate:>10,.0f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Per-message cost of the actor runtime.")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N")
    print(render(trio.run(main, parser.parse_args().scale)))
