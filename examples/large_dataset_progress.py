"""Progress reports from a long task, read by the client while it runs.

Inside the task, ``await context.set_progress(TaskProgress(...))`` stores a progress
report in the result backend; outside, ``await handle.get_progress()`` reads the latest
one. This is taskiq's ``process_large_dataset`` example on trio, with the dataset and the
per-item work simulated (``trio.sleep``).

Run: ``python examples/large_dataset_progress.py``
"""

from __future__ import annotations

from typing import Any

import trio

from actors import AsyncTaskiqTask, Context, InMemoryBroker, TaskiqDepends, TaskProgress

broker = InMemoryBroker()


async def load_dataset(dataset_path: str) -> list[dict[str, Any]]:
    """Pretend to read a dataset: 100 items."""
    await trio.sleep(0.01)
    return [{"id": f"{dataset_path}#{i}", "value": i} for i in range(100)]


async def process_item(item: dict[str, Any]) -> int:
    await trio.sleep(0.005)
    return int(item["value"]) ** 2


@broker.task
async def process_large_dataset(
    dataset_path: str,
    context: Context = TaskiqDepends(),
) -> dict[str, Any]:
    """Process a large dataset with progress tracking."""
    items = await load_dataset(dataset_path)
    total_items = len(items)

    await context.set_progress(
        TaskProgress(
            progress=0.0,
            status="Starting processing",
            current=0,
            total=total_items,
            meta={"dataset": dataset_path},
        )
    )

    results: list[int] = []
    for item in items:
        results.append(await process_item(item))
        processed = len(results)
        if processed % 10 == 0:  # update progress every 10 items
            await context.set_progress(
                TaskProgress(
                    progress=processed / total_items,
                    status=f"Processed {processed}/{total_items} items",
                    current=processed,
                    total=total_items,
                    meta={"last_processed": item["id"]},
                )
            )

    await context.set_progress(
        TaskProgress(
            progress=1.0,
            status="Processing complete",
            current=total_items,
            total=total_items,
            meta={"total_processed": len(results)},
        )
    )
    return {"processed_count": len(results), "checksum": sum(results)}


async def check_task_progress(task: AsyncTaskiqTask[Any]) -> None:
    """Print the latest progress report until the task is done."""
    while not await task.is_ready():
        progress = await task.get_progress()
        if progress is not None:
            line = f"Status: {progress.status} | Progress: {progress.progress * 100:.1f}%"
            if progress.current is not None and progress.total:
                line += f" | Items: {progress.current}/{progress.total}"
            print(line)
        await trio.sleep(0.1)

    final_result = await task.wait_result()
    print(f"Task completed: {final_result.return_value}")
    last = await task.get_progress()
    if last is not None:
        print(f"Last progress report: {last.status} ({last.progress:.0%}), meta={last.meta}")


async def main() -> None:
    async with broker:
        task = await process_large_dataset.kiq("data/items.jsonl")
        await check_task_progress(task)


if __name__ == "__main__":
    trio.run(main)
