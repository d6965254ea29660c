"""The pre-call check's uplink measurement: the page uploads a block, the server times it.

A spoke's uplink decides where its video starts on the adaptation ladder (docs/protocol.md,
section 13).  The page times the whole request too; the server's figure excludes the page's
own start-up and counts only bytes that arrived.
"""

from __future__ import annotations

import time

from aiohttp import web

from core.appkeys import SETTINGS
from media.adaptation import LADDER, step_for_bandwidth
from signaling import current_user

from .security import cross_site

#: The largest upload measured; a bigger body is refused before it is read.
MAX_PROBE_BYTES = 256 * 1024


async def probe(request: web.Request) -> web.Response:
    """``POST /probe``: reads the body and says how many bytes arrived and how fast."""
    if current_user(request) is None:
        raise web.HTTPUnauthorized(text="sign in first")
    if cross_site(request, request.app[SETTINGS].allowed_origins):
        raise web.HTTPForbidden(text="cross-site request refused")
    if request.content_length is not None and request.content_length > MAX_PROBE_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_PROBE_BYTES, actual_size=request.content_length
        )
    started = None
    received = 0
    async for chunk in request.content.iter_any():
        if started is None:
            started = time.monotonic()
        received += len(chunk)
        if received > MAX_PROBE_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_PROBE_BYTES, actual_size=received)
    seconds = 0.0 if started is None else time.monotonic() - started
    kbps = received * 8 / 1000 / seconds if seconds > 0 else None
    step = None if kbps is None else LADDER[step_for_bandwidth(kbps)]
    return web.json_response(
        {
            "bytes": received,
            "seconds": round(seconds, 4),
            "kbps": None if kbps is None else round(kbps, 1),
            # Where this uplink would start a call on the adaptation ladder.
            "step": None if step is None else step.index,
            "video": None if step is None else step.video,
            "label": None if step is None else step.label,
        },
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/probe", probe)
