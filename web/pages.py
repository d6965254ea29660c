"""The pages: login, the spoke console, the hub dashboard, the consult page and an overview."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from core.appkeys import DIRECTORY, SETTINGS
from core.directory import User
from core.domain import HubId, Role, TokenState
from core.store import StoreUnavailable
from rooms import ROOMS, WAITING_ROOM
from signaling import ACCOUNTS, COOKIE_NAME, AuthError, Busy, LockedOut, current_user

from . import i18n

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
HOME_BY_ROLE = {
    Role.NURSE: "/spoke",
    Role.DOCTOR: "/hub",
    Role.AUDITOR: "/home",
    Role.ADMIN: "/home",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The signed-in user of a page that :func:`require` let through.
USER = web.RequestKey("user", User)


def language(request: web.Request) -> str:
    return i18n.pick_language(
        request.cookies.get(i18n.LANG_COOKIE), request.headers.get("Accept-Language")
    )


def context(request: web.Request, user: User | None, **extra: Any) -> dict[str, Any]:
    lang = language(request)
    directory = request.app[DIRECTORY]
    place = None
    if user is not None and user.spoke:
        place = directory.spoke(user.spoke).name
    elif user is not None and user.hub:
        place = directory.hub(user.hub).name
    return {
        "lang": lang,
        "other_lang": "hi" if lang == "en" else "en",
        "t": lambda key, **p: i18n.translate(lang, key, **p),
        "i18n_json": json.dumps(i18n.table(lang), ensure_ascii=False),
        "user": user,
        "place": place,
        "path": request.path,
        **extra,
    }


def require(*roles: Role) -> Callable[[Handler], Handler]:
    """Only signed-in users of ``roles`` reach the page; others go to the login page or get 403."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            user = current_user(request)
            if user is None:
                raise web.HTTPSeeOther(f"/login?next={request.path_qs}")
            if user.role not in roles:
                return aiohttp_jinja2.render_template(
                    "forbidden.html", request, context(request, user), status=403
                )
            request[USER] = user
            return await handler(request)

        return guarded

    return wrap


async def index(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    if user is None:
        raise web.HTTPSeeOther("/login")
    raise web.HTTPSeeOther(HOME_BY_ROLE[user.role])


def _safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else ``None`` (never an open redirect).

    Browsers and URL libraries drop tabs and newlines and read ``\\`` as ``/``, so
    ``/\t/evil.example`` would become ``//evil.example``: any such character disqualifies.
    """
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or any(c in target for c in "\t\r\n\\")
        or not target.isprintable()
        or len(target) > 512
    ):
        return None
    return target


async def login_page(request: web.Request) -> web.StreamResponse:
    return aiohttp_jinja2.render_template(
        "login.html",
        request,
        context(request, None, error=None, next=_safe_next(request.query.get("next")) or ""),
    )


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("username", ""))[:64].strip().lower()
    password = str(form.get("password", ""))[:256]
    target = _safe_next(str(form.get("next", "")))
    settings = request.app[SETTINGS]
    error = None
    try:
        user = await request.app[ACCOUNTS].login(username, password)
    except LockedOut:
        error = "login.locked"
    except Busy:
        error = "login.unavailable"
    except AuthError:
        error = "login.failed"
    except StoreUnavailable:
        error = "login.unavailable"
    if error is not None:
        logger.info("failed sign-in for %r from %s", username, request.remote)
        return aiohttp_jinja2.render_template(
            "login.html",
            request,
            context(request, None, error=error, next=target or "", username=username),
            status=503 if error == "login.unavailable" else 401,
        )
    logger.info("%s signed in from %s", user.username, request.remote)
    response = web.HTTPSeeOther(target or HOME_BY_ROLE[user.role])
    response.set_cookie(
        COOKIE_NAME,
        request.app[ACCOUNTS].issue_cookie(user),
        httponly=True,
        samesite="Lax",
        secure=settings.tls_cert is not None,
        path="/",
        max_age=12 * 3600,
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE_NAME, path="/")
    raise response


async def switch_language(request: web.Request) -> web.StreamResponse:
    code = request.match_info["code"]
    if code not in i18n.LANGUAGES:
        raise web.HTTPNotFound(text="unknown language")
    response = web.HTTPSeeOther(_safe_next(request.query.get("next")) or "/")
    response.set_cookie(i18n.LANG_COOKIE, code, samesite="Lax", path="/", max_age=365 * 86400)
    raise response


@require(Role.NURSE)
async def spoke_page(request: web.Request) -> web.StreamResponse:
    return aiohttp_jinja2.render_template("spoke.html", request, context(request, request[USER]))


@require(Role.DOCTOR)
async def hub_page(request: web.Request) -> web.StreamResponse:
    return aiohttp_jinja2.render_template("hub.html", request, context(request, request[USER]))


@require(Role.NURSE, Role.DOCTOR)
async def consult_page(request: web.Request) -> web.StreamResponse:
    # Whether this user sits in this room is checked when the page joins over the websocket.
    room_id = request.match_info["room_id"]
    back = HOME_BY_ROLE[request[USER].role]
    return aiohttp_jinja2.render_template(
        "consult.html", request, context(request, request[USER], room_id=room_id, back=back)
    )


@require(Role.AUDITOR, Role.ADMIN)
async def home_page(request: web.Request) -> web.StreamResponse:
    directory = request.app[DIRECTORY]
    rows = []
    unavailable = False
    for hub in directory.hubs.values():
        try:
            snap = await request.app[WAITING_ROOM].snapshot(HubId(hub.id))
        except StoreUnavailable:
            unavailable = True
            break
        rows.append(
            {
                "hub": hub,
                "spokes": [s for s in directory.spokes.values() if s.hub == hub.id],
                "waiting": len(snap.waiting),
                "issued": len(snap.today),
                "served": sum(1 for t in snap.today if t.state is TokenState.COMPLETED),
            }
        )
    return aiohttp_jinja2.render_template(
        "home.html",
        request,
        context(request, request[USER], rows=rows, unavailable=unavailable),
    )


async def me(request: web.Request) -> web.StreamResponse:
    """Who the session cookie belongs to; 401 once it has expired or the user signed out."""
    user = current_user(request)
    if user is None:
        raise web.HTTPUnauthorized(text="not signed in")
    return web.json_response(
        {"username": user.username, "name": user.name, "role": user.role.value}
    )


async def healthz(request: web.Request) -> web.StreamResponse:
    """200 while the process takes new rooms; 503 while it drains, so that the load balancer
    sends new connections elsewhere (its live rooms' sessions are still served)."""
    node = request.app[SETTINGS].node_id
    registry = request.app[ROOMS]
    if registry.draining:
        return web.json_response(
            {"ok": False, "node": node, "draining": True, "rooms": len(registry)}, status=503
        )
    return web.json_response({"ok": True, "node": node})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_page)
    r.add_post("/login", login_submit)
    r.add_post("/logout", logout)
    r.add_get("/lang/{code}", switch_language)
    r.add_get("/spoke", spoke_page)
    r.add_get("/hub", hub_page)
    r.add_get(r"/consult/{room_id:[a-z0-9-]+\.[A-Za-z0-9_-]+}", consult_page)
    r.add_get("/home", home_page)
    r.add_get("/healthz", healthz)
    r.add_get("/me", me)
    r.add_static("/static/", STATIC, name="static", append_version=True)
