"""The ASGI shell (Starlette): sessions, CSRF, forms in, pages out.

Every page works without JavaScript: changes are HTML forms that POST and
are answered by a redirect (303) to the page, with the outcome shown once.
Only the live traffic chart uses a script (``static/chart.js``), fed by a
JSON endpoint.  Pages carry a strict Content-Security-Policy: the package's
own files only, no inline script, no framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wgpy.ui import auth, traffic
from wgpy.ui.clientconf import qr_svg
from wgpy.ui.console import Console, ConsoleError, key_from_slug, key_slug

LOG = logging.getLogger("wgpy.ui")
SESSION_COOKIE = "wgpy_session"
LOGIN_COOKIE = "wgpy_login"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
STATIC = Path(__file__).parent / "static"


@dataclass
class Settings:
    password_file: Path
    tls: bool = False
    sample_interval: float = 10.0
    chart_window: float = 600.0


class SecurityHeaders:
    """Headers every response gets (pages are never cached: they hold keys)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),  # a one-time link never leaks
                ]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, add)


class Web:
    """The routes, around one ``Console``."""

    def __init__(self, console: Console, settings: Settings) -> None:
        self.console = console
        self.settings = settings
        self.sessions = auth.Sessions()
        self.limiter = auth.LoginLimiter()
        self.flashes: dict[str, list[tuple[str, str]]] = {}
        self.env = Environment(loader=PackageLoader("wgpy.ui", "templates"),
                               autoescape=select_autoescape(default=True))
        self.env.filters["bytes"] = traffic.human_bytes
        self.env.filters["utc"] = _utc
        self.env.filters["ago"] = lambda ts: traffic.human_ago(time.time() - ts) if ts else "never"
        self.env.filters["date"] = lambda ts: _utc(ts)[:10] if ts else ""
        self.env.globals["interfaces"] = list(console.interfaces)

    # -- plumbing ---------------------------------------------------------------
    def render(self, request: Request, name: str, status: int = 200,
               **context: Any) -> HTMLResponse:
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(token, time.monotonic())
        flashes = self.flashes.pop(token, []) if token and session else []
        html = self.env.get_template(name).render(
            session=session, csrf=session.csrf if session else "", flashes=flashes,
            path=request.url.path, **context)
        return HTMLResponse(html, status_code=status)

    def flash(self, request: Request, kind: str, text: str) -> None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            self.flashes.setdefault(token, []).append((kind, text))
            while len(self.flashes) > self.sessions.limit:
                self.flashes.pop(next(iter(self.flashes)))

    def error(self, request: Request, status: int, text: str) -> HTMLResponse:
        return self.render(request, "error.html", status=status, message=text)

    def session(self, request: Request) -> auth.Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), time.monotonic())

    def who(self, request: Request) -> str:
        return f"admin@{request.client.host if request.client else '?'}"

    def _audit(self, request: Request, message: str) -> None:
        """Log an access to a client's private key (not a change, but worth a line)."""
        who = self.who(request)
        LOG.info("%s: %s", who, message)
        self.console.store.log(time.time(), who, message)

    def _same_origin(self, request: Request) -> bool:
        """A browser that names the site a POST comes from must name this one.

        The CSRF token is the defence; this refuses a cross-site post early.
        ``Origin: null`` (privacy modes, sandboxes) says nothing either way.
        """
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return True
        parts = urlsplit(origin)
        return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"

    def page(self, handler: Callable[[Request], Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
        """A page for a logged-in admin; others go to the login page."""
        async def wrapped(request: Request) -> Response:
            if self.session(request) is None:
                return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
            try:
                return await handler(request)
            except ConsoleError as e:
                return self.error(request, 404, str(e))
        return wrapped

    def change(self, handler: Callable[[Request, FormData], Awaitable[Response]]
               ) -> Callable[[Request], Awaitable[Response]]:
        """A POST that changes something: logged in, same origin, CSRF token."""
        async def wrapped(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                return self.error(request, 403, "You are not logged in (or your session "
                                  "expired): log in and try again. Nothing was changed.")
            form = await request.form()
            presented = form.get("csrf")
            if not self._same_origin(request) or not auth.csrf_ok(
                    session.csrf, presented if isinstance(presented, str) else None):
                LOG.warning("%s: refused a change to %s: missing or wrong CSRF token",
                            self.who(request), request.url.path)
                return self.error(request, 403, "This form's security token is missing or "
                                  "wrong (a stale page, or a request from another site): "
                                  "nothing was changed. Reload the page and try again.")
            back = _field(form, "back") or "/"
            if not back.startswith("/") or back.startswith("//"):
                back = "/"
            try:
                return await handler(request, form)
            except ConsoleError as e:
                self.flash(request, "error", str(e))
                return RedirectResponse(back, 303)
        return wrapped

    # -- login ---------------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        resp = self.render(request, "login.html", login_token=token,
                           next=_local(request.query_params.get("next", "/")),
                           message=request.query_params.get("m", ""))
        self._cookie(resp, LOGIN_COOKIE, token, max_age=3600)
        return resp

    async def login(self, request: Request) -> Response:
        form = await request.form()
        source = request.client.host if request.client else "?"
        nxt = _local(_field(form, "next") or "/")
        cookie = request.cookies.get(LOGIN_COOKIE)
        if not cookie or not auth.csrf_ok(cookie, _field(form, "login_token")) \
                or not self._same_origin(request):
            return self.render(request, "login.html", status=403, next=nxt,
                               login_token="", message="The login form was stale or "
                               "came from another site: reload the page and log in again.")
        wait = self.limiter.wait(source, time.monotonic())
        if wait > 0:
            LOG.warning("login from %s refused: too many failed attempts", source)
            return self.render(request, "login.html", status=429, next=nxt, login_token=cookie,
                               message=f"Too many failed logins: try again in {wait:.0f} s.")
        try:
            stored = auth.read_password_file(self.settings.password_file)
        except auth.PasswordError as e:
            return self.render(request, "login.html", status=503, next=nxt, login_token=cookie,
                               message=str(e))
        ok = await run_in_threadpool(auth.verify_password, _field(form, "password") or "",
                                     stored)
        if not ok:
            self.limiter.failed(source, time.monotonic())
            LOG.warning("login from %s failed: wrong password", source)
            return self.render(request, "login.html", status=401, next=nxt, login_token=cookie,
                               message="Wrong password.")
        self.limiter.succeeded(source)
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        token = self.sessions.new(time.monotonic())
        LOG.info("admin@%s logged in", source)
        resp = RedirectResponse(nxt, 303)
        self._cookie(resp, SESSION_COOKIE, token)
        resp.delete_cookie(LOGIN_COOKIE, path="/")
        return resp

    async def logout(self, request: Request, form: FormData) -> Response:
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        LOG.info("%s logged out", self.who(request))
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    def _cookie(self, resp: Response, name: str, value: str, max_age: int | None = None) -> None:
        resp.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        secure=self.settings.tls, samesite="strict")

    # -- pages --------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return RedirectResponse(f"/if/{quote(next(iter(self.console.interfaces)))}", 303)

    async def interface(self, request: Request) -> Response:
        name = request.path_params["name"]
        view = await run_in_threadpool(self.console.view, name)
        return self.render(request, "interface.html", view=view,
                           endpoint_warning=self._endpoint_warning(request))

    def _endpoint_warning(self, request: Request) -> str:
        if self.console.settings.endpoint_host:
            return ""
        host = request.url.hostname or ""
        if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
            return (f"Clients will be told to connect to {host}, the address this page was "
                    "opened with: start the console with --endpoint HOST (the server's public "
                    "name or address) so that phones can reach it.")
        return ""

    async def peer(self, request: Request) -> Response:
        name = request.path_params["name"]
        key = key_from_slug(request.path_params["slug"])
        view = await run_in_threadpool(self.console.view, name)
        peer = next((p for p in view.peers if p.public_key == key), None)
        if peer is None:
            raise ConsoleError(f"no peer {key} on {name}")
        return self.render(request, "peer.html", view=view, peer=peer,
                           link=request.query_params.get("link", ""))

    async def qr(self, request: Request) -> Response:
        name = request.path_params["name"]
        key = key_from_slug(request.path_params["slug"])
        cfg = await run_in_threadpool(self.console.client_config, name, key,
                                      request.url.hostname)
        peer = await run_in_threadpool(self.console.peer, name, key)
        self._audit(request, f"{name}: showed the QR code of {key}")
        text = cfg.text()
        return self.render(request, "qr.html", view_name=name, peer=peer, svg=qr_svg(text),
                           text=text, endpoint_warning=self._endpoint_warning(request))

    async def config(self, request: Request) -> Response:
        name = request.path_params["name"]
        key = key_from_slug(request.path_params["slug"])
        cfg = await run_in_threadpool(self.console.client_config, name, key,
                                      request.url.hostname)
        peer = await run_in_threadpool(self.console.peer, name, key)
        self._audit(request, f"{name}: downloaded the configuration of {key}")
        return _attachment(cfg.text(), peer.name or name)

    async def log_page(self, request: Request) -> Response:
        lines = await run_in_threadpool(self.console.store.log_lines, 500)
        return self.render(request, "log.html", lines=lines)

    async def traffic_json(self, request: Request) -> Response:
        if self.session(request) is None:
            return JSONResponse({"error": "not logged in"}, 401)
        name = request.path_params["name"]
        slug = request.path_params.get("slug")
        try:
            window = min(7 * 86400.0, max(60.0, float(request.query_params.get(
                "window", self.settings.chart_window))))
        except ValueError:
            window = self.settings.chart_window
        try:
            data = await run_in_threadpool(self._traffic, name, slug, window)
        except ConsoleError as e:
            return JSONResponse({"error": str(e)}, 404)
        return JSONResponse(data)

    def _traffic(self, name: str, slug: str | None, window: float) -> dict[str, Any]:
        view = self.console.view(name)
        since = time.time() - window
        keys = [p for p in view.peers if slug is None or p.slug == slug]
        if slug is not None and not keys:
            raise ConsoleError("no such peer")
        peers = {}
        for p in keys:
            pts = traffic.downsample(
                traffic.rates(self.console.store.samples(name, p.public_key, since)), 240)
            peers[p.slug] = {"name": p.name, "rx": p.rx, "tx": p.tx,
                             "points": [[round(x.ts, 1), round(x.rx_rate), round(x.tx_rate)]
                                        for x in pts]}
        return {"interface": name, "window": window, "now": time.time(),
                "interval": self.settings.sample_interval, "peers": peers}

    # -- changes ----------------------------------------------------------------------------
    async def create(self, request: Request, form: FormData) -> Response:
        name = request.path_params["name"]
        expires = _expiry(_field(form, "expires"))
        key, msg = await run_in_threadpool(
            self.console.create_client, name, _field(form, "peer_name") or "", self.who(request),
            _field(form, "version"), request.url.hostname, expires)
        self.flash(request, "ok", msg)
        return RedirectResponse(f"/if/{quote(name)}/peer/{key_slug(key)}/qr", 303)

    async def peer_action(self, request: Request, form: FormData) -> Response:
        name = request.path_params["name"]
        key = key_from_slug(request.path_params["slug"])
        action = request.path_params["action"]
        who, version = self.who(request), _field(form, "version")
        c = self.console
        back = f"/if/{quote(name)}/peer/{key_slug(key)}"
        if action in ("enable", "disable"):
            msg = await run_in_threadpool(c.set_enabled, name, key, action == "enable", who,
                                          version)
        elif action == "delete":
            msg = await run_in_threadpool(c.delete, name, key, who, version)
            back = f"/if/{quote(name)}"
        elif action == "rename":
            msg = await run_in_threadpool(c.rename, name, key, _field(form, "peer_name") or "",
                                          who, version)
        elif action == "expiry":
            msg = await run_in_threadpool(c.set_expiry, name, key,
                                          _expiry(_field(form, "expires")), who)
            for done in await run_in_threadpool(c.expire_due):
                msg += " " + done
        elif action == "link":
            token = await run_in_threadpool(c.make_link, name, key, who)
            url = f"{request.url.scheme}://{request.url.netloc}/c/{token}"
            self.flash(request, "ok", "One-time download link (it works once, for "
                       f"{c.link_ttl / 86400:g} days): {url}")
            return RedirectResponse(back + "?link=" + quote(url, safe=""), 303)
        else:
            return self.error(request, 404, f"no action {action!r}")
        self.flash(request, "ok", msg)
        return RedirectResponse(_local(_field(form, "back") or back), 303)

    async def sync(self, request: Request, form: FormData) -> Response:
        name = request.path_params["name"]
        msg = await run_in_threadpool(self.console.sync, name, self.who(request),
                                      _field(form, "version"))
        self.flash(request, "ok", msg)
        return RedirectResponse(f"/if/{quote(name)}", 303)

    # -- one-time links (no login: the token is the credential) ------------------------
    async def link_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        found = await run_in_threadpool(self.console.store.peek_link, token, time.time())
        if found is None:
            return self.error(request, 404, "This link is not valid: it was used already, it "
                              "expired, or it was never made. Ask for a new one.")
        return self.render(request, "link.html", token=token)

    async def link_use(self, request: Request) -> Response:
        token = request.path_params["token"]
        form = await request.form()
        found = await run_in_threadpool(self.console.store.take_link, token, time.time())
        if found is None:
            return self.error(request, 404, "This link is not valid: it was used already, it "
                              "expired, or it was never made. Ask for a new one.")
        name, key = found
        source = request.client.host if request.client else "?"
        try:
            cfg = await run_in_threadpool(self.console.client_config, name, key,
                                          request.url.hostname)
            peer = await run_in_threadpool(self.console.peer, name, key)
        except ConsoleError as e:
            return self.error(request, 404, str(e))
        self.console.store.log(time.time(), f"link@{source}",
                               f"{name}: one-time link used for {key}")
        LOG.info("link@%s: %s: one-time link used for %s", source, name, key)
        text = cfg.text()
        if _field(form, "what") == "qr":
            return self.render(request, "qr.html", view_name=name, peer=peer, svg=qr_svg(text),
                               text=text, endpoint_warning="", anonymous=True)
        return _attachment(text, peer.name or name)

    # -- background work -------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self._background())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _background(self) -> None:
        while True:
            try:
                await run_in_threadpool(self.console.sample)
                await run_in_threadpool(self.console.expire_due)
            except Exception:  # noqa: BLE001 - the console must outlive one bad round
                LOG.exception("traffic sampling failed")
            await asyncio.sleep(self.settings.sample_interval)


def create_app(console: Console, settings: Settings) -> Starlette:
    web = Web(console, settings)
    routes = [
        Route("/", web.page(web.index)),
        Route("/login", web.login_page, methods=["GET"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", web.change(web.logout), methods=["POST"]),
        Route("/log", web.page(web.log_page)),
        Route("/if/{name}", web.page(web.interface)),
        Route("/if/{name}/create", web.change(web.create), methods=["POST"]),
        Route("/if/{name}/sync", web.change(web.sync), methods=["POST"]),
        Route("/if/{name}/peer/{slug}", web.page(web.peer)),
        Route("/if/{name}/peer/{slug}/qr", web.page(web.qr)),
        Route("/if/{name}/peer/{slug}/config", web.page(web.config)),
        Route("/if/{name}/peer/{slug}/{action}", web.change(web.peer_action), methods=["POST"]),
        Route("/api/if/{name}/traffic", web.traffic_json),
        Route("/api/if/{name}/peer/{slug}/traffic", web.traffic_json),
        Route("/c/{token}", web.link_page, methods=["GET"]),
        Route("/c/{token}", web.link_use, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)],
                    lifespan=web.lifespan)
    app.state.web = web
    return app


def _field(form: FormData, name: str) -> str | None:
    v = form.get(name)
    return v if isinstance(v, str) else None


def _local(path: str) -> str:
    """Only paths of this site are followed after a login or a change."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


def _expiry(text: str | None) -> float | None:
    """A date (YYYY-MM-DD): the peer is disabled when that day (UTC) is over.

    :raises ConsoleError: not a date.
    """
    if not text:
        return None
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ConsoleError(f"{text[:40]!r} is not a date (YYYY-MM-DD)") from None
    return (day + timedelta(days=1)).timestamp()


def _attachment(text: str, name: str) -> Response:
    # The file name is the tunnel's name in the apps and wg-quick's interface
    # name: at most 15 characters of [A-Za-z0-9_=+.-].
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return Response(text, media_type="text/plain; charset=utf-8", headers={
        "content-disposition": f'attachment; filename="{safe[:15] or "wireguard"}.conf"'})


def _utc(ts: float | None) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))

