"""Quickstart: a task on the in-process ``InMemoryBroker``, kicked and awaited.

The broker, its worker and its result store run as supervised actors inside this
process, so there is no server to start::

    python examples/quickstart.py

This is taskiq's ``calculate_sum`` example on trio: ``async with broker:`` replaces
``startup()``/``shutdown()`` (both forms work), and the result is pushed to the waiter
the moment the task stores it.
"""

from __future__ import annotations

import trio

from actors import InMemoryBroker

broker = InMemoryBroker()


@broker.task
async def calculate_sum(numbers: list[int]) -> int:
    """Calculate the sum of numbers with an artificial delay."""
    await trio.sleep(0.1)  # simulate work
    return sum(numbers)


async def main() -> None:
    async with broker:
        # Send the task; the handle comes back once the broker has accepted it.
        task = await calculate_sum.kiq([1, 2, 3, 4, 5])
        print(f"Kicked task {task.task_id}")

        # Wait for the result (a TaskiqResult); no polling happens here.
        result = await task.wait_result(timeout=10.0)
        print(f"Sum: {result.return_value}")  # Sum: 15
        print(f"Execution time: {result.execution_time:.2f}s, is_err: {result.is_err}")

        # Or await the handle itself: the return value, or the task's error raised.
        total = await task
        print(f"Awaited directly: {total}")

        # Calling the decorated function runs it here, without the broker.
        print(f"Called locally: {await calculate_sum([10, 20])}")


if __name__ == "__main__":
    trio.run(main)
