"""Synthetic media that carries the wall clock, to measure where media lands in a recording.

:class:`ClockPatternVideoTrack` shows on every frame the moment it was captured
(``time.time()`` in milliseconds) as a barcode of big black and white blocks;
:class:`BeepAudioTrack` beeps during the first 100 ms of every wall-clock second.
:func:`measure_file` decodes a recorded WebM file and reads both back: for each, the offset
between the file's time and the wall clock.  The difference of a file's video and audio offsets
is its A/V offset; the difference of two files' video offsets is how far apart the participants
are, since the files of one recording share time 0.

numpy is imported when first needed: it is a test dependency, not a server one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

#: The barcode: 42 bits of milliseconds since the epoch (enough until 2109) and a 6-bit CRC,
#: most significant first, row by row in an 8x6 grid of blocks.
COLUMNS, ROWS = 8, 6
DATA_BITS, CHECK_BITS = 42, 6
#: Luma of the blocks (video range); a block read between the margins is a misread.
BLACK, WHITE = 16, 235
_MARGIN = 60

SAMPLE_RATE = 48_000
AUDIO_PTIME = 0.020
BEEP_HZ = 1_000
BEEP_S = 0.100
BEEP_LEVEL = 0.5


def _check(ms: int) -> int:
    """CRC-6 with the primitive polynomial x^6 + x + 1: it catches every error of one or two
    blocks and every run of up to six."""
    register = 0
    for i in reversed(range(DATA_BITS)):
        feedback = (register >> (CHECK_BITS - 1) & 1) ^ (ms >> i & 1)
        register = (register << 1) & ((1 << CHECK_BITS) - 1)
        if feedback:
            register ^= 0b000011
    return register


def stamp_bits(ms: int) -> list[int]:
    """The barcode's cells, row by row, for ``ms`` milliseconds since the epoch."""
    word = (ms & ((1 << DATA_BITS) - 1)) << CHECK_BITS | _check(ms)
    total = DATA_BITS + CHECK_BITS
    return [(word >> (total - 1 - i)) & 1 for i in range(total)]


def read_stamp(luma: npt.NDArray[np.generic]) -> int | None:
    """The milliseconds shown on a frame (its luma plane), or ``None`` if misread."""
    height, width = luma.shape
    word = 0
    for i in range(ROWS * COLUMNS):
        row, col = divmod(i, COLUMNS)
        # The middle half of each block: edges blur under compression.
        top, bottom = (4 * row + 1) * height // (4 * ROWS), (4 * row + 3) * height // (4 * ROWS)
        left, right = (4 * col + 1) * width // (4 * COLUMNS), (4 * col + 3) * width // (4 * COLUMNS)
        level = float(luma[top:bottom, left:right].mean())
        if BLACK + _MARGIN < level < WHITE - _MARGIN:
            return None
        word = word << 1 | (level > (BLACK + WHITE) / 2)
    ms = word >> CHECK_BITS
    return ms if word & ((1 << CHECK_BITS) - 1) == _check(ms) else None


class ClockPatternVideoTrack(VideoStreamTrack):
    """Video whose every frame shows its capture time; ``fps`` frames a second, in real time.

    Timestamps follow the moment of capture, as a camera's do, so a late frame is late in both.
    """

    def __init__(self, width: int = 320, height: int = 180, fps: int = 15) -> None:
        super().__init__()
        if width % 2 or height % 2:
            raise ValueError("width and height must be even (4:2:0 chroma)")
        self.width, self.height, self.fps = width, height, fps
        self._began: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        import numpy as np

        if self.readyState != "live":
            raise MediaStreamError
        if self._began is None:
            self._began = time.time()
        else:
            self._count += 1
            delay = self._began + self._count / self.fps - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        now = time.time()
        cells = np.array(stamp_bits(round(now * 1000)), dtype=np.uint8).reshape(ROWS, COLUMNS)
        rows = np.arange(self.height) * ROWS // self.height
        cols = np.arange(self.width) * COLUMNS // self.width
        luma = np.where(cells[rows][:, cols] == 1, WHITE, BLACK).astype(np.uint8)
        chroma = np.full((self.height // 2, self.width), 128, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")
        frame.pts = round((now - self._began) * 90_000)
        frame.time_base = Fraction(1, 90_000)
        return frame


class BeepAudioTrack(AudioStreamTrack):
    """48 kHz mono audio: a 1 kHz tone in the first 100 ms of every wall-clock second.

    Paced like aiortc's own audio track, 20 ms frames in real time; each frame holds the 20 ms
    that end when it is handed over, as a microphone's would.
    """

    def __init__(self) -> None:
        super().__init__()
        self._began: float | None = None
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        import numpy as np

        if self.readyState != "live":
            raise MediaStreamError
        count = round(AUDIO_PTIME * SAMPLE_RATE)
        if self._began is None:
            self._began = time.time()
        else:
            self._samples += count
            delay = self._began + self._samples / SAMPLE_RATE - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
        index = self._samples + np.arange(count)
        wall = self._began - AUDIO_PTIME + index / SAMPLE_RATE
        tone = np.sin(2 * np.pi * BEEP_HZ * index / SAMPLE_RATE) * BEEP_LEVEL * 32767
        samples = np.where(wall % 1.0 < BEEP_S, tone, 0).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._samples
        frame.time_base = Fraction(1, SAMPLE_RATE)
        return frame


@dataclasses.dataclass(frozen=True)
class FileTiming:
    """What :func:`measure_file` read from a recording; times in seconds."""

    #: Last packet time minus first packet time.
    duration_s: float
    #: Decoded video frames, read or not.
    video_frames: int
    #: ``(file_time, wall_ms)`` for each frame whose barcode was read.
    stamps: tuple[tuple[float, int], ...]
    #: File time of each beep onset.
    onsets: tuple[float, ...]
    #: Median of file time minus wall-clock time, over the video frames read.
    video_offset_s: float | None
    #: Median of file time minus wall-clock time, over the beeps (each began on a whole second).
    audio_offset_s: float | None

    @property
    def av_offset_s(self) -> float | None:
        """How much later the picture is in the file than the sound of the same moment."""
        if self.video_offset_s is None or self.audio_offset_s is None:
            return None
        return self.video_offset_s - self.audio_offset_s


def measure_file(path: Path | str) -> FileTiming:
    """Decode a WebM recording of the clock-pattern tracks and measure its timing.

    Tolerates a file cut short (a crashed recorder): reading stops at the first damage.  The
    beeps are placed on the wall clock through the video: without a readable frame there is
    no audio offset either.
    """
    packet_times: list[float] = []
    stamps: list[tuple[float, int]] = []
    chunks: list[tuple[float, npt.NDArray[np.float64]]] = []
    frames = 0
    rate = SAMPLE_RATE
    with av.open(str(path)) as container:
        try:
            for packet in container.demux():
                if not packet.size or packet.pts is None or packet.time_base is None:
                    continue
                packet_times.append(float(packet.pts * packet.time_base))
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    continue  # a damaged frame: the next keyframe will do
                for frame in decoded:
                    if isinstance(frame, av.VideoFrame) and frame.time is not None:
                        frames += 1
                        image = frame.reformat(format="yuv420p").to_ndarray()
                        ms = read_stamp(image[: frame.height])
                        if ms is not None:
                            stamps.append((frame.time, ms))
                    elif isinstance(frame, av.AudioFrame) and frame.time is not None:
                        rate = frame.sample_rate
                        chunks.append((frame.time, _mono(frame.to_ndarray())))
        except av.error.FFmpegError:
            pass  # the file ends in the middle of a block
    video_offset = statistics.median(at - ms / 1000 for at, ms in stamps) if stamps else None
    onsets = _onsets(chunks, rate)
    audio_offset = None
    if video_offset is not None and onsets:
        audio_offset = statistics.median(at - round(at - video_offset) for at in onsets)
    return FileTiming(
        duration_s=max(packet_times) - min(packet_times) if packet_times else 0.0,
        video_frames=frames,
        stamps=tuple(stamps),
        onsets=tuple(onsets),
        video_offset_s=video_offset,
        audio_offset_s=audio_offset,
    )


def _mono(samples: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    """Planar samples, one row per channel, as mono floats in [-1, 1]."""
    import numpy as np

    scale = 32768.0 if np.issubdtype(samples.dtype, np.integer) else 1.0
    return np.asarray(samples.mean(axis=0) / scale, dtype=np.float64)


def _onsets(chunks: list[tuple[float, npt.NDArray[np.float64]]], rate: int) -> list[float]:
    """File times at which a beep starts: 10 ms windows, slid 1 ms at a time, whose energy
    crosses half the loudest window's.  The crossing window is then half full of tone."""
    import numpy as np

    if not chunks:
        return []
    samples = np.concatenate([chunk for _, chunk in chunks])
    times = np.concatenate([at + np.arange(len(chunk)) / rate for at, chunk in chunks])
    window, step = rate // 100, rate // 1000
    if len(samples) <= window:
        return []
    sums = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    starts = np.arange(0, len(samples) - window, step)
    energy = (sums[starts + window] - sums[starts]) / window
    if energy.max() < (BEEP_LEVEL / 10) ** 2:
        return []
    loud = energy >= energy.max() / 2
    onsets: list[float] = []
    for i in np.flatnonzero(loud[1:] & ~loud[:-1]) + 1:
        at = float(times[starts[i]]) + window / 2 / rate
        if not onsets or at - onsets[-1] > 0.5:  # a beep is 100 ms, one a second
            onsets.append(at)
    return onsets
