"""One round trip between two processes on loopback, layer by layer.

    python bench/link_bench.py [N] [case ...]

Each case starts an echo server in a child process and times N sequential round trips
of a 200-byte message from this one: ``tcp`` (trio's SocketStream), ``wsproto`` (wsproto
framing in the same loop, on a trio stream, no task of its own), ``trio-websocket``
(``send_message`` / ``get_message``), ``link`` (a :class:`WebSocketTransport` link,
over trio-websocket) and ``node`` (an ask to an actor on another node over that link).
Prints p50 and mean in microseconds and this process's CPU per round trip. A W2 round
trip of ``cluster_bench.py`` crosses four links (client, hub, worker, hub, client),
two ``node`` round trips. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import attrs
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from actors import Actor, Node
from transports.base import Link
from transports.websocket import WebSocketTransport

MESSAGE = b"x" * 200
CASES = ("tcp", "wsproto", "trio-websocket", "link", "node")


@attrs.frozen
class Ping:
    data: bytes


class Echo(Actor[Ping]):
    async def receive(self, message: Ping) -> bytes:
        return message.data


# -- servers (in the child process) ------------------------------------------------------


async def serve(case: str) -> None:
    async with trio.open_nursery() as nursery:
        if case == "node":
            node = await nursery.start(Node("server", listen="ws://127.0.0.1:0").serve)
            await node.spawn(Echo, name="echo")
            address = node.address
        elif case == "link":
            address = await nursery.start(
                WebSocketTransport("server").serve, "ws://127.0.0.1:0", echo_link
            )
        elif case == "trio-websocket":
            server = await nursery.start(
                trio_websocket.serve_websocket, echo_ws, "127.0.0.1", 0, None
            )
            address = f"ws://127.0.0.1:{server.port}"
        else:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            handler = echo_wsproto if case == "wsproto" else echo_tcp
            nursery.start_soon(trio.serve_listeners, handler, listeners)
            address = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        print(address.rsplit(":", 1)[1], flush=True)


async def echo_link(link: Link) -> None:
    async for data in link:
        await link.send(data)


async def echo_ws(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    with contextlib.suppress(trio_websocket.ConnectionClosed):
        while True:
            await ws.send_message(await ws.get_message())


async def echo_tcp(stream: trio.abc.Stream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


async def echo_wsproto(stream: trio.abc.Stream) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    while data := await stream.receive_some(65536):
        ws.receive_data(bytes(data))
        for event in ws.events():
            if isinstance(event, Request):
                await stream.send_all(ws.send(AcceptConnection()))
            elif isinstance(event, BytesMessage):
                await stream.send_all(ws.send(BytesMessage(data=event.data)))


# -- clients (in this process) -----------------------------------------------------------


async def client(case: str, port: int) -> Callable[[], Awaitable[None]]:
    """A function doing one round trip; its connection stays open in the caller's run."""
    if case == "tcp":
        stream = await trio.open_tcp_stream("127.0.0.1", port)

        async def trip_tcp() -> None:
            await stream.send_all(MESSAGE)
            await stream.receive_some(65536)

        return trip_tcp
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="127.0.0.1", target="/")))
    while not any(isinstance(event, AcceptConnection) for event in ws.events()):
        ws.receive_data(bytes(await stream.receive_some(65536)))

    async def trip_wsproto() -> None:
        await stream.send_all(ws.send(BytesMessage(data=MESSAGE)))
        while True:
            for event in ws.events():
                if isinstance(event, BytesMessage) and event.message_finished:
                    return
            ws.receive_data(bytes(await stream.receive_some(65536)))

    return trip_wsproto


def run_case(case: str, n: int) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "serve", case], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        return trio.run(measure, case, int(child.stdout.readline()), n)
    finally:
        child.terminate()
        child.wait()


async def measure(case: str, port: int, n: int) -> dict[str, float]:
    address = f"ws://127.0.0.1:{port}"
    async with trio.open_nursery() as nursery:
        if case == "trio-websocket":
            ws = await trio_websocket.connect_websocket(
                nursery, "127.0.0.1", port, "/", use_ssl=False
            )

            async def trip() -> None:
                await ws.send_message(MESSAGE)
                await ws.get_message()

            figures = await timed(trip, n)
            await ws.aclose()
        elif case == "link":
            async with WebSocketTransport("client").connect(address) as link:

                async def trip() -> None:
                    await link.send(MESSAGE)
                    await link.receive()

                figures = await timed(trip, n)
        elif case == "node":
            async with Node.open("client", connect=[address]) as node:
                await node.wait_for_peer("server")
                ref = node.ref("echo", node="server")

                async def trip() -> None:
                    await ref.ask(Ping(MESSAGE))

                figures = await timed(trip, n)
        else:
            figures = await timed(await client(case, port), n)
        nursery.cancel_scope.cancel()
    return figures


async def timed(trip: Callable[[], Awaitable[None]], n: int) -> dict[str, float]:
    for _ in range(min(200, n)):
        await trip()
    times = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        await trip()
        times.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return {
        "p50_us": round(statistics.median(times) * 1e6, 1),
        "mean_us": round(statistics.fmean(times) * 1e6, 1),
        "client_cpu_us": round(cpu / n * 1e6, 1),
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        trio.run(serve, argv[1])
        return
    n = int(argv[0]) if argv and argv[0].isdigit() else 3000
    cases = [arg for arg in argv if not arg.isdigit()] or CASES
    for case in cases:
        print(f"{case:15s} {run_case(case, n)}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
