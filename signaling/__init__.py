"""Signalling: accounts and the one websocket endpoint every page talks through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from core.appkeys import DIRECTORY, SETTINGS, STORE
from core.directory import User
from core.nodes import NODES
from core.settings import Settings
from core.tasks import TaskOwner
from rooms import HUB_FEED, ROOMS, WAITING_ROOM

from .auth import COOKIE_NAME, Accounts, AuthError, Busy, LockedOut, NewPassword
from .bus import LinkTransport, NodeBus
from .messages import MAX_FRAME_BYTES
from .routing import Router
from .session import CLOSE_RECONNECT, Session
from .transport import WebSocketTransport, thin_stream

logger = logging.getLogger(__name__)
credentials_logger = logging.getLogger("setu.credentials")

ACCOUNTS = web.AppKey("accounts", Accounts)
SESSIONS: web.AppKey[set[Session]] = web.AppKey("sessions")
BUS = web.AppKey("bus", NodeBus)
ROUTER = web.AppKey("router", Router)

__all__ = [
    "ACCOUNTS",
    "BUS",
    "CLOSE_RECONNECT",
    "COOKIE_NAME",
    "ROUTER",
    "SESSIONS",
    "Accounts",
    "AuthError",
    "Busy",
    "LockedOut",
    "NewPassword",
    "current_user",
    "origin_allowed",
    "setup",
]


def current_user(request: web.Request) -> User | None:
    return request.app[ACCOUNTS].user_from_cookie(request.cookies.get(COOKIE_NAME))


def origin_allowed(request: web.Request, settings: Settings) -> bool:
    """Same origin as the page, or one the deployment allows explicitly."""
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    if origin in settings.allowed_origins:
        return True
    parts = urlsplit(origin)
    return (
        parts.scheme in ("http", "https")
        and parts.netloc == request.host
        and (parts.scheme == request.scheme)
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    if not origin_allowed(request, settings):
        logger.warning("websocket from origin %r refused", request.headers.get("Origin"))
        raise web.HTTPForbidden(text="cross-origin websocket refused")
    user = current_user(request)
    if user is None:
        raise web.HTTPUnauthorized(text="sign in first")
    # Liveness is the transport's (aiohttp's heartbeat would want a pong within half of one).
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=MAX_FRAME_BYTES, autoping=False)
    await ws.prepare(request)
    if request.transport is not None:
        thin_stream(request.transport.get_extra_info("socket"))
    transport = WebSocketTransport(ws, user.username, settings.heartbeat_s)
    session = _session(app, transport, user, request.remote)
    app[SESSIONS].add(session)
    try:
        await session.run()
    finally:
        app[SESSIONS].discard(session)
    return ws


def _session(
    app: web.Application,
    transport: WebSocketTransport | LinkTransport,
    user: User,
    remote: str | None,
) -> Session:
    return Session(
        transport,
        user,
        app[SETTINGS],
        app[DIRECTORY],
        app[WAITING_ROOM],
        app[HUB_FEED],
        app[ROOMS],
        remote=remote,
        router=app[ROUTER],
        bus=app[BUS],
    )


async def _linked(app: web.Application, transport: LinkTransport) -> None:
    """Seat a client whose websocket is on another node, for as long as the link lasts."""
    user = app[DIRECTORY].user(transport.user_id)
    if user is None:
        logger.warning(
            "link %s from %s: unknown user %r", transport.id, transport.edge, transport.user_id
        )
        await transport.close(CLOSE_RECONNECT, b"unknown user")
        return
    session = _session(app, transport, user, transport.remote)
    app[SESSIONS].add(session)
    try:
        await session.run()
    finally:
        app[SESSIONS].discard(session)


def setup(app: web.Application, settings: Settings) -> None:
    app[SESSIONS] = set[Session]()

    async def accounts_ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE]
        key = await Accounts.shared_cookie_key(store, settings.secret_key)
        accounts = Accounts(store, app[DIRECTORY], key)
        try:
            created = await accounts.ensure_passwords(settings.demo_password)
        except BaseException:
            accounts.close()
            raise
        for new in created:
            credentials_logger.warning("password for %-18s %s", new.username, new.password)
        app[ACCOUNTS] = accounts
        yield
        accounts.close()

    async def close_sockets(app: web.Application) -> None:
        # End the rooms first, so that everyone in one is told why before the sockets close.
        await app[ROOMS].close()
        sessions: set[Session] = app[SESSIONS]
        await asyncio.gather(*(s.shutdown() for s in list(sessions)), return_exceptions=True)

    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        links = TaskOwner("links")

        def accept(transport: LinkTransport) -> None:
            links.spawn(_linked(app, transport), f"link {transport.id}")

        bus = NodeBus(app[STORE], settings.node_id, accept)
        app[BUS] = bus
        app[ROUTER] = Router(app[NODES], app[WAITING_ROOM], app[ROOMS])
        await bus.start()
        yield
        await bus.close()
        await links.close()

    app.cleanup_ctx.append(accounts_ctx)
    app.cleanup_ctx.append(bus_ctx)
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/ws", websocket, name="ws")
