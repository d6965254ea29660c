"""Security headers on every response, and the cross-site check of form posts."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        _apply(response)
        raise
    _apply(response)
    return response


def _apply(response: web.StreamResponse) -> None:
    if response.prepared:
        return
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()")
    h.setdefault("Cache-Control", "no-store") if response.content_type == "text/html" else None


def cross_site(request: web.Request, allowed_origins: Collection[str]) -> bool:
    """Whether a request says it comes from another site (by ``Origin`` or ``Sec-Fetch-Site``).

    Our own forms post with ``Origin: null`` (pages are served with ``Referrer-Policy:
    no-referrer``) or, in old browsers, with no ``Origin`` at all: those pass here and are
    judged by their form token.
    """
    origin = request.headers.get("Origin")
    if origin and origin in allowed_origins:
        return False
    if origin and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc != request.host or parts.scheme != request.scheme:
            return True
    return request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site")
