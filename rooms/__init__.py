"""Rooms: the waiting room (tokens and queues in Redis) and the live consultation rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from core.appkeys import DIRECTORY, STORE
from core.domain import HubId
from core.settings import Settings

from .feed import HubFeed, Subscription
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

WAITING_ROOM = web.AppKey("waiting_room", WaitingRoom)
HUB_FEED = web.AppKey("hub_feed", HubFeed)
ROOMS = web.AppKey("rooms", RoomRegistry)

__all__ = [
    "HUB_FEED",
    "ROOMS",
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
        feed = HubFeed(app[STORE], waiting_room, [HubId(h) for h in directory.hubs])
        registry = RoomRegistry(settings, waiting_room)
        app[WAITING_ROOM] = waiting_room
        app[HUB_FEED] = feed
        app[ROOMS] = registry
        feed.start()
        yield
        await registry.close()
        await feed.close()

    app.cleanup_ctx.append(rooms_ctx)
