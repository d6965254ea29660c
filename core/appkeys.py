"""Application keys for the objects every package shares (no module globals: see STYLE.md)."""

from __future__ import annotations

from aiohttp import web

from .directory import Directory
from .settings import Settings
from .store import Redis

SETTINGS = web.AppKey("settings", Settings)
DIRECTORY = web.AppKey("directory", Directory)
STORE: web.AppKey[Redis] = web.AppKey("store")
