"""The task queue across nodes: a hub, worker nodes and clients as separate nodes.

The ``topology`` fixture runs the task-queue suites over ``local://`` links; these tests
cover what only a cluster has: real websockets on 127.0.0.1, the secret, which side
fires which events, and runtime errors turned into taskiq's at the client.
"""

from __future__ import annotations

import datetime
import itertools
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from actors import (
    Actor,
    AsyncTaskiqDecoratedTask,
    Context,
    Node,
    SendTaskError,
    TaskiqDepends,
    TaskiqEvents,
    TaskiqMessage,
    TaskiqState,
    TaskProgress,
    TaskStatus,
    WebSocketBroker,
    wire,
)
from actors.actor_broker import ActorBroker
from actors.backends.results import InmemoryResultBackend
from actors.broker import BrokerActor
from actors.hub import BROKER_ACTOR, open_hub, serve_hub
from actors.protocol import BrokerMessage, Finished, Kick, NodeLost, StoreResult
from actors.worker_node import open_worker_node

SECRET = "the cluster's secret"


class Boom(Exception):
    """A task's own error, importable on the client."""


def with_add(
    url: str, **options: Any
) -> tuple[WebSocketBroker, AsyncTaskiqDecoratedTask[..., int]]:
    """A client for the hub at ``url`` and its task ``add``."""
    broker = WebSocketBroker(url, **options)

    @broker.task
    async def add(a: int, b: int) -> int:
        return a + b

    return broker, add


async def test_kiq_and_wait_result_over_real_websockets() -> None:
    async with open_hub("ws://127.0.0.1:0", secret=SECRET) as hub:
        assert hub.address is not None and hub.address.startswith("ws://127.0.0.1:")
        broker, add = with_add(hub.address, secret=SECRET)

        @broker.task
        async def fails() -> None:
            raise Boom("from the worker")

        async with broker, open_worker_node(broker, workers=2):
            with trio.fail_after(30):
                handle = await add.kiq(1, 2)
                result = await handle.wait_result(timeout=10)
                failed = await (await fails.kiq()).wait_result(timeout=10)
        assert result.return_value == 3 and not result.is_err
        assert result.worker_id is not None and result.worker_id.startswith("worker-")
        assert failed.is_err and isinstance(failed.error, Boom)
        assert str(failed.error) == "from the worker"


async def test_a_wrong_secret_is_a_send_task_error_at_kiq_within_its_timeout() -> None:
    async with open_hub("ws://127.0.0.1:0", secret=SECRET) as hub:
        assert hub.address is not None
        broker, add = with_add(hub.address, secret="not the secret", connect_timeout=1.0)

        async with broker:
            with trio.fail_after(20), pytest.raises(SendTaskError, match="secret"):
                await add.kiq(1, 2)


async def test_a_kick_that_cannot_cross_the_link_is_a_send_task_error(
    broker: ActorBroker, topology: str
) -> None:
    @broker.task
    async def add(a: int, b: int) -> int:
        return a + b

    kicker = add.kicker().with_labels(note=uuid.uuid4())  # JSON has it, msgpack not
    if topology == "inprocess":
        assert await (await kicker.kiq(1, 2)) == 3
        return
    with pytest.raises(SendTaskError, match="cannot encode"):
        await kicker.kiq(1, 2)
    assert await (await add.kiq(1, 2)) == 3  # the client goes on


async def test_progress_set_on_the_worker_is_read_by_the_client(broker: ActorBroker) -> None:
    reported = trio.Event()
    release = trio.Event()

    @broker.task
    async def slow(context: Context = TaskiqDepends()) -> None:
        await context.set_progress(TaskProgress(progress=0.5, message="half"))
        reported.set()
        await release.wait()

    handle = await slow.kiq()
    with trio.fail_after(10):
        await reported.wait()
        progress = await handle.get_progress()
        while progress is None:  # the store takes the report after the worker goes on
            await trio.lowlevel.checkpoint()
            progress = await handle.get_progress()
    assert progress == TaskProgress(progress=0.5, message="half")
    assert not await handle.is_ready()
    release.set()
    with trio.fail_after(10):
        await handle.wait_result()
    assert await handle.is_ready()


async def test_each_side_fires_its_own_events() -> None:
    """A worker process fires WORKER_*, a client CLIENT_*: here two broker objects for
    the same tasks, as in two processes importing one module."""
    fired: list[tuple[str, TaskiqEvents]] = []

    def broker_for(side: str, url: str) -> WebSocketBroker:
        broker = WebSocketBroker(url)
        for event in TaskiqEvents:

            def record(_: TaskiqState, event: TaskiqEvents = event) -> None:
                fired.append((side, event))

            broker.add_event_handler(event, record)

        @broker.task("double")
        async def double(x: int) -> int:
            return 2 * x

        return broker

    async with open_hub("local://") as hub:
        assert hub.address is not None
        client, worker = broker_for("client", hub.address), broker_for("worker", hub.address)
        async with open_worker_node(worker), client:
            handle: Any = await client.find_task("double").kiq(21)  # type: ignore[union-attr]
            with trio.fail_after(10):
                assert await handle == 42
    assert fired == [
        ("worker", TaskiqEvents.WORKER_STARTUP),
        ("client", TaskiqEvents.CLIENT_STARTUP),
        ("client", TaskiqEvents.CLIENT_SHUTDOWN),
        ("worker", TaskiqEvents.WORKER_SHUTDOWN),
    ]


async def test_the_runs_of_a_worker_node_that_goes_away_go_to_another() -> None:
    """Tries counted. Before that, a ``NodeLost`` the hub reads only once the node has
    linked again (its announcement keeps the runs) drops nothing, and the new link is
    watched in its turn."""
    runs: list[int] = []

    async with open_hub("local://") as hub:
        assert hub.address is not None
        broker = WebSocketBroker(hub.address)

        @broker.task
        async def job() -> str:
            runs.append(len(runs))
            if len(runs) == 1:
                await trio.sleep_forever()  # its node goes away meanwhile
            return "done"

        @broker.task
        async def quick() -> str:
            return "quick"

        async with broker:
            with trio.fail_after(10):
                async with open_worker_node(broker, max_async_tasks=2) as worker_node:
                    handle = await job.kiq()
                    while not runs:
                        await trio.sleep(0.01)
                    await hub.ref(BROKER_ACTOR).tell(NodeLost(worker_node.name))
                    assert await (await quick.kiq()) == "quick"
                    assert (await handle.status()).name == "RUNNING"
                async with open_worker_node(broker):
                    result = await handle.wait_result()
    assert result.return_value == "done" and result.tries == 2


async def hub_until(
    address: str, stop: trio.CancelScope, task_status: trio.TaskStatus[Node]
) -> None:
    """A hub at ``address`` until ``stop`` is cancelled."""
    with stop:
        await serve_hub(address, task_status=task_status)


async def test_workers_and_clients_come_back_to_a_restarted_hub(autojump_clock: Any) -> None:
    address = "local://hub-that-restarts"

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()
        await nursery.start(hub_until, address, first)
        broker, add = with_add(address)

        async with broker, open_worker_node(broker):
            with trio.fail_after(30):
                assert await (await add.kiq(1, 2)) == 3
                first.cancel()
                assert broker.node is not None
                await broker.node.wait_for_peer_lost("hub")
                await nursery.start(hub_until, address, trio.CancelScope())
                assert await (await add.kiq(2, 3)) == 5
        nursery.cancel_scope.cancel()


async def test_a_run_that_ends_after_the_link_went_does_not_end_the_worker_node(
    autojump_clock: Any,
) -> None:
    """Its end cannot be reported (the hub puts the run back anyway): found by
    bench/chaos.py, where such a worker process exited."""
    address = "local://hub-that-goes-away"
    runs: list[int] = []

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()
        await nursery.start(hub_until, address, first)
        broker = WebSocketBroker(address)

        @broker.task
        async def job() -> int:
            runs.append(len(runs))
            if len(runs) == 1:
                with trio.CancelScope(shield=True):  # it ends after the hub went
                    await trio.sleep(1)
            return len(runs)

        async with broker, open_worker_node(broker):
            with trio.fail_after(30):
                await job.kiq()
                while not runs:
                    await trio.sleep(0.01)
                first.cancel()
                await trio.sleep(2)
                await nursery.start(hub_until, address, trio.CancelScope())
                assert await (await job.kiq()) == 2  # the worker node still serves
        nursery.cancel_scope.cancel()


async def test_a_run_the_hub_no_longer_knows_is_cancelled_when_its_worker_relinks(
    autojump_clock: Any,
) -> None:
    """A worker node keeps its runs while the hub's link is down (a durable hub gives
    them back); a hub that does not know a run the worker announces has it cancelled, so
    it does not hold the worker's only slot."""
    address = "local://hub-that-forgets"
    ends: list[str] = []

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()
        await nursery.start(hub_until, address, first)
        broker = WebSocketBroker(address)

        @broker.task
        async def forever() -> None:
            try:
                await trio.sleep_forever()
            finally:
                ends.append("cancelled")

        @broker.task
        async def quick() -> str:
            return "quick"

        async with broker, open_worker_node(broker, max_async_tasks=1):
            with trio.fail_after(30):
                handle = await forever.kiq()
                while (await handle.status()).name != "RUNNING":
                    await trio.sleep(0.01)
                first.cancel()  # a hub in memory: the next one knows nothing of it
                assert broker.node is not None
                await broker.node.wait_for_peer_lost("hub")
                await trio.sleep(1)
                assert ends == []  # kept while the link is down
                await nursery.start(hub_until, address, trio.CancelScope())
                assert await (await quick.kiq()) == "quick"
                assert ends == ["cancelled"]
        nursery.cancel_scope.cancel()


async def test_kicks_lost_in_a_crash_of_the_hubs_broker_actor_are_sent_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    """The broker actor crashes taking the second of three pipelined kicks: the kick and
    the acknowledgements it owed are gone with it, so the client sends them again."""
    enqueue = BrokerActor._enqueue
    calls = itertools.count()

    async def crash_on_the_second(self: BrokerActor, message: BrokerMessage) -> str:
        if next(calls) == 1:
            raise RuntimeError("the broker actor crashes")
        return await enqueue(self, message)

    monkeypatch.setattr(BrokerActor, "_enqueue", crash_on_the_second)
    async with open_hub("local://") as hub:
        assert hub.address is not None
        broker, add = with_add(hub.address, hand_over_timeout=60)
        async with broker, open_worker_node(broker):
            with trio.fail_after(60):
                handles = [await add.kiq(i, i) for i in range(3)]
                results = [await handle for handle in handles]
        assert results == [0, 2, 4]
        assert next(calls) == 4  # one resend reached _enqueue; the others were dropped
    assert "did not accept" not in caplog.text
    assert broker.not_handed_over == []


async def test_time_labels_cross_a_link_as_plain_data(
    broker: ActorBroker, autojump_clock: Any
) -> None:
    @broker.task
    async def job() -> str:
        return "ran"

    kicker = job.kicker().with_labels(
        delay=datetime.timedelta(seconds=5), ttl=datetime.timedelta(hours=1)
    )
    begin = trio.current_time()
    handle = await kicker.kiq()
    assert await handle == "ran"
    # The delay counts from the kick on the real wall clock, which runs on meanwhile
    # (by up to a few tens of ms on a loaded machine) while the fake clock jumps.
    assert trio.current_time() - begin == pytest.approx(5, abs=0.25)
    at = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    assert await (await job.kicker().with_labels(eta=at).kiq()) == "ran"


async def test_a_task_goes_only_to_a_worker_that_has_it() -> None:
    """Until a worker with its name joins, it stays queued; other tasks go past it."""

    def broker_with(url: str, *names: str) -> WebSocketBroker:
        broker = WebSocketBroker(url)
        for name in names:

            async def run(name: str = name) -> str:
                return f"{name} ran"

            broker.register_task(run, name)
        return broker

    async with open_hub("local://") as hub:
        assert hub.address is not None
        client = broker_with(hub.address, "common", "rare")
        async with client, open_worker_node(broker_with(hub.address, "common")):
            common, rare = client.find_task("common"), client.find_task("rare")
            assert common is not None and rare is not None
            with trio.fail_after(10):
                waiting = await rare.kiq()
                assert await (await common.kiq()) == "common ran"
                assert await waiting.status() is TaskStatus.QUEUED
                async with open_worker_node(broker_with(hub.address, "rare")):
                    assert await waiting == "rare ran"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_kiq_and_wait_result_over_wss(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    async with open_hub("wss://127.0.0.1:0", secret=SECRET, ssl_context=server) as hub:
        assert hub.address is not None and hub.address.startswith("wss://")
        broker, add = with_add(hub.address, secret=SECRET, ssl_context=client_tls)

        async with broker, open_worker_node(broker):
            with trio.fail_after(30):
                assert await (await add.kiq(20, 22)) == 42


class SilentBroker(Actor[Any]):
    """Stands in for the hub's broker: records what it is told, acknowledges nothing."""

    def __init__(self, told: list[Any]) -> None:
        self.told = told

    async def receive(self, message: Any) -> None:
        self.told.append(message)


async def silent_hub(
    address: str,
    told: list[Any],
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        async with Node.open("hub", listen=address) as node:
            await node.spawn(lambda: SilentBroker(told), name=BROKER_ACTOR)
            task_status.started()
            await trio.sleep_forever()


async def test_leaving_says_which_kicks_the_hub_did_not_accept(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[Any] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(silent_hub, "local://silent-hub", told, trio.CancelScope())
        broker, add = with_add("local://silent-hub", hand_over_timeout=3)
        async with broker:
            handle = await add.kiq(1, 2)
            left_at = trio.current_time()
        assert trio.current_time() - left_at == pytest.approx(3)  # it waited for the ack
        nursery.cancel_scope.cancel()
    assert [type(message) for message in told] == [Kick]
    assert f"did not accept 1 kicked tasks: {handle.task_id}" in caplog.text
    assert broker.not_handed_over == [handle.task_id]


async def test_kicks_not_accepted_are_sent_again_after_a_reconnect(autojump_clock: Any) -> None:
    address = "local://hub-that-drops"
    first: list[Any] = []
    second: list[Any] = []
    async with trio.open_nursery() as nursery:
        first_hub = trio.CancelScope()
        await nursery.start(silent_hub, address, first, first_hub)
        broker, add = with_add(address, hand_over_timeout=0)
        async with broker:
            handle = await add.kiq(1, 2)
            with trio.fail_after(10):
                while not first:
                    await trio.sleep(0.01)
                first_hub.cancel()
                assert broker.node is not None
                await broker.node.wait_for_peer_lost("hub")
                await nursery.start(silent_hub, address, second, trio.CancelScope())
                while not second:
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    [kicked], [again] = first, second
    assert kicked.message.task_id == again.message.task_id == handle.task_id
    assert (kicked.resend, again.resend) == (False, True)


async def test_the_hub_drops_a_resent_kick_of_a_task_it_has_run() -> None:
    runs: list[str] = []
    async with open_hub("local://") as hub:
        assert hub.address is not None
        broker = WebSocketBroker(hub.address)

        @broker.task("once")
        async def once() -> None:
            runs.append("ran")

        async with broker, open_worker_node(broker):
            raw = TaskiqMessage(task_id="t-1", task_name="once", labels={}, args=[], kwargs={})
            message = broker.formatter.dumps(raw)
            assert broker.node is not None and broker._broker_ref is not None
            kick = Kick(message, broker.node.name, broker._ack_to)
            with trio.fail_after(10):
                await broker._broker_ref.tell(kick)
                await broker.wait_result("t-1")
                await broker._broker_ref.tell(attrs.evolve(kick, resend=True))
                await broker.wait_all()
    assert runs == ["ran"]


async def test_a_client_reads_the_results_of_its_kicks_without_asking_the_hub(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_hub("local://", result_backend=InmemoryResultBackend(-1)) as hub:
        assert hub.address is not None
        broker, add = with_add(hub.address)
        async with broker, open_worker_node(broker, workers=1):
            handles = [await add.kiq(n, 1) for n in range(3)]
            await broker.wait_all()
            await trio.sleep(1)  # the store's pushes arrive
            store = broker._store_ref
            assert store is not None
            asked: list[object] = []
            real_ask = type(store).ask

            async def ask(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
                asked.append(message)
                return await real_ask(self, message, *args, **kwargs)

            monkeypatch.setattr(type(store), "ask", ask)
            assert [(await handle.wait_result()).return_value for handle in handles] == [1, 2, 3]
            assert asked == []
            assert (await handles[0].wait_result()).return_value == 1  # again: from the hub
            assert len(asked) == 1


async def test_a_worker_holding_one_run_sends_its_result_and_end_in_one_link_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """W2's round trip: one link message from the worker, not one for the result and a
    second for the report (which made the hub read twice before answering the client)."""
    sent: list[list[type]] = []  # what each link message of the three nodes carries
    real_encode = wire.encode_frames

    def encode_frames(frames: list[wire.Frame]) -> bytes:
        sent.append([type(wire.decode_value(f.body)) for f in frames if isinstance(f, wire.Tell)])
        return real_encode(frames)

    monkeypatch.setattr(wire, "encode_frames", encode_frames)
    async with open_hub("local://") as hub:
        assert hub.address is not None
        broker, add = with_add(hub.address)
        async with broker, open_worker_node(broker, workers=1):
            with trio.fail_after(10):
                for n in range(8):
                    assert (await (await add.kiq(n, 1)).wait_result()).return_value == n + 1
    from_worker = [kinds for kinds in sent if StoreResult in kinds or Finished in kinds]
    assert from_worker == [[StoreResult, Finished]] * 8


async def test_a_client_keeps_no_copy_of_results_it_waited_for_by_asking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_hub("local://", result_backend=InmemoryResultBackend(-1)) as hub:
        assert hub.address is not None
        broker, add = with_add(hub.address)
        async with broker, open_worker_node(broker, workers=1):
            for n in range(5):
                assert (await (await add.kiq(n, 1)).wait_result()).return_value == n + 1
            await trio.sleep(1)
            assert not broker._pushed  # each was the store's answer, not also pushed
