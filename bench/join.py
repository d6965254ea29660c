"""Join latency: from the doctor's ``call_next`` to decoded video on both sides.

    python -m bench.join --rounds 20 --json bench-results/join.json

Against a Setu ``server.py`` subprocess (embedded store), a signed-in nurse and doctor repeat a
round ``--rounds`` times (after ``--warmup-rounds`` unmeasured ones):

1. the nurse registers a patient and the doctor's queue shows it;
2. the clock starts as the doctor sends ``call_next``;
3. the doctor joins the room from ``room_opened``; the nurse joins it when her queue push shows
   her token called (as her console does), both at once;
4. each side negotiates an aiortc peer that encodes small synthetic video (320x180, 15 fps) and
   silence, and decodes what it receives;
5. the sample is the time until the *later* of the two sides decodes its first remote video
   frame.  The doctor hangs up and both wait for ``room_ended`` before the next round.

The report (JSON on stdout and in ``--json``) has ``join_p50_ms``, ``join_p95_ms`` (linear
interpolation between closest ranks) and every sample, with a breakdown of each round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack

from bench.common import (
    EXIT_TERMINATED,
    PATIENT,
    SignalClient,
    gather_or_cancel,
    machine,
    no_stun,
    now_iso,
    percentile,
    run_main,
    setu_server,
    setup_logging,
    versions,
    write_report,
)

logger = logging.getLogger("bench.join")

ROUND_TIMEOUT_S = 30.0
VIDEO_CLOCK = 90_000


class SyntheticVideoTrack(MediaStreamTrack):
    """A small moving bar at a steady frame rate; aiortc encodes it with VP8."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 180, fps: int = 15) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        """The next frame, when it is due."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + self._n / self.fps - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        img = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        x = (self._n * 4) % self.width
        img[:, x : x + 8] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self._n * (VIDEO_CLOCK // self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._n += 1
        return frame


class DecodingPeer:
    """A browser stand-in: sends synthetic video and silence, decodes everything it receives."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.pc = RTCPeerConnection(no_stun())
        self.pc.addTrack(AudioStreamTrack())
        self.pc.addTrack(SyntheticVideoTrack())
        self.first_video: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.connected_at: float | None = None
        self._sinks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._state)

    def _state(self) -> None:
        if self.pc.connectionState == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._sinks.append(
            asyncio.get_running_loop().create_task(
                self._consume(track), name=f"{self.label} {track.kind}"
            )
        )

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()  # decoded by aiortc's receiver
                if track.kind == "video" and not self.first_video.done():
                    self.first_video.set_result(time.monotonic())

    async def offer(self) -> str:
        """Create the offer (ICE gathered) and return its SDP."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer_sdp: str) -> None:
        """Apply the server's answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def close(self) -> None:
        """Close the peer connection and stop consuming."""
        try:
            await self.pc.close()
        finally:
            for task in self._sinks:
                task.cancel()
            await asyncio.gather(*self._sinks, return_exceptions=True)
            if not self.first_video.done():
                self.first_video.cancel()


async def _join_and_negotiate(
    who: SignalClient,
    peer: DecodingPeer,
    room_id: str,
    t0: float,
    marks: dict[str, float],
    side: str,
) -> float:
    await who.request("join", "joined", room_id=room_id)
    marks[f"{side}_joined_ms"] = _ms(time.monotonic() - t0)
    answer = await who.request("offer", "answer", sdp=await peer.offer())
    marks[f"{side}_answer_ms"] = _ms(time.monotonic() - t0)
    await peer.accept(answer["sdp"])
    first = await peer.first_video
    if peer.connected_at is not None:
        marks[f"{side}_connected_ms"] = _ms(peer.connected_at - t0)
    marks[f"{side}_first_video_ms"] = _ms(first - t0)
    return first


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def one_round(nurse: SignalClient, doctor: SignalClient) -> dict[str, float]:
    """Register, call, join, negotiate and decode; returns the round's timings in ms."""
    issued = await nurse.request("register_patient", "token_issued", patient=dict(PATIENT))
    token_id = issued["token"]["id"]
    await doctor.expect("queue", where=lambda m: any(t["id"] == token_id for t in m["waiting"]))
    peers: list[DecodingPeer] = []
    marks: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        rid = await doctor.send("call_next")

        async def doctor_side() -> float:
            opened = await doctor.expect("room_opened", where=lambda m: m.get("re") == rid)
            marks["room_opened_ms"] = _ms(time.monotonic() - t0)
            peer = DecodingPeer("doctor")
            peers.append(peer)
            return await _join_and_negotiate(doctor, peer, opened["room_id"], t0, marks, "doctor")

        def called(msg: dict[str, Any]) -> bool:
            return any(t["id"] == token_id and t.get("room_id") for t in msg["today"])

        async def nurse_side() -> float:
            pushed = await nurse.expect("queue", where=called)
            marks["nurse_told_ms"] = _ms(time.monotonic() - t0)
            room_id = next(t["room_id"] for t in pushed["today"] if t["id"] == token_id)
            peer = DecodingPeer("nurse")
            peers.append(peer)
            return await _join_and_negotiate(nurse, peer, room_id, t0, marks, "nurse")

        async with asyncio.timeout(ROUND_TIMEOUT_S):
            firsts = await gather_or_cancel(doctor_side(), nurse_side())
        marks["join_ms"] = _ms(max(firsts) - t0)
        await doctor.send("hangup")
        await gather_or_cancel(nurse.expect("room_ended"), doctor.expect("room_ended"))
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
    return marks


async def run(rounds: int, warmup_rounds: int) -> dict[str, Any]:
    """Start a Setu server, run the rounds, and build the report."""
    started = now_iso()
    machine_before = machine()
    details: list[dict[str, float]] = []
    warmups: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="setu-bench-") as tmpdir:
        server, pairs = setu_server(Path(tmpdir), consults=1)
        async with server:
            nurse_name, doctor_name = pairs[0]
            nurse = SignalClient(server.base_url, nurse_name)
            doctor = SignalClient(server.base_url, doctor_name)
            try:
                await gather_or_cancel(nurse.connect(), doctor.connect())
                await gather_or_cancel(
                    nurse.request("watch_queue", "queue"), doctor.request("watch_queue", "queue")
                )
                for i in range(warmup_rounds + rounds):
                    marks = await one_round(nurse, doctor)
                    (warmups if i < warmup_rounds else details).append(marks)
                    logger.info(
                        "round %d%s: %s", i + 1, " (warm-up)" if i < warmup_rounds else "", marks
                    )
            finally:
                await asyncio.gather(nurse.close(), doctor.close(), return_exceptions=True)
    samples = [d["join_ms"] for d in details]
    return {
        "benchmark": "join",
        "date": started,
        "rounds": rounds,
        "warmup_rounds": warmup_rounds,
        "join_p50_ms": round(percentile(samples, 50), 1),
        "join_p95_ms": round(percentile(samples, 95), 1),
        "join_min_ms": min(samples),
        "join_max_ms": max(samples),
        "samples_ms": samples,
        "warmup_samples_ms": [d["join_ms"] for d in warmups],
        "rounds_detail": details,
        "method": (
            "time from sending call_next to the later of the two clients' first decoded "
            "remote video frame; percentiles interpolate linearly between closest ranks"
        ),
        "machine": {**machine_before, "loadavg_end": machine()["loadavg"]},
        "versions": versions(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.join",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="unmeasured first rounds")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--log-level", default="INFO", help="progress on stderr")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup_rounds < 0:
        parser.error("--rounds must be >= 1 and --warmup-rounds >= 0")
    setup_logging(args.log_level)
    try:
        report = run_main(run(args.rounds, args.warmup_rounds))
    except asyncio.CancelledError:
        logger.error("terminated; servers stopped")
        return EXIT_TERMINATED
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
