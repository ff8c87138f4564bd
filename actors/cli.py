"""The ``actors`` command line.

``actors hub --listen ws://127.0.0.1:9000`` runs a hub; ``actors worker MODULE:BROKER``
runs worker actors for a ``WebSocketBroker``'s tasks against it. The cluster's secret
comes from ``$ACTORS_SECRET`` or ``--secret-file``, never from the command line itself.

``actors scheduler MODULE:SCHEDULER [TASK_MODULE ...]`` imports the user's
:class:`~actors.scheduler.TaskiqScheduler` (and any modules that register tasks), starts
its broker and runs the scheduler until SIGINT or SIGTERM, then exits 0. When that
broker is a ``WebSocketBroker``, its schedules kick through the hub, with the secret
from ``$ACTORS_SECRET`` or ``--secret-file`` when one is given.

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
from typing import Any, TypeVar

import trio

__all__ = ["build_parser", "load_object", "main"]

log = logging.getLogger("actors.cli")

T = TypeVar("T")


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


def _object_arguments(parser: argparse.ArgumentParser, metavar: str, help_text: str) -> None:
    """The ``MODULE:OBJECT`` to run, and modules to import first."""
    parser.add_argument("target", metavar=metavar, help=help_text)
    parser.add_argument(
        "modules",
        metavar="TASK_MODULE",
        nargs="*",
        help="modules to import first, so their tasks are registered",
    )


def _load_target(args: argparse.Namespace, what: str, kind: type[T]) -> T:
    """Import ``args.modules``, then ``args.target``, which must be a ``kind``."""
    _import_modules(args.modules)
    found = load_object(args.target, what=what)
    if not isinstance(found, kind):
        raise CommandError(f"{args.target} is not a {kind.__name__}: {found!r}")
    return found


def _scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    _object_arguments(parser, "MODULE:SCHEDULER", "the TaskiqScheduler to run")
    _secret_arguments(parser)


def _scheduler_command(args: argparse.Namespace) -> int:
    from .scheduler import TaskiqScheduler
    from .websocket_broker import WebSocketBroker

    scheduler = _load_target(args, "SCHEDULER", TaskiqScheduler)
    secret = _secret(args)
    if secret is not None and isinstance(scheduler.broker, WebSocketBroker):
        scheduler.broker.secret = secret  # it kicks through a hub: the cluster's secret

    async def run() -> None:
        async with scheduler.broker:
            log.info("scheduler %s running on %r", args.target, scheduler.broker)
            await scheduler.run()

    trio.run(_until_signalled, run)
    return 0


# hub and worker -----------------------------------------------------------------------

SECRET_ENV = "ACTORS_SECRET"


def _secret_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret-file",
        help=f"read the cluster's secret from this file (default: ${SECRET_ENV}); "
        "never given on the command line itself",
    )


def _secret(args: argparse.Namespace) -> str | None:
    """The cluster's secret: ``--secret-file``'s content, else ``$ACTORS_SECRET``."""
    if args.secret_file:
        try:
            with open(args.secret_file, encoding="utf-8") as file:
                secret = file.read().strip()
        except OSError as exc:
            raise CommandError(f"cannot read the secret file: {exc}") from exc
        if not secret:
            raise CommandError(f"the secret file {args.secret_file!r} is empty")
        return secret
    return os.environ.get(SECRET_ENV) or None


def _tls(certfile: str | None, keyfile: str | None, cafile: str | None) -> Any:
    """An SSL context for ``wss://``: a server's with ``certfile``, a client's with
    ``cafile``; None without either."""
    import ssl

    try:
        if certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certfile, keyfile)
            return context
        if cafile:
            return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot load the TLS files: {exc}") from exc
    return None


def _hub_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default="ws://127.0.0.1:9000",
        help="address to accept clients and workers at (default ws://127.0.0.1:9000; "
        "port 0 picks a free one)",
    )
    parser.add_argument("--certfile", help="TLS certificate, for a wss:// address")
    parser.add_argument("--keyfile", help="TLS private key (default: in --certfile)")
    parser.add_argument(
        "--serializer",
        default="json",
        choices=["json", "msgpack"],
        help="the clients' serializer, for the errors the hub stores itself (default json)",
    )
    parser.add_argument(
        "--max-stored-results", type=int, default=10_000, help="results kept (default 10000)"
    )
    parser.add_argument(
        "--result-backend",
        metavar="MODULE:BACKEND",
        help="an AsyncResultBackend to keep the results in, instead of memory (a taskiq "
        "backend gets them rebuilt with --serializer: see docs/cluster.md)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=5.0,
        help="seconds between pings on each link (default 5)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=15.0,
        help="seconds a ping waits for its pong before the link is dropped and a hung "
        "worker's runs go to others (default 15)",
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=100_000,
        help="live tasks held before kicks wait for room (default 100000)",
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="a SQLite file that keeps the queue and the results (unless --result-backend), "
        "so a restarted hub carries on (default: memory only)",
    )
    parser.add_argument(
        "--synchronous",
        default="full",
        choices=["normal", "full"],
        help="SQLite's synchronous setting for --state: full survives a power cut, normal "
        "only a crash of the process (default full; see docs/cluster.md)",
    )
    _secret_arguments(parser)


def _hub_command(args: argparse.Namespace) -> int:
    from .backends.results import AsyncResultBackend, InmemoryResultBackend
    from .hub import open_hub
    from .hubstate import HubStateError
    from .serializers import serializer_by_name

    if args.max_queued < 1:
        raise CommandError("--max-queued must be at least 1")
    secret = _secret(args)
    ssl_context = _tls(args.certfile, args.keyfile, None)
    if args.heartbeat_interval <= 0 or args.heartbeat_timeout <= 0:
        raise CommandError("--heartbeat-interval and --heartbeat-timeout must be positive")
    backend: AsyncResultBackend[Any] | None = None
    if args.state is None:
        backend = InmemoryResultBackend(args.max_stored_results)
    if args.result_backend:
        backend = load_object(args.result_backend, what="BACKEND")
        if not isinstance(backend, AsyncResultBackend):
            raise CommandError(f"{args.result_backend} is not an AsyncResultBackend: {backend!r}")

    async def run() -> None:
        async with open_hub(
            args.listen,
            secret=secret,
            serializer=serializer_by_name(args.serializer),
            result_backend=backend,
            ssl_context=ssl_context,
            heartbeat=(args.heartbeat_interval, args.heartbeat_timeout),
            max_queued=args.max_queued,
            state=args.state,
            synchronous=args.synchronous.upper(),
        ) as hub:
            print(f"hub listening at {hub.address}", flush=True)
            await trio.sleep_forever()

    try:
        trio.run(_until_signalled, run)
    except BaseExceptionGroup as group:
        bad_state, rest = group.split(HubStateError)
        if bad_state is None or rest is not None:
            raise
        raise CommandError(str(bad_state.exceptions[0])) from None
    return 0


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    _object_arguments(parser, "MODULE:BROKER", "the WebSocketBroker to serve")
    parser.add_argument("--workers", type=int, default=1, help="worker actors (default 1)")
    parser.add_argument(
        "--max-async-tasks", type=int, default=30, help="tasks each worker runs at once"
    )
    parser.add_argument(
        "--sync-tasks-pool-size", type=int, default=4, help="threads for sync tasks"
    )
    parser.add_argument("--url", help="the hub's address (default: the broker's)")
    parser.add_argument("--cafile", help="CA certificates to check a wss:// hub with")
    _secret_arguments(parser)


def _worker_command(args: argparse.Namespace) -> int:
    from .websocket_broker import WebSocketBroker
    from .worker_node import open_worker_node

    broker = _load_target(args, "BROKER", WebSocketBroker)
    if args.workers < 1 or args.max_async_tasks < 1:
        raise CommandError("--workers and --max-async-tasks must be at least 1")
    secret = _secret(args)

    async def run() -> None:
        async with open_worker_node(
            broker,
            url=args.url,
            secret=secret,
            ssl_context=_tls(None, None, args.cafile),
            workers=args.workers,
            max_async_tasks=args.max_async_tasks,
            sync_tasks_pool_size=args.sync_tasks_pool_size,
        ) as node:
            print(f"worker {node.name} serving {len(broker.tasks)} tasks", flush=True)
            await trio.sleep_forever()

    trio.run(_until_signalled, run)
    return 0


# The command table --------------------------------------------------------------------

_Command = tuple[
    str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]

_COMMANDS: dict[str, _Command] = {
    "hub": (
        "run a hub: the task queue and result store that clients and workers dial",
        _hub_arguments,
        _hub_command,
    ),
    "worker": (
        "run worker actors for a WebSocketBroker's tasks, linked to its hub",
        _worker_arguments,
        _worker_command,
    ),
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
