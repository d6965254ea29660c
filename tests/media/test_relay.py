"""The relay track keeps memory and latency bounded and video decodable."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from aiortc.mediastreams import MediaStreamError

from media.frames import EncodedFrame, vp8_is_keyframe
from media.relay import AUDIO_QUEUE, VIDEO_QUEUE, KeyframeLimiter, RelayTrack, SenderView

VIDEO = Fraction(1, 90_000)


def frame(pts: int, key: bool = False) -> EncodedFrame:
    return EncodedFrame(b"\x00" if key else b"\x01", pts, VIDEO, key, 0.0)


class Requests:
    def __init__(self, sent: bool = True) -> None:
        self.count = 0
        self.sent = sent

    def __call__(self) -> bool:
        self.count += 1
        return self.sent


def test_vp8_keyframe_bit() -> None:
    assert vp8_is_keyframe(b"\x10\x02")
    assert not vp8_is_keyframe(b"\x11\x02")
    assert not vp8_is_keyframe(b"")


async def test_video_starts_on_a_keyframe() -> None:
    requests = Requests()
    track = RelayTrack("video", requests, "t")
    src = object()
    track.push(frame(0), src)
    track.push(frame(6000, key=True), src)
    track.push(frame(12000), src)
    assert (await track.recv()).pts == 6000
    assert (await track.recv()).pts == 12000
    assert track.stats.dropped == 1


async def test_full_video_queue_flushes_to_next_keyframe() -> None:
    requests = Requests()
    track = RelayTrack("video", requests, "t")
    src = object()
    track.push(frame(0, key=True), src)
    for i in range(1, VIDEO_QUEUE + 5):
        track.push(frame(i * 6000), src)
    assert requests.count == 1
    assert track.stats.flushes == 1
    track.push(frame(999_000, key=True), src)
    assert (await track.recv()).pts == 999_000


async def test_full_audio_queue_drops_oldest() -> None:
    track = RelayTrack("audio", Requests(), "t")
    src = object()
    for i in range(AUDIO_QUEUE + 10):
        track.push(EncodedFrame(b"a", i * 960, Fraction(1, 48_000), True, 0.0), src)
    assert (await track.recv()).pts == 10 * 960


async def test_new_source_continues_timestamps() -> None:
    track = RelayTrack("video", Requests(), "t")
    first, second = object(), object()
    track.push(frame(0, key=True), first)
    track.push(frame(90_000), first)
    track.push(frame(0, key=True), second)  # a reconnect starts again at zero
    pts = [(await track.recv()).pts for _ in range(3)]
    assert pts == sorted(pts)
    assert pts[2] > 90_000


async def test_stop_ends_waiting_readers_and_views() -> None:
    track = RelayTrack("audio", Requests(), "t")
    view = SenderView(track)
    reader = asyncio.ensure_future(view.recv())
    await asyncio.sleep(0)
    track.stop()
    with pytest.raises(MediaStreamError):
        await reader
    # A closed peer connection stops its view, never the shared relay track.
    track2 = RelayTrack("audio", Requests(), "t2")
    SenderView(track2).stop()
    assert track2.readyState == "live"


def test_keyframe_requests_are_rate_limited() -> None:
    requests = Requests()
    limiter = KeyframeLimiter(requests, min_interval=60)
    for _ in range(10):
        limiter()
    assert requests.count == 1
    # A request that reached no source does not hold back the next one.
    unsent = Requests(sent=False)
    limiter = KeyframeLimiter(unsent, min_interval=60)
    limiter()
    limiter()
    assert unsent.count == 2


async def test_a_held_track_forwards_nothing_and_restarts_on_a_keyframe() -> None:
    requests = Requests()
    track = RelayTrack("video", requests, "t")
    src = object()
    track.push(frame(0, key=True), src)
    track.hold(True)
    assert track.held
    assert track.queued == 0  # what waited is dropped with the hold
    track.push(frame(6000, key=True), src)
    assert track.queued == 0
    track.hold(False)
    assert requests.count == 1  # a keyframe is asked for at once
    track.push(frame(12000), src)  # not decodable alone
    track.push(frame(18000, key=True), src)
    assert (await track.recv()).pts == 18000
    assert track.stats.dropped == 3
