"""Objects started with ``async with`` or taskiq's ``startup()``/``shutdown()`` pair."""

from __future__ import annotations

import contextlib
from typing import Self

__all__ = ["Service"]


class Service:
    """Started and stopped once however it is called (the brokers and the scheduler).

    :meth:`_start` pushes how to undo each step it takes onto an exit stack: a step that
    fails undoes the ones before it, and :meth:`shutdown` undoes them all, last first.
    """

    _running: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        await self.startup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def running(self) -> bool:
        """Between :meth:`startup` and :meth:`shutdown`."""
        return self._running is not None

    async def startup(self) -> None:
        """Start, unless already running; pair with :meth:`shutdown` in the same task."""
        if self._running is not None:
            return
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            self._running = stack.pop_all()

    async def shutdown(self) -> None:
        """Undo what :meth:`startup` did, last step first; nothing if not running."""
        stack, self._running = self._running, None
        if stack is not None:
            await stack.aclose()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        raise NotImplementedError
