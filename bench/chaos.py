"""Fault tests: a hub, worker processes and clients on loopback, with faults meanwhile.

    python bench/chaos.py [--tasks 100000] [--state] [--json] ...

Starts ``actors hub``, ``--workers`` worker processes and ``--clients`` client
processes (this script's ``client`` command), which kick ``--tasks`` tasks of
``chaos_tasks.py`` between them and wait for every result. Half the workers and the
first client link through a TCP proxy in this process. Meanwhile it:

- kills a random worker with SIGKILL every ``--kill-every`` seconds and starts another;
- stops one worker with SIGSTOP until the hub's heartbeat gives up on it, then lets it
  go on (the ends of its runs come late: the hub must ignore them);
- cuts every link through the proxy ``--cuts`` times, for a second each;
- with ``--state``: kills the hub with SIGKILL ``--hub-kills`` times and restarts it on
  the same file and port.

Then it prints the figures (one JSON line with ``--json``) and exits 1 if a task was
lost: acknowledged by the hub but without its right result by the deadline. Tasks run
more than once (a killed or hung worker's runs run again) are allowed, and counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chaos_tasks  # noqa: E402
from cluster_bench import free_port, resident_bytes, start, stop  # noqa: E402

from actors import ResultGetError, SendTaskError  # noqa: E402
from actors.tasks import AsyncTaskiqTask  # noqa: E402


def peak_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resident_bytes(pid)


def task_id(i: int) -> str:
    return f"chaos-{i}"


def nap(i: int) -> float:
    """How long task ``i`` sleeps: 0 to 19 ms, so kills catch runs in flight."""
    return (i * 7919 % 20) / 1000


# The proxy whose links are cut ----------------------------------------------------------


class LinkCutter:
    """A TCP proxy on loopback to ``port``; ``cut()`` drops its connections and refuses
    new ones until ``restore()``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.up = True
        self._links: set[trio.CancelScope] = set()

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._forward, listeners)

    def cut(self) -> None:
        self.up = False
        for link in self._links:
            link.cancel()

    def restore(self) -> None:
        self.up = True

    async def _forward(self, downstream: trio.SocketStream) -> None:
        with trio.CancelScope() as link:
            self._links.add(link)
            try:
                if not self.up:
                    return
                upstream = await trio.open_tcp_stream("127.0.0.1", self.port)
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pipe, downstream, upstream, nursery.cancel_scope)
                    nursery.start_soon(self._pipe, upstream, downstream, nursery.cancel_scope)
            except OSError:
                pass  # the hub is down, or a side went: the link drops
            finally:
                self._links.discard(link)
        await trio.aclose_forcefully(downstream)

    @staticmethod
    async def _pipe(
        source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope
    ) -> None:
        try:
            while chunk := await source.receive_some(65536):
                await sink.send_all(chunk)
        except trio.BrokenResourceError:
            pass
        both.cancel()


# The runner -----------------------------------------------------------------------------


@attrs.define
class Settings:
    tasks: int
    clients: int
    workers: int
    kill_every: float
    hang: bool
    cuts: int
    state: bool
    hub_kills: int
    heartbeat: tuple[float, float]
    kick_for: float
    deadline: float
    workdir: Path


@attrs.define
class Figures:
    """What the runner measured; ``lost`` must be 0."""

    kicked: int = 0
    not_sent: int = 0
    acknowledged: int = 0
    completed: int = 0
    wrong: int = 0
    lost: int = 0
    lost_ids: list[int] = attrs.Factory(list)  # the first few
    unacknowledged: int = 0
    run_more_than_once: int = 0
    runs: int = 0
    worker_kills: int = 0
    worker_start_failures: int = 0
    hangs: int = 0
    late_ends: int = 0
    late_ends_accepted: int = 0
    link_cuts: int = 0
    hub_kills: int = 0
    hub_restart_s: list[float] = attrs.Factory(list)
    hub_recover_s: list[float] = attrs.Factory(list)
    hub_peak_rss_mb: float = 0.0
    kick_s: float = 0.0  # the slowest client's, kicking, and kicking and waiting
    client_s: float = 0.0
    seconds: float = 0.0


class Cluster:
    """The processes, the proxy and the faults of one run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.figures = Figures()
        self.runs = settings.workdir / "runs"
        self.runs.mkdir()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", CHAOS_RUNS=str(self.runs))
        self.port = free_port()
        self.direct = f"ws://127.0.0.1:{self.port}"
        self.proxied = ""
        self.cutter = LinkCutter(self.port)
        self.hub: subprocess.Popen[str] | None = None
        self.workers: list[tuple[subprocess.Popen[str], str]] = []
        self.hung: int | None = None  # while stopped, and a while after: not killed
        self.hung_pid: int | None = None
        self.stopped_at = 0.0  # when the hung worker was stopped

    async def start_hub(self) -> None:
        args = ["hub", "--listen", self.direct, "--max-stored-results", "-1"]
        args += ["--max-queued", str(self.settings.tasks + 1)]
        interval, timeout = self.settings.heartbeat
        args += ["--heartbeat-interval", str(interval), "--heartbeat-timeout", str(timeout)]
        if self.settings.state:
            args += ["--state", str(self.settings.workdir / "hub.db")]
        self.hub, ready = await trio.to_thread.run_sync(lambda: start(*args, env=self.env))
        if not ready.startswith("hub listening"):
            raise RuntimeError(f"the hub did not start: {ready!r}")

    async def start_worker(self, url: str) -> None:
        worker, ready = await trio.to_thread.run_sync(
            lambda: start("worker", "chaos_tasks:broker", "--url", url, env=self.env)
        )
        self.workers.append((worker, url))
        if not ready.startswith("worker"):
            self.figures.worker_start_failures += 1  # it exited: the others carry on

    def hub_peak(self) -> None:
        if self.hub is not None and self.hub.poll() is None:
            peak = peak_bytes(self.hub.pid) / 2**20
            self.figures.hub_peak_rss_mb = max(self.figures.hub_peak_rss_mb, round(peak, 1))

    async def run(self) -> Figures:
        settings = self.settings
        began = time.monotonic()
        async with trio.open_nursery() as nursery:
            proxy_port = await nursery.start(self.cutter.serve)
            self.proxied = f"ws://127.0.0.1:{proxy_port}"
            await self.start_hub()
            try:
                async with trio.open_nursery() as starting:
                    for n in range(settings.workers):
                        starting.start_soon(
                            self.start_worker, self.proxied if n % 2 else self.direct
                        )
                clients = self.start_clients()
                faults = [self.kill_workers, self.cut_links]
                faults += [self.hang_worker] if settings.hang else []
                faults += [self.kill_hub] if settings.state and settings.hub_kills else []
                async with trio.open_nursery() as chaos:
                    for fault in faults:
                        chaos.start_soon(fault)
                    chaos.start_soon(self.watch_hub)
                    await trio.to_thread.run_sync(lambda: [c.wait() for c in clients])
                    chaos.cancel_scope.cancel()
                await self.check_late_ends()
                self.hub_peak()
            finally:
                for worker, _ in self.workers:
                    worker.send_signal(signal.SIGCONT)
                    worker.kill()
                    worker.wait()
                if self.hub is not None:
                    await trio.to_thread.run_sync(stop, [self.hub])
                nursery.cancel_scope.cancel()
        self.figures.seconds = round(time.monotonic() - began, 1)
        self.account()
        return self.figures

    def start_clients(self) -> list[subprocess.Popen[bytes]]:
        settings = self.settings
        share = -(-settings.tasks // settings.clients)
        clients = []
        for n in range(settings.clients):
            first, count = n * share, min(share, settings.tasks - n * share)
            url = self.proxied if n == 0 else self.direct
            out = settings.workdir / f"client-{n}.json"
            args = [url, str(first), str(count), str(out)]
            args += [str(settings.kick_for), str(settings.deadline)]
            clients.append(
                subprocess.Popen([sys.executable, __file__, "client", *args], env=self.env)
            )
        return clients

    async def kill_workers(self) -> None:
        while True:
            await trio.sleep(self.settings.kill_every)
            gone = [(w, url) for w, url in self.workers if w.poll() is not None]
            alive = [(w, url) for w, url in self.workers if w.poll() is None and w.pid != self.hung]
            for worker, url in gone:  # one that could not start: started again
                self.workers.remove((worker, url))
                await self.start_worker(url)
            if not alive:
                continue
            worker, url = random.choice(alive)
            worker.kill()
            worker.wait()
            self.workers.remove((worker, url))
            self.figures.worker_kills += 1
            await self.start_worker(url)

    async def hang_worker(self) -> None:
        await trio.sleep(1.5)
        while True:  # stop a worker with a run in flight (its file says so once stopped)
            busy = [w for w, _ in self.workers if w.poll() is None and self.in_flight(w.pid)]
            if busy:
                busy[0].send_signal(signal.SIGSTOP)
                self.stopped_at = time.time()
                await trio.sleep(0.05)
                if self.in_flight(busy[0].pid):
                    break
                busy[0].send_signal(signal.SIGCONT)
            await trio.sleep(0.01)
        worker = busy[0]
        self.hung = self.hung_pid = worker.pid
        interval, timeout = self.settings.heartbeat
        await trio.sleep(2 * (interval + timeout) + 0.5)  # the hub has given up on it
        worker.send_signal(signal.SIGCONT)
        self.figures.hangs += 1
        await trio.sleep(2.0)  # its late ends come now; then it may be killed as the others
        self.hung = None

    def in_flight(self, pid: int) -> bool:
        """Whether the last run the worker began has not ended."""
        path = self.runs / str(pid)
        if not path.exists():
            return False
        lines = path.read_text().splitlines()
        return bool(lines) and lines[-1].startswith("start")

    async def cut_links(self) -> None:
        for _ in range(self.settings.cuts):
            await trio.sleep(2.5)
            self.cutter.cut()
            await trio.sleep(1.0)
            self.cutter.restore()
            self.figures.link_cuts += 1

    async def kill_hub(self) -> None:
        for _ in range(self.settings.hub_kills):
            await trio.sleep(4.0)
            assert self.hub is not None
            self.hub_peak()
            killed = time.time()
            self.hub.kill()
            self.hub.wait()
            self.figures.hub_kills += 1
            await self.start_hub()
            self.figures.hub_restart_s.append(round(time.time() - killed, 2))
            while True:  # until a worker starts a run again
                if any(path.stat().st_mtime > killed for path in self.runs.iterdir()):
                    break
                await trio.sleep(0.02)
            self.figures.hub_recover_s.append(round(time.time() - killed, 2))

    async def watch_hub(self) -> None:
        while True:
            self.hub_peak()
            await trio.sleep(0.5)

    def account(self) -> None:
        """The figures from the clients' reports and the workers' run files."""
        figures = self.figures
        results: dict[int, list[int]] = {}
        acknowledged: set[int] = set()
        for report_path in self.settings.workdir.glob("client-*.json"):
            report = json.loads(report_path.read_text())
            figures.kicked += report["kicked"]
            figures.not_sent += len(report["not_sent"])
            figures.unacknowledged += len(report["unacked"])
            figures.wrong += len(report["failed"])
            sent = set(range(report["first"], report["first"] + report["kicked"]))
            acknowledged |= sent - set(report["not_sent"]) - set(report["unacked"])
            results |= {int(i): value for i, value in report["results"].items()}
            figures.kick_s = max(figures.kick_s, round(report["kick_s"], 1))
            figures.client_s = max(figures.client_s, round(report["client_s"], 1))
        right = {i for i, (value, _) in results.items() if value == chaos_tasks.expected(i)}
        figures.acknowledged = len(acknowledged)
        figures.completed = len(right)
        figures.wrong += len(results) - len(right)
        figures.lost = len(acknowledged - right)
        figures.lost_ids = sorted(acknowledged - right)[:20]
        starts: Counter[int] = Counter()
        for path in self.runs.iterdir():
            lines = [line.split() for line in path.read_text().splitlines()]
            starts.update(int(i) for what, i, _ in lines if what == "start")
        figures.runs = sum(starts.values())
        figures.run_more_than_once = sum(1 for n in starts.values() if n > 1)

    async def check_late_ends(self) -> None:
        """Runs the hung worker began before it stopped and ended after it went on (they
        took seconds, not milliseconds): the hub gave them to others, so the results it
        keeps must not be the hung worker's, unless it ran them again itself."""
        path = self.runs / str(self.hung_pid)
        if self.hung_pid is None or not path.exists():
            return
        lines = [line.split() for line in path.read_text().splitlines()]
        starts = [(int(i), float(t)) for what, i, t in lines if what == "start"]
        began = dict(reversed(starts))  # each task's first start
        late = {
            int(i)
            for what, i, t in lines
            if what == "end" and began[int(i)] < self.stopped_at < float(t) - 1.0
        }
        again = Counter(i for i, _ in starts if i in late)
        self.figures.late_ends = len(late)
        broker = chaos_tasks.broker
        broker.url = self.direct
        async with broker:
            for i in late:
                with trio.fail_after(30):  # it waits for the link first
                    result = await broker.wait_result(task_id(i))
                if again[i] == 1 and result.return_value[1] == self.hung_pid:
                    self.figures.late_ends_accepted += 1


# The client processes -------------------------------------------------------------------


async def run_client(
    first: int, count: int, url: str, kick_for: float, deadline: float
) -> dict[str, Any]:
    """Kick tasks ``first`` to ``first + count - 1``, spread over ``kick_for`` seconds,
    and wait for their results (a link that drops is waited for again) until
    ``deadline`` seconds from now: what came, and what did not."""
    broker = chaos_tasks.broker
    broker.url = url
    broker.connect_timeout = 60.0
    broker.hand_over_timeout = 0.1
    not_sent: list[int] = []
    results: dict[int, list[int]] = {}
    failed: dict[int, str] = {}
    give_up = trio.current_time() + deadline

    async def wait(i: int, handle: AsyncTaskiqTask[Any]) -> None:
        """Each task has its own wait: one whose result never comes holds up no other."""
        with trio.move_on_at(give_up):
            while True:
                try:
                    result = await handle.wait_result()
                except ResultGetError:
                    await trio.sleep(0.2)  # the link dropped: wait again once back
                    continue
                if result.is_err:
                    failed[i] = repr(result.error)
                else:
                    results[i] = result.return_value
                return

    began = trio.current_time()
    async with broker, trio.open_nursery() as nursery:
        for n, i in enumerate(range(first, first + count)):
            await trio.sleep_until(began + kick_for * n / count)
            try:
                kicker = chaos_tasks.chaos.kicker().with_task_id(task_id(i))
                handle = await kicker.kiq(i, nap(i))
            except SendTaskError:
                not_sent.append(i)
                continue
            nursery.start_soon(wait, i, handle)
        kicked = trio.current_time() - began
    unacked = [int(unacked.removeprefix("chaos-")) for unacked in broker.not_handed_over]
    return {
        "first": first,
        "kicked": count,
        "not_sent": not_sent,
        "unacked": unacked,
        "results": results,
        "failed": failed,
        "kick_s": kicked,
        "client_s": trio.current_time() - began,
    }


# The command line -----------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds between kills")
    parser.add_argument("--no-hang", action="store_true", help="no SIGSTOP of a worker")
    parser.add_argument("--cuts", type=int, default=3, help="link cuts through the proxy")
    parser.add_argument("--state", action="store_true", help="a hub with --state, killed too")
    parser.add_argument("--hub-kills", type=int, default=2)
    parser.add_argument("--heartbeat-interval", type=float, default=0.5)
    parser.add_argument("--heartbeat-timeout", type=float, default=2.0)
    parser.add_argument(
        "--kick-for", type=float, default=0.0, help="spread the kicks over these seconds"
    )
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for results")
    parser.add_argument("--keep", action="store_true", help="keep the files (runs, hub.db)")
    parser.add_argument("--json", action="store_true", help="one JSON line")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["client"]:
        url, first, count, out, kick_for, deadline = argv[1:]
        report = trio.run(run_client, int(first), int(count), url, float(kick_for), float(deadline))
        Path(out).write_text(json.dumps(report))
        return 0
    args = parse(argv)
    workdir = tempfile.mkdtemp(prefix="chaos-")
    try:
        settings = Settings(
            tasks=args.tasks,
            clients=args.clients,
            workers=args.workers,
            kill_every=args.kill_every,
            hang=not args.no_hang,
            cuts=args.cuts,
            state=args.state,
            hub_kills=args.hub_kills,
            heartbeat=(args.heartbeat_interval, args.heartbeat_timeout),
            kick_for=args.kick_for,
            deadline=args.deadline,
            workdir=Path(workdir),
        )
        figures = trio.run(Cluster(settings).run)
    finally:
        if args.keep:
            print(f"files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir)
    if args.json:
        print(json.dumps(attrs.asdict(figures)), flush=True)
    else:
        for name, value in attrs.asdict(figures).items():
            print(f"{name:>20}: {value}")
    return 1 if figures.lost or figures.late_ends_accepted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
