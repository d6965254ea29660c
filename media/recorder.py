"""The recorder: what each seat sends, muxed as it is into one WebM file per seat.

A :class:`Recorder` joins a :class:`~media.room.MediaRoom` as a consumer.  Nothing is decoded or
encoded: the relayed VP8 frames and Opus packets become Matroska blocks.  The event loop only
times each frame and queues it; one writer thread per recording does all muxing and file I/O.

Time 0 of every file is ``t0``, when recording started, so the files of a consultation play side
by side in sync.  Each track of each peer connection (``source``) is anchored at the arrival of
its first frame and then follows its own media clock.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
from av.container import OutputContainer
from av.stream import Stream

from core.domain import Participant

from .frames import EncodedFrame

logger = logging.getLogger(__name__)

KINDS = ("audio", "video")
#: A track silent for longer than this has a gap, listed in the manifest.
GAP_S = 1.0
#: A seat that sends audio but no video keyframe for this long is recorded without a picture
#: until one comes, so that its audio reaches the disk.
AUDIO_ONLY_AFTER_S = 3.0
DEFAULT_SIZE = (640, 360)
#: Audio held while a seat's file waits for its first keyframe (3 s of 10 ms packets).
PENDING_AUDIO = 300
#: Matroska writes a cluster out only when it closes (``flush_packets`` then pushes it to the
#: file): about this much media is what a crash can lose.
CLUSTER_MS = 500
#: See :meth:`_SeatFile._heartbeat`.
HEARTBEAT_S = 1.0
#: How long the writer lets packets gather before it writes them (and how late they reach
#: the disk, at most, beside the cluster length).
BATCH_S = 0.2
_RTP_WRAP = 1 << 32


@dataclasses.dataclass(frozen=True)
class Gap:
    """A stretch longer than :data:`GAP_S` without packets on one track of a file."""

    track: str
    from_s: float
    to_s: float


@dataclasses.dataclass(frozen=True)
class RecordedFile:
    """One seat's file as closed; times are seconds since ``t0``."""

    name: str
    seat: Participant
    segment: int
    path: Path
    bytes: int
    first_s: float | None
    last_s: float | None
    gaps: tuple[Gap, ...]
    video_frames: int
    audio_frames: int
    #: Frames received but not written (queue full, waiting for a keyframe, write error).
    dropped: int
    #: Writing failed: the file holds what was written before.
    interrupted: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _Item:
    seat: Participant
    kind: str
    at_s: float
    data: bytes
    keyframe: bool


class _Clock:
    """One track of one source: its media timestamps as seconds since ``t0``.

    RTP timestamps reach us as they were sent: 32 bits from a random origin, wrapping.  Deltas
    are taken modulo 2**32, which leaves zero-based timestamps as they are.
    """

    __slots__ = ("_elapsed", "_last", "_origin_s", "_scale", "source")

    def __init__(self, source: object, first: EncodedFrame, t0: float) -> None:
        self.source = source
        self._origin_s = first.arrival - t0
        self._scale = float(first.time_base)
        self._last = first.pts
        self._elapsed = 0

    def seconds(self, frame: EncodedFrame) -> float:
        delta = (frame.pts - self._last) % _RTP_WRAP
        if delta >= _RTP_WRAP // 2:
            delta -= _RTP_WRAP  # older than the previous frame
        self._elapsed += delta
        self._last = frame.pts
        return self._origin_s + self._elapsed * self._scale


class _Inbound:
    """What the event loop keeps of one seat."""

    __slots__ = ("clocks", "dropped", "wait_keyframe")

    def __init__(self) -> None:
        self.clocks: dict[str, _Clock] = {}
        self.wait_keyframe = True
        self.dropped = 0


class Recorder:
    """Records each seat of a room into ``<seat>-<segment>.webm`` under ``directory``.

    ``t0`` is ``time.monotonic()`` when recording started, time 0 of every file; frames that
    arrived before it are ignored.  ``request_keyframe(seat)`` is called freely: rate-limiting is
    the caller's.  The queue holds ``queue_limit`` frames of all seats together; when it is full
    a frame is dropped, and that seat's video then waits for its next keyframe.
    """

    def __init__(
        self,
        directory: Path,
        label: str,
        *,
        t0: float,
        request_keyframe: Callable[[Participant], None],
        segment: int = 1,
        queue_limit: int = 600,
    ) -> None:
        self.label = label
        self._directory = directory
        self._t0 = t0
        self._request_keyframe = request_keyframe
        self._segment = segment
        self._limit = queue_limit
        self._inbound = {seat: _Inbound() for seat in Participant}
        # Unbounded as a structure so that close() can always add its end marker; push() keeps
        # it within ``queue_limit``.
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        self._done: asyncio.Future[None] | None = None
        self._files: list[RecordedFile] = []
        self.received = 0
        self.keyframe_requests = 0
        self._thread = threading.Thread(target=self._run, name=f"recorder {label}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Frames dropped before the writer (queue full, or video waiting for a keyframe)."""
        return sum(inbound.dropped for inbound in self._inbound.values())

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def push(self, seat: Participant, kind: str, frame: EncodedFrame, source: object) -> None:
        """Time ``frame`` and queue it for the writer; never blocks."""
        if self._closed or kind not in KINDS or frame.arrival < self._t0:
            return
        self.received += 1
        inbound = self._inbound[seat]
        clock = inbound.clocks.get(kind)
        if clock is None or clock.source is not source:
            clock = inbound.clocks[kind] = _Clock(source, frame, self._t0)
            if kind == "video":
                inbound.wait_keyframe = True  # a new sender's stream can only start on one
        at_s = clock.seconds(frame)
        if kind == "video" and inbound.wait_keyframe:
            if not frame.is_keyframe:
                inbound.dropped += 1
                self._ask_keyframe(seat)
                return
            inbound.wait_keyframe = False
        if self._queue.qsize() >= self._limit:
            inbound.dropped += 1
            if kind == "video":
                inbound.wait_keyframe = True  # later frames depend on this one
                self._ask_keyframe(seat)
                logger.debug("recorder %s: queue full, %s video waits", self.label, seat)
            return
        self._queue.put(_Item(seat, kind, at_s, frame.data, frame.is_keyframe))

    def _ask_keyframe(self, seat: Participant) -> None:
        self.keyframe_requests += 1
        self._request_keyframe(seat)

    async def close(self) -> list[RecordedFile]:
        """Stop taking frames, write out what is queued and close the files (idempotent)."""
        if self._done is None:
            self._closed = True
            self._queue.put(None)
            self._done = asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        await asyncio.shield(self._done)
        return [
            dataclasses.replace(f, dropped=f.dropped + self._inbound[f.seat].dropped)
            for f in self._files
        ]

    def _run(self) -> None:
        """The writer thread: the only code that touches the files.

        It wakes a few times a second and writes what has queued up meanwhile: a wake-up per
        packet would cost more than the writing (thread switches, and the event loop giving
        up the GIL each time).  Matroska clusters are 500 ms anyway.
        """
        files: dict[Participant, _SeatFile] = {}
        running = True
        while running:
            batch = [self._queue.get()]
            if batch[0] is not None:
                time.sleep(BATCH_S)
            try:
                while batch[-1] is not None:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for item in batch:
                if item is None:
                    running = False
                    break
                if item.seat not in files:
                    files[item.seat] = _SeatFile(
                        self._directory, item.seat, self._segment, self.label
                    )
                files[item.seat].write(item)
        closed = [files[seat].finish() for seat in Participant if seat in files]
        # Published before the thread ends; close() reads it only after joining.
        self._files = [file for file in closed if file is not None]


class _SeatFile:
    """One seat's WebM file, used by the writer thread only."""

    def __init__(self, directory: Path, seat: Participant, segment: int, label: str) -> None:
        self.seat = seat
        self.segment = segment
        self.name = f"{seat}-{segment}.webm"
        self.path = directory / self.name
        self.label = f"{label}:{self.name}"
        self._container: OutputContainer | None = None
        self._streams: dict[str, Stream] = {}
        self._time_base = Fraction(1, 1000)  # Matroska's, for every stream
        self._pending: collections.deque[_Item] = collections.deque()
        self._first_audio_s: float | None = None
        self._last_tick: dict[str, int] = {}  # per stream, heartbeats included
        self._last_s: dict[str, float] = {}  # per track, packets only
        self._first_s: float | None = None
        self._gaps: list[Gap] = []
        self._frames = dict.fromkeys(KINDS, 0)
        self._dropped = 0
        self._failed = False

    def write(self, item: _Item) -> None:
        if self._failed:
            self._dropped += 1
            return
        try:
            if self._container is None:
                if item.kind == "audio":
                    self._hold(item)
                    return
                self._open(vp8_frame_size(item.data) or DEFAULT_SIZE)
            self._mux(item)
        except Exception:
            logger.exception("recorder %s: writing failed, the file ends here", self.label)
            self._failed = True
            self._dropped += 1

    def _hold(self, item: _Item) -> None:
        """Keep audio until the first keyframe gives the picture size, for a while."""
        if self._first_audio_s is None:
            self._first_audio_s = item.at_s
        if len(self._pending) >= PENDING_AUDIO:
            self._pending.popleft()
            self._dropped += 1
        self._pending.append(item)
        if item.at_s - self._first_audio_s >= AUDIO_ONLY_AFTER_S:
            logger.info("recorder %s: no video keyframe yet, recording audio", self.label)
            self._open(DEFAULT_SIZE)

    def _open(self, size: tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = {"flush_packets": "1", "cluster_time_limit": str(CLUSTER_MS)}
        container = av.open(str(self.path), "w", format="webm", container_options=options)
        self._container = container  # finish() closes it whatever happens next
        # Header carriers only, nothing is ever encoded.  VP8 needs no codec private data, so a
        # stream without a codec spares a libvpx encoder (25 MB at 720p); Opus needs an OpusHead,
        # written by the libopus encoder when the header is (mono, as browsers send it to us).
        video = container.add_mux_stream("vp8", width=size[0], height=size[1])
        audio = container.add_stream("libopus", rate=48_000)
        audio.layout = "mono"
        container.start_encoding()
        self._streams = {"audio": audio, "video": video}
        self._time_base = video.time_base or self._time_base
        logger.info("recorder %s: opened, %dx%d", self.label, *size)
        while self._pending:
            self._mux(self._pending.popleft(), heartbeat=False)

    def _mux(self, item: _Item, heartbeat: bool = True) -> None:
        tick_s = float(self._time_base)
        tick = round(item.at_s / tick_s)
        last = self._last_tick.get(item.kind)
        if last is not None and tick <= last:
            tick = last + 1  # never back in time, whatever the sender's clock did
        at_s = tick * tick_s
        previous = self._last_s.get(item.kind)
        if previous is not None and at_s - previous > GAP_S:
            self._gaps.append(Gap(item.kind, round(previous, 3), round(at_s, 3)))
        self._put(item.kind, item.data, tick, item.keyframe)
        self._last_s[item.kind] = at_s
        self._frames[item.kind] += 1
        if self._first_s is None or at_s < self._first_s:
            self._first_s = at_s
        if heartbeat:
            self._heartbeat("video" if item.kind == "audio" else "audio", tick)

    def _heartbeat(self, kind: str, now: int) -> None:
        """Tell the muxer that a quiet stream has nothing older to come.

        libavformat's interleaver holds every packet until each stream has one queued, and for a
        VP8 stream it waits forever: audio sent while video is paused would stay in memory, off
        the disk.  An empty packet releases it (Matroska writes nothing for it).  It is placed
        well behind ``now`` so that the quiet track's next packet still comes after it.
        """
        lag = round(HEARTBEAT_S / float(self._time_base))
        if self._last_tick.get(kind, 0) < now - lag:
            self._put(kind, None, now - lag // 2, False)

    def _put(self, kind: str, data: bytes | None, tick: int, keyframe: bool) -> None:
        if self._container is None:
            raise RuntimeError("muxing into a file that is not open")
        stream = self._streams[kind]
        packet = av.Packet() if data is None else av.Packet(data)
        packet.stream = stream
        packet.time_base = self._time_base
        packet.pts = packet.dts = tick
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        self._last_tick[kind] = tick

    def finish(self) -> RecordedFile | None:
        """Close the file (writing its cues); ``None`` if there was never anything to write."""
        try:
            if self._container is None and self._pending and not self._failed:
                self._open(DEFAULT_SIZE)
            if self._container is not None:
                self._container.close()
        except Exception:
            logger.exception("recorder %s: closing failed", self.label)
            self._failed = True
        if self._container is None and not self._failed:
            return None
        size = self.path.stat().st_size if self.path.is_file() else 0
        video, audio = self._frames["video"], self._frames["audio"]
        logger.info(
            "recorder %s: closed, %d bytes, %d video, %d audio, %d dropped, interrupted: %s",
            self.label,
            size,
            video,
            audio,
            self._dropped,
            self._failed,
        )
        last = max(self._last_s.values(), default=None)
        return RecordedFile(
            name=self.name,
            seat=self.seat,
            segment=self.segment,
            path=self.path,
            bytes=size,
            first_s=None if self._first_s is None else round(self._first_s, 3),
            last_s=None if last is None else round(last, 3),
            gaps=tuple(self._gaps),
            video_frames=video,
            audio_frames=audio,
            dropped=self._dropped,
            interrupted=self._failed,
        )


def vp8_frame_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a VP8 keyframe (RFC 6386 §9.1): the 3-byte frame tag, the start code
    9d 01 2a, then 14-bit width and height, little-endian, each under 2 bits of scaling."""
    if len(data) < 10 or data[0] & 0x01 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None
