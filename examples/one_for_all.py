"""A ``one_for_all`` group: when one member crashes, all of them restart together.

Run it::

    python examples/one_for_all.py

Three actors form a little pipeline that only works while they agree on a shared
``session``: a ``reader``, a ``parser`` and a ``writer``. They run under one supervisor
with ``strategy="one_for_all"``, so a crash of any one of them stops the others and starts
all three again, in start order, on a new session. (``one_for_one`` would restart only the
crashed member and leave the group on two different sessions; ``rest_for_one`` would
restart the crashed member and those started after it.)

The members report their ``started`` and ``stopped`` hooks on a channel, and the program
prints them in the order they happened.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from actors import Actor, ActorCrashedError, ChildSpec, Node, Supervisor


@attrs.frozen
class Status:
    """Answered with the session the member runs in."""


@attrs.frozen
class Crash:
    """Crash while handling this message."""


class Member(Actor[Status | Crash]):
    def __init__(self, role: str, session: int, events: trio.MemorySendChannel[str]) -> None:
        self.role = role
        self.session = session
        self.events = events

    async def started(self) -> None:
        self.events.send_nowait(f"{self.role} started in session {self.session}")

    async def stopped(self) -> None:
        self.events.send_nowait(f"{self.role} stopped")

    async def receive(self, message: Status | Crash) -> Any:
        if isinstance(message, Crash):
            raise RuntimeError(f"{self.role} crashed")
        return self.session


ROLES = ("reader", "parser", "writer")


async def main() -> None:
    events_send, events = trio.open_memory_channel[str](64)
    session = 0

    def member(role: str) -> ChildSpec:
        def start() -> Member:
            nonlocal session
            # The group starts in order, so the first member opens each new session.
            if role == ROLES[0]:
                session += 1
            return Member(role, session, events_send)

        return ChildSpec(role, start)

    def group() -> Supervisor:
        return Supervisor(
            [member(role) for role in ROLES], strategy="one_for_all", max_restarts=3, within=5.0
        )

    async def show(count: int) -> None:
        for _ in range(count):
            print(f"  {await events.receive()}")

    async with Node.open("example") as node:
        await node.spawn_supervisor(group, name="pipeline")
        await show(3)
        print("sessions:", {role: await node.ref(role).ask(Status()) for role in ROLES})

        print("crashing the parser...")
        try:
            await node.ref("parser").ask(Crash())
        except ActorCrashedError as exc:
            print(f"ask(Crash()) failed: {type(exc).__name__}")
        await show(6)  # three stops, then three starts
        print("sessions:", {role: await node.ref(role).ask(Status()) for role in ROLES})
    print("done")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="[log] %(name)s: %(message)s")
    trio.run(main)
