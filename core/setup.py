"""Wires the directory and the store into an application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .appkeys import DIRECTORY, SETTINGS, STORE
from .directory import Directory
from .settings import Settings
from .store import open_store

logger = logging.getLogger(__name__)


def setup(app: web.Application, settings: Settings) -> None:
    app[SETTINGS] = settings
    app[DIRECTORY] = Directory.load(settings.directory)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = open_store(settings.redis_url)
        app[STORE] = store
        yield
        await store.aclose()

    app.cleanup_ctx.append(store_ctx)
