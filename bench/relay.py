"""Server CPU per consultation: Setu's encoded relay against a stock aiortc relay.

    python -m bench.relay --consults 4 --seconds 20 --json bench-results/relay.json

The same consultations run through two servers, one after the other, each in its own process:

* **setu**: ``server.py`` on the embedded store, with real logins, the real websocket protocol
  (``register_patient``, ``call_next``, ``join``, ``offer``) and its relay, which forwards
  encoded frames;
* **stock**: ``bench/stock_relay.py``, aiortc's ``MediaRelay``, which decodes every frame and
  encodes it again for the other side.

Each consultation is two aiortc client peers in this process that send 640x360 15 fps VP8 and
Opus both ways.  The media is encoded once before the run and replayed, and what arrives is
counted without decoding, so the clients cost little CPU.

Measuring: once media reaches every client and ``--warmup`` seconds have passed, the clients
pause, and once nothing has arrived for a while the counters are read.  The clients resume for
``--seconds`` (the window), then pause again, and the counters are read again once the relay has
delivered everything it still held.  The server's CPU (user + system, psutil, threads and any
children) is charged from the moment the clients resume to the last frame delivered, so a relay
that falls behind pays for its backlog.  Delivered fractions are frames received over frames the
other side sent in the window.  The report is JSON on stdout (and in ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    EXIT_TERMINATED,
    KINDS,
    PATIENT,
    Counts,
    EncodedMedia,
    Gate,
    ReplayPeer,
    ServerProcess,
    SignalClient,
    encode_media,
    fraction,
    free_port,
    gather_or_cancel,
    machine,
    now_iso,
    process_cpu_seconds,
    run_main,
    setu_server,
    setup_logging,
    versions,
    wait_until,
    write_report,
)

logger = logging.getLogger("bench.relay")

#: With the clients paused, a relay has delivered what it held once nothing arrived for this
#: long; one that fell behind may take far longer, up to ``SETTLE_LIMIT_S``.
QUIET_S = 2.0
SETTLE_LIMIT_S = 60.0
POLL_S = 0.05
#: Media "flows" once every client has received this much.
FLOWING_VIDEO, FLOWING_AUDIO = 10, 25
SETUP_TIMEOUT_S = 60.0
#: Below this delivered fraction a server is reported as saturated.
SATURATED_BELOW = 0.98


@dataclass
class Consult:
    """One consultation's two client peers and, for Setu, its nurse and doctor."""

    peers: list[ReplayPeer] = field(default_factory=list)
    users: list[SignalClient] = field(default_factory=list)

    async def close(self) -> None:
        """Hang up (Setu), close both peer connections and both sockets, whatever fails."""
        try:
            if len(self.users) == 2:
                nurse, doctor = self.users
                with contextlib.suppress(Exception):
                    await doctor.send("hangup")
                    await gather_or_cancel(
                        nurse.expect("room_ended", timeout=5),
                        doctor.expect("room_ended", timeout=5),
                    )
        finally:
            for peer in self.peers:
                with contextlib.suppress(Exception):
                    await peer.close()
            for user in self.users:
                with contextlib.suppress(Exception):
                    await user.close()


@dataclass(frozen=True)
class PhaseResult:
    """What one server did with the consultations of one window."""

    name: str
    consults: int
    window_s: float
    cpu_s: float
    client_cpu_s: float
    counts: Counts
    #: The worst delivered fraction of any one direction of any consultation, by kind.
    worst_direction: dict[str, float]
    #: How long the server went on delivering after the clients paused (its backlog).
    tail_s: float

    @property
    def cpu_per_consult(self) -> float:
        """Server CPU seconds per consultation per second of media."""
        return self.cpu_s / (self.consults * self.window_s)

    @property
    def video_delivered(self) -> float:
        """Fraction of the video frames sent in the window that arrived."""
        return fraction(self.counts.video_received, self.counts.video_sent)

    @property
    def audio_delivered(self) -> float:
        """Fraction of the audio frames sent in the window that arrived."""
        return fraction(self.counts.audio_received, self.counts.audio_sent)

    @property
    def saturated(self) -> bool:
        """Whether the server failed to deliver the media (it lacked CPU, most likely)."""
        return min(self.video_delivered, self.audio_delivered) < SATURATED_BELOW

    @property
    def cpu_ms_per_delivered_frame(self) -> float:
        """Server CPU milliseconds per frame (video or audio) that reached a client."""
        delivered = self.counts.video_received + self.counts.audio_received
        return 1000 * self.cpu_s / delivered if delivered else float("inf")

    def _kbps(self, received_bytes: int) -> float:
        # Two streams of each kind per consultation, one each way.
        return received_bytes * 8 / (2 * self.consults * self.window_s) / 1000

    def report(self) -> dict[str, Any]:
        """The raw figures of the phase."""
        c = self.counts
        return {
            "window_s": round(self.window_s, 3),
            "server_cpu_s": round(self.cpu_s, 3),
            "server_cpu_per_consult": round(self.cpu_per_consult, 5),
            "server_cpu_percent_of_one_core": round(100 * self.cpu_s / self.window_s, 1),
            "server_cpu_ms_per_delivered_frame": round(self.cpu_ms_per_delivered_frame, 4),
            "delivery_tail_s": round(self.tail_s, 3),
            "saturated": self.saturated,
            "client_cpu_s": round(self.client_cpu_s, 3),
            "video_sent": c.video_sent,
            "video_received": c.video_received,
            "audio_sent": c.audio_sent,
            "audio_received": c.audio_received,
            "video_frames_delivered": round(self.video_delivered, 4),
            "audio_frames_delivered": round(self.audio_delivered, 4),
            "worst_direction_video_delivered": round(self.worst_direction["video"], 4),
            "worst_direction_audio_delivered": round(self.worst_direction["audio"], 4),
            "video_kbps_received_per_stream": round(self._kbps(c.video_bytes_received), 1),
            "audio_kbps_received_per_stream": round(self._kbps(c.audio_bytes_received), 1),
            "keyframe_requests_to_clients": c.keyframe_requests,
        }


# ------------------------------------------------------------------------------ opening consults


async def open_setu_consult(
    base_url: str,
    nurse_name: str,
    doctor_name: str,
    media: EncodedMedia,
    gate: Gate,
    index: int,
    *,
    remb: bool = False,
) -> Consult:
    """The whole Setu flow: sign in, register, ``call_next``, join, offer, answer."""
    consult = Consult()
    try:
        nurse, doctor = SignalClient(base_url, nurse_name), SignalClient(base_url, doctor_name)
        consult.users += [nurse, doctor]
        await gather_or_cancel(nurse.connect(), doctor.connect())
        await nurse.request("register_patient", "token_issued", patient=dict(PATIENT))
        opened = await doctor.request("call_next", "room_opened")
        room_id = opened["room_id"]
        await gather_or_cancel(
            nurse.request("join", "joined", room_id=room_id),
            doctor.request("join", "joined", room_id=room_id),
        )
        consult.peers += [
            ReplayPeer(f"setu{index}-spoke", media, gate, remb=remb),
            ReplayPeer(f"setu{index}-hub", media, gate, remb=remb),
        ]
        offers = await gather_or_cancel(*(p.offer() for p in consult.peers))
        answers = await gather_or_cancel(
            nurse.request("offer", "answer", sdp=offers[0]),
            doctor.request("offer", "answer", sdp=offers[1]),
        )
        for peer, answer in zip(consult.peers, answers, strict=True):
            await peer.accept(answer["sdp"])
    except BaseException:
        await consult.close()
        raise
    return consult


async def open_stock_consult(
    http: aiohttp.ClientSession,
    base_url: str,
    media: EncodedMedia,
    gate: Gate,
    index: int,
    *,
    remb: bool = False,
) -> Consult:
    """Two peers offer to the stock relay, which answers each with the other's tracks."""
    consult = Consult()
    try:
        consult.peers += [
            ReplayPeer(f"stock{index}-a", media, gate, remb=remb),
            ReplayPeer(f"stock{index}-b", media, gate, remb=remb),
        ]
        offers = await gather_or_cancel(*(p.offer() for p in consult.peers))

        async def post(seat: str, sdp: str) -> str:
            async with http.post(
                base_url + "/offer", json={"consult": str(index), "seat": seat, "sdp": sdp}
            ) as resp:
                resp.raise_for_status()
                body: dict[str, str] = await resp.json()
                return body["sdp"]

        answers = await gather_or_cancel(post("a", offers[0]), post("b", offers[1]))
        for peer, answer in zip(consult.peers, answers, strict=True):
            await peer.accept(answer)
    except BaseException:
        await consult.close()
        raise
    return consult


# ------------------------------------------------------------------------------ measuring


def _received(peers: Sequence[ReplayPeer]) -> int:
    return sum(p.received[kind] for p in peers for kind in KINDS)


async def settle(server: ServerProcess, peers: Sequence[ReplayPeer]) -> tuple[float, float]:
    """With the clients paused, wait until nothing more arrives for ``QUIET_S``.

    Returns the server's CPU seconds and the monotonic time at the last arrival, so that a
    relay that fell behind is charged for every frame it still had to deliver, and no more.
    """
    last = _received(peers)
    last_cpu, last_at = server.cpu_seconds(), time.monotonic()
    deadline = last_at + SETTLE_LIMIT_S
    while True:
        await asyncio.sleep(POLL_S)
        now = time.monotonic()
        count = _received(peers)
        if count != last:
            last, last_cpu, last_at = count, server.cpu_seconds(), now
        elif now - last_at >= QUIET_S:
            return last_cpu, last_at
        if now > deadline:
            logger.warning(
                "%s: still delivering %.0fs after the clients paused; cut off",
                server.name,
                SETTLE_LIMIT_S,
            )
            return last_cpu, last_at


def _directions(consults: Sequence[Consult]) -> list[tuple[str, ReplayPeer, ReplayPeer]]:
    """Every (kind, sender, receiver) of every consultation."""
    out = []
    for consult in consults:
        first, second = consult.peers
        for kind in KINDS:
            out += [(kind, first, second), (kind, second, first)]
    return out


def _direction_counts(consults: Sequence[Consult]) -> list[tuple[int, int]]:
    return [(tx.sent(kind), rx.received[kind]) for kind, tx, rx in _directions(consults)]


async def measure(
    name: str,
    server: ServerProcess,
    consults: list[Consult],
    gate: Gate,
    warmup_s: float,
    seconds: float,
) -> PhaseResult:
    """Warm up, then measure the server's CPU and the frames delivered for one window."""
    peers = [p for c in consults for p in c.peers]
    await wait_until(
        lambda: all(
            p.received["video"] >= FLOWING_VIDEO and p.received["audio"] >= FLOWING_AUDIO
            for p in peers
        ),
        SETUP_TIMEOUT_S,
        f"{name}: media did not reach every client",
    )
    logger.info("%s: media flows to all %d clients; warming up %.1fs", name, len(peers), warmup_s)
    await asyncio.sleep(warmup_s)

    gate.pause()
    await settle(server, peers)
    before, directions_before = Counts.of(peers), _direction_counts(consults)
    me = os.getpid()
    client0 = process_cpu_seconds(me, descendants=False)
    cpu0, resumed_at = server.cpu_seconds(), time.monotonic()
    gate.resume()
    await asyncio.sleep(seconds)
    gate.pause()
    paused_at = time.monotonic()
    client1 = process_cpu_seconds(me, descendants=False)
    cpu1, last_at = await settle(server, peers)
    after, directions_after = Counts.of(peers), _direction_counts(consults)

    worst = dict.fromkeys(KINDS, 1.0)
    for (kind, _tx, _rx), (sent0, got0), (sent1, got1) in zip(
        _directions(consults), directions_before, directions_after, strict=True
    ):
        worst[kind] = min(worst[kind], fraction(got1 - got0, sent1 - sent0))
    result = PhaseResult(
        name=name,
        consults=len(consults),
        window_s=paused_at - resumed_at,
        cpu_s=cpu1 - cpu0,
        client_cpu_s=client1 - client0,
        counts=after - before,
        worst_direction=worst,
        tail_s=max(0.0, last_at - paused_at),
    )
    logger.info("%s: %s", name, result.report())
    return result


async def _close_all(consults: list[Consult]) -> None:
    await asyncio.gather(*(c.close() for c in consults), return_exceptions=True)


async def run_setu(
    tmp: Path, consults: int, media: EncodedMedia, warmup_s: float, seconds: float, remb: bool
) -> PhaseResult:
    """Measure Setu's own server."""
    server, pairs = setu_server(tmp, consults)
    gate = Gate()
    opened: list[Consult] = []
    async with server:
        try:
            for i, (nurse, doctor) in enumerate(pairs):
                opened.append(
                    await open_setu_consult(
                        server.base_url, nurse, doctor, media, gate, i, remb=remb
                    )
                )
            logger.info("setu: %d consultations negotiated", len(opened))
            return await measure("setu", server, opened, gate, warmup_s, seconds)
        finally:
            await _close_all(opened)


async def run_stock(
    tmp: Path, consults: int, media: EncodedMedia, warmup_s: float, seconds: float, remb: bool
) -> PhaseResult:
    """Measure the stock aiortc relay."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.stock_relay", "--port", str(port)]
    server = ServerProcess("stock", argv, port, tmp / "stock.log", ready_path="/health")
    gate = Gate()
    opened: list[Consult] = []
    async with server, aiohttp.ClientSession() as http:
        try:
            for i in range(consults):
                opened.append(
                    await open_stock_consult(http, server.base_url, media, gate, i, remb=remb)
                )
            logger.info("stock: %d consultations negotiated", len(opened))
            return await measure("stock", server, opened, gate, warmup_s, seconds)
        finally:
            await _close_all(opened)


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator > 0 else None


async def run(consults: int, seconds: float, warmup_s: float, remb: bool) -> dict[str, Any]:
    """Both phases, one after the other, and the report."""
    started = now_iso()
    machine_before = machine()
    media = encode_media()
    logger.info("media encoded once: %s", media.describe())
    phase_timeout = 2 * SETUP_TIMEOUT_S + warmup_s + seconds + 2 * SETTLE_LIMIT_S + 60
    with tempfile.TemporaryDirectory(prefix="setu-bench-") as tmpdir:
        tmp = Path(tmpdir)
        async with asyncio.timeout(phase_timeout):
            setu = await run_setu(tmp, consults, media, warmup_s, seconds, remb)
        async with asyncio.timeout(phase_timeout):
            stock = await run_stock(tmp, consults, media, warmup_s, seconds, remb)
    return {
        "benchmark": "relay",
        "date": started,
        "consults": consults,
        "seconds": seconds,
        "warmup_seconds": warmup_s,
        "clients_send_remb": remb,
        "setu_cpu_per_consult": round(setu.cpu_per_consult, 5),
        "stock_cpu_per_consult": round(stock.cpu_per_consult, 5),
        "cpu_ratio": _ratio(stock.cpu_per_consult, setu.cpu_per_consult),
        "setu_video_frames_delivered": round(setu.video_delivered, 4),
        "setu_audio_frames_delivered": round(setu.audio_delivered, 4),
        "stock_video_frames_delivered": round(stock.video_delivered, 4),
        "stock_audio_frames_delivered": round(stock.audio_delivered, 4),
        "stock_saturated": stock.saturated,
        "cpu_ratio_per_delivered_frame": _ratio(
            stock.cpu_ms_per_delivered_frame, setu.cpu_ms_per_delivered_frame
        ),
        "setu": setu.report(),
        "stock": stock.report(),
        "media": media.describe(),
        "method": (
            "server CPU = user+system seconds of the server process, its threads and children "
            "(psutil), from the clients resuming to the last frame delivered after they pause; "
            "cpu_per_consult = CPU / (consults x window seconds); delivered = frames received "
            "/ frames the other side sent in the window; a saturated server (delivered < 0.98) "
            "spent only the CPU it could get, so its cpu_per_consult is a lower bound, and "
            "cpu_ratio_per_delivered_frame compares CPU per frame that arrived instead"
        ),
        "machine": {**machine_before, "loadavg_end": machine()["loadavg"]},
        "versions": versions(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--consults", type=int, default=4, help="parallel consultations")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of flowing media before the window"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--remb",
        action="store_true",
        help="let clients send REMB estimates; the stock relay then re-encodes at up to "
        "1.5 Mbit/s instead of aiortc's default 500 kbit/s (about the source's rate)",
    )
    parser.add_argument("--log-level", default="INFO", help="progress on stderr")
    args = parser.parse_args(argv)
    if args.consults < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--consults must be >= 1, --seconds > 0 and --warmup >= 0")
    setup_logging(args.log_level)
    try:
        report = run_main(run(args.consults, args.seconds, args.warmup, args.remb))
    except asyncio.CancelledError:
        logger.error("terminated; servers stopped")
        return EXIT_TERMINATED
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
