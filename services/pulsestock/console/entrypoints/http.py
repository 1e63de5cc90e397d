"""The console's HTTP edge (aiohttp): pages, the approve action, sign-in, server-sent events.

Safety at this edge:
- read-only unless signed in with the configured token; the session is a signed cookie
  (HttpOnly; SameSite=Lax, so following a link to the console from chat or e-mail keeps the
  operator signed in while another site's POST still carries no session; Secure over HTTPS
  or when CONSOLE_COOKIE_SECURE says so);
- every POST carries a CSRF token bound to the session, checked before anything else;
- every page sets a strict Content-Security-Policy (scripts, styles, images and connections
  from this origin only; no inline script or style; no framing) and the usual hardening
  headers;
- templates autoescape every value; a service's error is shown as its status code's name
  and details; anything unexpected is logged and answered with a plain 500 page, never a
  traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from pulsestock.console.application.live import LiveHub
from pulsestock.console.application.pages import ConsolePages, age_since
from pulsestock.console.domain.errors import ServiceError
from pulsestock.console.domain.session import (
    Session,
    csrf_token,
    csrf_valid,
    decode_session,
    encode_session,
    new_session,
    token_matches,
)
from pulsestock.console.domain.views import STATE_SYMBOLS, format_number
from pulsestock.telemetry import get_logger

log = get_logger(__name__)
HERE = Path(__file__).resolve().parent.parent
TEMPLATES, STATIC = HERE / "templates", HERE / "static"
COOKIE = "pulsestock_console"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
# What a SKU or live id in a URL may be before it is even asked about (the services check
# their own rules and say why they refuse; this keeps URLs sane).
NAME = re.compile(r"[^/\x00-\x1f]{1,200}")
SSE_IDLE_S = 15.0
SSE_WINDOW_S = 0.15
SIGN_IN_FAILURE_DELAY_S = 0.5
MAX_RANK_LIMIT = 5000


@dataclass(frozen=True)
class HttpSettings:
    token: str | None = field(repr=False)  # None: nobody can sign in (read-only console)
    session_key: bytes = field(repr=False)
    session_lifetime_s: float = 12 * 3600.0
    cookie_secure: bool = False


KEY_SETTINGS = web.AppKey("settings", HttpSettings)
KEY_PAGES = web.AppKey("pages", ConsolePages)
KEY_HUB = web.AppKey("hub", LiveHub)
KEY_TEMPLATES = web.AppKey("templates", jinja2.Environment)
KEY_STOPPING = web.AppKey("stopping", asyncio.Event)
SESSION = web.RequestKey("session", Session)
NEW_SESSION = web.RequestKey("new_session", Session)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["when"] = _when
    env.filters["pct"] = lambda value: f"{value * 100:.1f} %"
    env.filters["money"] = lambda value: f"{value:,.2f}"
    env.filters["segment"] = lambda value: quote(str(value), safe="")
    env.globals["symbols"] = STATE_SYMBOLS
    env.globals["age_since"] = age_since
    return env


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


# --- middlewares --------------------------------------------------------------------------


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as error:
        response = error
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def no_tracebacks(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except ServiceError as error:  # a handler that did not catch its own
        return _render(request, "error.html", {"problem": error}, status=error.http_status)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("console request failed", path=request.path, method=request.method)
        return _render(
            request,
            "error.html",
            {"problem": None, "message": "Something went wrong on the console's side."},
            status=500,
        )


@web.middleware
async def sessions(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    settings = request.app[KEY_SETTINGS]
    now = time.time()
    session = decode_session(settings.session_key, request.cookies.get(COOKIE), now)
    fresh = session is None
    if session is None:
        session = new_session(False, now, settings.session_lifetime_s)
    request[SESSION] = session
    response = await handler(request)
    replaced = request.get(NEW_SESSION)
    if (fresh or replaced is not None) and not response.prepared:
        _set_cookie(request, response, replaced or session)
    return response


def _set_cookie(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    settings = request.app[KEY_SETTINGS]
    response.set_cookie(
        COOKIE,
        encode_session(settings.session_key, session),
        max_age=int(settings.session_lifetime_s),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=settings.cookie_secure or request.secure,
    )


# --- rendering ----------------------------------------------------------------------------


def _session(request: web.Request) -> Session:
    return request[SESSION]


def _context(request: web.Request, values: dict[str, Any]) -> dict[str, Any]:
    settings = request.app[KEY_SETTINGS]
    session = _session(request)
    return {
        "signed_in": session.signed_in,
        "sign_in_configured": settings.token is not None,
        "csrf": csrf_token(settings.session_key, session),
        "path": request.path_qs,
        "page": "",
        "live_kinds": "",
        "live_sku": "",
        "notice": "",
        **values,
    }


def _render(
    request: web.Request, template: str, values: dict[str, Any], status: int = 200
) -> web.Response:
    html = request.app[KEY_TEMPLATES].get_template(template).render(_context(request, values))
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


def _name(request: web.Request, key: str) -> str:
    value = request.match_info.get(key, "")
    if not NAME.fullmatch(value):
        raise web.HTTPNotFound()
    return value


def _refuse(request: web.Request, message: str) -> web.Response:
    return _render(request, "error.html", {"problem": None, "message": message}, status=403)


async def _form(request: web.Request) -> tuple[dict[str, str], bool]:
    """The POSTed form and whether its CSRF token belongs to this session."""
    form = await request.post()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    settings = request.app[KEY_SETTINGS]
    return values, csrf_valid(settings.session_key, _session(request), values.get("csrf"))


# --- pages --------------------------------------------------------------------------------


async def now_page(request: web.Request) -> web.Response:
    limit = None
    if "limit" in request.query:
        try:
            limit = max(1, min(MAX_RANK_LIMIT, int(request.query["limit"])))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a whole number") from None
    page = await request.app[KEY_PAGES].now(limit)
    return _render(request, "now.html", {"page": "now", "data": page, "live_kinds": "heat pulse"})


async def sku_search(request: web.Request) -> web.StreamResponse:
    sku = request.query.get("sku", "").strip()
    if not sku or not NAME.fullmatch(sku):
        raise web.HTTPSeeOther("/")
    raise web.HTTPSeeOther(str(request.app.router["sku"].url_for(sku=sku)))


async def sku_page(request: web.Request) -> web.Response:
    sku = _name(request, "sku")
    page = await request.app[KEY_PAGES].sku(sku)
    notice = ""
    approved = request.query.get("approved", "")
    if approved:
        notice = f"Purchase order {approved} created (approving again changes nothing)."
    return _render(
        request,
        "sku.html",
        {
            "page": "sku",
            "data": page,
            "notice": notice,
            "live_kinds": "heat pulse stock fulfillment forecast",
            "live_sku": sku,
        },
    )


async def approve(request: web.Request) -> web.StreamResponse:
    sku = _name(request, "sku")
    form, csrf_ok = await _form(request)
    if not csrf_ok:
        return _refuse(request, "The form expired or did not come from this console: reload it.")
    if not _session(request).signed_in:
        return _refuse(request, "Sign in to approve purchases: the console is read-only.")
    recommendation_id = form.get("recommendation_id", "")
    try:
        po_id = await request.app[KEY_PAGES].approve(recommendation_id)
    except ServiceError as error:
        page = await request.app[KEY_PAGES].sku(sku)
        return _render(
            request,
            "sku.html",
            {"page": "sku", "data": page, "problem": error, "live_sku": sku},
            status=error.http_status,
        )
    log.info("recommendation approved", sku=sku, recommendation=recommendation_id, po=po_id)
    location = request.app.router["sku"].url_for(sku=sku).with_query(approved=po_id)
    raise web.HTTPSeeOther(str(location))


async def channels_page(request: web.Request) -> web.Response:
    page = await request.app[KEY_PAGES].channels()
    return _render(
        request, "channels.html", {"page": "channels", "data": page, "live_kinds": "stock"}
    )


async def live_page(request: web.Request) -> web.Response:
    live_id = request.match_info.get("live_id", "")
    if live_id:
        live_id = _name(request, "live_id")
    page = await request.app[KEY_PAGES].live(live_id)
    return _render(request, "live.html", {"page": "live", "data": page, "live_kinds": "live"})


async def sign_in_form(request: web.Request) -> web.Response:
    return _render(request, "signin.html", {"page": "signin", "next": _next(request.query)})


async def sign_in(request: web.Request) -> web.StreamResponse:
    form, csrf_ok = await _form(request)
    settings = request.app[KEY_SETTINGS]
    if not csrf_ok:
        return _refuse(request, "The form expired or did not come from this console: reload it.")
    if settings.token is None:
        return _refuse(request, "Signing in is off: set CONSOLE_TOKEN or CONSOLE_TOKEN_FILE.")
    if not token_matches(settings.token, form.get("token")):
        await asyncio.sleep(SIGN_IN_FAILURE_DELAY_S)  # slows guessing
        return _render(
            request,
            "signin.html",
            {"page": "signin", "next": _next(form), "failed": True},
            status=403,
        )
    signed_in = request[NEW_SESSION] = new_session(True, time.time(), settings.session_lifetime_s)
    response = web.HTTPSeeOther(_next(form))
    _set_cookie(request, response, signed_in)
    raise response


async def sign_out(request: web.Request) -> web.StreamResponse:
    _, csrf_ok = await _form(request)
    if not csrf_ok:
        return _refuse(request, "The form expired or did not come from this console: reload it.")
    settings = request.app[KEY_SETTINGS]
    signed_out = request[NEW_SESSION] = new_session(False, time.time(), settings.session_lifetime_s)
    response = web.HTTPSeeOther("/")
    _set_cookie(request, response, signed_out)
    raise response


def _next(values: Any) -> str:
    """Where to go after signing in: a path on this console only."""
    target = str(values.get("next", "/"))
    # Browsers drop tabs and newlines from a URL ("/\t/evil" is "//evil": another host).
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `update` with {"events": [{"kind", "sku", "key"}]} as things
    change (coalesced over SSE_WINDOW_S), a comment every SSE_IDLE_S otherwise."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n: connected\n\n")
    hub, stopping = request.app[KEY_HUB], request.app[KEY_STOPPING]
    with hub.listen() as listener, contextlib.suppress(ConnectionResetError):
        # (the page went away: its stream just ends)
        while not stopping.is_set():
            batch = await listener.next_batch(SSE_WINDOW_S, idle_s=SSE_IDLE_S)
            if stopping.is_set():
                break
            if not batch:
                await response.write(b": idle\n\n")
                continue
            data = json.dumps(
                {"events": [{"kind": e.kind, "sku": e.sku, "key": e.key} for e in batch]}
            )
            await response.write(f"event: update\ndata: {data}\n\n".encode())
    return response


def create_app(pages: ConsolePages, hub: LiveHub, settings: HttpSettings) -> web.Application:
    app = web.Application(middlewares=[security_headers, no_tracebacks, sessions])
    app[KEY_SETTINGS] = settings
    app[KEY_PAGES] = pages
    app[KEY_HUB] = hub
    app[KEY_TEMPLATES] = templates()
    app[KEY_STOPPING] = asyncio.Event()

    async def stopping(app: web.Application) -> None:
        app[KEY_STOPPING].set()
        hub.wake_all()

    app.on_shutdown.append(stopping)
    app.router.add_get("/", now_page, name="now")
    app.router.add_get("/sku", sku_search, name="sku_search")
    app.router.add_get("/sku/{sku}", sku_page, name="sku")
    app.router.add_post("/sku/{sku}/approve", approve, name="approve")
    app.router.add_get("/channels", channels_page, name="channels")
    app.router.add_get("/live", live_page, name="live")
    app.router.add_get("/live/{live_id}", live_page, name="live_session")
    app.router.add_get("/signin", sign_in_form, name="signin")
    app.router.add_post("/signin", sign_in)
    app.router.add_post("/signout", sign_out, name="signout")
    app.router.add_get("/events", events, name="events")
    app.router.add_get("/healthz", health)
    app.router.add_static("/static/", STATIC, name="static")
    return app
