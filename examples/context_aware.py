"""A task that reads its ``Context``, requeues itself, and rejects bad input.

``context: Context = TaskiqDepends()`` injects the run's context:

* ``context.message``: the task id, name, labels, args and kwargs;
* ``await context.requeue()``: the same message (same task id) goes back to the queue
  with the ``X-Taskiq-requeue`` label incremented; this run stores no result;
* ``context.reject()``: the task ends for good, and whoever waits for it gets an error
  result carrying ``TaskRejectedError`` (never a hang).

Run: ``python examples/context_aware.py``
"""

from __future__ import annotations

import trio

from actors import Context, InMemoryBroker, TaskiqDepends, TaskRejectedError

broker = InMemoryBroker()


@broker.task
async def context_aware_task(
    data: str,
    context: Context = TaskiqDepends(),
) -> str:
    """Task that uses its execution context."""
    task_id = context.message.task_id
    requeue_count = context.message.labels.get("X-Taskiq-requeue", "0")

    # Conditional requeue logic.
    if data == "retry_me" and int(requeue_count) < 2:
        print(f"  Requeuing task {task_id} (attempt {int(requeue_count) + 1})")
        await context.requeue()

    # Reject invalid data.
    if data == "invalid":
        context.reject()

    return f"Processed: {data} (ID: {task_id})"


async def main() -> None:
    async with broker:
        for data in ("hello", "retry_me", "invalid"):
            print(f"Kicking {data!r}")
            task = await context_aware_task.kiq(data)
            result = await task.wait_result(timeout=5)
            if result.is_err:
                print(f"  {data!r} failed with {type(result.error).__name__}: {result.error}")
                print(f"  rejected: {isinstance(result.error, TaskRejectedError)}")
            else:
                requeues = result.labels.get("X-Taskiq-requeue", "0")
                print(f"  {result.return_value}")
                print(f"  runs: {result.tries}, X-Taskiq-requeue: {requeues}")


if __name__ == "__main__":
    trio.run(main)
