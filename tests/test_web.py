"""The dashboard over HTTP: a real hypercorn server on 127.0.0.1 and an httpx client."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from actors import InMemoryBroker, InMemoryScheduleSource, TaskiqScheduler
from actors.cli import main
from actors.inspect import HubView
from actors.tasks import AsyncTaskiqDecoratedTask
from actors.web import HttpConfig
from actors.web.app import create_app
from actors.web.serve import serve_app

from .programs import program_env
from .test_cluster_cli import command

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_TASK_LINK = re.compile(r'href="/tasks/([0-9a-f]{32})"')


@asynccontextmanager
async def dashboard(
    broker: InMemoryBroker, config: HttpConfig | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """``broker`` running, its dashboard served on a free port, a client for it."""
    config = config or HttpConfig(port=0)
    async with broker:
        app = create_app(HubView.of_broker(broker), config)
        async with serve_app(app, "127.0.0.1", 0) as url, httpx.AsyncClient(base_url=url) as client:
            yield client


def _blocking_broker() -> tuple[InMemoryBroker, AsyncTaskiqDecoratedTask[[str], str], trio.Event]:
    """A broker whose task ``hold`` runs until the event is set."""
    broker = InMemoryBroker()
    gate = trio.Event()

    @broker.task("hold")
    async def hold(label: str) -> str:
        await gate.wait()
        return label

    return broker, hold, gate


async def _running(client: httpx.AsyncClient) -> str:
    """The id of the one running task, once it runs."""
    with trio.fail_after(10):
        while True:
            found = _TASK_LINK.findall((await client.get("/tasks?status=running")).text)
            if found:
                return str(found[0])
            await trio.sleep(0.01)


async def test_a_login_token_guards_pages_and_metrics() -> None:
    broker = InMemoryBroker()
    async with dashboard(broker, HttpConfig(port=0, token="let-me-in")) as client:
        first = await client.get("/tasks")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=%2Ftasks"
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200  # for load balancers

        wrong = await client.post("/login", data={"token": "guess", "next": "/tasks"})
        assert wrong.status_code == 401
        assert (await client.get("/")).status_code == 303

        right = await client.post("/login", data={"token": "let-me-in", "next": "/tasks"})
        assert right.status_code == 303
        assert right.headers["location"] == "/tasks"
        assert (await client.get("/tasks")).status_code == 200
        assert (await client.get("/")).status_code == 200

        async with httpx.AsyncClient(base_url=str(client.base_url)) as scraper:
            bearer = {"authorization": "Bearer let-me-in"}
            scraped = await scraper.get("/metrics", headers=bearer)
            assert scraped.status_code == 200
            assert "taskq_queue_depth" in scraped.text


async def test_a_user_and_password_log_in_and_basic_auth_scrapes() -> None:
    broker = InMemoryBroker()
    config = HttpConfig(port=0, user="ops", password="pa:ss")
    async with dashboard(broker, config) as client:
        refused = await client.post("/login", data={"user": "ops", "password": "nope"})
        assert refused.status_code == 401
        assert (await client.get("/metrics", auth=("ops", "nope"))).status_code == 401
        assert (await client.get("/metrics", auth=("ops", "pa:ss"))).status_code == 200
        logged = await client.post("/login", data={"user": "ops", "password": "pa:ss"})
        assert logged.status_code == 303
        assert (await client.get("/")).status_code == 200
        csrf = _CSRF.findall((await client.get("/")).text)[0]
        assert (await client.post("/logout", data={"csrf": csrf})).status_code == 303
        assert (await client.get("/")).status_code == 303


async def test_abort_needs_the_sessions_csrf_token() -> None:
    broker, hold, gate = _blocking_broker()
    async with dashboard(broker) as client:
        await hold.kiq("x")
        task_id = await _running(client)
        page = await client.get(f"/tasks/{task_id}")
        csrf = _CSRF.findall(page.text)[0]

        assert (await client.post(f"/tasks/{task_id}/abort")).status_code == 403
        forged = await client.post(f"/tasks/{task_id}/abort", data={"csrf": "forged"})
        assert forged.status_code == 403
        async with httpx.AsyncClient(base_url=str(client.base_url)) as stranger:
            other = await stranger.post(f"/tasks/{task_id}/abort", data={"csrf": csrf})
            assert other.status_code == 403  # the token is this session's only
        assert await _running(client) == task_id

        done = await client.post(f"/tasks/{task_id}/abort", data={"csrf": csrf})
        assert done.status_code == 303
        assert done.headers["location"] == f"/tasks/{task_id}"
        with trio.fail_after(10):
            while (
                'id="status" class="status aborted"'
                not in (await client.get(f"/tasks/{task_id}")).text
            ):
                await trio.sleep(0.01)
        gate.set()


@pytest.mark.parametrize("hide", [False, True])
async def test_task_arguments_can_be_hidden(hide: bool) -> None:
    broker, hold, gate = _blocking_broker()
    async with dashboard(broker, HttpConfig(port=0, hide_args=hide)) as client:
        await hold.kiq("a-private-value")
        page = await client.get(f"/tasks/{await _running(client)}")
        assert ("a-private-value" in page.text) is not hide
        assert ('id="args-hidden"' in page.text) is hide
        gate.set()


async def test_tasks_page_through_a_long_queue_with_a_filter() -> None:
    broker = InMemoryBroker(workers=0)  # nothing runs: every kick stays queued

    @broker.task("alpha")
    async def alpha() -> None: ...

    @broker.task("beta")
    async def beta() -> None: ...

    async with dashboard(broker) as client:
        kicked = []
        for index in range(150):
            handle = await (alpha if index % 3 else beta).kiq()
            if index % 3:
                kicked.append(handle.task_id)
        seen: list[str] = []
        pages = 0
        target: str | None = "/tasks?status=queued&name=alph&limit=40"
        while target is not None:
            page = await client.get(target)
            assert page.status_code == 200
            seen += _TASK_LINK.findall(page.text)
            pages += 1
            following = re.search(r'id="next" href="([^"]+)"', page.text)
            target = following[1].replace("&amp;", "&") if following else None
        assert seen == kicked
        assert pages == 3
        assert (await client.get("/tasks?status=nonsense")).status_code == 400


async def test_schedules_page_unschedules_with_the_csrf_token() -> None:
    broker = InMemoryBroker()

    @broker.task("tick")
    async def tick(n: int) -> None: ...

    source = InMemoryScheduleSource()
    hourly = await tick.schedule_by_interval(source, 3600, 1)
    nightly = await tick.schedule_by_cron(source, "0 3 * * *", 2)
    async with dashboard(broker) as client, TaskiqScheduler(broker, [source]):
        with trio.fail_after(10):
            while nightly.schedule_id not in (page := (await client.get("/schedules")).text):
                await trio.sleep(0.01)
        assert hourly.schedule_id in page
        assert "every 3600 s" in page
        target = f"/schedules/{hourly.schedule_id}/unschedule"
        assert (await client.post(target, data={"csrf": "forged"})).status_code == 403
        assert hourly.schedule_id in (await client.get("/schedules")).text
        csrf = _CSRF.findall(page)[0]
        assert (await client.post(target, data={"csrf": csrf})).status_code == 303
        page = (await client.get("/schedules")).text
        assert hourly.schedule_id not in page
        assert nightly.schedule_id in page


async def test_a_failed_tasks_page_shows_its_error_and_traceback() -> None:
    broker = InMemoryBroker()

    @broker.task("invoice.render")
    async def render(number: int) -> None:
        raise ValueError(f"invoice {number} has no lines")

    async with dashboard(broker) as client:
        handle = await render.kiq(17)
        await handle.wait_result()
        page = (await client.get(f"/tasks/{handle.task_id}")).text
        assert 'id="status" class="status failed"' in page
        assert "ValueError: invoice 17 has no lines" in page
        assert "Traceback (most recent call last)" in page
        assert 'id="abort"' not in page
        failed = (await client.get("/tasks?status=failed")).text
        assert handle.task_id in failed


async def test_actors_web_serves_an_in_process_brokers_dashboard(tmp_path: Path) -> None:
    (tmp_path / "web_tasks.py").write_text(
        "from actors import InMemoryBroker\n\nbroker = InMemoryBroker()\n"
    )
    async with command(
        "web", "web_tasks:broker", "--http", "127.0.0.1:0", env=program_env(tmp_path)
    ) as (_, lines):
        with trio.fail_after(30):
            line = await lines.next()
        assert line.startswith("dashboard for web_tasks:broker at http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=line.rsplit(" ", 1)[1]) as client:
            response = await client.get("/")
            assert response.status_code == 200
            assert '<td class="num">30</td>' in response.text  # its worker's capacity


def test_http_off_loopback_needs_a_login(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hub", "--http", "0.0.0.0:8080"]) == 2
    assert "ACTORS_HTTP_AUTH" in capsys.readouterr().err


def test_http_without_the_web_extra_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "hypercorn", None)  # as if not installed
    assert main(["hub", "--http", "127.0.0.1:0"]) == 2
    assert "pip install 'trio-actors[web]'" in capsys.readouterr().err


async def test_the_hub_serves_its_dashboard_and_stops_with_it(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text("ops:secret\n")
    args = ["--listen", "ws://127.0.0.1:0", "--http", "127.0.0.1:0", "--http-auth-file", str(auth)]
    async with command("hub", *args, env=program_env(tmp_path)) as (_, lines):
        with trio.fail_after(30):
            assert (await lines.next()).startswith("hub listening at ")
            line = (await lines.next()).strip()
            while not line.startswith("dashboard at "):  # the banner's other lines
                line = (await lines.next()).strip()
        assert line.startswith("dashboard at http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=line.rsplit(" ", 1)[1]) as client:
            assert (await client.get("/healthz")).json()["ok"] is True
            assert (await client.get("/")).status_code == 303
            assert (await client.get("/", auth=("ops", "secret"))).status_code == 200
