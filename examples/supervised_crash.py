"""An actor that crashes, and the supervisor that restarts it.

Run it::

    python examples/supervised_crash.py

``Flaky`` counts the ``Count`` messages it handles and crashes on ``Fail``. It runs under
a ``workers`` supervisor (``one_for_one``, at most 2 restarts within 10 seconds, with
exponential backoff between restarts), which itself runs under the node's root
supervisor. What the program shows, in order:

1. An ask that crashes the actor fails with ``ActorCrashedError``; the supervisor starts a
   fresh instance, so the count starts over.
2. Messages already in the mailbox survive a restart: the mailbox belongs to the child's
   slot, not to one instance.
3. A third crash within 10 seconds is more than ``workers`` allows: it fails with
   ``SupervisorFailedError``, and its own parent (the root) restarts the whole subtree.

The runtime logs each crash as a warning on stderr; what the program prints goes to stdout.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import attrs
import trio

from actors import (
    Actor,
    ActorCrashedError,
    ActorRef,
    ChildSpec,
    Node,
    Supervisor,
    exponential_backoff,
)


@attrs.frozen
class Count:
    """Count one more; an ask answers with the count so far."""


@attrs.frozen
class Fail:
    """Crash while handling this message."""


class Flaky(Actor[Count | Fail]):
    def __init__(self, incarnation: int, starts: trio.MemorySendChannel[int]) -> None:
        self.incarnation = incarnation
        self.starts = starts
        self.count = 0

    async def started(self) -> None:
        # Tell the program a new instance is up, so it can wait for restarts.
        self.starts.send_nowait(self.incarnation)

    async def receive(self, message: Count | Fail) -> Any:
        if isinstance(message, Fail):
            raise RuntimeError(f"instance #{self.incarnation} asked to fail")
        self.count += 1
        return self.count


async def main() -> None:
    incarnations = itertools.count(1)
    starts_send, starts = trio.open_memory_channel[int](16)

    def workers() -> Supervisor:
        flaky = ChildSpec("flaky", lambda: Flaky(next(incarnations), starts_send))
        return Supervisor(
            [flaky],
            strategy="one_for_one",
            max_restarts=2,
            within=10.0,
            backoff=exponential_backoff(initial=0.05, maximum=1.0),
        )

    async with Node.open("example") as node:
        first_supervisor = await node.spawn_supervisor(workers, name="workers")
        print(f"flaky #{await starts.receive()} started")
        ref: ActorRef[Count | Fail] = node.ref("flaky")

        await ref.tell(Count())
        print(f"count is {await ref.ask(Count())}")

        # 1. A crash fails the ask that caused it; a fresh instance takes over.
        try:
            await ref.ask(Fail())
        except ActorCrashedError as exc:
            print(f"ask(Fail()) failed: {type(exc).__name__}")
        print(f"flaky #{await starts.receive()} started (restart 1)")
        print(f"count is {await ref.ask(Count())} (state starts over)")

        # 2. Messages queued behind a crash wait in the mailbox for the next instance.
        await ref.tell(Fail())
        await ref.tell(Count())
        await ref.tell(Count())
        print(f"flaky #{await starts.receive()} started (restart 2)")
        print(f"count is {await ref.ask(Count())} (the two queued Counts were kept)")

        # 3. One crash too many within the window: the supervisor gives up, and the root
        #    restarts it (and so its children) from scratch.
        try:
            await ref.ask(Fail())
        except ActorCrashedError as exc:
            print(f"ask(Fail()) failed: {type(exc).__name__}")
        print(f"flaky #{await starts.receive()} started (workers supervisor restarted)")
        replaced = node.root.child_supervisor("workers") is not first_supervisor
        print(f"workers supervisor replaced by the root: {replaced}")
        print(f"count is {await ref.ask(Count())}")
    print("done")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="[log] %(name)s: %(message)s")
    trio.run(main)
