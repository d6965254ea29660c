"""What a session reads its client's messages from and writes its own to.

A :class:`Session` talks to a browser through its websocket, or, on the node that holds the
room, to a browser whose websocket landed on another node: through a link over the store
(:class:`signaling.bus.LinkTransport`).  Both are a :class:`Transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import WSMsgType, web

logger = logging.getLogger(__name__)

#: The server dropped the client: it fell behind, or its link went silent.  Come back.
CLOSE_TOO_SLOW = 4008
#: A client silent for this many heartbeats is gone (the pages give the server as long).  A
#: village link whose queue is full can hold a frame for several seconds, behind TCP's
#: retransmissions: a pong owed within half a heartbeat, as aiohttp's own heartbeat wants, drops
#: the nurse's signalling just when a step must reach her page.
SILENT_HEARTBEATS = 3
#: Sending a close frame to a silent client waits this long at most.
CLOSE_WAIT_S = 1.0
#: Linux's ``TCP_THIN_LINEAR_TIMEOUTS`` (``netinet/tcp.h``): while fewer than four segments are
#: in flight, the first six retransmission timeouts do not double.  Signalling is such a thin
#: stream; on a lossy link exponential backoff would hold a message for tens of seconds.
TCP_THIN_LINEAR_TIMEOUTS = 16


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
    """A browser's websocket.

    Liveness is the transport's own: every heartbeat of silence it pings the client, and a
    client silent for :data:`SILENT_HEARTBEATS` heartbeats is closed with
    :data:`CLOSE_TOO_SLOW` (any frame counts: the pages' own pings, a pong, a report).  The
    socket must be made with aiohttp's heartbeat and autoping off.
    """

    one_room = False

    def __init__(self, ws: web.WebSocketResponse, label: str, heartbeat_s: float) -> None:
        self._ws = ws
        self._label = label
        self._heartbeat_s = heartbeat_s

    async def frames(self) -> AsyncIterator[str | bytes]:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            try:
                msg = await self._ws.receive(timeout=self._heartbeat_s)
            except TimeoutError:
                silent = loop.time() - heard
                if silent >= SILENT_HEARTBEATS * self._heartbeat_s:
                    logger.info("session %s: silent for %.1f s, dropped", self._label, silent)
                    with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                        async with asyncio.timeout(CLOSE_WAIT_S):
                            await self._ws.close(code=CLOSE_TOO_SLOW, message=b"silent")
                    return
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._ws.ping()
                continue
            heard = loop.time()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                yield msg.data
            elif msg.type is WSMsgType.PING:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                continue
            else:
                if msg.type is WSMsgType.ERROR:
                    logger.info("session %s: socket error %s", self._label, self._ws.exception())
                return  # closing or closed

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except RuntimeError as exc:  # aiohttp: the socket is closing
            raise ConnectionError(str(exc)) from exc

    async def close(self, code: int, message: bytes) -> None:
        await self._ws.close(code=code, message=message)

    def finish(self) -> None:
        """A browser's socket is read until it closes."""


def thin_stream(sock: socket.socket | None) -> None:
    """Mark a signalling socket as a thin stream (:data:`TCP_THIN_LINEAR_TIMEOUTS`), where the
    platform has it; elsewhere, and for a socket that is not TCP, nothing happens."""
    if sock is None or sys.platform != "linux" or sock.type != socket.SOCK_STREAM:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1)
