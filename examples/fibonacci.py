"""Fibonacci numbers with an explicit result backend.

``InMemoryBroker().with_result_backend(...)`` swaps the broker's result backend: here an
``InmemoryResultBackend`` that keeps every result until it is read, and the last 500 read
(``-1`` would keep all). Results stay in the backend after the waiter got them, so a
handle (or one rebuilt from the task id alone) can read them again later with
``get_result()``.

The task calls itself *locally* (calling a decorated task runs the function in place),
as in taskiq's example; only the top-level call goes through the broker.

Run: ``python examples/fibonacci.py``
"""

from __future__ import annotations

import trio

from actors import AsyncTaskiqTask, InMemoryBroker, InmemoryResultBackend

result_backend: InmemoryResultBackend[int] = InmemoryResultBackend(max_stored_results=500)
broker = InMemoryBroker().with_result_backend(result_backend)


@broker.task
async def compute_fibonacci(n: int) -> int:
    """Compute a fibonacci number (naively, to give the worker something to do)."""
    if n <= 1:
        return n
    first: int = await compute_fibonacci(n - 1)
    second: int = await compute_fibonacci(n - 2)
    return first + second


async def main() -> None:
    async with broker:
        # Execute the task; the result is stored in the backend automatically.
        task = await compute_fibonacci.kiq(10)
        value = await task.wait_result()
        print(f"Fibonacci(10) = {value.return_value}")

        # Several at once: they run concurrently on the worker.
        tasks = [await compute_fibonacci.kiq(n) for n in range(15)]
        series = [(await handle.wait_result()).return_value for handle in tasks]
        print(f"Series: {series}")

        # The backend still holds every result.
        print(f"Results in the backend: {len(result_backend.results)}")
        stored = await result_backend.get_result(task.task_id)
        print(f"Read from the backend: {stored.return_value} (is_err={stored.is_err})")

        # A handle rebuilt from the id alone reads the same stored result.
        again: AsyncTaskiqTask[int] = AsyncTaskiqTask(task.task_id, broker)
        print(f"Ready: {await again.is_ready()}, value: {(await again.get_result()).return_value}")


if __name__ == "__main__":
    trio.run(main)
