"""Rooms: the waiting room (tokens and queues in Redis) and the live consultation rooms."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from core.appkeys import DIRECTORY, STORE
from core.domain import HubId
from core.settings import Settings
from core.store import StoreUnavailable

from .feed import HubFeed, Subscription
from .keeper import ServiceKeeper
from .registry import (
    IllegalTransition,
    LiveRoom,
    NotAParticipant,
    RoomClosed,
    RoomError,
    RoomEvent,
    RoomNotFound,
    RoomRegistry,
)
from .waiting_room import (
    Clock,
    HubSnapshot,
    Patient,
    QueueEmpty,
    Token,
    TokenNotFound,
    TokenNotWaiting,
    WaitingRoom,
    WaitingRoomError,
    utc_now,
)

logger = logging.getLogger(__name__)

WAITING_ROOM = web.AppKey("waiting_room", WaitingRoom)
SERVICE_KEEPER = web.AppKey("service_keeper", ServiceKeeper)
HUB_FEED = web.AppKey("hub_feed", HubFeed)
ROOMS = web.AppKey("rooms", RoomRegistry)

__all__ = [
    "HUB_FEED",
    "ROOMS",
    "SERVICE_KEEPER",
    "WAITING_ROOM",
    "Clock",
    "HubFeed",
    "HubSnapshot",
    "IllegalTransition",
    "LiveRoom",
    "NotAParticipant",
    "Patient",
    "QueueEmpty",
    "RoomClosed",
    "RoomError",
    "RoomEvent",
    "RoomNotFound",
    "RoomRegistry",
    "ServiceKeeper",
    "Subscription",
    "Token",
    "TokenNotFound",
    "TokenNotWaiting",
    "WaitingRoom",
    "WaitingRoomError",
    "setup",
    "utc_now",
]


def setup(app: web.Application, settings: Settings, clock: Clock = utc_now) -> None:
    async def rooms_ctx(app: web.Application) -> AsyncIterator[None]:
        directory = app[DIRECTORY]
        waiting_room = WaitingRoom(app[STORE], directory, clock)
        hubs = [HubId(h) for h in directory.hubs]
        feed = HubFeed(app[STORE], waiting_room, hubs)
        keeper = ServiceKeeper(waiting_room, hubs)
        registry = RoomRegistry(settings, waiting_room)
        app[WAITING_ROOM] = waiting_room
        app[HUB_FEED] = feed
        app[ROOMS] = registry
        app[SERVICE_KEEPER] = keeper
        # Windows are open in the store before the first request is served.
        try:
            await keeper.tick()
        except StoreUnavailable as exc:
            logger.warning("store unavailable at start (%s); service windows wait for it", exc)
        keeper.start()
        feed.start()
        yield
        await registry.close()
        await keeper.close()
        await feed.close()

    app.cleanup_ctx.append(rooms_ctx)
