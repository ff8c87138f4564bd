"""The dashboard: a Starlette app over a :class:`~actors.inspect.HubView`.

Pages render on the server (Jinja2); htmx, served from ``static/``, re-fetches each
page's ``#live`` part every ``refresh`` seconds (a request with ``HX-Request`` gets that
part alone). Every browser gets a session cookie holding a CSRF token that abort and
unschedule forms must send back; with a login configured the session also says who
logged in, and ``/metrics`` takes the same credentials as a bearer token or basic auth.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import attrs
import pendulum
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..exceptions import BrokerError
from ..inspect import HubView
from ..metrics import CONTENT_TYPE, health, metrics_text
from . import HttpConfig

__all__ = ["STATUSES", "create_app"]

#: The statuses the tasks page filters by: live phases, then recent ends.
STATUSES = (
    "waiting",
    "scheduled",
    "queued",
    "running",
    "succeeded",
    "failed",
    "retried",
    "aborted",
    "expired",
)
_ABORTABLE = {"waiting", "scheduled", "queued", "running"}
_COOKIE = "actors_session"
_MAX_SESSIONS = 1000


@attrs.define
class _Session:
    csrf: str = attrs.field(factory=lambda: secrets.token_urlsafe(32))
    logged_in: bool = False


def _ago(epoch: float) -> str:
    seconds = max(0.0, pendulum.now("UTC").timestamp() - epoch)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _clock(when: pendulum.DateTime | float | None) -> str:
    if when is None:
        return "-"
    if isinstance(when, float | int):
        when = pendulum.from_timestamp(when)
    return str(when.in_timezone("UTC").format("YYYY-MM-DD HH:mm:ss"))


class Dashboard:
    """The app's state: the view it reads, its configuration and the live sessions."""

    def __init__(self, view: HubView, config: HttpConfig) -> None:
        self.view = view
        self.config = config
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.templates = Environment(
            loader=PackageLoader("actors.web", "templates"),
            autoescape=select_autoescape(),
        )
        self.templates.filters["ago"] = _ago
        self.templates.filters["clock"] = _clock

    # sessions and login ---------------------------------------------------------------

    def _session(self, request: Request) -> tuple[str, _Session, bool]:
        """The request's session, or a new one (True: set its cookie)."""
        sid = request.cookies.get(_COOKIE, "")
        found = self.sessions.get(sid)
        if found is not None:
            return sid, found, False
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = session = _Session()
        while len(self.sessions) > _MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return sid, session, True

    def _credentials_ok(self, token: str, user: str, password: str) -> bool:
        config = self.config
        if config.token is not None:
            return hmac.compare_digest(token.encode(), config.token.encode())
        if config.user is not None and config.password is not None:
            return hmac.compare_digest(user.encode(), config.user.encode()) & hmac.compare_digest(
                password.encode(), config.password.encode()
            )
        return False

    def _header_ok(self, request: Request) -> bool:
        """``Authorization: Bearer TOKEN`` or ``Basic``, for scrapers and scripts."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self._credentials_ok(value.strip(), "", "")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except ValueError:
                return False
            user, _, password = decoded.partition(":")
            return self._credentials_ok(password, user, password)
        return False

    def _allowed(self, request: Request, session: _Session) -> bool:
        return not self.config.login_required or session.logged_in or self._header_ok(request)

    def _finish(self, response: Response, sid: str, new: bool) -> Response:
        if new:
            response.set_cookie(_COOKIE, sid, httponly=True, samesite="strict", path="/")
        return response

    async def _form(self, request: Request) -> dict[str, str]:
        body = (await request.body())[:65536].decode("utf-8", "replace")
        return {key: values[0] for key, values in parse_qs(body).items()}

    async def login_page(self, request: Request) -> Response:
        sid, session, new = self._session(request)
        return self._finish(self._page(request, session, "login.html", error=False), sid, new)

    async def login(self, request: Request) -> Response:
        form = await self._form(request)
        ok = self._credentials_ok(
            form.get("token", ""), form.get("user", ""), form.get("password", "")
        )
        if not ok:
            sid, session, new = self._session(request)
            page = self._page(request, session, "login.html", error=True, status_code=401)
            return self._finish(page, sid, new)
        self.sessions.pop(request.cookies.get(_COOKIE, ""), None)
        sid = secrets.token_urlsafe(32)  # a new id on login: no session fixation
        self.sessions[sid] = _Session(logged_in=True)
        back = form.get("next", "/")
        if not back.startswith("/") or back.startswith("//"):
            back = "/"  # only a page of this site
        return self._finish(RedirectResponse(back, status_code=303), sid, True)

    async def logout(self, request: Request) -> Response:
        form = await self._form(request)
        _, session, _ = self._session(request)
        if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
            return Response("CSRF token missing or wrong", status_code=403)
        self.sessions.pop(request.cookies.get(_COOKIE, ""), None)
        return RedirectResponse("/login", status_code=303)

    # rendering ------------------------------------------------------------------------

    def _page(
        self,
        request: Request,
        session: _Session,
        template_name: str,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """The page, or only its ``#live`` part for htmx's refresh."""
        live_only = request.headers.get("hx-request") == "true"
        template = self.templates.get_template(template_name)
        html = template.render(
            request=request,
            csrf=session.csrf,
            config=self.config,
            logged_in=session.logged_in,
            live_only=live_only,
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    async def _guarded(self, request: Request, template_name: str, read: Any) -> Response:
        """Render ``template_name`` with what ``read()`` gives, for a logged-in session."""
        sid, session, new = self._session(request)
        if not self._allowed(request, session):
            target = "/login?" + urlencode({"next": request.url.path})
            return self._finish(RedirectResponse(target, status_code=303), sid, new)
        try:
            context = await read()
        except BrokerError as exc:
            page = self._page(request, session, "error.html", 503, error=str(exc))
            return self._finish(page, sid, new)
        if context is None:
            page = self._page(request, session, "error.html", 404, error="no such task")
            return self._finish(page, sid, new)
        return self._finish(self._page(request, session, template_name, **context), sid, new)

    # pages ----------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        async def read() -> dict[str, Any]:
            seen = await self.view.overview()
            totals = {
                what: sum(getattr(row, what) for row in seen.minutes)
                for what in ("succeeded", "failed", "retried", "aborted")
            }
            return {"o": seen, "totals": totals, "queued": sum(n for _, n in seen.queued)}

        return await self._guarded(request, "overview.html", read)

    async def tasks(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status") or None
        name = query.get("name") or None
        after = query.get("after") or None
        if status is not None and status not in STATUSES:
            return Response(f"no such status: {status!r}", status_code=400)
        try:
            limit = max(1, min(int(query.get("limit", "50")), 500))
        except ValueError:
            return Response("limit must be a number", status_code=400)

        async def read() -> dict[str, Any]:
            page = await self.view.tasks(status=status, name=name, after=after, limit=limit)
            following = None
            if page.cursor is not None:
                keep = {"status": status or "", "name": name or "", "limit": limit}
                following = "/tasks?" + urlencode({**keep, "after": page.cursor})
            return {
                "page": page,
                "status": status,
                "name": name,
                "statuses": STATUSES,
                "abortable": _ABORTABLE,
                "following": following,
            }

        return await self._guarded(request, "tasks.html", read)

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]

        async def read() -> dict[str, Any] | None:
            detail = await self.view.task(task_id)
            if detail is None:
                return None
            return {"t": detail, "abortable": detail.status in _ABORTABLE}

        return await self._guarded(request, "task.html", read)

    async def schedules(self, request: Request) -> Response:
        async def read() -> dict[str, Any]:
            return {"rows": await self.view.schedules()}

        return await self._guarded(request, "schedules.html", read)

    async def _post(self, request: Request, act: Any, back: str) -> Response:
        """A state-changing POST: logged in, with the session's CSRF token."""
        _, session, new = self._session(request)
        if not self._allowed(request, session):
            return Response("log in first", status_code=401)
        form = await self._form(request)
        if new or not hmac.compare_digest(form.get("csrf", ""), session.csrf):
            return Response("CSRF token missing or wrong", status_code=403)
        try:
            await act()
        except BrokerError as exc:
            return Response(f"the hub did not answer: {exc}", status_code=503)
        return RedirectResponse(back, status_code=303)

    async def abort(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        return await self._post(request, lambda: self.view.abort(task_id), f"/tasks/{task_id}")

    async def unschedule(self, request: Request) -> Response:
        schedule_id = request.path_params["schedule_id"]
        return await self._post(request, lambda: self.view.unschedule(schedule_id), "/schedules")

    # for machines ---------------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        _, session, _ = self._session(request)
        if not self._allowed(request, session):
            return Response("log in first", status_code=401, headers={"www-authenticate": "Basic"})
        try:
            body = await metrics_text(self.view)
        except BrokerError as exc:
            return Response(f"the hub did not answer: {exc}", status_code=503)
        return Response(body, media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        ok, body = await health(self.view)
        return JSONResponse(body, status_code=200 if ok else 503)


def create_app(view: HubView, config: HttpConfig | None = None) -> Starlette:
    """The dashboard over ``view``; ``/healthz`` is open to all, the rest behind the
    login when ``config`` has one."""
    board = Dashboard(view, config or HttpConfig())
    static = StaticFiles(directory=Path(__file__).with_name("static"))
    routes = [
        Route("/", board.overview),
        Route("/tasks", board.tasks),
        Route("/tasks/{task_id}", board.task),
        Route("/tasks/{task_id}/abort", board.abort, methods=["POST"]),
        Route("/schedules", board.schedules),
        Route("/schedules/{schedule_id}/unschedule", board.unschedule, methods=["POST"]),
        Route("/login", board.login_page),
        Route("/login", board.login, methods=["POST"]),
        Route("/logout", board.logout, methods=["POST"]),
        Route("/metrics", board.metrics),
        Route("/healthz", board.healthz),
        Mount("/static", static, name="static"),
    ]
    return Starlette(routes=routes)
