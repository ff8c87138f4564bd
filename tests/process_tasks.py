"""Tasks for tests/test_taskq_processes.py, declared the same way in the worker process
(``actors worker tests.process_tasks:broker``) and on each test's client.

Files stand in for events between the processes: a gate task holds the worker's only
slot until its file exists, and tasks that record append to a file."""

from __future__ import annotations

import os
from typing import Any

import attrs
import trio

from actors import (
    AsyncResultBackend,
    AsyncTaskiqDecoratedTask,
    Context,
    ResultGetError,
    TaskiqDepends,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqResult,
    TaskProgress,
    WebSocketBroker,
)

SECRET = "the processes' secret"


class TaskiqStyleBackend(AsyncResultBackend[Any]):
    """A backend written for taskiq (no encoded results): the hub's, from
    ``--result-backend tests.process_tasks:backend``."""

    def __init__(self) -> None:
        self.results: dict[str, TaskiqResult[Any]] = {}

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        assert isinstance(result, TaskiqResult)
        self.results[task_id] = result

    async def is_result_ready(self, task_id: str) -> bool:
        return task_id in self.results

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        try:
            result = self.results[task_id]
        except KeyError:
            raise ResultGetError(f"no result for {task_id}") from None
        return attrs.evolve(result, labels={**result.labels, "kept_by": type(self).__name__})


backend = TaskiqStyleBackend()


class WhereMiddleware(TaskiqMiddleware):
    """Stamps the process that ran each hook into the labels."""

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        message.labels["sent_by"] = os.getpid()
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        message.labels["run_by"] = os.getpid()
        return message


def _record(path: str, line: str) -> int:
    """Append ``line``; how many lines the file has now."""
    with open(path, "a+") as file:
        file.write(line + "\n")
        file.seek(0)
        return len(file.readlines())


@attrs.frozen
class Tasks:
    add: AsyncTaskiqDecoratedTask[[int, int], int]
    gate: AsyncTaskiqDecoratedTask[[str], str]
    record: AsyncTaskiqDecoratedTask[[str, str], None]
    report: AsyncTaskiqDecoratedTask[[], int]
    forever: AsyncTaskiqDecoratedTask[[str], None]
    pair: AsyncTaskiqDecoratedTask[[], tuple[int, int]]
    combine: AsyncTaskiqDecoratedTask[[int, int], int]
    divide: AsyncTaskiqDecoratedTask[[int, int], float]
    fallback: AsyncTaskiqDecoratedTask[[int, int], float]
    once: AsyncTaskiqDecoratedTask[[int], int]
    flaky: AsyncTaskiqDecoratedTask[[str], int]
    strange: AsyncTaskiqDecoratedTask[[], None]
    where: AsyncTaskiqDecoratedTask[[], list[Any]]


def declare(broker: WebSocketBroker) -> Tasks:
    """The tasks, on ``broker``."""
    broker.add_middlewares(WhereMiddleware())

    @broker.task("add")
    async def add(a: int, b: int) -> int:
        return a + b

    @broker.task("gate")
    async def gate(path: str) -> str:
        while not await trio.Path(path).exists():
            await trio.sleep(0.005)
        return "released"

    @broker.task("record")
    async def record(path: str, name: str) -> None:
        _record(path, name)

    @broker.task("report")
    async def report(context: Context = TaskiqDepends()) -> int:
        await context.set_progress(
            TaskProgress(progress=0.5, status="HALF", message=f"in {os.getpid()}")
        )
        return os.getpid()

    @broker.task("forever")
    async def forever(path: str) -> None:
        _record(path, "started")
        try:
            await trio.sleep_forever()
        finally:
            _record(path, "cleaned up")

    @broker.task("pair")
    async def pair() -> tuple[int, int]:
        return 2, 3

    @broker.task("combine")
    async def combine(a: int, b: int) -> int:
        return a * 10 + b

    @broker.task("divide")
    async def divide(a: int, b: int) -> float:
        return a / b

    @broker.task("fallback")
    async def fallback(a: int, b: int) -> float:
        return -1.0

    @broker.task("once", unique=True)
    async def once(x: int) -> int:
        return x

    @broker.task("flaky", max_tries=3)
    async def flaky(path: str) -> int:
        tries = _record(path, "try")
        if tries < 3:
            raise RuntimeError(f"try {tries}")
        return tries

    @broker.task("strange")
    async def strange() -> None:
        class LocalError(Exception):
            """Not reachable by name: no process can rebuild it."""

        raise LocalError("from a local class")

    @broker.task("where")
    async def where(context: Context = TaskiqDepends()) -> list[Any]:
        labels = context.message.labels
        return [labels["sent_by"], labels["run_by"], os.getpid()]

    return Tasks(
        add,
        gate,
        record,
        report,
        forever,
        pair,
        combine,
        divide,
        fallback,
        once,
        flaky,
        strange,
        where,
    )


broker = WebSocketBroker(os.environ.get("HUB_URL", "ws://127.0.0.1:9000"), secret=SECRET)
tasks = declare(broker)
