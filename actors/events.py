"""Broker lifecycle events and the shared state their handlers receive."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["EventHandler", "TaskiqEvents", "TaskiqState"]


class TaskiqEvents(enum.Enum):
    """When broker event handlers run (``broker.on_event(...)``), as in taskiq."""

    WORKER_STARTUP = "worker_startup"
    WORKER_SHUTDOWN = "worker_shutdown"
    CLIENT_STARTUP = "client_startup"
    CLIENT_SHUTDOWN = "client_shutdown"


class TaskiqState:
    """A namespace shared by event handlers and tasks (``TaskiqDepends`` injects it)."""

    def __init__(self) -> None:
        self.__dict__["_values"] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"state has no {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__["_values"][name] = value

    def __delattr__(self, name: str) -> None:
        del self.__dict__["_values"][name]

    def __getitem__(self, name: str) -> Any:
        return self.__dict__["_values"][name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.__dict__["_values"][name] = value

    def __contains__(self, name: object) -> bool:
        return name in self.__dict__["_values"]


EventHandler = Callable[[TaskiqState], Awaitable[None] | None]
