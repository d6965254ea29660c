"""The administration pages: every hub's day at a glance, and one hub's service windows, edited
live, with the day's figures and a plot of its queue; and the server nodes with their load.

Administrators edit; auditors see the same pages without the forms (but not the nodes' page,
which is for administrators only); nurses and doctors get 403.
Every post carries a token bound to the session (:meth:`Accounts.form_token`) and is refused
if the browser says it comes from another site.  A service that does not validate is shown back
with its problems, and nothing is saved.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from core.appkeys import DIRECTORY, SETTINGS
from core.directory import Hub
from core.domain import HubId, Role, TokenState
from core.nodes import NODES
from core.service import EVERY_DAY, Weekday, Window
from core.service_text import InvalidService, parse_service, service_toml
from core.store import StoreUnavailable
from rooms import (
    FIGURES,
    SERVICE_CONFIGS,
    WAITING_ROOM,
    DayFigures,
    EffectiveService,
    StaleRevision,
)
from signaling import ACCOUNTS, COOKIE_NAME

from .pages import USER, context, language, require
from .plot import queue_plot
from .security import cross_site

logger = logging.getLogger(__name__)

HUB_ID = "{hub_id:[a-z0-9][a-z0-9-]{0,47}}"
#: What ``?done=`` after a post may announce.
DONE = {"saved": "admin.saved", "reset": "admin.was_reset"}


def _hub(request: web.Request) -> Hub:
    hub = request.app[DIRECTORY].hubs.get(HubId(request.match_info["hub_id"]))
    if hub is None:
        raise web.HTTPNotFound(
            text=aiohttp_jinja2.render_string(
                "message.html",
                request,
                context(request, request[USER], message="admin.unknown_hub", back="/admin"),
            ),
            content_type="text/html",
        )
    return hub


def _hub_name(hub: Hub, lang: str) -> str:
    return hub.name_hi if lang == "hi" and hub.name_hi else hub.name


def _local(moment: datetime, hub: Hub) -> str:
    return moment.astimezone(hub.tz).strftime("%Y-%m-%d %H:%M")


def _minutes(span: timedelta | None) -> str | None:
    return None if span is None else f"{span.total_seconds() / 60:.1f}"


@require(Role.ADMIN, Role.AUDITOR)
async def admin_index(request: web.Request) -> web.StreamResponse:
    app = request.app
    configs = app[SERVICE_CONFIGS]
    rows = []
    unavailable = False
    for hub in app[DIRECTORY].hubs.values():
        try:
            snap = await app[WAITING_ROOM].snapshot(HubId(hub.id))
        except StoreUnavailable:
            unavailable = True
            break
        states = Counter(t.state for t in snap.today)
        rows.append(
            {
                "hub": hub,
                "edited": configs.effective(hub.id).override is not None,
                "open": snap.window is not None,
                "waiting": len(snap.waiting) + len(snap.held),
                "issued": len(snap.today),
                "served": states[TokenState.COMPLETED],
                "carried_over": states[TokenState.CARRIED_OVER],
                "cancelled": states[TokenState.CANCELLED],
                "expired": states[TokenState.EXPIRED],
            }
        )
    return aiohttp_jinja2.render_template(
        "admin.html",
        request,
        context(request, request[USER], rows=rows, unavailable=unavailable, hub_name=_hub_name),
    )


@require(Role.ADMIN, Role.AUDITOR)
async def admin_hub(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    return await _hub_page(request, hub, notice=DONE.get(request.query.get("done", "")))


async def _hub_page(
    request: web.Request,
    hub: Hub,
    *,
    status: int = 200,
    text: str | None = None,
    revision: str | None = None,
    problems: tuple[str, ...] = (),
    error: str | None = None,
    notice: str | None = None,
) -> web.StreamResponse:
    """The hub's page; after a refused edit, with the submitted text and what was wrong."""
    app = request.app
    configs = app[SERVICE_CONFIGS]
    effective = configs.effective(hub.id)
    figures: DayFigures | None = None
    try:
        figures = await app[FIGURES].today(HubId(hub.id))
    except StoreUnavailable:
        error = error or "admin.unavailable"
    calendar = configs.calendar(hub.id)
    now = app[WAITING_ROOM].now()
    next_window = calendar.next_opening(now)
    user = request[USER]
    return aiohttp_jinja2.render_template(
        "admin_hub.html",
        request,
        context(
            request,
            user,
            hub=hub,
            hub_name=_hub_name(hub, language(request)),
            **_service_view(effective, hub),
            open_window=calendar.window_at(now),
            next_opening=_local(next_window.start, hub) if next_window else None,
            local=lambda moment: _local(moment, hub),
            figures=figures,
            average_wait=_minutes(figures.average_wait) if figures else None,
            p90_wait=_minutes(figures.p90_wait) if figures else None,
            plot=queue_plot(figures) if figures else None,
            can_edit=user.role is Role.ADMIN,
            text=service_toml(effective.service) if text is None else text,
            revision=effective.revision if revision is None else revision,
            csrf=app[ACCOUNTS].form_token(request.cookies.get(COOKIE_NAME, "")),
            problems=problems,
            error=error,
            notice=notice,
        ),
        status=status,
    )


def _service_view(effective: EffectiveService, hub: Hub) -> dict[str, Any]:
    service = effective.service
    return {
        "effective": effective,
        "service": service,
        "edited_at": _local(effective.override.at, hub) if effective.override else None,
        "windows": [
            {
                "days": None if set(w.days) == set(EVERY_DAY) else [d.value for d in _ordered(w)],
                "open": w.open,
                "close": w.close,
                "capacity": w.capacity,
            }
            for w in service.windows
        ],
    }


def _ordered(window: Window) -> list[Weekday]:
    return sorted(set(window.days), key=lambda d: d.number)


def _form_ok(request: web.Request, form: MultiDictProxy[Any]) -> bool:
    if cross_site(request, request.app[SETTINGS].allowed_origins):
        return False
    return request.app[ACCOUNTS].check_form_token(
        request.cookies.get(COOKIE_NAME), str(form.get("csrf", ""))
    )


def _refused(request: web.Request, hub: Hub) -> web.StreamResponse:
    logger.warning(
        "%s: form post for hub %s refused (token or origin; Origin %r)",
        request[USER].username,
        hub.id,
        request.headers.get("Origin"),
    )
    return aiohttp_jinja2.render_template(
        "message.html",
        request,
        context(request, request[USER], message="admin.form_refused", back=f"/admin/hub/{hub.id}"),
        status=403,
    )


async def _reread(request: web.Request, hub: Hub) -> None:
    """After a refused edit, show the hub's service as the store has it now."""
    with contextlib.suppress(StoreUnavailable):
        await request.app[SERVICE_CONFIGS].refresh([HubId(hub.id)])


@require(Role.ADMIN)
async def save_service(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    form = await request.post()
    if not _form_ok(request, form):
        return _refused(request, hub)
    text = str(form.get("service", ""))
    revision = str(form.get("revision", "")) or None
    user = request[USER]
    try:
        service = parse_service(text)
        await request.app[SERVICE_CONFIGS].set(hub.id, service, user.username, revision=revision)
    except InvalidService as exc:
        return await _hub_page(
            request, hub, status=422, text=text, revision=revision, problems=exc.problems
        )
    except StaleRevision:
        await _reread(request, hub)
        return await _hub_page(request, hub, status=409, text=text, error="admin.stale")
    except StoreUnavailable:
        return await _hub_page(
            request, hub, status=503, text=text, revision=revision, error="admin.unavailable"
        )
    raise web.HTTPSeeOther(f"/admin/hub/{hub.id}?done=saved")


@require(Role.ADMIN)
async def reset_service(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    form = await request.post()
    if not _form_ok(request, form):
        return _refused(request, hub)
    revision = str(form.get("revision", "")) or None
    try:
        await request.app[SERVICE_CONFIGS].reset(hub.id, request[USER].username, revision=revision)
    except StaleRevision:
        await _reread(request, hub)
        return await _hub_page(request, hub, status=409, error="admin.stale")
    except StoreUnavailable:
        return await _hub_page(request, hub, status=503, error="admin.unavailable")
    raise web.HTTPSeeOther(f"/admin/hub/{hub.id}?done=reset")


@require(Role.ADMIN)
async def admin_nodes(request: web.Request) -> web.StreamResponse:
    """The live server nodes and their load, as their last heartbeats reported it."""
    registry = request.app[NODES]
    nodes = []
    unavailable = False
    try:
        nodes = await registry.live_nodes()
    except StoreUnavailable:
        unavailable = True
    now = time.time()
    rows = [
        {
            "node": node,
            "this": node.id == registry.id,
            "started": datetime.fromtimestamp(node.started_at, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "age": f"{node.heartbeat_age_s(now):.0f}",
            "cpu": f"{node.cpu_percent:.0f}",
            "lag_ms": f"{node.loop_lag_s * 1000:.0f}",
        }
        for node in nodes
    ]
    return aiohttp_jinja2.render_template(
        "admin_nodes.html",
        request,
        context(request, request[USER], rows=rows, unavailable=unavailable),
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin", admin_index)
    r.add_get("/admin/nodes", admin_nodes)
    r.add_get(f"/admin/hub/{HUB_ID}", admin_hub)
    r.add_post(f"/admin/hub/{HUB_ID}/service", save_service)
    r.add_post(f"/admin/hub/{HUB_ID}/service/reset", reset_service)
