"""Run the dashboard's ASGI app on hypercorn's trio worker, inside the caller's nursery."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.types import ASGIApp

__all__ = ["serve_app"]


@asynccontextmanager
async def serve_app(app: ASGIApp, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app`` at ``host:port`` (0: a free port) for the block; yields its URL.
    Leaving the block shuts the server down (open requests get a second to finish)."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.errorlog = logging.getLogger("actors.web")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, cast(ASGIFramework, app), config, shutdown_trigger=stop.wait)
        )
        try:
            yield binds[0]
        finally:
            stop.set()
