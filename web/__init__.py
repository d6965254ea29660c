"""Web: the pages, their templates and the browser modules they load."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from core.settings import Settings

from . import admin, audit, metrics, probe
from .pages import add_routes
from .security import security_headers

__all__ = ["setup"]


def setup(app: web.Application, settings: Settings) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    app.middlewares.append(security_headers)
    add_routes(app)
    admin.add_routes(app)
    audit.add_routes(app)
    probe.add_routes(app)
    metrics.setup(app)
