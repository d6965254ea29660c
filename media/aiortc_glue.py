"""Everything Setu does with aiortc's private names, in one place.

aiortc decodes every received frame and has no public hook for encoded frames.  Setu needs
three things it does not expose, all checked by ``tests/media/test_aiortc_glue.py`` so that an
aiortc upgrade that moves them fails loudly:

* the receive thread (``rtcrtpreceiver.decoder_worker``) emits :class:`EncodedFrame` instead of
  decoding, for tracks whose queue is a :class:`FrameTap`;
* a receiver's jitter buffers suited to relaying (small for video, immediate for audio);
* a receiver's ``_send_rtcp_pli`` to ask the source for a keyframe, and a sender's
  ``_send_keyframe`` to learn that the destination asked for one.
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

import aiortc.rtcrtpreceiver as _rtcrtpreceiver
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from .frames import EncodedFrame, vp8_is_keyframe

logger = logging.getLogger(__name__)

#: aiortc 1.16 names this module relies on; the glue test checks each one.
PRIVATE_NAMES = {
    "rtcrtpreceiver.decoder_worker": (_rtcrtpreceiver, "decoder_worker"),
    "RTCRtpReceiver._send_rtcp_pli": (RTCRtpReceiver, "_send_rtcp_pli"),
    "RTCRtpSender._send_keyframe": (RTCRtpSender, "_send_keyframe"),
}
_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
#: A video jitter buffer this size releases a frame stuck behind a lost packet within about a
#: second at 500 kbit/s (aiortc's 512 held one for 8 s); it still holds the largest keyframes.
VIDEO_JITTER_CAPACITY = 128


class FrameTap:
    """Stands in for a received track's frame queue and hands encoded frames to a callback.

    The receive thread calls :meth:`put_threadsafe`; ``on_frame`` then runs on the event loop.
    Nothing is queued here: the callback decides what to keep.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_frame: Callable[[EncodedFrame], None],
        on_end: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._on_frame = on_frame
        self._on_end = on_end

    def put_threadsafe(self, frame: EncodedFrame | None) -> None:
        # The loop may close under the receive thread at shutdown.
        with contextlib.suppress(RuntimeError):
            if frame is None:
                self._loop.call_soon_threadsafe(self._on_end)
            else:
                self._loop.call_soon_threadsafe(self._on_frame, frame)

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
    while True:
        task = input_q.get()
        if task is None:
            output_q.put_threadsafe(None)
            return
        codec, jitter_frame = task
        data = jitter_frame.data
        video = codec.mimeType.lower().startswith("video/")
        output_q.put_threadsafe(
            EncodedFrame(
                data=data,
                pts=jitter_frame.timestamp,
                time_base=Fraction(1, codec.clockRate),
                is_keyframe=vp8_is_keyframe(data) if video else True,
                arrival=time.monotonic(),
            )
        )


_stock_worker = _rtcrtpreceiver.decoder_worker


def install() -> None:
    """Route tapped tracks' frames around the decoder (idempotent; other tracks unchanged)."""
    if _rtcrtpreceiver.decoder_worker is not _worker:
        _rtcrtpreceiver.decoder_worker = _worker


def tap_track(track: Any, tap: FrameTap) -> None:
    """Make a just-announced remote track deliver encoded frames to ``tap``.

    Must run inside the peer connection's ``track`` event, before aiortc starts the receiver.
    """
    track._queue = tap


class ImmediateJitterBuffer(JitterBuffer):
    """Releases each audio packet as it arrives; the receiving browser's own buffer smooths.

    aiortc's audio buffer holds packets after a loss and keeps about 200 ms more latency for the
    rest of the call.  Late packets (older than the newest seen) are dropped.
    """

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._newest: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._newest is not None and ((self._newest - seq) & 0xFFFF) < 0x8000:
            return False, None  # a duplicate or a packet that arrived after a newer one
        self._newest = seq
        # aiortc's receiver stores the depayloaded frame data on the packet before add().
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def tune_receiver(receiver: RTCRtpReceiver, kind: str) -> None:
    """Jitter buffers for relaying: immediate release for audio, smaller for video."""
    if kind == "audio":
        setattr(receiver, _JITTER_ATTR, ImmediateJitterBuffer())
    else:
        setattr(receiver, _JITTER_ATTR, JitterBuffer(capacity=VIDEO_JITTER_CAPACITY, is_video=True))


async def request_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Send a PLI for every stream the receiver hears; ``False`` if it has heard none yet."""
    sources = receiver.getSynchronizationSources()
    for source in sources:
        await receiver._send_rtcp_pli(source.source)
    return bool(sources)


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the far end asks this sender for a keyframe (PLI or FIR)."""
    setattr(sender, "_send_keyframe", callback)  # noqa: B010 - replacing a private method
