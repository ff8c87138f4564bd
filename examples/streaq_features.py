"""Task features from streaq: abort, status, then/otherwise, after, delay, priority, unique.

The broker here runs one task at a time (``max_async_tasks=1``), so queue order shows.

* ``await handle.status()``: ``scheduled``, ``queued``, ``running``, ``done`` or ``missing``;
* ``await handle.abort()``: a waiting task never runs, a running one is cancelled; either
  way its waiters get an error result with ``TaskAbortedError``;
* ``await handle.then(task, **kwargs)``: feed the return value on (tuples unpacked);
  ``await handle.otherwise(task)``: a fallback run with the same arguments on failure;
* ``kicker().after(*handles)``: wait for dependencies; a failed one fails the dependent
  with ``DependencyFailedError``;
* ``kicker().with_delay(seconds)`` and ``kicker().with_priority(n)`` (higher first);
* ``@broker.task(unique=True)``: equal arguments while one is live give the same handle.

Run: ``python examples/streaq_features.py``
"""

from __future__ import annotations

import trio

from actors import InMemoryBroker

broker = InMemoryBroker(max_async_tasks=1)
ran: list[str] = []


@broker.task
async def work(name: str, seconds: float = 0.0) -> str:
    await trio.sleep(seconds)
    ran.append(name)
    return name


@broker.task
async def split(total: int, parts: int) -> tuple[int, int]:
    return divmod(total, parts)


@broker.task
async def describe(each: int, left: int, unit: str = "") -> str:
    return f"{each}{unit} each, {left}{unit} left over"


@broker.task
async def primary(key: str) -> str:
    raise ConnectionError(f"primary store has no {key!r}")


@broker.task
async def replica(key: str) -> str:
    return f"{key} from the replica"


@broker.task(unique=True)
async def rebuild_index(name: str) -> str:
    await trio.sleep(0.05)
    return f"index {name} rebuilt"


async def main() -> None:
    async with broker:
        # status() and abort()
        running = await work.kiq("long", 10)
        queued = await work.kiq("never")
        await trio.sleep(0.01)
        print(f"status: {await running.status()} / {await queued.status()}")
        print(f"abort queued: {await queued.abort()}, abort running: {await running.abort()}")
        result = await running.wait_result(timeout=5)
        print(f"aborted result: {type(result.error).__name__}, status={result.status}")
        print(f"status after: {await running.status()}, abort again: {await running.abort()}")

        # with_delay(): SCHEDULED until it comes due
        started = trio.current_time()
        later = await work.kicker().with_delay(0.2).kiq("delayed")
        print(f"delayed status: {await later.status()}")
        await later
        print(f"delayed ran after {trio.current_time() - started:.1f}s")

        # with_priority(): higher first, FIFO within a priority
        ran.clear()
        blocker = await work.kiq("blocker", 0.05)
        for name, priority in (("low", 0), ("high", 9), ("mid", 5), ("high-2", 9)):
            await work.kicker().with_priority(priority).kiq(name)
        await broker.wait_all()
        print(f"run order: {ran}")
        await blocker

        # then(): the parent's return value becomes the arguments (a tuple is unpacked)
        shares = await split.kiq(17, 5)
        text = await shares.then(describe, unit=" apples")
        print(f"then: {await text}")

        # otherwise(): the fallback runs with the parent's arguments, only on failure
        fallback = await (await primary.kiq("user:42")).otherwise(replica)
        print(f"otherwise: {await fallback}")

        # after(): dependencies; a failure cascades
        first = await work.kiq("first")
        second = await work.kicker().after(first).kiq("second")
        print(f"after: {await second}")
        broken = await primary.kiq("missing")
        orphan = await work.kicker().after(broken).kiq("orphan")
        result = await orphan.wait_result(timeout=5)
        print(f"after a failure: {type(result.error).__name__}")

        # unique=True: one live run per set of arguments
        one = await rebuild_index.kiq("users")
        two = await rebuild_index.kiq("users")
        print(f"unique: same task {one.task_id == two.task_id}, result {await two!r}")


if __name__ == "__main__":
    trio.run(main)
