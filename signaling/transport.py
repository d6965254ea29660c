"""What a session reads its client's messages from and writes its own to.

A :class:`Session` talks to a browser through its websocket, or, on the node that holds the
room, to a browser whose websocket landed on another node: through a link over the store
(:class:`signaling.bus.LinkTransport`).  Both are a :class:`Transport`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import WSMsgType, web

logger = logging.getLogger(__name__)


class Transport(Protocol):
    """One client's frames in, one session's frames out."""

    #: A transport for one consultation only: the session ends when it has no room left.
    one_room: bool

    def frames(self) -> AsyncIterator[str | bytes]:
        """The client's frames until it goes away: text, or bytes for a binary frame."""
        ...

    async def send(self, text: str) -> None:
        """Send one frame; raises :class:`ConnectionError` once the client is gone."""
        ...

    async def close(self, code: int, message: bytes) -> None:
        """End the connection with ``code`` (idempotent); :meth:`frames` stops."""
        ...

    def finish(self) -> None:
        """For a one-room transport: :meth:`frames` ends after the frames already received."""
        ...


class WebSocketTransport:
    """A browser's websocket."""

    one_room = False

    def __init__(self, ws: web.WebSocketResponse, label: str) -> None:
        self._ws = ws
        self._label = label

    async def frames(self) -> AsyncIterator[str | bytes]:
        async for msg in self._ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                yield msg.data
            elif msg.type is WSMsgType.ERROR:
                logger.info("session %s: socket error %s", self._label, self._ws.exception())

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except RuntimeError as exc:  # aiohttp: the socket is closing
            raise ConnectionError(str(exc)) from exc

    async def close(self, code: int, message: bytes) -> None:
        await self._ws.close(code=code, message=message)

    def finish(self) -> None:
        """A browser's socket is read until it closes."""
