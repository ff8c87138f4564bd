"""Error handling: a task that raises, seen from the client.

Shows the three ways to look at a failed task, as in taskiq's error-handling example:

* ``result.is_err`` / ``result.error``: the exception the task raised;
* ``result.raise_for_error()``: raises it (returns the result when there was no error);
* ``await handle``: the return value, or the task's exception raised at the caller.

Run: ``python examples/error_handling.py``
"""

from __future__ import annotations

import trio

from actors import InMemoryBroker

broker = InMemoryBroker()


@broker.task
async def risky_operation(value: int) -> int:
    if value < 0:
        raise ValueError("Negative values not allowed")
    return value * 2


async def handle_results() -> None:
    good = await risky_operation.kiq(21)
    bad = await risky_operation.kiq(-5)

    # wait_result never raises the task's error: it returns a result that carries it.
    result = await bad.wait_result(timeout=5)
    print(f"Ready: {await bad.is_ready()}")
    print(f"Had error: {result.is_err}")
    print(f"Execution time: {result.execution_time:.4f}s")
    if result.error is not None:
        print(f"Error type: {type(result.error).__name__}")
        print(f"Error message: {result.error}")

    # raise_for_error() raises the task's exception ...
    try:
        result.raise_for_error()
    except ValueError as exc:
        print(f"raise_for_error raised: {exc!r}")

    # ... and returns the result itself when the task succeeded.
    ok = (await good.wait_result(timeout=5)).raise_for_error()
    print(f"Success: {ok.return_value}")

    # Awaiting a handle gives the return value or raises the task's exception.
    try:
        value = await bad
        print(f"Unexpected success: {value}")
    except ValueError as exc:
        print(f"Task failed: {exc}")
    print(f"Awaited success: {await good}")


async def main() -> None:
    async with broker:
        await handle_results()


if __name__ == "__main__":
    trio.run(main)
