"""The recorder writes each seat's media as it was relayed, on one clock, and survives a crash.

Unit tests feed it real VP8 and Opus (encoded here with PyAV) with chosen arrival times; the
integration test records a room of two aiortc peers that send the wall clock as a barcode and
beeps; the crash test kills a recording process and plays what it left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench.clock_pattern import (
    BeepAudioTrack,
    ClockPatternVideoTrack,
    measure_file,
    read_stamp,
    stamp_bits,
)
from core.domain import Participant
from media import aiortc_glue, recorder
from media.frames import EncodedFrame
from media.recorder import Gap, Recorder, vp8_frame_size
from media.room import MediaRoom

logger = logging.getLogger(__name__)

SPOKE, HUB = Participant.SPOKE, Participant.HUB
VIDEO_TB, AUDIO_TB = Fraction(1, 90_000), Fraction(1, 48_000)
FPS, GOP, SECONDS = 15, 15, 4
#: Recording starts at this ``time.monotonic()`` in the unit tests.
T0 = 1000.0
REPO = Path(__file__).resolve().parents[2]
#: RTP timestamps are 32 bits and wrap.
RTP_WRAP = 1 << 32


@functools.cache
def media() -> tuple[list[tuple[bytes, bool]], list[bytes]]:
    """Four seconds of 320x180 VP8 (a keyframe each second) and of 20 ms mono Opus packets."""
    video = av.CodecContext.create("libvpx", "w")
    video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
    video.time_base = Fraction(1, FPS)
    video.bit_rate = 300_000
    video.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    frames: list[tuple[bytes, bool]] = []
    for i in range(FPS * SECONDS):
        image = np.zeros((180, 320, 3), np.uint8)
        image[:, (i * 8) % 312 :][:, :8] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.pict_type = av.video.frame.PictureType.I if i % GOP == 0 else 0
        frames += [(bytes(p), p.is_keyframe) for p in video.encode(frame)]
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate, opus.layout, opus.format = 48_000, "mono", "s16"
    opus.bit_rate = 32_000
    packets: list[bytes] = []
    for i in range(50 * SECONDS):
        t = (np.arange(960) + i * 960) / 48_000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48_000, i * 960
        packets += [bytes(p) for p in opus.encode(frame)]
    assert len(frames) == FPS * SECONDS
    assert len(packets) >= 50 * SECONDS - 2
    return frames, packets


def video(i: int, at: float, pts0: int = 0) -> EncodedFrame:
    """Video frame ``i`` (the media loops), arriving ``at`` seconds after T0."""
    frames = media()[0]
    data, key = frames[i % len(frames)]
    return EncodedFrame(data, (pts0 + i * 6000) % RTP_WRAP, VIDEO_TB, key, T0 + at)


def audio(i: int, at: float, pts0: int = 0) -> EncodedFrame:
    packets = media()[1]
    pts = (pts0 + i * 960) % RTP_WRAP
    return EncodedFrame(packets[i % len(packets)], pts, AUDIO_TB, True, T0 + at)


def timeline(
    start: float,
    video_frames: Iterable[int] = (),
    audio_packets: Iterable[int] = (),
    pts0: int = 0,
) -> list[tuple[str, EncodedFrame]]:
    """Frames of one source, each arriving on time after ``start``, in order of arrival."""
    frames = [("video", video(i, start + i / FPS, pts0)) for i in video_frames]
    frames += [("audio", audio(i, start + i * 0.02, pts0)) for i in audio_packets]
    return sorted(frames, key=lambda item: item[1].arrival)


def push(
    rec: Recorder, seat: Participant, frames: list[tuple[str, EncodedFrame]], src: object
) -> None:
    for kind, frame in frames:
        rec.push(seat, kind, frame, src)


class Keyframes:
    def __init__(self) -> None:
        self.asked: list[Participant] = []

    def __call__(self, seat: Participant) -> None:
        self.asked.append(seat)


def packets(path: Path) -> dict[str, list[tuple[float, bool]]]:
    """Each track's packets in the file: (seconds, keyframe)."""
    found: dict[str, list[tuple[float, bool]]] = {"audio": [], "video": []}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size and packet.pts is not None and packet.time_base is not None:
                at = float(packet.pts * packet.time_base)
                found[packet.stream.type].append((at, packet.is_keyframe))
    return found


def decoded(path: Path) -> dict[str, int]:
    """Frames decoded from each track; a file cut short is read up to the damage."""
    counts = {"audio": 0, "video": 0}
    with av.open(str(path)) as container:
        try:
            for packet in container.demux():
                for frame in packet.decode():
                    counts["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
        except av.error.FFmpegError:
            pass  # the rest is not written yet, or never will be
    return counts


def strictly_increasing(times: list[float]) -> bool:
    return all(a < b for a, b in itertools.pairwise(times))


def test_vp8_frame_size_comes_from_keyframes_only() -> None:
    frames = media()[0]
    assert vp8_frame_size(frames[0][0]) == (320, 180)
    assert vp8_frame_size(frames[1][0]) is None
    assert vp8_frame_size(b"\x10\x02\x00") is None


async def test_a_file_starts_on_a_keyframe_on_the_recording_clock(tmp_path: Path) -> None:
    keyframes = Keyframes()
    rec = Recorder(tmp_path, "t", t0=T0, request_keyframe=keyframes)
    # Video joins mid-GOP (frames 10-14 wait for the keyframe at 15); audio starts earlier.
    frames = timeline(0.2, video_frames=range(10, 45)) + timeline(0.1, audio_packets=range(150))
    early = [("audio", audio(0, -0.5)), ("video", video(0, -0.4))]  # before recording started
    push(rec, SPOKE, early + sorted(frames, key=lambda f: f[1].arrival), object())
    [file] = await rec.close()

    assert keyframes.asked
    assert set(keyframes.asked) == {SPOKE}
    assert (file.name, file.seat, file.segment, file.path) == (
        "spoke-1.webm",
        SPOKE,
        1,
        tmp_path / "spoke-1.webm",
    )
    assert (file.video_frames, file.audio_frames, file.dropped) == (30, 150, 5)
    assert file.bytes == file.path.stat().st_size > 0
    assert not file.interrupted
    assert file.gaps == ()
    found = packets(file.path)
    assert found["video"][0] == (pytest.approx(0.2 + 15 / FPS, abs=0.002), True)
    assert found["audio"][0][0] == pytest.approx(0.1, abs=0.002)
    assert file.first_s == pytest.approx(0.1, abs=0.002)
    assert file.last_s == pytest.approx(0.2 + 44 / FPS, abs=0.002)
    for track in found.values():
        assert strictly_increasing([at for at, _ in track])
    assert decoded(file.path) == {"video": 30, "audio": 150}
    with av.open(str(file.path)) as container:
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        assert (vstream.codec_context.name, vstream.width, vstream.height) == ("vp8", 320, 180)
        head = astream.codec_context.extradata
        assert astream.codec_context.name == "opus"
        # RFC 7845 §5.1: magic, version 1, one channel, pre-skip, 48 kHz, gain, mapping 0.
        assert head is not None
        assert head[:10] == b"OpusHead\x01\x01"
        assert len(head) == 19
        assert int.from_bytes(head[12:16], "little") == 48_000
        assert head[18] == 0


async def test_pauses_longer_than_a_second_are_listed_as_gaps(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "t", t0=T0, request_keyframe=Keyframes())
    audio_packets = [i for i in range(200) if not 50 <= i < 125 and not 150 <= i < 170]
    video_frames = [i for i in range(60) if not 30 <= i < 45]  # resumes on the keyframe at 45
    push(rec, HUB, timeline(0.1, video_frames, audio_packets), object())
    [file] = await rec.close()

    assert file.name == "hub-1.webm"
    # The 0.4 s audio pause is no gap; heartbeats during the video pause moved nothing.
    assert file.gaps == (
        Gap("audio", pytest.approx(0.1 + 49 * 0.02), pytest.approx(0.1 + 125 * 0.02)),
        Gap("video", pytest.approx(0.1 + 29 / FPS, abs=0.001), pytest.approx(3.1, abs=0.001)),
    )
    found = packets(file.path)
    assert [at for at, _ in found["video"]] == [
        pytest.approx(0.1 + i / FPS, abs=0.001) for i in video_frames
    ]


async def test_a_new_source_is_re_anchored_and_time_never_goes_back(tmp_path: Path) -> None:
    keyframes = Keyframes()
    rec = Recorder(tmp_path, "t", t0=T0, request_keyframe=keyframes)
    first, second = object(), object()
    # The first source's first frames came 0.3 s late: its clock runs 0.3 s ahead of arrivals.
    a = [
        (kind, dataclasses.replace(f, arrival=T0 + 0.4) if f.pts == 0 else f)
        for kind, f in timeline(0.1, range(30), range(100))
    ]
    push(rec, SPOKE, a, first)
    assert keyframes.asked == []
    # A reconnect: a new peer connection, mid-GOP, RTP timestamps from a new origin that
    # wraps around 2**32 within a second.
    push(rec, SPOKE, timeline(2.1, range(5, 45), range(100), pts0=RTP_WRAP - 40_000), second)
    assert keyframes.asked, "the new source's first frame was no keyframe"
    [file] = await rec.close()

    found = packets(file.path)
    for track in found.values():
        assert strictly_increasing([at for at, _ in track])
    videos = found["video"]
    assert len(videos) == 30 + 30
    assert file.dropped == 10
    assert videos[29][0] == pytest.approx(0.4 + 29 / FPS, abs=0.002)
    assert videos[30] == (pytest.approx(2.1 + 15 / FPS, abs=0.002), True)
    audios = [at for at, _ in found["audio"]]
    assert audios[99] == pytest.approx(0.4 + 99 * 0.02, abs=0.002)  # 2.38
    assert audios[100] == pytest.approx(audios[99] + 0.001)  # 2.1 would go back: one tick on
    assert audios[-1] == pytest.approx(2.1 + 99 * 0.02, abs=0.002)
    assert decoded(file.path)["video"] == 60


async def test_a_full_queue_drops_video_to_the_next_keyframe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    write = recorder._SeatFile.write

    def slow_write(self: Any, item: Any) -> None:
        gate.wait(60)  # a disk that stalls
        write(self, item)

    monkeypatch.setattr(recorder._SeatFile, "write", slow_write)
    keyframes = Keyframes()
    rec = Recorder(tmp_path, "t", t0=T0, request_keyframe=keyframes, queue_limit=20)
    src = object()
    for kind, frame in timeline(0.1, range(30), range(100)):
        rec.push(SPOKE, kind, frame, src)
        assert rec.queued <= 20
    assert rec.dropped > 50
    assert keyframes.asked
    gate.set()
    deadline = time.monotonic() + 60
    while rec.queued:
        assert time.monotonic() < deadline, "the writer never drained its queue"
        await asyncio.sleep(0.01)
    push(rec, SPOKE, timeline(0.1, range(30, 60), range(100, 200)), src)
    [file] = await rec.close()

    assert file.dropped == rec.dropped
    assert file.video_frames + file.audio_frames + file.dropped == 260
    found = packets(file.path)
    indices = [round((at - 0.1) * FPS) for at, _ in found["video"]]
    keys = [key for _, key in found["video"]]
    assert keys[0]
    assert 30 in indices
    for n in range(1, len(indices)):
        if indices[n] != indices[n - 1] + 1:
            assert keys[n], f"frame {indices[n]} follows a hole and is no keyframe"
    assert decoded(file.path)["video"] == len(indices)


async def test_close_is_idempotent_and_silent_seats_get_no_file(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "t", t0=T0, request_keyframe=Keyframes())
    push(rec, HUB, timeline(0.0, range(20), range(60)), object())
    rec.push(SPOKE, "video", video(1, 0.1), object())  # never a keyframe: nothing to write
    first, second = await asyncio.gather(rec.close(), rec.close())
    assert first == second == await rec.close()
    assert [f.seat for f in first] == [HUB]
    rec.push(HUB, "audio", audio(70, 1.4), object())  # after close: ignored
    assert (await rec.close())[0].audio_frames == 60
    assert not (tmp_path / "spoke-1.webm").exists()

    nothing = Recorder(tmp_path / "none", "t", t0=T0, request_keyframe=Keyframes())
    assert await nothing.close() == []
    assert not (tmp_path / "none").exists()


async def test_a_seat_with_only_audio_still_gets_a_playable_file(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "t", t0=T0, request_keyframe=Keyframes())
    push(rec, SPOKE, timeline(0.0, audio_packets=range(75)), object())
    [file] = await rec.close()
    assert (file.audio_frames, file.video_frames, file.interrupted) == (75, 0, False)
    assert decoded(file.path) == {"audio": 75, "video": 0}
    with av.open(str(file.path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == recorder.DEFAULT_SIZE


async def test_audio_without_video_reaches_the_disk_while_recording(tmp_path: Path) -> None:
    """After 3 s without a keyframe the file opens with audio only; the muxer must not hold
    that audio back waiting for video, or a crash would lose it all."""
    rec = Recorder(tmp_path, "t", t0=T0, request_keyframe=Keyframes())
    src = object()
    push(rec, SPOKE, timeline(0.0, audio_packets=range(300)), src)
    deadline = time.monotonic() + 60
    path = tmp_path / "spoke-1.webm"

    def audio_on_disk() -> int:
        # The writer thread may have created the file and not yet flushed its header.
        try:
            return decoded(path)["audio"] if path.exists() else 0
        except (av.error.EOFError, av.error.InvalidDataError):
            return 0

    while audio_on_disk() < 200:
        assert time.monotonic() < deadline, "the audio stayed off the disk"
        await asyncio.sleep(0.05)
    # Video that comes later starts at a keyframe.
    push(rec, SPOKE, timeline(0.0, video_frames=range(95, 120)), src)
    [file] = await rec.close()
    found = packets(file.path)
    assert len(found["video"]) == 15
    assert found["video"][0] == (pytest.approx(7.0), True)
    assert decoded(file.path) == {"audio": 300, "video": 15}


async def test_a_failing_file_is_marked_interrupted_and_spares_the_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spoke-1.webm").mkdir()  # the spoke's file cannot be written
    rec = Recorder(tmp_path, "t", t0=T0, request_keyframe=Keyframes())
    for seat in Participant:
        push(rec, seat, timeline(0.0, range(30), range(100)), object())
    with caplog.at_level(logging.ERROR, logger="media.recorder"):
        spoke, hub = await rec.close()
    assert spoke.interrupted
    assert spoke.video_frames == 0
    assert spoke.dropped == 130
    assert not hub.interrupted
    assert decoded(hub.path) == {"video": 30, "audio": 100}
    assert "t:spoke-1.webm: writing failed" in caplog.text


def test_the_clock_barcode_reads_back_and_rejects_damage() -> None:
    ms = 1_767_225_600_123
    luma = np.repeat(np.repeat(np.array(stamp_bits(ms)).reshape(6, 8), 30, 0), 40, 1)
    luma = np.where(luma == 1, 235, 16).astype(np.uint8)
    assert read_stamp(luma) == ms
    luma[0:30, 280:320] = 251 - luma[0:30, 280:320]  # one block flipped
    assert read_stamp(luma) is None
    luma[0:30, 280:320] = 128  # one block grey
    assert read_stamp(luma) is None


# ------------------------------------------------------------------ a room of two peers


class PatternPeer:
    """A browser stand-in sending the clock pattern and the beeps.

    What it receives is counted undecoded, as the server taps its own tracks, so that the two
    peers and the server fit on a small machine.
    """

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(BeepAudioTrack())
        self.pc.addTrack(ClockPatternVideoTrack())
        self.received = {"audio": 0, "video": 0}
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        kind = str(track.kind)
        tap = aiortc_glue.FrameTap(
            asyncio.get_running_loop(), on_frame=lambda _: self._count(kind), on_end=lambda: None
        )
        aiortc_glue.tap_track(track, tap)

    def _count(self, kind: str) -> None:
        self.received[kind] += 1

    async def join(self, room: MediaRoom, seat: Participant) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await room.connect(seat, self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_recorded_room_plays_in_sync(tmp_path: Path, no_leaked_tasks: None) -> None:
    """Six seconds of a consultation: each file lasts the recording, its picture and sound
    are within 100 ms of each other, and so are the two participants' pictures."""
    aiortc_glue.install()
    room = MediaRoom("rec-room", (), lambda seat, state: None)
    peers = {seat: PatternPeer() for seat in Participant}
    rec: Recorder | None = None
    try:
        for seat, peer in peers.items():
            await peer.join(room, seat)
        await wait_until(
            lambda: all(
                p.received["video"] > 10 and p.received["audio"] > 30 for p in peers.values()
            ),
            "media did not flow through the room",
        )
        t0 = time.monotonic()
        rec = Recorder(tmp_path, "rec-room", t0=t0, request_keyframe=room.request_keyframe)
        room.add_consumer(rec)
        await asyncio.sleep(6.0)
        room.remove_consumer(rec)
        span = time.monotonic() - t0
        files = await rec.close()
    finally:
        for peer in peers.values():
            await peer.pc.close()
        await room.close()
        if rec is not None:
            await rec.close()

    assert [f.seat for f in files] == [SPOKE, HUB]
    timings = {f.seat: await asyncio.to_thread(measure_file, f.path) for f in files}
    report = {
        str(seat): {
            "duration_s": round(t.duration_s, 3),
            "av_offset_s": None if t.av_offset_s is None else round(t.av_offset_s, 3),
            "frames_read": f"{len(t.stamps)}/{t.video_frames}",
            "beeps": len(t.onsets),
            "first_s": file.first_s,
            "dropped": file.dropped,
        }
        for (seat, t), file in zip(timings.items(), files, strict=True)
    }
    spoke, hub = timings[SPOKE].video_offset_s, timings[HUB].video_offset_s
    assert spoke is not None
    assert hub is not None
    logger.info("recorded %.3f s, spoke - hub %.3f s: %s", span, spoke - hub, report)
    for seat, timing in timings.items():
        file = files[list(Participant).index(seat)]
        assert not file.interrupted, file
        assert file.gaps == (), file
        assert abs(timing.duration_s - span) <= 1.0, report
        assert len(timing.stamps) >= 0.8 * timing.video_frames >= 0.8 * 5 * FPS, report
        assert len(timing.onsets) >= 4, report
        assert timing.av_offset_s is not None, report
        assert abs(timing.av_offset_s) <= 0.1, report
    assert abs(spoke - hub) <= 0.1, (spoke - hub, report)


# ------------------------------------------------------------------ crash


def test_a_killed_recorder_leaves_a_playable_file(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.media.test_recorder", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the recorder did not start"
        assert proc.stdout.readline() == b"recording\n"
        time.sleep(3.0)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err.decode()
    path = tmp_path / "spoke-1.webm"
    data = path.read_bytes()
    assert b"\x1c\x53\xbb\x6b" not in data, "the file has cues: it was closed, not cut short"
    counts = decoded(path)
    timing = measure_file(path)
    logger.info("killed: %d bytes, %.3f s, decoded %s", len(data), timing.duration_s, counts)
    assert timing.duration_s > 1.0, timing
    assert counts["video"] > FPS, counts
    assert counts["audio"] > 50, counts


async def _record_until_killed(directory: Path) -> None:
    """The crash test's recording process: real-time media into a recorder, until killed."""
    t0 = time.monotonic()
    rec = Recorder(directory, "crash", t0=t0, request_keyframe=lambda seat: None)
    src = object()
    sent_video = 0
    for i in range(1_000_000):
        now = time.monotonic()
        packets = media()[1]
        rec.push(
            SPOKE,
            "audio",
            EncodedFrame(packets[i % len(packets)], i * 960, AUDIO_TB, True, now),
            src,
        )
        while sent_video <= (now - t0) * FPS:
            data, key = media()[0][sent_video % (FPS * SECONDS)]
            rec.push(SPOKE, "video", EncodedFrame(data, sent_video * 6000, VIDEO_TB, key, now), src)
            sent_video += 1
        if i == 10:
            print("recording", flush=True)  # the parent test waits for it
        await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))


if __name__ == "__main__":
    media()  # encode before the clock starts
    asyncio.run(_record_until_killed(Path(sys.argv[1])))
    os._exit(1)  # never reached: the test kills this process
