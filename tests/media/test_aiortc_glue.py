"""The aiortc private names Setu relies on still exist and behave as expected.

If one of these fails after an aiortc upgrade, media/aiortc_glue.py needs attention.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Any

import aiortc
from aiortc import RTCPeerConnection, RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

from media import aiortc_glue
from media.frames import EncodedFrame
from media.peer import OPUS_FMTP, _tune_answer
from media.watchdog import AssembledFrame
from tests.helpers import ClockVideoTrack


def test_aiortc_version_is_the_tested_one() -> None:
    assert aiortc.__version__.startswith("1.16.")


def test_private_names_exist() -> None:
    for label, (owner, name) in aiortc_glue.PRIVATE_NAMES.items():
        assert hasattr(owner, name), label
    worker = inspect.signature(aiortc_glue._stock_worker)
    assert list(worker.parameters) == ["loop", "input_q", "output_q", "decode_error"]


async def test_receivers_have_the_jitter_buffer_we_replace() -> None:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video")
    assert hasattr(transceiver.receiver, aiortc_glue._JITTER_ATTR)
    assert hasattr(transceiver.receiver, aiortc_glue._DECODER_QUEUE_ATTR)
    assert hasattr(transceiver.receiver, aiortc_glue._STREAMS_ATTR)
    aiortc_glue.tune_receiver(transceiver.receiver, "video")
    jb = aiortc_glue.jitter_buffer(transceiver.receiver)
    assert isinstance(jb, aiortc_glue.VideoJitterBuffer)
    assert jb.capacity == 128
    await pc.close()


def test_receivers_feed_the_jitter_buffer_as_our_buffers_expect() -> None:
    # Depayloaded data on the packet before add(), one item per packet whose timestamp alone is
    # mapped, and a PLI when add() says so: what ImmediateJitterBuffer, VideoJitterBuffer and
    # _unbatch rely on.
    source = inspect.getsource(aiortc.RTCRtpReceiver._handle_rtp_packet)
    order = [
        "packet._data = depayload(codec, packet.payload)",
        "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)",
        "await self._send_rtcp_pli(packet.ssrc)",
        "encoded_frame.timestamp = self.__timestamp_mapper.map(",
        "self.__decoder_queue.put((codec, encoded_frame))",
    ]
    positions = [source.find(line) for line in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)


async def test_senders_keep_the_round_trip_estimate_we_read() -> None:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video")
    # aiortc sets it to None in __init__ and to a float once a receiver report comes back.
    assert hasattr(transceiver.sender, aiortc_glue._RTT_ATTR)
    assert aiortc_glue.round_trip_time(pc) is None
    setattr(transceiver.sender, aiortc_glue._RTT_ATTR, 0.12)
    assert aiortc_glue.round_trip_time(pc) == 0.12
    await pc.close()


def encoded(key: bool) -> EncodedFrame:
    return EncodedFrame(b"\x00" if key else b"\x01", 0, Fraction(1, 90_000), key, 0.0)


async def test_the_tap_bounds_what_waits_for_the_loop() -> None:
    got: list[EncodedFrame] = []
    overflows: list[None] = []
    tap = aiortc_glue.FrameTap(
        asyncio.get_running_loop(),
        on_frame=got.append,
        on_end=lambda: None,
        on_overflow=lambda: overflows.append(None),
        limit=8,
    )
    for _ in range(20):  # the loop runs nothing meanwhile, as if it were overloaded
        tap.put_threadsafe(encoded(key=False))
    assert tap.in_flight == 8
    await asyncio.sleep(0)
    assert (len(got), tap.in_flight, tap.dropped, len(overflows)) == (8, 0, 12, 1)
    # Frames after the drop do not decode: they wait for a keyframe.
    tap.put_threadsafe(encoded(key=False))
    tap.put_threadsafe(encoded(key=True))
    tap.put_threadsafe(encoded(key=False))
    await asyncio.sleep(0)
    assert [f.is_keyframe for f in got[8:]] == [True, False]
    assert tap.dropped == 13


async def test_the_receive_worker_unpacks_a_batch_of_frames() -> None:
    got: list[EncodedFrame] = []
    ended = asyncio.Event()
    tap = aiortc_glue.FrameTap(asyncio.get_running_loop(), got.append, ended.set)
    batch = aiortc_glue._FrameBatch(
        (AssembledFrame(b"\x10key", 1000, True), AssembledFrame(b"\x11delta", 7000, False))
    )
    batch.timestamp = 6000  # what aiortc's timestamp mapping makes of the last frame's
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=96)
    tasks: queue.Queue[object] = queue.Queue()
    tasks.put((codec, batch))
    tasks.put(None)
    worker = threading.Thread(
        target=aiortc_glue._worker,
        args=(asyncio.get_running_loop(), tasks, tap, threading.Event()),
    )
    worker.start()
    await asyncio.wait_for(ended.wait(), 5)
    worker.join()
    assert [(f.data, f.pts, f.is_keyframe) for f in got] == [
        (b"\x10key", 0, True),
        (b"\x11delta", 6000, False),
    ]


def test_install_is_idempotent() -> None:
    import aiortc.rtcrtpreceiver as rr

    aiortc_glue.install()
    aiortc_glue.install()
    assert rr.decoder_worker is aiortc_glue._worker


def packet(seq: int, data: bytes = b"opus") -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=seq * 960)
    p._data = data  # type: ignore[attr-defined]
    return p


def test_immediate_audio_buffer_releases_at_once_and_drops_late_packets() -> None:
    jb = aiortc_glue.ImmediateJitterBuffer()
    assert jb.add(packet(10))[1] is not None
    assert jb.add(packet(12))[1] is not None  # 11 lost: no waiting for it
    assert jb.add(packet(11))[1] is None  # late
    assert jb.add(packet(12))[1] is None  # duplicate
    assert jb.add(packet(65535))[1] is None  # far behind
    jb2 = aiortc_glue.ImmediateJitterBuffer()
    jb2.add(packet(65535))
    assert jb2.add(packet(0))[1] is not None  # sequence wrap


def test_immediate_audio_buffer_never_holds_on_a_gap() -> None:
    jb = aiortc_glue.ImmediateJitterBuffer()
    released = []
    for seq in [1, 2, 3, 5, 6, 9, 10, 30, 31]:  # gaps of every size, none ever filled
        pli, frame = jb.add(packet(seq))
        assert not pli
        assert frame is not None  # each packet leaves with its own arrival
        released.append(frame.timestamp)
    assert released == [seq * 960 for seq in [1, 2, 3, 5, 6, 9, 10, 30, 31]]
    # Far behind the newest is not late but a sender that started again.
    assert jb.add(packet(31 - aiortc_glue.AUDIO_MAX_MISORDER))[1] is not None
    assert jb.add(packet(31 - aiortc_glue.AUDIO_MAX_MISORDER + 1))[1] is not None
    # Padding carries no audio.
    assert jb.add(packet(40, data=b""))[1] is None
    assert jb.add(packet(41))[1] is not None


def test_answer_gets_our_opus_parameters() -> None:
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 foo=1\r\n"
    tuned = _tune_answer(sdp)
    assert f"a=fmtp:96 {OPUS_FMTP}\r\n" in tuned
    assert "foo=1" not in tuned
    assert _tune_answer("v=0\r\n") == "v=0\r\n"


async def test_receiver_reports_carry_the_far_legs_loss() -> None:
    """A loss floor on a receiver raises the fraction lost of the receiver reports that reach
    the sender (what a browser's Opus encoder sizes its FEC by), and only then."""
    sender_pc = RTCPeerConnection()
    sender_pc.addTrack(aiortc.mediastreams.AudioStreamTrack())
    async with connected(sender_pc) as receiver:

        async def reported() -> list[int]:
            stats = await sender_pc.getSenders()[0].getStats()
            return [s.fractionLost for s in stats.values() if s.type == "remote-inbound-rtp"]

        for _ in range(100):  # a loss-free report first
            if await reported():
                break
            await asyncio.sleep(0.1)
        assert await reported() == [0]
        aiortc_glue.report_loss_floor(receiver, 0.2)
        for _ in range(50):
            if await reported() != [0]:
                break
            await asyncio.sleep(0.1)
        assert await reported() == [51]  # 0.2 of 256


def test_the_pacer_spaces_packets_at_its_rate() -> None:
    now = [0.0]
    pacer = aiortc_glue.Pacer(90, clock=lambda: now[0])
    # A 12-packet keyframe at once: the first leave within the burst allowance, the rest at
    # 90 kbit/s, 1200 bytes every 0.107 s.
    waits = [pacer.delay(1200) for _ in range(12)]
    gap = 1200 * 8 / 90_000
    assert waits[:1] == [0.0]
    assert all(
        abs(w - max(0.0, i * gap - aiortc_glue.PACE_BURST_S)) < 1e-9 for i, w in enumerate(waits)
    )
    # Once it has drained, a small packet leaves at once.
    now[0] += 12 * gap
    assert pacer.delay(200) == 0.0


def test_answer_gets_red_parameters_for_the_opus_it_carries() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\n"
        "a=rtpmap:63 red/48000/2\r\na=rtpmap:111 opus/48000/2\r\n"
    )
    tuned = _tune_answer(sdp)
    assert "a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n" in tuned
    assert f"a=fmtp:111 {OPUS_FMTP}" in tuned


def test_remb_above_a_cap_is_lowered_and_others_pass() -> None:
    remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(300_000, [7]))
    capped = aiortc_glue._capped(remb, 40_000)
    assert unpack_remb_fci(capped.fci) == (40_000, [7])
    assert aiortc_glue._capped(remb, 500_000) is remb
    pli = RtcpPsfbPacket(fmt=1, ssrc=1, media_ssrc=7)
    assert aiortc_glue._capped(pli, 40_000) is pli


async def test_a_capped_receiver_tells_its_sender_at_once() -> None:
    """The cap reaches the sending peer as a REMB within a round trip, and aiortc's own later
    estimates never go above it."""
    sender_pc = RTCPeerConnection()
    sender = sender_pc.addTrack(ClockVideoTrack(width=160, height=120))
    heard: list[int] = []
    stock = sender._handle_rtcp_packet

    async def record(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            heard.append(unpack_remb_fci(packet.fci)[0])
        await stock(packet)

    sender._handle_rtcp_packet = record  # type: ignore[method-assign]
    async with connected(sender_pc) as receiver:
        for _ in range(100):
            if receiver.getSynchronizationSources():
                break
            await asyncio.sleep(0.05)
        before = len(heard)
        await aiortc_glue.cap_remb(receiver, 40)
        for _ in range(40):
            if len(heard) > before:
                break
            await asyncio.sleep(0.05)
        assert heard[before] == 40_000
        await asyncio.sleep(1.5)  # aiortc's estimator goes on sending its own
        assert max(heard[before:]) <= 40_000
        await aiortc_glue.cap_remb(receiver, None)


async def test_a_hushed_receiver_asks_for_nothing_and_reports_on() -> None:
    """Hushed, a receiver's keyframe requests and NACKs never leave it, its other RTCP does;
    unhushed, the next request reaches the sender."""
    sender_pc = RTCPeerConnection()
    sender = sender_pc.addTrack(ClockVideoTrack(width=160, height=120))
    heard: list[str] = []
    stock = sender._handle_rtcp_packet

    async def record(packet: Any) -> None:
        heard.append(f"{type(packet).__name__}:{getattr(packet, 'fmt', '')}")
        await stock(packet)

    sender._handle_rtcp_packet = record  # type: ignore[method-assign]
    pli = f"RtcpPsfbPacket:{RTCP_PSFB_PLI}"
    nack = f"RtcpRtpfbPacket:{RTCP_RTPFB_NACK}"
    async with connected(sender_pc) as receiver:
        for _ in range(100):
            if receiver.getSynchronizationSources():
                break
            await asyncio.sleep(0.05)
        ssrc = receiver.getSynchronizationSources()[0].source
        aiortc_glue.hush(receiver, True)
        before = len(heard)
        remb = f"RtcpPsfbPacket:{RTCP_PSFB_APP}"
        assert await aiortc_glue.request_keyframe(receiver)
        await receiver._send_rtcp_nack(ssrc, [1, 2, 3])
        await aiortc_glue.cap_remb(receiver, 40)  # not a request: it goes
        for _ in range(40):
            if remb in heard[before:]:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # what was sent before the REMB has long arrived
        assert remb in heard[before:]
        assert pli not in heard[before:]
        assert nack not in heard[before:]
        aiortc_glue.hush(receiver, False)
        await aiortc_glue.request_keyframe(receiver)
        for _ in range(40):
            if pli in heard[before:]:
                break
            await asyncio.sleep(0.05)
        assert pli in heard[before:]
        await aiortc_glue.cap_remb(receiver, None)


@contextlib.asynccontextmanager
async def connected(sender_pc: RTCPeerConnection) -> AsyncIterator[aiortc.RTCRtpReceiver]:
    """``sender_pc`` (its tracks added) connected to a receiving peer that drains what it gets;
    yields that peer's first receiver, and closes both after."""
    aiortc_glue.install()
    receiver_pc = RTCPeerConnection()
    sinks: list[asyncio.Task[None]] = []

    async def drain(track: aiortc.MediaStreamTrack) -> None:
        with contextlib.suppress(aiortc.mediastreams.MediaStreamError):
            while True:
                await track.recv()

    receiver_pc.on("track", lambda track: sinks.append(asyncio.ensure_future(drain(track))))
    try:
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        yield receiver_pc.getTransceivers()[0].receiver
    finally:
        await asyncio.gather(sender_pc.close(), receiver_pc.close())
        for task in sinks:
            task.cancel()
        await asyncio.gather(*sinks, return_exceptions=True)
