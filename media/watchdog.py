"""Video frames for a relay on lossy links: released the moment they are complete, never held
for long behind a packet that is not coming.

aiortc's own video jitter buffer has two habits that hurt a relay on a weak link.  It finds the
end of a frame only when the next frame's first packet arrives, so every frame waits one frame
interval (66 ms at 15 fps) for nothing.  And a packet that NACK/RTX never recovers blocks every
later frame until the buffer overflows (seconds at rural bitrates), after which it passes on the
frames behind the hole, which refer to a picture the decoder never got.

:class:`FrameAssembler` replaces it for VP8.  A frame leaves as soon as its packets run without a
hole from its first one (payload descriptor S=1, PID=0; RFC 7741 §4.2) to the marker bit.
Frames leave in order, each continuing the chain of the one before, so everything released
decodes.  When a hole stays unrepaired longer than the :class:`StallWatchdog` allows, the
assembler stops waiting: that frame and every frame after it up to the next keyframe are
dropped, a keyframe is requested (again, rate-limited, while none arrives) and the chain resumes
at the keyframe.  A complete keyframe ends any wait at once.

Why frames after a hole are dropped rather than forwarded: a VP8 inter frame predicts from the
previous frame (and the golden and altref frames; which ones, a relay cannot cheaply tell).
Decoded without its reference it does not fail: libvpx cannot tell a missing reference from a
present one and draws a wrong, smeared picture.  A browser that saw the hole itself would not
decode such a frame: Chromium's reference finder falls back to the sequence-number chain for VP8
without TL0PICIDX (which is how aiortc sends), holds frames that do not continue the chain and
asks for a keyframe when none turns up.  But aiortc's sender numbers relayed packets afresh, so
the far browser sees an unbroken chain, decodes the damaged frames as good ones and never asks
for a keyframe; browsers' VP8 encoders send one only when asked, so the damage would stay on
screen for a long time.  Dropping to the keyframe instead gives the shortest *clean* recovery:
a freeze of the stall limit plus one round trip for the keyframe.  For a consultation a short
freeze is better than a wrong picture.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import time
from collections.abc import Callable

from .frames import vp8_is_keyframe

logger = logging.getLogger(__name__)

#: Packets held at most (about 160 kB).  The stall limit, not this, decides how long a hole is
#: waited for; this only bounds memory.  It must exceed the largest keyframe in packets (a 40 kB
#: keyframe at 640x360 is about 35; aiortc#26 saw 85 at higher resolutions).
CAPACITY = 128

#: Bounds and default of the stall limit, in seconds (see :meth:`StallWatchdog.limit`).
STALL_MIN = 0.15
STALL_MAX = 0.40
STALL_DEFAULT = 0.30
#: Shortest interval between two keyframe requests of one assembler, in seconds.
KEYFRAME_REPEAT = 0.5

_SEQ_MOD = 1 << 16


class SyncState(enum.StrEnum):
    #: Every frame released continues the chain of the one before.
    IN_STEP = "in step"
    #: The chain is broken (or not begun): nothing is released before a keyframe.
    AWAITING_KEYFRAME = "awaiting keyframe"


@dataclasses.dataclass(frozen=True, slots=True)
class VideoPacket:
    """What the assembler needs of one RTP packet of a VP8 stream."""

    seq: int
    timestamp: int
    marker: bool
    #: Payload descriptor S=1 and PID=0: the first packet of a frame.
    start: bool
    #: The VP8 bytes after the payload descriptor; empty for a padding packet.
    data: bytes

    @property
    def keyframe_start(self) -> bool:
        return self.start and vp8_is_keyframe(self.data)


@dataclasses.dataclass(frozen=True, slots=True)
class AssembledFrame:
    data: bytes
    #: The RTP timestamp, as received.
    timestamp: int
    keyframe: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """What one packet set free: frames in order (often none, sometimes several at once when a
    retransmission completes a frame others were waiting behind) and whether to send a PLI."""

    frames: tuple[AssembledFrame, ...] = ()
    request_keyframe: bool = False


@dataclasses.dataclass(slots=True)
class AssemblerStats:
    packets: int = 0
    #: Packets older than what was already released or dropped, and duplicates.
    late: int = 0
    frames: int = 0
    #: Frames dropped whole or in part (counted by the packets of theirs that arrived).
    dropped_frames: int = 0
    stalls: int = 0
    overflows: int = 0
    keyframe_requests: int = 0
    #: Most packets held at once.
    max_held: int = 0


class StallWatchdog:
    """How long a hole may hold the picture back, and how often to ask for a keyframe.

    NACK/RTX repairs a hole in about one round trip: aiortc's receiver NACKs a missing packet as
    soon as a later packet shows the hole (the moment the watchdog starts counting), and the
    sender answers from its history.  Waiting less than that gives up repairs that were coming,
    each costing a keyframe (five to ten times a delta frame, on a link already losing packets);
    waiting longer adds to every freeze whose repair is not coming.  A freeze after an
    unrepaired loss lasts about limit + RTT + the keyframe's transmission, so the limit is
    1.25 RTT + 60 ms (for jitter and the sender's pacing) within [150 ms, 400 ms], and 300 ms
    until the round trip is known.  The cap keeps the worst rural link (RTT 400 ms) near one
    second per lost packet, at the price of giving up there on repairs slower than 400 ms.
    """

    def __init__(self, rtt: Callable[[], float | None] = lambda: None) -> None:
        """``rtt`` gives the round-trip time to the sender in seconds, ``None`` while unknown."""
        self._rtt = rtt

    def limit(self) -> float:
        rtt = self._rtt()
        if rtt is None:
            return STALL_DEFAULT
        return min(STALL_MAX, max(STALL_MIN, 1.25 * rtt + 0.06))

    def repeat(self) -> float:
        """After a request, a keyframe needs a round trip plus its encoding and sending (some
        0.3 s for 10-20 kB at 300-500 kbit/s); asking again sooner only buys a second one."""
        rtt = self._rtt()
        return max(KEYFRAME_REPEAT, (rtt or 0.0) + 0.3)


class FrameAssembler:
    """Reassembles a VP8 RTP stream into frames that decode, one packet at a time.

    It holds at most ``capacity`` packets; a packet beyond that drops the oldest ones and, unless
    a keyframe is awaited already, breaks the chain (drop to the next keyframe, ask for one).

    Not thread-safe: aiortc feeds it on the event loop.  Sequence numbers are unwrapped to
    integers that keep growing ("extended"), so no arithmetic below needs to wrap.

    Invariants: every packet held is at or after ``_next`` (the first position neither released
    nor dropped) when that is known, and the newest held packet is ``_highest``.
    """

    def __init__(
        self,
        label: str = "",
        capacity: int = CAPACITY,
        watchdog: StallWatchdog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.capacity = capacity
        self.watchdog = watchdog or StallWatchdog()
        self._clock = clock
        self._packets: dict[int, VideoPacket] = {}
        self._highest: int | None = None
        self._next: int | None = None
        self.state = SyncState.AWAITING_KEYFRAME
        #: The latest state changes, oldest first (bounded: a long call may have many).
        self.history: collections.deque[SyncState] = collections.deque([self.state], maxlen=32)
        self._stalled_since: float | None = None
        self._last_request: float | None = None
        # A stream opens with a keyframe: until then, ask for one only if it is late.
        self._opened_at: float | None = None
        self.stats = AssemblerStats()

    @property
    def held(self) -> int:
        """Packets held now."""
        return len(self._packets)

    def add(self, packet: VideoPacket) -> Release:
        """Take one packet; return the frames it completes and whether to ask for a keyframe."""
        now = self._clock()
        self.stats.packets += 1
        if self._opened_at is None:
            self._opened_at = now
        ext = self._extend(packet.seq)
        if self._next is not None and ext < self._next:
            if self._next - ext <= self.capacity:
                self.stats.late += 1
                return Release((), self._request(now))
            self._restart()
            ext = packet.seq
        if ext in self._packets:
            self.stats.late += 1
            return Release((), self._request(now))
        self._packets[ext] = packet
        if self._highest is None or ext > self._highest:
            self._highest = ext
        if len(self._packets) > self.capacity:
            self._overflow()
        self.stats.max_held = max(self.stats.max_held, len(self._packets))
        frames = self._release()
        if self._stalled(now, progressed=bool(frames)):
            frames += self._release()
        return Release(tuple(frames), self._request(now))

    def resync(self, why: str) -> None:
        """Frames were lost after release: drop to the next keyframe and ask for one."""
        self._lose_sync(why)

    # -- assembling

    def _extend(self, seq: int) -> int:
        if self._highest is None:
            return seq
        delta = (seq - self._highest) % _SEQ_MOD
        if delta >= _SEQ_MOD // 2:
            delta -= _SEQ_MOD
        return self._highest + delta

    def _release(self) -> list[AssembledFrame]:
        frames: list[AssembledFrame] = []
        while True:
            if self.state is SyncState.IN_STEP:
                frame = self._next_frame()
                if frame is not None:
                    frames.append(frame)
                    continue
                if self.state is SyncState.IN_STEP and not self._has_hole():
                    return frames  # the next frame is still arriving
            # The chain cannot go on yet: a complete keyframe makes everything before it moot.
            start = self._complete_keyframe()
            if start is None:
                if self.state is SyncState.AWAITING_KEYFRAME:
                    self._prune()
                return frames
            self._skip_to(start)

    def _next_frame(self) -> AssembledFrame | None:
        pos = self._position()
        while (packet := self._packets.get(pos)) is not None and not packet.data:
            del self._packets[pos]  # padding carries no frame
            pos += 1
        self._next = pos
        if packet is None:
            return None
        if not packet.start:
            self._lose_sync("a frame without its first packet")
            return None
        end = self._frame_end(pos)
        if end is None:
            return None
        packets = [self._packets.pop(ext) for ext in range(pos, end + 1)]
        self._next = end + 1
        self.stats.frames += 1
        first = packets[0]
        return AssembledFrame(
            b"".join(p.data for p in packets), first.timestamp, first.keyframe_start
        )

    def _frame_end(self, start: int) -> int | None:
        """The last position of the frame beginning at ``start``, if all its packets are here."""
        timestamp = self._packets[start].timestamp
        ext = start
        while (packet := self._packets.get(ext)) is not None:
            if packet.timestamp != timestamp:
                return ext - 1  # the next frame began: this one ended without a marker
            if packet.marker:
                return ext
            ext += 1
        return None

    def _complete_keyframe(self) -> int | None:
        for ext in sorted(self._packets):
            if self._packets[ext].keyframe_start and self._frame_end(ext) is not None:
                return ext
        return None

    def _has_hole(self) -> bool:
        if not self._packets or self._highest is None:
            return False
        return self._highest - self._position() + 1 > len(self._packets)

    def _position(self) -> int:
        if self._next is None:  # only while awaiting the first keyframe
            raise RuntimeError("no position before the first keyframe")
        return self._next

    # -- dropping

    def _skip_to(self, start: int) -> None:
        self._discard([ext for ext in self._packets if ext < start])
        self._next = start
        self._set_state(SyncState.IN_STEP, "keyframe")

    def _prune(self) -> None:
        """Awaiting a keyframe: nothing before the first keyframe that began can be used."""
        first_key = min((e for e, p in self._packets.items() if p.keyframe_start), default=None)
        if first_key is not None:
            self._discard([ext for ext in self._packets if ext < first_key])
            self._advance(first_key)

    def _overflow(self) -> None:
        self.stats.overflows += 1
        oldest = sorted(self._packets)[: len(self._packets) - self.capacity]
        self._discard(oldest)
        self._advance(oldest[-1] + 1)
        self._lose_sync("buffer full")

    def _advance(self, pos: int) -> None:
        self._next = pos if self._next is None else max(self._next, pos)

    def _discard(self, positions: list[int]) -> None:
        if positions:
            timestamps = {self._packets.pop(ext).timestamp for ext in positions}
            self.stats.dropped_frames += len(timestamps)

    def _restart(self) -> None:
        """The sender began a new sequence: forget the old one."""
        self._discard(list(self._packets))
        self._highest = None
        self._next = None
        self._lose_sync("sequence restarted")

    # -- watching

    def _stalled(self, now: float, progressed: bool) -> bool:
        """Whether a hole has now held the chain back for too long (then the chain is given up).

        A hole that nothing was released past since ``now - limit`` is a stall: the wait starts
        when the hole is first seen and starts again whenever a frame goes out.  This runs as
        packets arrive, at least every frame interval while video flows; with no packets there
        is nothing to release anyway.
        """
        if self.state is not SyncState.IN_STEP or not self._has_hole():
            self._stalled_since = None
        elif progressed or self._stalled_since is None:
            self._stalled_since = now
        elif now - self._stalled_since > (limit := self.watchdog.limit()):
            waited = now - self._stalled_since
            self.stats.stalls += 1
            self._lose_sync(
                f"a hole unrepaired for {waited * 1000:.0f} ms, limit {limit * 1000:.0f}"
            )
            return True
        return False

    def _lose_sync(self, why: str) -> None:
        self._stalled_since = None
        self._set_state(SyncState.AWAITING_KEYFRAME, why)

    def _request(self, now: float) -> bool:
        if self.state is not SyncState.AWAITING_KEYFRAME:
            return False
        last = self._last_request
        if last is None and self.stats.frames == 0:
            last = self._opened_at
        if last is not None and now - last < self.watchdog.repeat():
            return False
        self._last_request = now
        self.stats.keyframe_requests += 1
        return True

    def _set_state(self, new: SyncState, why: str) -> None:
        if new is self.state:
            return
        logger.info("video %s: %s -> %s (%s)", self.label, self.state, new, why)
        self.state = new
        self.history.append(new)
