"""Everything Setu does with aiortc's private names, in one place.

aiortc decodes every received frame and has no public hook for encoded frames.  Setu needs
these things it does not expose, all checked by ``tests/media/test_aiortc_glue.py`` so that an
aiortc upgrade that moves them fails loudly:

* a tapped receiver's decoder queue hands each frame to its :class:`FrameTap` at once, on the
  event loop (the receiver fills that queue from the loop), instead of to the receive thread:
  no thread hop per frame; the thread (``rtcrtpreceiver.decoder_worker``, replaced so that it
  never decodes a tapped track) only sees the end of the stream;
* a receiver's jitter buffers suited to relaying (:mod:`media.watchdog`'s frame assembler for
  video, immediate release for audio), fed with the depayloaded data aiortc leaves on each
  packet as ``_data``;
* a receiver's ``_send_rtcp_pli`` to ask the source for a keyframe, and a sender's
  ``_send_keyframe`` to learn that the destination asked for one;
* a sender's round-trip estimate, which sets how long video waits for a retransmission;
* a sender's ``transport`` property, through which Setu paces the video it relays to a
  browser on a weak downlink (:class:`Pacer`): aiortc sends a frame's packets back to back,
  and a keyframe sent at once into a slow link overflows the bottleneck's queue;
* a receiver's ``_send_rtcp``, whose bandwidth estimates (REMB) Setu caps for a sender that
  must drop to audio only: RTCP reaches the browser within a round trip, where a step sent
  over the websocket can wait seconds behind a collapsing link's TCP retransmissions; and
  through which it asks for no retransmission and no keyframe of a video it does not want;
* the loss fraction of a receiver's reports (``StreamStatistics.fraction_lost``), which Setu
  raises to the loss on the far leg: a browser's Opus encoder adds in-band FEC for the loss its
  receiver reports say, and in a relay the losses that matter happen after the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import aiortc.codecs as _codecs
import aiortc.rtcrtpreceiver as _rtcrtpreceiver
import aiortc.rtcrtpsender as _rtcrtpsender
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.base import Encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

from .adaptation import OneWayDelay
from .frames import AUDIO_CLOCK, EncodedFrame, vp8_is_keyframe
from .red import RedReader
from .watchdog import AssembledFrame, FrameAssembler, StallWatchdog, VideoPacket

logger = logging.getLogger(__name__)

#: aiortc 1.16 names this module relies on; the glue test checks each one.
PRIVATE_NAMES = {
    "rtcrtpreceiver.decoder_worker": (_rtcrtpreceiver, "decoder_worker"),
    "rtcrtpreceiver.StreamStatistics.fraction_lost": (
        _rtcrtpreceiver.StreamStatistics,
        "fraction_lost",
    ),
    "RTCRtpReceiver._send_rtcp_pli": (RTCRtpReceiver, "_send_rtcp_pli"),
    "RTCRtpSender._send_keyframe": (RTCRtpSender, "_send_keyframe"),
    "RTCRtpSender.transport": (RTCRtpSender, "transport"),
    "RTCRtpReceiver._send_rtcp": (RTCRtpReceiver, "_send_rtcp"),
    "codecs.CODECS": (_codecs, "CODECS"),
    "rtcrtpsender.get_encoder": (_rtcrtpsender, "get_encoder"),
}
#: Instance attributes, checked by the glue test on fresh objects.
_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_STREAMS_ATTR = "_RTCRtpReceiver__remote_streams"
_DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
#: Set on a receiver's stream statistics: the fraction its reports say at least (0 to 255).
_FLOOR_ATTR = "setu_loss_floor"
_RTT_ATTR = "_RTCRtpSender__rtt"
#: A transceiver's negotiated codecs, the one it sends first.
_CODECS_ATTR = "_codecs"

#: Frames handed from the receive thread to the event loop and not yet delivered.  The loop runs
#: them within one iteration, so only a badly overloaded loop ever lets this many pile up.
TAP_IN_FLIGHT = 64


class FrameTap:
    """Stands in for a received track's frame queue and hands encoded frames to a callback.

    The receive thread calls :meth:`put_threadsafe`; ``on_frame`` then runs on the event loop.
    At most ``limit`` frames wait for the loop.  Beyond that a frame is dropped, and so is every
    frame after it until one that decodes alone (a keyframe; every audio packet does), and
    ``on_overflow`` runs on the loop once to ask the source for that keyframe.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_frame: Callable[[EncodedFrame], None],
        on_end: Callable[[], None],
        on_overflow: Callable[[], None] | None = None,
        limit: int = TAP_IN_FLIGHT,
    ) -> None:
        self._loop = loop
        self._on_frame = on_frame
        self._on_end = on_end
        self._on_overflow = on_overflow
        self._limit = limit
        # Guards the three fields below: the receive thread admits, the loop delivers.
        self._lock = threading.Lock()
        self._in_flight = 0
        self._resync = False
        self.dropped = 0

    def put_threadsafe(self, frame: EncodedFrame | None) -> None:
        # The loop may close under the receive thread at shutdown.
        with contextlib.suppress(RuntimeError):
            if frame is None:
                self._loop.call_soon_threadsafe(self._on_end)
                return
            with self._lock:
                admitted, overflowed = self._admit(frame)
            if admitted:
                self._loop.call_soon_threadsafe(self._deliver, frame)
            elif overflowed and self._on_overflow is not None:
                self._loop.call_soon_threadsafe(self._on_overflow)

    def _admit(self, frame: EncodedFrame) -> tuple[bool, bool]:
        """(deliver it, this drop broke the chain); the caller holds the lock."""
        if self._in_flight >= self._limit:
            self.dropped += 1
            first = not self._resync
            self._resync = True
            return False, first
        if self._resync:
            if not frame.is_keyframe:
                self.dropped += 1
                return False, False
            self._resync = False
        self._in_flight += 1
        return True, False

    def _deliver(self, frame: EncodedFrame) -> None:
        with self._lock:
            self._in_flight -= 1
        self._on_frame(frame)

    def deliver_now(self, frame: EncodedFrame) -> None:
        """Hand ``frame`` on at once; only on the event loop."""
        self._on_frame(frame)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    # aiortc's RemoteStreamTrack.recv() awaits its queue; a tapped track is never read.
    async def get(self) -> None:  # pragma: no cover - never awaited by Setu
        await asyncio.Event().wait()


def _worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: Any,
    decode_error: threading.Event,
) -> None:
    if not isinstance(output_q, FrameTap):
        _stock_worker(loop, input_q, output_q, decode_error)
        return
    red = RedReader()
    while True:
        task = input_q.get()
        if task is None:
            output_q.put_threadsafe(None)
            return
        codec, jitter_frame = task
        for frame in _encoded_frames(codec, jitter_frame, red):
            output_q.put_threadsafe(frame)


def _encoded_frames(codec: Any, jitter_frame: JitterFrame, red: RedReader) -> list[EncodedFrame]:
    """The frames of what a receiver queued for decoding; RED is opened into plain Opus frames
    by the receiver's ``red`` (one per receiver: it remembers what it passed on)."""
    mime = codec.mimeType.lower()
    video = mime.startswith("video/")
    time_base = Fraction(1, codec.clockRate)
    arrival = time.monotonic()
    frames = _unbatch(jitter_frame)
    if mime == RED_MIME:
        frames = [f for data, pts in frames for f in red.frames(data, pts)]
    return [
        EncodedFrame(
            data=data,
            pts=pts,
            time_base=time_base,
            is_keyframe=vp8_is_keyframe(data) if video else True,
            arrival=arrival,
        )
        for data, pts in frames
    ]


class _InlineQueue(queue.Queue[Any]):
    """A tapped receiver's decoder queue: the receiver puts each frame from the event loop, and
    it goes to the tap there and then; only the end marker reaches the receive thread."""

    def __init__(self, tap: FrameTap) -> None:
        super().__init__()
        self._tap = tap
        self.red = RedReader()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None, block, timeout)
            return
        codec, jitter_frame = item
        for frame in _encoded_frames(codec, jitter_frame, self.red):
            self._tap.deliver_now(frame)


def _unbatch(jitter_frame: JitterFrame) -> list[tuple[bytes, int]]:
    """(data, pts) of each frame in what the receiver queued for decoding.

    aiortc rewrites ``timestamp`` to a pts counted from the stream's first frame; a batch carries
    its last frame's, and the others lie before it by their RTP timestamp differences.
    """
    if not isinstance(jitter_frame, _FrameBatch):
        return [(jitter_frame.data, jitter_frame.timestamp)]
    last = jitter_frame.frames[-1].timestamp
    return [
        (f.data, jitter_frame.timestamp - (last - f.timestamp) % (1 << 32))
        for f in jitter_frame.frames
    ]


#: Sent at once before pacing holds packets back (a few packets of an ordinary frame).
PACE_BURST_S = 0.02


class Pacer:
    """Spaces one sender's RTP packets to at most :attr:`kbps` (retransmissions included); at
    0 none is sent.

    A browser on a weak downlink gets the video relayed to it no faster than its link's share:
    a keyframe, ten times an ordinary frame, is spread over a few hundred milliseconds instead
    of overflowing the bottleneck's queue, which would lose part of it and call for another.
    The sender's loop waits for the pace; frames that come meanwhile wait in the relay's
    bounded queue.  RTCP is never paced.
    """

    def __init__(self, kbps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.kbps = kbps
        self._clock = clock
        self._free_at = 0.0

    def delay(self, size: int) -> float:
        """Account for a packet of ``size`` bytes; how long to wait before sending it."""
        now = self._clock()
        start = max(self._free_at, now)
        self._free_at = start + size * 8 / (self.kbps * 1000)
        return max(0.0, start - now - PACE_BURST_S)


class _PacedTransport:
    """A sender's view of its DTLS transport whose RTP sends wait for the pacer."""

    def __init__(self, transport: Any, pacer: Pacer) -> None:
        self._transport = transport
        self._pacer = pacer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    async def _send_rtp(self, data: bytes) -> None:
        if len(data) > 1 and not 192 <= data[1] <= 223:  # RTCP is not paced (RFC 5761)
            if self._pacer.kbps <= 0:
                return  # held: not even retransmissions cross a link that has no room
            wait = self._pacer.delay(len(data))
            if wait > 0:
                await asyncio.sleep(wait)
        await self._transport._send_rtp(data)


_stock_transport = RTCRtpSender.transport
_PACER_ATTR = "_setu_pacer"
_PACED_ATTR = "_setu_paced_transport"


def _sender_transport(sender: RTCRtpSender) -> Any:
    transport = _stock_transport.fget(sender)  # type: ignore[attr-defined]
    pacer: Pacer | None = getattr(sender, _PACER_ATTR, None)
    if pacer is None or transport is None:
        return transport
    paced: _PacedTransport | None = getattr(sender, _PACED_ATTR, None)
    if paced is None or paced._transport is not transport or paced._pacer is not pacer:
        paced = _PacedTransport(transport, pacer)
        setattr(sender, _PACED_ATTR, paced)
    return paced


def pace(sender: RTCRtpSender, kbps: float | None) -> None:
    """Pace what ``sender`` sends from now on at ``kbps``, or no longer with ``None``."""
    pacer: Pacer | None = getattr(sender, _PACER_ATTR, None)
    if kbps is None:
        setattr(sender, _PACER_ATTR, None)
    elif pacer is None:
        setattr(sender, _PACER_ATTR, Pacer(kbps))
    else:
        pacer.kbps = kbps


_stock_send_rtcp = RTCRtpReceiver._send_rtcp
_REMB_CAP_ATTR = "_setu_remb_cap_bps"
_HUSH_ATTR = "_setu_hushed"
_RTCP_SSRC_ATTR = "_RTCRtpReceiver__rtcp_ssrc"


def _capped(packet: Any, cap_bps: int) -> Any:
    """``packet`` with its REMB lowered to ``cap_bps`` if it is a REMB above it."""
    if not (isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP):
        return packet
    try:
        bitrate, ssrcs = unpack_remb_fci(packet.fci)
    except ValueError:
        return packet
    if bitrate <= cap_bps:
        return packet
    return RtcpPsfbPacket(
        fmt=packet.fmt,
        ssrc=packet.ssrc,
        media_ssrc=packet.media_ssrc,
        fci=pack_remb_fci(cap_bps, ssrcs),
    )


def _is_request(packet: Any) -> bool:
    """Whether ``packet`` asks the browser to send something again: a NACK or a PLI."""
    return (isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK) or (
        isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI
    )


async def _send_rtcp(receiver: RTCRtpReceiver, packet: Any) -> None:
    if getattr(receiver, _HUSH_ATTR, False) and _is_request(packet):
        return
    cap: int | None = getattr(receiver, _REMB_CAP_ATTR, None)
    await _stock_send_rtcp(receiver, packet if cap is None else _capped(packet, cap))


def hush(receiver: RTCRtpReceiver, on: bool) -> None:
    """While ``on``, ``receiver`` asks its browser for no retransmission (NACK) and no keyframe
    (PLI).  A browser told to pause its video still drains what its pacer holds, and would
    resend every packet its collapsed uplink lost: that video would take the room its audio
    needs for seconds more."""
    setattr(receiver, _HUSH_ATTR, on)


async def cap_remb(receiver: RTCRtpReceiver, kbps: float | None) -> None:
    """Hold the bandwidth estimates ``receiver`` sends its browser (REMB) at ``kbps`` at most,
    telling it at once; ``None`` lets them follow aiortc's estimator again."""
    if kbps is None:
        setattr(receiver, _REMB_CAP_ATTR, None)
        return
    cap = int(kbps * 1000)
    setattr(receiver, _REMB_CAP_ATTR, cap)
    rtcp_ssrc = getattr(receiver, _RTCP_SSRC_ATTR, None)
    ssrcs = [s.source for s in receiver.getSynchronizationSources()]
    if rtcp_ssrc is not None and ssrcs:
        await receiver._send_rtcp(
            RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(cap, ssrcs)
            )
        )


_stock_worker = _rtcrtpreceiver.decoder_worker
_stock_fraction_lost = _rtcrtpreceiver.StreamStatistics.fraction_lost


def _fraction_lost(stats: Any) -> int:
    # The stock property also moves its interval counters on: call it exactly once per report.
    own = int(_stock_fraction_lost.fget(stats))  # type: ignore[attr-defined]
    return max(own, int(getattr(stats, _FLOOR_ATTR, 0)))


#: Redundant audio as Chromium offers it; the payload type is the offer's in any answer.
RED_MIME = "audio/red"
RED_CODEC = RTCRtpCodecParameters(
    mimeType=RED_MIME, clockRate=AUDIO_CLOCK, channels=2, payloadType=63
)
#: aiortc's sender looks its encoder up through this module-level name (not re-exported).
_GET_ENCODER = "get_encoder"
_stock_get_encoder: Callable[[RTCRtpCodecParameters], Encoder] = getattr(
    _rtcrtpsender, _GET_ENCODER
)


class _PackedOnly(Encoder):
    """The encoder of a sender that only ever forwards already-encoded RED payloads."""

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise TypeError("RED is relayed, never encoded")

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        return [bytes(packet)], int(packet.pts * packet.time_base * AUDIO_CLOCK)


def _get_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    if codec.mimeType.lower() == RED_MIME:
        return _PackedOnly()
    return _stock_get_encoder(codec)


def install() -> None:
    """Route tapped tracks' frames around the decoder, let receivers report a loss floor, let
    senders be paced, and let peer connections negotiate RED (idempotent; other tracks,
    receivers and senders unchanged)."""
    if _rtcrtpreceiver.decoder_worker is not _worker:
        _rtcrtpreceiver.decoder_worker = _worker
    if RTCRtpReceiver._send_rtcp is _stock_send_rtcp:
        RTCRtpReceiver._send_rtcp = _send_rtcp  # type: ignore[method-assign,assignment]
    if RTCRtpSender.transport is _stock_transport:
        RTCRtpSender.transport = property(_sender_transport)  # type: ignore[method-assign,assignment]
    if getattr(_rtcrtpsender, _GET_ENCODER) is not _get_encoder:
        setattr(_rtcrtpsender, _GET_ENCODER, _get_encoder)
    audio = _codecs.CODECS["audio"]
    if not any(c.mimeType.lower() == RED_MIME for c in audio):
        audio.append(RED_CODEC)
    stats_class = _rtcrtpreceiver.StreamStatistics
    if stats_class.fraction_lost is _stock_fraction_lost:
        stats_class.fraction_lost = property(_fraction_lost)  # type: ignore[method-assign,assignment]


def report_loss_floor(receiver: RTCRtpReceiver, loss: float) -> None:
    """Make ``receiver``'s reports to the sending browser say at least ``loss`` (0 to 1) lost.

    The relay's receiver sees only the sender's uplink; the loss on the leg from the server to
    the other browser is the one the sender's Opus FEC has to cover.  Applies to the streams
    the receiver has seen so far: call it again as new ones appear (each sample does).
    """
    floor = max(0, min(255, round(loss * 256)))
    for stats in getattr(receiver, _STREAMS_ATTR).values():
        setattr(stats, _FLOOR_ATTR, floor)


def tap_track(track: Any, tap: FrameTap, receiver: RTCRtpReceiver | None = None) -> None:
    """Make a just-announced remote track deliver encoded frames to ``tap``; given the track's
    ``receiver``, on the event loop as each frame completes, else through the receive thread.

    Must run inside the peer connection's ``track`` event, before aiortc starts the receiver.
    """
    track._queue = tap
    if receiver is not None:
        setattr(receiver, _DECODER_QUEUE_ATTR, _InlineQueue(tap))


def tapped(track: Any) -> FrameTap | None:
    """The tap of a track :func:`tap_track` tapped (for statistics and tests)."""
    tap = track._queue
    return tap if isinstance(tap, FrameTap) else None


#: An audio packet this many behind the newest belongs to a restarted sequence, not a late one
#: (two seconds of 20 ms packets; aiortc's own buffer uses the same bound).
AUDIO_MAX_MISORDER = 100


class ImmediateJitterBuffer(JitterBuffer):
    """Releases each audio packet as it arrives; the receiving browser's own buffer smooths.

    aiortc's audio buffer holds packets after a loss and keeps about 200 ms more latency for the
    rest of the call.  This one never waits: a gap is passed on as a gap, which the far
    browser's NetEQ conceals (with Opus in-band FEC when the next packet carries it).  Packets
    older than the newest seen are dropped (aiortc's timestamp mapping takes a timestamp going
    back for a wrap), unless they are so far behind that the sender must have started again.
    """

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._newest: int | None = None
        self.late = 0
        #: The sender's uplink queue, from when its packets (sent every 20 ms) arrive.
        self.delay = OneWayDelay(AUDIO_CLOCK)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        self.delay.packet(time.monotonic(), packet.timestamp)
        seq = packet.sequence_number
        if self._newest is not None and (self._newest - seq) % (1 << 16) < AUDIO_MAX_MISORDER:
            self.late += 1  # a duplicate or a packet that arrived after a newer one
            return False, None
        self._newest = seq
        # aiortc's receiver stores the depayloaded frame data on the packet before add().
        data: bytes = packet._data  # type: ignore[attr-defined]
        if not data:
            return False, None  # padding
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


class _FrameBatch(JitterFrame):
    """Several video frames set free by one packet, queued as one item: the receiver passes on
    at most one item per packet and maps only its ``timestamp`` (the last frame's)."""

    def __init__(self, frames: tuple[AssembledFrame, ...]) -> None:
        super().__init__(data=frames[-1].data, timestamp=frames[-1].timestamp)
        self.frames = frames


class VideoJitterBuffer(JitterBuffer):
    """aiortc's receiver side of a :class:`~media.watchdog.FrameAssembler`.

    The receiver calls :meth:`add` for each VP8 packet on the event loop and sends a PLI for the
    stream when the first item of the answer is true: the assembler's keyframe requests take
    the receiver's own path (``_send_rtcp_pli``), rate-limited by the assembler.  Only tracks
    tapped with a :class:`FrameTap` may use it: their worker unpacks batches of frames.
    """

    def __init__(self, assembler: FrameAssembler) -> None:
        super().__init__(capacity=assembler.capacity, is_video=True)
        self.assembler = assembler

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        payload = packet.payload
        release = self.assembler.add(
            VideoPacket(
                seq=packet.sequence_number,
                timestamp=packet.timestamp,
                marker=bool(packet.marker),
                # VP8 payload descriptor |X|R|N|S|R|PID|: S=1 and PID=0 open a frame.
                start=bool(payload) and payload[0] & 0x17 == 0x10,
                data=packet._data,  # type: ignore[attr-defined]
            )
        )
        frames = release.frames
        if not frames:
            return release.request_keyframe, None
        if len(frames) == 1:
            return release.request_keyframe, JitterFrame(frames[0].data, frames[0].timestamp)
        return release.request_keyframe, _FrameBatch(frames)


def tune_receiver(
    receiver: RTCRtpReceiver,
    kind: str,
    label: str = "",
    rtt: Callable[[], float | None] = lambda: None,
) -> Callable[[], None]:
    """Jitter buffers for relaying: immediate release for audio, the frame assembler for video.

    ``rtt`` gives the round-trip time to the sender (see :func:`round_trip_time`).  Returns what
    to call when frames are lost after the buffer (the tap's ``on_overflow``): for video it drops
    to the next keyframe and asks for one.
    """
    if kind == "audio":
        setattr(receiver, _JITTER_ATTR, ImmediateJitterBuffer())
        return lambda: None
    assembler = FrameAssembler(label=label, watchdog=StallWatchdog(rtt))
    setattr(receiver, _JITTER_ATTR, VideoJitterBuffer(assembler))
    return lambda: assembler.resync("frames dropped on their way to the loop")


def jitter_buffer(receiver: RTCRtpReceiver) -> JitterBuffer:
    """The receiver's jitter buffer (for statistics and tests)."""
    buffer: JitterBuffer = getattr(receiver, _JITTER_ATTR)
    return buffer


def round_trip_time(pc: RTCPeerConnection) -> float | None:
    """aiortc's smoothed round trip to the browser, in seconds, from the RTCP reports about our
    senders; ``None`` until a report came back (the browser must have received media)."""
    rtts = [getattr(sender, _RTT_ATTR, None) for sender in pc.getSenders()]
    return max((rtt for rtt in rtts if isinstance(rtt, float)), default=None)


async def request_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Send a PLI for every stream the receiver hears; ``False`` if it has heard none yet."""
    sources = receiver.getSynchronizationSources()
    for source in sources:
        await receiver._send_rtcp_pli(source.source)
    return bool(sources)


def sends_red(transceiver: RTCRtpTransceiver) -> int | None:
    """The Opus payload type to put inside RED if ``transceiver`` negotiated RED as its codec
    (the answer lists it first), else ``None``.  Valid once the answer is set."""
    codecs = list(getattr(transceiver, _CODECS_ATTR, None) or ())
    if not codecs or codecs[0].mimeType.lower() != RED_MIME:
        return None
    return next((c.payloadType for c in codecs if c.mimeType.lower() == "audio/opus"), None)


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the far end asks this sender for a keyframe (PLI or FIR)."""
    setattr(sender, "_send_keyframe", callback)  # noqa: B010 - replacing a private method
