"""A stock aiortc relay, the baseline of ``bench.relay``: it decodes and re-encodes.

    python -m bench.stock_relay --port P

``POST /offer`` with JSON ``{"consult": id, "seat": "a" | "b", "sdp": offer}`` answers
``{"sdp": answer}`` once the other seat of the same consultation has offered too: each seat's
answer sends the other seat's tracks through :class:`aiortc.contrib.media.MediaRelay`, the way
aiortc's own examples relay.  aiortc decodes every received frame and its senders encode again,
which is exactly the cost Setu's encoded relay avoids.  ``GET /health`` answers 200.

It imports nothing from Setu and changes none of aiortc's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

logger = logging.getLogger("bench.stock_relay")

SEATS = ("a", "b")
#: How long a seat's offer waits for the other seat's.
PAIRING_TIMEOUT_S = 30.0


class _Consult:
    """The two seats of one consultation: each seat's received tracks, once it has offered."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.tracks: dict[str, asyncio.Future[dict[str, MediaStreamTrack]]] = {
            seat: loop.create_future() for seat in SEATS
        }


class StockRelay:
    """Pairs two peer connections per consultation and relays between them with MediaRelay."""

    def __init__(self) -> None:
        self._relay = MediaRelay()
        self._consults: dict[str, _Consult] = {}
        self._pcs: set[RTCPeerConnection] = set()
        self._closing: set[asyncio.Task[None]] = set()

    async def offer(self, request: web.Request) -> web.Response:
        """Answer one seat's offer with the other seat's tracks, relayed."""
        try:
            body: Any = await request.json()
            consult_id, seat, sdp = str(body["consult"]), str(body["seat"]), str(body["sdp"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text="expected JSON {consult, seat, sdp}") from None
        if seat not in SEATS:
            raise web.HTTPBadRequest(text="seat must be 'a' or 'b'")
        consult = self._consults.setdefault(consult_id, _Consult())
        if consult.tracks[seat].done():
            raise web.HTTPConflict(text="that seat has already offered")
        other = SEATS[1 - SEATS.index(seat)]

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pcs.add(pc)
        received: dict[str, MediaStreamTrack] = {}
        pc.on("track", lambda track: received.setdefault(track.kind, track))
        pc.on("connectionstatechange", lambda: self._state_changed(pc))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            consult.tracks[seat].set_result(received)
            partner = await asyncio.wait_for(
                asyncio.shield(consult.tracks[other]), PAIRING_TIMEOUT_S
            )
            for kind in ("audio", "video"):
                if kind in partner:
                    pc.addTrack(self._relay.subscribe(partner[kind]))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self._close(pc)
            raise
        if all(f.done() for f in consult.tracks.values()):
            self._consults.pop(consult_id, None)
        logger.info("consult %s seat %s answered", consult_id, seat)
        return web.json_response({"sdp": pc.localDescription.sdp})

    def _state_changed(self, pc: RTCPeerConnection) -> None:
        if pc.connectionState in ("failed", "closed") and pc in self._pcs:
            task = asyncio.get_running_loop().create_task(self._close(pc))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close(self, pc: RTCPeerConnection) -> None:
        self._pcs.discard(pc)
        await pc.close()

    async def close(self) -> None:
        """Close every peer connection and wait for the closing tasks."""
        for consult in self._consults.values():
            for future in consult.tracks.values():
                future.cancel()
        self._consults.clear()
        await asyncio.gather(*(self._close(pc) for pc in list(self._pcs)), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)


async def health(_request: web.Request) -> web.Response:
    """Readiness probe."""
    return web.Response(text="ok")


def create_app() -> web.Application:
    """The stock relay's aiohttp application."""
    app = web.Application()
    relay = StockRelay()

    async def shutdown(_app: web.Application) -> None:
        await relay.close()

    app.on_shutdown.append(shutdown)
    app.router.add_post("/offer", relay.offer)
    app.router.add_get("/health", health)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the stock relay on loopback until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.stock_relay", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(create_app(), host=args.host, port=args.port, print=None, shutdown_timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
