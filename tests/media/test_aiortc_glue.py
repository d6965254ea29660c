"""The aiortc private names Setu relies on still exist and behave as expected.

If one of these fails after an aiortc upgrade, media/aiortc_glue.py needs attention.
"""

from __future__ import annotations

import inspect

import aiortc
from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket

from media import aiortc_glue
from media.peer import OPUS_FMTP, _tune_answer


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
    aiortc_glue.tune_receiver(transceiver.receiver, "video")
    assert getattr(transceiver.receiver, aiortc_glue._JITTER_ATTR).capacity == 128
    await pc.close()


def test_install_is_idempotent() -> None:
    import aiortc.rtcrtpreceiver as rr

    aiortc_glue.install()
    aiortc_glue.install()
    assert rr.decoder_worker is aiortc_glue._worker


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=seq * 960)
    p._data = b"opus"  # type: ignore[attr-defined]
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


def test_answer_gets_our_opus_parameters() -> None:
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 foo=1\r\n"
    tuned = _tune_answer(sdp)
    assert f"a=fmtp:96 {OPUS_FMTP}\r\n" in tuned
    assert "foo=1" not in tuned
    assert _tune_answer("v=0\r\n") == "v=0\r\n"
