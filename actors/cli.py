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
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from .logs import configure as configure_logging

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


#: The default grace period of a graceful shutdown, in seconds: below the 30 s an
#: orchestrator such as Kubernetes waits before it kills.
SHUTDOWN_TIMEOUT = 15.0

#: Seconds a process may take after its grace period to close its links and exit.
CLOSING_TIME = 10.0


async def _until_signalled(serve: Callable[[trio.Event], Awaitable[None]], grace: float) -> int:
    """Run ``serve(stopping)`` until it returns; the exit status.

    The first SIGINT or SIGTERM sets ``stopping``: ``serve`` then winds down within
    ``grace`` seconds and returns (0). A second signal, or ``serve`` still going
    ``CLOSING_TIME`` seconds after the grace period, cancels it (1).
    """
    finished = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stopping = trio.Event()

            async def run() -> None:
                nonlocal finished
                await serve(stopping)
                finished = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping.is_set():
                    log.warning("received %s again: stopping at once", name)
                    nursery.cancel_scope.cancel()
                    break
                log.info(
                    "received %s: shutting down within %gs (send it again to stop at once)",
                    name,
                    grace,
                )
                stopping.set()
                nursery.cancel_scope.deadline = trio.current_time() + grace + CLOSING_TIME
    return 0 if finished else 1


def _banner(*lines: str) -> None:
    """What a process serves and where, on stdout: the first line says it is ready."""
    print(lines[0], *(f"  {line}" for line in lines[1:]), sep="\n", flush=True)


def _where(broker: object) -> str:
    url = getattr(broker, "url", None)
    return f"the hub at {url}" if url else type(broker).__name__


def _seconds(text: str) -> float:
    seconds = float(text)
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or more, not {text!r}")
    return seconds


def _operations_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shutdown-timeout``, and the logging options also accepted after the command."""
    parser.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help=f"grace period after SIGINT/SIGTERM (default {SHUTDOWN_TIMEOUT:g}): a worker's "
        "running tasks may finish in it, those still running then go back to the hub; "
        "a second signal stops at once",
    )
    _logging_arguments(parser, argparse.SUPPRESS)


def _logging_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--log-level",
        default=default or "INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO; a worker logs its task events at INFO, the hub "
        "and clients theirs at DEBUG)",
    )
    parser.add_argument(
        "--log-format",
        default=default or "text",
        choices=["text", "json"],
        help="log lines on stderr as text or as JSON objects (default text)",
    )


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
    _operations_arguments(parser)


def _scheduler_command(args: argparse.Namespace) -> int:
    from .scheduler import TaskiqScheduler
    from .websocket_broker import WebSocketBroker

    scheduler = _load_target(args, "SCHEDULER", TaskiqScheduler)
    secret = _secret(args)
    if secret is not None and isinstance(scheduler.broker, WebSocketBroker):
        scheduler.broker.secret = secret  # it kicks through a hub: the cluster's secret

    async def serve(stopping: trio.Event) -> None:
        async with scheduler.broker, scheduler:
            sources = ", ".join(type(source).__name__ for source in scheduler.sources)
            _banner(
                f"scheduler {args.target} running on {_where(scheduler.broker)}",
                f"schedule sources: {sources or 'none'}",
                _secret_origin(args),
            )
            await stopping.wait()

    return trio.run(_until_signalled, serve, args.shutdown_timeout)


# hub and worker -----------------------------------------------------------------------

SECRET_ENV = "ACTORS_SECRET"


def _secret_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret-file",
        help=f"read the cluster's secret from this file (default: ${SECRET_ENV}); "
        "never given on the command line itself",
    )


def _secret_origin(args: argparse.Namespace) -> str:
    """Where the secret comes from, for a banner (never the secret)."""
    if args.secret_file:
        return f"secret: from {args.secret_file}"
    return f"secret: from ${SECRET_ENV}" if os.environ.get(SECRET_ENV) else "secret: none"


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
        "--max-stored-results",
        type=int,
        default=10_000,
        help="results kept after they are read; unread ones are kept until read (default 10000)",
    )
    parser.add_argument(
        "--max-result-memory",
        type=int,
        default=256,
        metavar="MIB",
        help="memory the results may take, read ones evicted first (default 256)",
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
    parser.add_argument(
        "--reclaim-timeout",
        type=float,
        default=10.0,
        help="seconds a task that was running when the hub stopped waits for its worker "
        "to redial and claim it, before it is queued again (default 10)",
    )
    _secret_arguments(parser)
    _http_arguments(parser)
    _operations_arguments(parser)


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
    if args.reclaim_timeout < 0:
        raise CommandError("--reclaim-timeout must be 0 or more")
    if args.max_stored_results < -1 or args.max_result_memory < 0:
        raise CommandError("--max-stored-results must be -1 or more; --max-result-memory 0 or more")
    backend: AsyncResultBackend[Any] | None = None
    if args.state is None:
        backend = InmemoryResultBackend(
            args.max_stored_results, args.max_result_memory * 1024 * 1024
        )
    if args.result_backend:
        backend = load_object(args.result_backend, what="BACKEND")
        if not isinstance(backend, AsyncResultBackend):
            raise CommandError(f"{args.result_backend} is not an AsyncResultBackend: {backend!r}")
    http = _http(args)
    serializer = serializer_by_name(args.serializer)

    async def serve(stopping: trio.Event) -> None:
        from .inspect import HubView
        from .web import dashboard

        async with open_hub(
            args.listen,
            secret=secret,
            serializer=serializer,
            result_backend=backend,
            ssl_context=ssl_context,
            heartbeat=(args.heartbeat_interval, args.heartbeat_timeout),
            max_queued=args.max_queued,
            state=args.state,
            synchronous=args.synchronous.upper(),
            reclaim_timeout=args.reclaim_timeout,
        ) as hub:
            _banner(
                f"hub listening at {hub.address}",
                f"tls: {'on' if ssl_context else 'off'}; {_secret_origin(args)}",
                f"results kept: {args.max_stored_results}; max queued: {args.max_queued}",
            )
            async with dashboard(http, lambda: HubView.of_hub(hub, serializer=serializer)) as url:
                if url is not None:
                    print(f"  dashboard at {url}", flush=True)
                await stopping.wait()
            log.info("hub %s closing: no new links, telling its peers", hub.address)
        # Leaving open_hub's block normally closes each link with 1001 (going away), after
        # sending what its outbox holds: clients and workers see the hub leave and redial.

    return _serve_until_signalled(serve, args.shutdown_timeout, HubStateError)


def _serve_until_signalled(
    serve: Callable[[trio.Event], Awaitable[None]], grace: float, fatal: type[Exception]
) -> int:
    """``trio.run(_until_signalled, ...)``, with a ``fatal`` error out of ``serve`` (from
    inside nurseries' exception groups) reported as a :class:`CommandError`.

    What exists by now (modules, the app and its tasks) lives as long as the process:
    frozen, it is left out of the garbage collector's full collections (a hub's took
    20-30 ms of a W1 run of 10,000 tasks, 0 frozen)."""
    gc.freeze()
    try:
        return trio.run(_until_signalled, serve, grace)
    except BaseExceptionGroup as group:
        found, rest = group.split(fatal)
        if found is None or rest is not None:
            raise
        error: BaseException = found
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise CommandError(str(error)) from None


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
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the first link to the hub before exiting with an error "
        "(default 10); once linked, the worker redials for as long as it runs",
    )
    _secret_arguments(parser)
    _operations_arguments(parser)
    parser.add_argument(
        "--reload",
        action="store_true",
        help="for development: run the worker in a child process and restart it when "
        "MODULE (its whole package) or a TASK_MODULE changes",
    )


def _worker_command(args: argparse.Namespace) -> int:
    from .exceptions import BrokerError
    from .websocket_broker import WebSocketBroker
    from .worker_node import finish_runs, open_worker_node

    if args.reload:
        return _reload_worker(args)
    broker = _load_target(args, "BROKER", WebSocketBroker)
    if args.workers < 1 or args.max_async_tasks < 1:
        raise CommandError("--workers and --max-async-tasks must be at least 1")
    if args.connect_timeout <= 0:
        raise CommandError("--connect-timeout must be positive")
    secret = _secret(args)

    async def serve(stopping: trio.Event) -> None:
        async with open_worker_node(
            broker,
            url=args.url,
            secret=secret,
            ssl_context=_tls(None, None, args.cafile),
            workers=args.workers,
            max_async_tasks=args.max_async_tasks,
            sync_tasks_pool_size=args.sync_tasks_pool_size,
            connect_timeout=args.connect_timeout,
        ) as node:
            _banner(
                f"worker {node.name} serving {len(broker.tasks)} tasks",
                f"hub: {args.url or broker.url}",
                f"tasks: {', '.join(sorted(broker.tasks)) or 'none yet'}",
                f"{args.workers} worker(s) x {args.max_async_tasks} tasks at once, "
                f"{args.sync_tasks_pool_size} threads for sync tasks; {_secret_origin(args)}",
            )
            await stopping.wait()
            with trio.move_on_after(args.shutdown_timeout) as waiting:
                await finish_runs(node, broker.hub, args.workers)
            if waiting.cancelled_caught:
                log.warning("grace period over: the tasks still running go back to the hub")
        # Leaving the block closes the link; the hub requeues what still ran here.

    return _serve_until_signalled(serve, args.shutdown_timeout, BrokerError)


def _watched_paths(args: argparse.Namespace) -> list[str]:
    """What ``--reload`` watches: the top package of MODULE and of each TASK_MODULE
    (or the module's file, for a module outside any package)."""
    import importlib.util

    paths: set[str] = set()
    for name in [args.target.partition(":")[0], *args.modules]:
        try:
            spec = importlib.util.find_spec(name.partition(".")[0])
        except (ImportError, ValueError) as exc:
            raise CommandError(f"cannot find {name!r}: {exc}") from exc
        if spec is None or (spec.origin is None and not spec.submodule_search_locations):
            raise CommandError(f"cannot find the module {name!r}")
        paths.update(spec.submodule_search_locations or [spec.origin or ""])
    return sorted(paths)


def _reload_worker(args: argparse.Namespace) -> int:
    """``actors worker --reload``: the worker runs in a child process, stopped
    gracefully and started again whenever a watched Python file changes."""
    try:
        from watchfiles import PythonFilter, awatch
    except ImportError:
        raise CommandError("--reload needs watchfiles: pip install 'trio-actors[reload]'") from None
    paths = _watched_paths(args)
    child = [sys.executable, "-m", "actors.cli", *(a for a in args.argv if a != "--reload")]

    async def supervise(stopping: trio.Event) -> None:
        log.info("watching %s for changes", ", ".join(paths))
        # The watcher's thread checks ``stopping`` every 50 ms: a signal ends the loop.
        changes = awatch(*paths, watch_filter=PythonFilter(), stop_event=stopping)
        async with contextlib.aclosing(changes):
            while True:
                # Its own session: a Ctrl-C in the terminal reaches this process only,
                # which passes one SIGTERM on (a second would stop the child at once).
                worker = await trio.lowlevel.open_process(child, start_new_session=True)
                try:
                    changed = await anext(changes, None)
                finally:
                    await _stop_child(worker, args.shutdown_timeout + CLOSING_TIME)
                if changed is None:
                    return
                names = ", ".join(sorted({os.path.basename(path) for _, path in changed}))
                log.info("%s changed: restarting the worker", names)

    return trio.run(_until_signalled, supervise, args.shutdown_timeout)


async def _stop_child(process: trio.Process, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds, or at once
    when this is cancelled (a second signal)."""
    try:
        if process.returncode is None:
            process.terminate()
        with trio.move_on_after(timeout):
            await process.wait()
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


# web dashboard ------------------------------------------------------------------------


def _http_arguments(parser: argparse.ArgumentParser) -> None:
    from .web import add_http_arguments

    add_http_arguments(parser)


def _http(args: argparse.Namespace) -> Any:
    """The dashboard's ``HttpConfig``, or None without ``--http``."""
    from .web import http_config

    try:
        return http_config(args)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _web_arguments(parser: argparse.ArgumentParser) -> None:
    _object_arguments(parser, "MODULE:BROKER", "the InMemoryBroker to run and show")
    _http_arguments(parser)
    _operations_arguments(parser)
    parser.set_defaults(http="127.0.0.1:8080")


def _web_command(args: argparse.Namespace) -> int:
    from .inmemory import InMemoryBroker
    from .inspect import HubView
    from .web import dashboard

    broker = _load_target(args, "BROKER", InMemoryBroker)
    http = _http(args)

    async def serve(stopping: trio.Event) -> None:
        async with broker, dashboard(http, lambda: HubView.of_broker(broker)) as url:
            print(f"dashboard for {args.target} at {url}", flush=True)
            await stopping.wait()

    return trio.run(_until_signalled, serve, args.shutdown_timeout)


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hub",
        default="ws://127.0.0.1:9000",
        help="the hub's address (default ws://127.0.0.1:9000)",
    )
    parser.add_argument("--cafile", help="CA certificates to check a wss:// hub with")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to reach the hub (default 10)"
    )
    _secret_arguments(parser)


def _status_command(args: argparse.Namespace) -> int:
    from .exceptions import BrokerError
    from .status import fetch_status, render_status

    secret = _secret(args)
    ssl_context = _tls(None, None, args.cafile)
    try:
        overview, failed = trio.run(
            lambda: fetch_status(
                args.hub, secret=secret, ssl_context=ssl_context, timeout=args.timeout
            )
        )
    except BrokerError as exc:
        print(f"actors status: cannot reach the hub at {args.hub}: {exc}", file=sys.stderr)
        return 1
    render_status(overview, failed)
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
    "web": (
        "run an in-process broker with its workers, and its web dashboard",
        _web_arguments,
        _web_command,
    ),
    "status": (
        "show a hub's queue, workers and recent failures",
        _status_arguments,
        _status_command,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actors", description="trio-actors: supervised actors and a task queue on trio."
    )
    _logging_arguments(parser, None)
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
    configure_logging(args.log_level, args.log_format)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for --reload's child
    sys.path.insert(0, os.path.abspath(args.app_dir))
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CommandError as exc:
        print(f"actors {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
