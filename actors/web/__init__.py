"""The web dashboard: ``actors hub --http HOST:PORT`` and ``actors web MODULE:BROKER``.

This module holds what the command line needs without the ``web`` extra installed (its
options, reading the login, the check that the extra is there); :mod:`actors.web.app`
is the Starlette app and :mod:`actors.web.serve` runs it on hypercorn's trio worker.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ..inspect import HubView

__all__ = ["AUTH_ENV", "HttpConfig", "add_http_arguments", "dashboard", "http_config"]

#: ``TOKEN`` or ``USER:PASSWORD``: the dashboard's login, unless ``--http-auth-file``.
AUTH_ENV = "ACTORS_HTTP_AUTH"

_NEEDS = ("hypercorn", "starlette", "jinja2")


@attrs.frozen
class HttpConfig:
    """Where the dashboard listens and who may use it. With neither ``token`` nor
    ``user`` set, anyone who reaches it may (allowed on loopback only)."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = attrs.field(default=None, repr=False)
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    hide_args: bool = False
    refresh: float = 2.0

    @property
    def login_required(self) -> bool:
        return self.token is not None or self.user is not None


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the web dashboard, /metrics and /healthz here (default: off; "
        "a host other than loopback needs a login)",
    )
    parser.add_argument(
        "--http-auth-file",
        help=f"the dashboard's login, TOKEN or USER:PASSWORD, from this file "
        f"(default: ${AUTH_ENV}); never given on the command line itself",
    )
    parser.add_argument("--http-hide-args", action="store_true", help="do not show task arguments")


def _credentials(auth_file: str | None) -> tuple[str | None, str | None, str | None]:
    """``(token, user, password)`` from the file or ``$ACTORS_HTTP_AUTH``."""
    if auth_file:
        try:
            with open(auth_file, encoding="utf-8") as file:
                text = file.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the http auth file: {exc}") from exc
        if not text:
            raise ValueError(f"the http auth file {auth_file!r} is empty")
    else:
        text = os.environ.get(AUTH_ENV, "").strip()
    if not text:
        return None, None, None
    user, colon, password = text.partition(":")
    if colon:
        if not user or not password:
            raise ValueError("the http login must be TOKEN or USER:PASSWORD")
        return None, user, password
    return text, None, None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_config(args: argparse.Namespace) -> HttpConfig | None:
    """The dashboard's configuration from the command line, None without ``--http``.
    ValueError says what is wrong (a bad address, no login off loopback, the ``web``
    extra missing)."""
    if not args.http:
        return None
    host, colon, port = args.http.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"--http expects HOST:PORT, got {args.http!r}")
    token, user, password = _credentials(args.http_auth_file)
    config = HttpConfig(host, int(port), token, user, password, args.http_hide_args)
    if not config.login_required and not _is_loopback(host):
        raise ValueError(
            f"--http {args.http} is not on loopback: set a login in ${AUTH_ENV} "
            "or --http-auth-file (TOKEN or USER:PASSWORD)"
        )
    require_web()
    return config


def require_web() -> None:
    """Raise ValueError naming the ``web`` extra when its packages are not installed."""
    for name in _NEEDS:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ValueError(
                f"the web dashboard needs {name!r}: pip install 'trio-actors[web]'"
            ) from None


@asynccontextmanager
async def dashboard(
    config: HttpConfig | None, view: Callable[[], HubView]
) -> AsyncIterator[str | None]:
    """Serve the dashboard for the block (its URL), or nothing when ``config`` is None."""
    if config is None:
        yield None
        return
    from .app import create_app
    from .serve import serve_app

    app = create_app(view(), config)
    async with serve_app(app, config.host, config.port) as url:
        yield url
