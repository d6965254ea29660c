"""Rooms: the waiting room (tokens and queues in Redis), the hubs' service windows and the live
consultation rooms."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from audit import ARCHIVE, AUDIT_TRAIL, SIGNING_KEY
from core.appkeys import DIRECTORY, STORE
from core.domain import HubId
from core.settings import Settings
from core.store import StoreUnavailable

from .consent import Consent, ConsentError
from .feed import HubFeed, Subscription
from .figures import DayFigures, Figures, QueuePoint
from .journal import Archiving, Journal
from .keeper import ServiceKeeper
from .quality import ClientReport, LegView, LinkMonitor
from .registry import (
    IllegalTransition,
    LiveRoom,
    NodeDraining,
    NotAParticipant,
    RoomClosed,
    RoomElsewhere,
    RoomError,
    RoomEvent,
    RoomNotFound,
    RoomRegistry,
)
from .service_config import (
    EffectiveService,
    InvalidService,
    Override,
    ServiceConfigError,
    ServiceConfigs,
    StaleRevision,
    UnknownHub,
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
    room_stale_after_s,
    utc_now,
)

logger = logging.getLogger(__name__)

WAITING_ROOM = web.AppKey("waiting_room", WaitingRoom)
SERVICE_KEEPER = web.AppKey("service_keeper", ServiceKeeper)
HUB_FEED = web.AppKey("hub_feed", HubFeed)
ROOMS = web.AppKey("rooms", RoomRegistry)
SERVICE_CONFIGS = web.AppKey("service_configs", ServiceConfigs)
FIGURES = web.AppKey("figures", Figures)

__all__ = [
    "FIGURES",
    "HUB_FEED",
    "ROOMS",
    "SERVICE_CONFIGS",
    "SERVICE_KEEPER",
    "WAITING_ROOM",
    "Archiving",
    "ClientReport",
    "Clock",
    "Consent",
    "ConsentError",
    "DayFigures",
    "EffectiveService",
    "Figures",
    "HubFeed",
    "HubSnapshot",
    "IllegalTransition",
    "InvalidService",
    "Journal",
    "LegView",
    "LinkMonitor",
    "LiveRoom",
    "NodeDraining",
    "NotAParticipant",
    "Override",
    "Patient",
    "QueueEmpty",
    "QueuePoint",
    "RoomClosed",
    "RoomElsewhere",
    "RoomError",
    "RoomEvent",
    "RoomNotFound",
    "RoomRegistry",
    "ServiceConfigError",
    "ServiceConfigs",
    "ServiceKeeper",
    "StaleRevision",
    "Subscription",
    "Token",
    "TokenNotFound",
    "TokenNotWaiting",
    "UnknownHub",
    "WaitingRoom",
    "WaitingRoomError",
    "setup",
    "utc_now",
]


def setup(app: web.Application, settings: Settings, clock: Clock = utc_now) -> None:
    async def rooms_ctx(app: web.Application) -> AsyncIterator[None]:
        directory = app[DIRECTORY]
        configs = ServiceConfigs(app[STORE], directory, clock)
        waiting_room = WaitingRoom(app[STORE], directory, clock, service_for=configs.get)
        hubs = [HubId(h) for h in directory.hubs]
        feed = HubFeed(app[STORE], waiting_room, hubs, on_service_changed=configs.refresh)
        keeper = ServiceKeeper(
            waiting_room,
            hubs,
            configs=configs,
            room_stale_after_s=room_stale_after_s(settings.room_grace_s),
        )
        archiving = Archiving(
            trail=app[AUDIT_TRAIL],
            archive=app[ARCHIVE],
            key=app[SIGNING_KEY],
            node=settings.node_id,
            record_media=settings.recording,
        )
        registry = RoomRegistry(settings, waiting_room, directory, archiving)
        app[WAITING_ROOM] = waiting_room
        app[SERVICE_CONFIGS] = configs
        app[FIGURES] = Figures(app[STORE], waiting_room, directory)
        app[HUB_FEED] = feed
        app[ROOMS] = registry
        app[SERVICE_KEEPER] = keeper
        # Live service edits are read and windows are open in the store before the first
        # request is served (the keeper's first tick loads the edits).
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
