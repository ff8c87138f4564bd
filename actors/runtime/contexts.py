"""Run a coroutine inside the current task but in a ``contextvars.Context`` of its own.

A trio task gets a copy of its parent's context when it is spawned, so whatever it sets
dies with it. A long-lived task that runs one job after another (to spare a spawn and a
cancel scope per job) keeps that isolation by stepping each job in a fresh copy: that is
what the event loop does for every task, done here for a coroutine within one.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["in_context"]

T = TypeVar("T")


@types.coroutine
def in_context(
    coro: Coroutine[Any, Any, T], context: contextvars.Context
) -> Generator[Any, Any, T]:
    """``await in_context(coro, ctx)``: ``await coro`` with every step run in ``ctx``.

    What the coroutine yields goes to trio unchanged and what trio sends back goes to the
    coroutine, so checkpoints, cancel scopes and cancellation behave as in ``await coro``.
    """
    step: Any = coro.send
    value: Any = None
    while True:
        try:
            yielded = context.run(step, value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            value = yield yielded
            step = coro.send
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown in by the loop: pass it on
            value, step = exc, coro.throw
