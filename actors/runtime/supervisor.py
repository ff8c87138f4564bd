"""Supervisors: OTP restart strategies for a group of children, in one trio nursery.

Theory of operation: each child runs in its own task under its own cancel scope. When a
child's task ends on its own (it returned, or raised), the task posts an exit event to
the supervisor, which applies the child's restart kind and the strategy. A child the
supervisor cancels itself (to restart it with its siblings) posts nothing. Restarts are
counted in a sliding window of ``within`` seconds of trio's clock; one more than
``max_restarts`` makes the supervisor raise :class:`SupervisorFailedError`, which ends
every child and reaches the parent as the crash of one of *its* children.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from .actor import Actor, ActorCell
from .errors import SupervisorFailedError

if TYPE_CHECKING:
    from .node import Node
    from .ref import ActorRef

__all__ = ["Backoff", "ChildSpec", "Restart", "Strategy", "Supervisor", "exponential_backoff"]

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
#: Seconds to wait before a restart, given how many restarts the window holds (1, 2, ...).
Backoff = Callable[[int], float]

log = logging.getLogger("actors.runtime")


def exponential_backoff(initial: float = 0.1, maximum: float = 10.0) -> Backoff:
    """``initial``, doubled for each restart already in the window, capped at ``maximum``."""
    return lambda restarts: min(maximum, initial * 2 ** (restarts - 1))


@attrs.frozen
class ChildSpec:
    """How to (re)start one child: ``start`` builds a fresh actor or supervisor.

    ``restart``: ``permanent`` children are always restarted, ``transient`` ones only
    after a crash, ``temporary`` ones never.
    """

    name: str
    start: Callable[[], Actor[Any] | Supervisor]
    restart: Restart = "permanent"


@attrs.define(eq=False)
class _Child:
    spec: ChildSpec
    cell: ActorCell[Any] | None = None
    supervisor: Supervisor | None = None
    scope: trio.CancelScope | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    generation: int = 0


class _StartedOnce:
    """Passes ``started()`` on to trio at most once, so a child that dies early can too."""

    def __init__(self, status: trio.TaskStatus[None]) -> None:
        self._status = status
        self.called = False

    def started(self, value: None = None) -> None:
        if not self.called:
            self.called = True
            self._status.started()


class Supervisor:
    """Restarts its children by ``strategy`` until restarts exceed the intensity.

    ``one_for_one`` restarts only the child that exited; ``one_for_all`` stops the others
    and restarts them all, in start order; ``rest_for_one`` does that for the exited child
    and those started after it. ``backoff`` waits before each restart.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        within: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self.backoff = backoff
        self._specs = list(children)
        self._children: list[_Child] = []
        self._restarts: collections.deque[float] = collections.deque()
        self._exits_send, self._exits = trio.open_memory_channel[
            tuple[_Child, int, BaseException | None]
        ](1000)
        self._node: Node | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def children(self) -> list[str]:
        """Names of the running children, in start order."""
        return [child.spec.name for child in self._children]

    def child_ref(self, name: str) -> ActorRef[Any]:
        for child in self._children:
            if child.spec.name == name and child.cell is not None:
                return child.cell.ref
        raise KeyError(name)

    def child_supervisor(self, name: str) -> Supervisor:
        for child in self._children:
            if child.spec.name == name and child.supervisor is not None:
                return child.supervisor
        raise KeyError(name)

    async def run(
        self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order, then supervise them until cancelled or failed."""
        self._node = node
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for spec in self._specs:
                    await self._start(_Child(spec))
                task_status.started()
                async for child, generation, error in self._exits:
                    if generation == child.generation and child in self._children:
                        await self._on_exit(child, error)
        finally:
            for child in self._children:
                if child.cell is not None:
                    child.cell.close()

    async def start_child(self, spec: ChildSpec) -> _Child:
        """Add and start a child while running (what ``Node.spawn`` does)."""
        if any(child.spec.name == spec.name for child in self._children):
            raise ValueError(f"a child named {spec.name!r} already runs here")
        child = _Child(spec)
        await self._start(child)
        return child

    async def stop_child(self, name: str) -> None:
        """Stop a child and forget it; it is not restarted."""
        for child in self._children:
            if child.spec.name == name:
                await self._stop(child)
                self._remove(child)
                return
        raise KeyError(name)

    # Internals -------------------------------------------------------------------------

    async def _start(self, child: _Child) -> None:
        assert self._nursery is not None and self._node is not None, "supervisor not running"
        runnable = child.spec.start()
        child.generation += 1
        child.done = trio.Event()
        if isinstance(runnable, Supervisor):
            child.supervisor = runnable
        else:
            if child.cell is None:
                child.cell = self._node.new_cell(
                    child.spec.name, type(runnable).message_type, runnable.mailbox_size
                )
        if child not in self._children:
            self._children.append(child)
        await self._nursery.start(self._run_child, child, runnable)

    async def _run_child(
        self,
        child: _Child,
        runnable: Actor[Any] | Supervisor,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        assert self._node is not None
        generation = child.generation
        status = _StartedOnce(task_status)
        error: BaseException | None = None
        try:
            with trio.CancelScope() as scope:
                child.scope = scope
                try:
                    if isinstance(runnable, Supervisor):
                        await runnable.run(self._node, task_status=status)
                    else:
                        assert child.cell is not None
                        await child.cell.run(runnable, task_status=status)
                except Exception as exc:
                    error = _unwrap(exc)
            if scope.cancelled_caught:
                return  # we stopped it ourselves; nothing to report
            status.started()
            if error is not None:
                log.warning("child %r crashed: %r", child.spec.name, error)
            self._exits_send.send_nowait((child, generation, error))
        finally:
            child.done.set()

    async def _on_exit(self, child: _Child, error: BaseException | None) -> None:
        kind = child.spec.restart
        if kind == "temporary" or (kind == "transient" and error is None):
            self._remove(child)
            return
        self._count_restart(child, error)
        if self.backoff is not None:
            await trio.sleep(self.backoff(len(self._restarts)))
        index = self._children.index(child)
        if self.strategy == "one_for_one":
            group = [child]
        elif self.strategy == "one_for_all":
            group = list(self._children)
        else:
            group = self._children[index:]
        for sibling in reversed(group):
            if sibling is not child:
                await self._stop(sibling)
        for member in group:
            if member is not child and member.spec.restart == "temporary":
                self._remove(member)
            else:
                await self._start(member)

    def _count_restart(self, child: _Child, error: BaseException | None) -> None:
        now = trio.current_time()
        while self._restarts and self._restarts[0] <= now - self.within:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            raise SupervisorFailedError(
                f"more than {self.max_restarts} restarts within {self.within}s; "
                f"last: {child.spec.name!r} ({error!r})"
            ) from error
        self._restarts.append(now)

    async def _stop(self, child: _Child) -> None:
        if child.scope is not None:
            child.scope.cancel()
        await child.done.wait()

    def _remove(self, child: _Child) -> None:
        self._children.remove(child)
        if child.cell is not None:
            child.cell.close()


def _unwrap(error: Exception) -> Exception:
    """The one real error inside the nursery groups an actor's crash arrives wrapped in."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
