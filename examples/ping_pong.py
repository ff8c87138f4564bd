"""Ping-pong between two processes: two nodes linked by a websocket on 127.0.0.1.

Run it::

    python examples/ping_pong.py [--rounds N]

With no role argument this process is the *ping* node. It listens on
``ws://127.0.0.1:0`` (the system picks a free port), then starts the other side itself,
as a subprocess::

    python examples/ping_pong.py pong --port PORT

The *pong* node dials the ping node at that port, and serves a ``pong`` actor. Ping asks
it ``Ping(n)`` for N rounds and gets ``Pong(n)`` back each time, then asks ``Bye()``;
the pong process exits 0 and so does this one. Both nodes share a secret (passed to the
child in the ``PING_PONG_SECRET`` environment variable) that never crosses the wire: the
link handshake only proves that each side knows it.

The message classes are registered under explicit wire tags, so both sides agree on them
however this file is imported.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import sys
from functools import partial
from typing import Any

import attrs
import trio

from actors import Actor, Node, wire

SCRIPT = os.path.abspath(__file__)
PING_NODE = "ping"
PONG_NODE = "pong"


@attrs.frozen
class Ping:
    n: int


@attrs.frozen
class Pong:
    n: int


@attrs.frozen
class Bye:
    rounds: int


wire.register(Ping, "ping_pong.Ping")
wire.register(Pong, "ping_pong.Pong")
wire.register(Bye, "ping_pong.Bye")


class Ponger(Actor[Ping | Bye]):
    def __init__(self, done: trio.Event) -> None:
        self.done = done
        self.served = 0

    async def receive(self, message: Ping | Bye) -> Any:
        if isinstance(message, Bye):
            print(f"pong: bye after {self.served} of {message.rounds} rounds", flush=True)
            self.done.set()
            return None
        self.served += 1
        return Pong(message.n)


async def run_pong(port: int, secret: str) -> int:
    """The pong side: dial the ping node, serve ``pong`` until told goodbye."""
    done = trio.Event()
    async with Node.open(PONG_NODE, connect=[f"ws://127.0.0.1:{port}"], secret=secret) as node:
        await node.spawn(lambda: Ponger(done), name="pong")
        await node.wait_for_peer(PING_NODE)
        print(f"pong: linked to {PING_NODE!r}", flush=True)
        async with trio.open_nursery() as nursery:

            async def ping_gone() -> None:
                # If the ping process dies instead of saying goodbye, stop anyway.
                await node.wait_for_peer_lost(PING_NODE, timeout=math.inf)
                nursery.cancel_scope.cancel()

            nursery.start_soon(ping_gone)
            await done.wait()
            nursery.cancel_scope.cancel()
    return 0 if done.is_set() else 1


async def run_ping(rounds: int) -> int:
    """The ping side: listen, start the pong process, play ``rounds`` rounds."""
    secret = secrets.token_hex(16)
    async with Node.open(PING_NODE, listen="ws://127.0.0.1:0", secret=secret) as node:
        assert node.address is not None
        port = int(node.address.rsplit(":", 1)[1])
        print(f"ping: listening on {node.address}", flush=True)
        command = [sys.executable, SCRIPT, "pong", "--port", str(port)]
        environment = {**os.environ, "PING_PONG_SECRET": secret}
        async with trio.open_nursery() as nursery:
            # run_process kills the child if we are cancelled before it exits.
            pong_process: trio.Process = await nursery.start(
                partial(trio.run_process, command, check=False, env=environment)
            )
            await node.wait_for_peer(PONG_NODE, timeout=20)
            pong = node.ref("pong", node=PONG_NODE)
            start = trio.current_time()
            for n in range(rounds):
                reply = await pong.ask(Ping(n), timeout=5)
                assert reply == Pong(n), reply
                print(f"ping: Ping({n}) -> {reply!r}", flush=True)
            elapsed = trio.current_time() - start
            print(f"ping: {rounds} rounds, {elapsed / max(rounds, 1) * 1e3:.2f} ms per round trip")
            await pong.ask(Bye(rounds), timeout=5)
            with trio.fail_after(10):
                code = await pong_process.wait()
        print(f"ping: pong process exited with {code}", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("role", nargs="?", choices=["ping", "pong"], default="ping")
    parser.add_argument("--port", type=int, help="pong: the port the ping node listens on")
    parser.add_argument("--rounds", type=int, default=5, help="ping: how many round trips")
    args = parser.parse_args()
    if args.role == "pong":
        if args.port is None:
            parser.error("pong needs --port")
        secret = os.environ.get("PING_PONG_SECRET", "ping-pong example")
        return trio.run(run_pong, args.port, secret)
    return trio.run(run_ping, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
