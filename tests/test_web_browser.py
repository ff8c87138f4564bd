"""The dashboard in a real browser: Debian's chromium driven by Playwright.

Playwright's sync API runs its own event loop, so it runs in a thread of its own
(``trio.to_thread``) and kicks tasks back through ``trio.from_thread``.
"""

from __future__ import annotations

from pathlib import Path

import trio
from playwright.sync_api import expect, sync_playwright

from actors import InMemoryBroker
from actors.inspect import HubView
from actors.web import HttpConfig
from actors.web.app import create_app
from actors.web.serve import serve_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


async def test_kick_see_it_run_abort_it_in_a_browser(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    gate = trio.Event()

    @broker.task("report.build")
    async def build(customer: str) -> str:
        await gate.wait()
        return customer

    @broker.task("mail.send")
    async def send(to: str) -> str:
        return to

    @broker.task("invoice.render")
    async def render(number: int) -> None:
        raise ValueError(f"invoice {number} has no lines")

    async def kick_some() -> str:
        for number in range(3):
            await (await send.kiq(f"user{number}@example.org")).wait_result()
        await (await render.kiq(17)).wait_result()
        return (await build.kiq("acme")).task_id

    def browse(url: str) -> str:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1100, "height": 900},
            )
            try:
                page = browser.new_page()
                page.goto(url)
                expect(page.locator("#running")).to_have_text("0", timeout=WAIT_MS)
                task_id = trio.from_thread.run(kick_some)
                expect(page.locator("#running")).to_have_text("1", timeout=WAIT_MS)
                expect(page.locator("#workers")).to_contain_text("1", timeout=WAIT_MS)
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

                page.click("a[href='/tasks?status=running']")
                page.click(f"a[href='/tasks/{task_id}']")
                expect(page.locator("#status")).to_have_text("running", timeout=WAIT_MS)
                page.click("#abort")
                expect(page.locator("#status")).to_have_text("aborted", timeout=WAIT_MS)
                return task_id
            finally:
                browser.close()

    async with broker:
        app = create_app(HubView.of_broker(broker), HttpConfig(port=0, refresh=0.2))
        async with serve_app(app, "127.0.0.1", 0) as url:
            with trio.fail_after(60):
                task_id = await trio.to_thread.run_sync(browse, url)
            detail = await HubView.of_broker(broker).task(task_id)
        assert detail is not None
        assert detail.status == "aborted"
        assert (tmp_path / "dashboard.png").read_bytes().startswith(b"\x89PNG")
