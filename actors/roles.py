"""What the task queue's parts use of a broker, as a protocol rather than a class.

Tasks, kickers, handles, contexts and middlewares hold a broker but need only these
members, so they depend on this module and not on :mod:`actors.facade` (which imports
them): no import cycle, and any object with these members serves, whichever process
holds the actors behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .backends.results import AsyncResultBackend
from .events import TaskiqState
from .lifecycle import TaskInfo, TaskStatus
from .result import TaskiqMessage, TaskiqResult, TaskProgress

__all__ = ["Broker"]


class Broker(Protocol):
    """What kickers send through, what handles ask, and what a running task reaches."""

    result_backend: AsyncResultBackend[Any]
    id_generator: Callable[[], str]
    state: TaskiqState

    def sending_broker(self) -> Broker: ...

    async def send(self, message: TaskiqMessage) -> str: ...

    async def wait_result(self, task_id: str) -> TaskiqResult[Any]: ...

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]: ...

    async def is_ready(self, task_id: str) -> bool: ...

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None: ...

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None: ...

    async def task_status(self, task_id: str) -> TaskStatus: ...

    async def task_info(self, task_id: str) -> TaskInfo | None: ...

    async def abort(self, task_id: str, timeout: float = 5) -> bool: ...
