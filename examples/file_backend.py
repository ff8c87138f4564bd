"""A result backend of your own: results kept as JSON files in a directory.

``FileResultBackend`` is the custom backend from taskiq's API reference, ported to trio
(``trio.Path`` does the file I/O in a worker thread instead of ``aiofiles``). It subclasses
``AsyncResultBackend`` and implements ``set_result``, ``get_result``,
``is_result_ready``, ``delete_result`` and the progress pair; ``with_result_backend``
plugs it into the broker unchanged. The broker's result store actor sits in front of it
and still pushes each result to the waiters present when it is stored; later reads
(``get_result``, ``is_ready``, a late ``wait_result``) go to the files.

Run: ``python examples/file_backend.py`` (it writes into a temporary directory).
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

import trio

from actors import (
    AsyncResultBackend,
    InMemoryBroker,
    ResultGetError,
    TaskiqResult,
    TaskProgress,
)


async def _write_atomically(path: trio.Path, text: str) -> None:
    """Write beside ``path``, then rename over it: a reader never sees half a file."""
    partial = path.with_suffix(".partial")
    await partial.write_text(text)
    await partial.replace(path)


class FileResultBackend(AsyncResultBackend[Any]):
    """Custom file-based result backend."""

    def __init__(self, storage_dir: str = "./task_results") -> None:
        self.storage_dir = trio.Path(storage_dir)

    async def startup(self) -> None:
        await self.storage_dir.mkdir(parents=True, exist_ok=True)

    def _get_result_path(self, task_id: str) -> trio.Path:
        return self.storage_dir / f"{task_id}.json"

    def _get_progress_path(self, task_id: str) -> trio.Path:
        return self.storage_dir / f"{task_id}_progress.json"

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        """Store the result as a JSON file."""
        result_data = {
            "is_err": result.is_err,
            "return_value": result.return_value,
            "execution_time": result.execution_time,
            "labels": result.labels,
            "error": str(result.error) if result.error else None,
            "error_type": type(result.error).__name__ if result.error else None,
        }
        await _write_atomically(
            self._get_result_path(task_id), json.dumps(result_data, default=str)
        )

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        """Load the result from its JSON file."""
        result_path = self._get_result_path(task_id)
        if not await result_path.exists():
            raise ResultGetError(f"Result not found for task {task_id}")
        data = json.loads(await result_path.read_text())
        result: TaskiqResult[Any] = TaskiqResult(
            is_err=data["is_err"],
            return_value=data["return_value"],
            execution_time=data["execution_time"],
            labels=data["labels"],
            task_id=task_id,
        )
        if data["error"]:
            # Only the text survives the file: the type name goes into the message.
            result.error = Exception(f"{data['error_type']}: {data['error']}")
        return result

    async def is_result_ready(self, task_id: str) -> bool:
        """Check if the result file exists."""
        return bool(await self._get_result_path(task_id).exists())

    async def delete_result(self, task_id: str) -> None:
        """Delete the result and progress files."""
        for path in (self._get_result_path(task_id), self._get_progress_path(task_id)):
            if await path.exists():
                await path.unlink()

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        await _write_atomically(self._get_progress_path(task_id), json.dumps(progress.to_dict()))

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        path = self._get_progress_path(task_id)
        if not await path.exists():
            return None
        return TaskProgress.from_dict(json.loads(await path.read_text()))


broker = InMemoryBroker()


@broker.task
async def divide(a: float, b: float) -> dict[str, float]:
    await trio.sleep(0.2)  # long enough for the client to be waiting already
    return {"quotient": a / b}


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="task_results_") as storage_dir:
        custom_backend = FileResultBackend(storage_dir)
        broker.with_result_backend(custom_backend)
        async with broker:
            ok = await divide.kiq(10, 4)
            bad = await divide.kiq(1, 0)

            # Waiters present when the result is stored get it pushed by the store actor,
            # so the error still has its own type here.
            pushed = await bad.wait_result(timeout=5)
            print(f"Pushed to the waiter: is_err={pushed.is_err}, error={pushed.error!r}")
            print(f"Success: {(await ok.wait_result(timeout=5)).return_value}")

            files = sorted(path.name for path in await trio.Path(storage_dir).iterdir())
            print(f"Files written: {len(files)}")
            for name in files:
                text = await (trio.Path(storage_dir) / name).read_text()
                print(f"  {name[:8]}...json: {text}")

            # Reads after the fact come from the files.
            from_file = await bad.get_result()
            print(f"Read back from the file: is_err={from_file.is_err}, error={from_file.error!r}")
            print(f"ok is ready: {await ok.is_ready()}")

            await custom_backend.delete_result(ok.task_id)
            print(f"After delete_result: ok is ready: {await ok.is_ready()}")


if __name__ == "__main__":
    trio.run(main)
