"""The ``actors`` command line.

``actors scheduler MODULE:SCHEDULER [TASK_MODULE ...]`` imports the user's
:class:`~actors.scheduler.TaskiqScheduler` (and any modules that register tasks), starts
its broker and runs the scheduler until SIGINT or SIGTERM, then exits 0.

Each subcommand is one entry in ``_COMMANDS``: a function adding its arguments and a
function running it, so further subcommands slot in beside ``scheduler``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import trio

__all__ = ["build_parser", "load_object", "main"]

log = logging.getLogger("actors.cli")


class CommandError(Exception):
    """A problem with the command line's input; reported in one line, exit status 2."""


def load_object(spec: str, *, what: str = "OBJECT") -> Any:
    """Import ``MODULE:NAME`` (NAME may be dotted) and return that object."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise CommandError(f"expected MODULE:{what}, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}") from exc
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CommandError(f"{module_name!r} has no attribute {attribute!r}") from None
    return found


def _import_modules(names: Sequence[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise CommandError(f"cannot import {name!r}: {exc}") from exc


async def _until_signalled(run: Callable[[], Any]) -> None:
    """Run ``run()`` until it returns or SIGINT/SIGTERM arrives; either way, cleanly."""
    wanted = [signal.SIGINT, signal.SIGTERM]
    with trio.open_signal_receiver(*wanted) as signals:
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                await run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(serve)
            async for signum in signals:
                log.info("received %s; stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


# scheduler ----------------------------------------------------------------------------


def _scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scheduler", metavar="MODULE:SCHEDULER", help="the TaskiqScheduler to run")
    parser.add_argument(
        "modules",
        metavar="TASK_MODULE",
        nargs="*",
        help="modules to import first, so their tasks are registered",
    )


def _scheduler_command(args: argparse.Namespace) -> int:
    from .scheduler import TaskiqScheduler

    _import_modules(args.modules)
    scheduler = load_object(args.scheduler, what="SCHEDULER")
    if not isinstance(scheduler, TaskiqScheduler):
        raise CommandError(f"{args.scheduler} is not a TaskiqScheduler: {scheduler!r}")

    async def run() -> None:
        async with scheduler.broker:
            log.info("scheduler %s running on %r", args.scheduler, scheduler.broker)
            await scheduler.run()

    trio.run(_until_signalled, run)
    return 0


# The command table --------------------------------------------------------------------

_Command = tuple[
    str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]

_COMMANDS: dict[str, _Command] = {
    "scheduler": (
        "run a scheduler: kick tasks when their schedules come due",
        _scheduler_arguments,
        _scheduler_command,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actors", description="trio-actors: supervised actors and a task queue on trio."
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    parser.add_argument(
        "--app-dir",
        default=".",
        help="directory put first on sys.path to import MODULE from (default: .)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, add_arguments, run) in _COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actors`` console command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.path.insert(0, os.path.abspath(args.app_dir))
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CommandError as exc:
        print(f"actors {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
