"""The relay track: encoded frames from one participant, queued for the other's sender.

One :class:`RelayTrack` per direction and kind.  The source side :meth:`push` es frames as the
receive thread delivers them; aiortc's sender awaits :meth:`recv`.  The queue is bounded: when a
slow sender lets it fill, video is flushed to the next keyframe (and one is requested), audio
loses its oldest packets.  Either way memory and latency stay bounded.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .frames import AUDIO_CLOCK, VIDEO_CLOCK, EncodedFrame

logger = logging.getLogger(__name__)

#: About one second of media at the rates browsers send.
VIDEO_QUEUE = 30
AUDIO_QUEUE = 50


class RelayStats:
    __slots__ = ("dropped", "flushes", "forwarded", "received")

    def __init__(self) -> None:
        self.received = 0
        self.forwarded = 0
        self.dropped = 0
        self.flushes = 0


class RelayTrack(MediaStreamTrack):
    """A track of already-encoded frames, fed by :meth:`push`, read by an aiortc sender."""

    def __init__(self, kind: str, request_keyframe: Callable[[], object], label: str) -> None:
        super().__init__()
        self.kind = kind
        self._label = label
        self._video = kind == "video"
        self._queue: collections.deque[EncodedFrame] = collections.deque()
        self._limit = VIDEO_QUEUE if self._video else AUDIO_QUEUE
        self._ready = asyncio.Event()
        self._request_keyframe = request_keyframe
        # A decoder can only start on a keyframe: hold back video until one arrives.
        self._need_keyframe = self._video
        # Keeps outgoing timestamps monotonic when the source changes (a reconnect).
        self._source: object | None = None
        self._offset = 0
        self._last_pts: int | None = None
        self._step = VIDEO_CLOCK // 15 if self._video else AUDIO_CLOCK // 50
        self._held = False
        self.stats = RelayStats()

    def push(self, frame: EncodedFrame, source: object) -> None:
        """Queue a frame from ``source``; never blocks, never grows past the bound."""
        if self.readyState != "live":
            return
        self.stats.received += 1
        if source is not self._source:
            self._rebase(frame, source)
        if self._offset:
            frame = frame.shifted(self._offset)
        self._last_pts = frame.pts
        if self._held:
            self.stats.dropped += 1
            return
        if self._need_keyframe:
            if not frame.is_keyframe:
                self.stats.dropped += 1
                return
            self._need_keyframe = False
        if len(self._queue) >= self._limit:
            self.stats.flushes += 1
            if self._video:
                # Dropping one encoded video frame breaks every later one until a keyframe.
                self.stats.dropped += len(self._queue) + 1
                self._queue.clear()
                self._need_keyframe = True
                self._request_keyframe()
                logger.debug("%s: queue full, flushed to the next keyframe", self._label)
                return
            self._queue.popleft()
            self.stats.dropped += 1
        self._queue.append(frame)
        self._ready.set()

    def _rebase(self, frame: EncodedFrame, source: object) -> None:
        """A new source starts its timestamps at zero; continue from where the old one was."""
        if self._last_pts is not None:
            self._offset = self._last_pts + self._step - frame.pts
        self._source = source
        if self._video:
            self._need_keyframe = True
            if not frame.is_keyframe:
                self._request_keyframe()

    @property
    def queued(self) -> int:
        """Frames waiting for the sender."""
        return len(self._queue)

    def hold(self, on: bool) -> None:
        """Stop forwarding (video for a receiver whose downlink carries audio only), or start
        again from the next keyframe.  The sender pauses too, but that takes a signalling
        round trip across the failing link; holding here takes effect at once."""
        if on == self._held:
            return
        self._held = on
        if on:
            self.stats.dropped += len(self._queue)
            self._queue.clear()
        else:
            self.restart_from_keyframe()

    @property
    def held(self) -> bool:
        return self._held

    def restart_from_keyframe(self) -> None:
        """Drop what is queued and wait for a keyframe (a new receiver is starting)."""
        if self._video:
            self.stats.dropped += len(self._queue)
            self._queue.clear()
            self._need_keyframe = True
            self._request_keyframe()

    # aiortc types recv() as decoded frames or av.Packet; its senders take any packet-like object.
    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        self.stats.forwarded += 1
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._queue.clear()
        self._ready.set()  # wake a waiting recv() so it sees the end


class KeyframeLimiter:
    """Rate-limits keyframe requests towards one source (a PLI storm costs the sender)."""

    def __init__(self, send: Callable[[], bool], min_interval: float = 0.5) -> None:
        """``send`` asks the source for a keyframe and says whether a request went out."""
        self._send = send
        self._min_interval = min_interval
        self._last = -1e9

    def __call__(self) -> None:
        now = time.monotonic()
        # Only a request that went out opens the quiet interval: one that found no source
        # (nobody sending yet) must not hold back the next.
        if now - self._last >= self._min_interval and self._send():
            self._last = now


class SenderView(MediaStreamTrack):
    """What one peer connection's sender reads from a :class:`RelayTrack`.

    aiortc stops a sender's track when its peer connection closes; a reconnecting seat gets a
    new peer connection, so each one reads through its own view and the relay track lives on.
    ``wrap``, when set, rewrites each frame's data for this leg: Opus into RED (:mod:`.red`).
    """

    def __init__(self, relay: RelayTrack) -> None:
        super().__init__()
        self.kind = relay.kind
        self._relay = relay
        self.wrap: Callable[[bytes, int], bytes] | None = None

    # aiortc types recv() as decoded frames or av.Packet; its senders take any packet-like object.
    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._relay.recv()
        if self.wrap is not None:
            frame = dataclasses.replace(frame, data=self.wrap(frame.data, frame.pts))
        return frame
