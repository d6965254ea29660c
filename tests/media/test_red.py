"""RED (RFC 2198) around Opus: the wire format, putting lost frames back, and wrapping again."""

from __future__ import annotations

import asyncio
import itertools
import time
from fractions import Fraction

import pytest
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack

from core.domain import Participant
from media import aiortc_glue
from media.frames import AUDIO_CLOCK, EncodedFrame
from media.red import MAX_BLOCK, MAX_OFFSET, RedBlock, RedError, RedReader, RedWriter, build, parse
from media.room import MediaRoom
from tests.media.test_loss import Client, Lossy, wait_until

SPOKE, HUB = Participant.SPOKE, Participant.HUB

OPUS_PT = 111
FRAME = 960  # 20 ms at 48 kHz


def frame(n: int) -> bytes:
    return bytes([n % 256]) * (20 + n % 7)


def red_stream(count: int) -> list[tuple[bytes, int]]:
    """What Chromium sends: each packet carries its frame and the one before."""
    writer = RedWriter(OPUS_PT)
    return [(writer.wrap(frame(n), n * FRAME), n * FRAME) for n in range(count)]


def test_parse_reads_what_build_writes() -> None:
    payload = build(OPUS_PT, b"primary", [(1920, b"older"), (960, b"old")])
    redundant, primary = parse(payload)
    assert redundant == [RedBlock(OPUS_PT, 1920, b"older"), RedBlock(OPUS_PT, 960, b"old")]
    assert primary == RedBlock(OPUS_PT, 0, b"primary")


def test_parse_reads_chromium_layout_byte_for_byte() -> None:
    # F=1 PT=111, offset 960, length 3; then F=0 PT=111; then the blocks.
    header = bytes([0x80 | 111]) + ((960 << 10) | 3).to_bytes(3, "big") + bytes([111])
    redundant, primary = parse(header + b"abc" + b"defg")
    assert redundant == [RedBlock(111, 960, b"abc")]
    assert primary.data == b"defg"


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no header at all
        bytes([0x80 | 111, 0, 0]),  # a block header cut short
        bytes([0x80 | 111]) + ((960 << 10) | 50).to_bytes(3, "big") + bytes([111]) + b"short",
        bytes([0x80 | 111]) * 8,  # headers that never end
    ],
)
def test_parse_refuses_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(RedError):
        parse(payload)


def test_build_refuses_blocks_it_cannot_describe() -> None:
    with pytest.raises(RedError):
        build(OPUS_PT, b"p", [(MAX_OFFSET + 1, b"x")])
    with pytest.raises(RedError):
        build(OPUS_PT, b"p", [(960, b"x" * (MAX_BLOCK + 1))])
    with pytest.raises(RedError):
        build(OPUS_PT, b"p", [(0, b"x")])


def test_reader_passes_each_frame_once_when_nothing_is_lost() -> None:
    reader = RedReader()
    out = [f for payload, pts in red_stream(20) for f in reader.frames(payload, pts)]
    assert out == [(frame(n), n * FRAME) for n in range(20)]
    assert reader.recovered == 0


def test_reader_puts_back_a_lost_frame_from_the_next_packet() -> None:
    reader = RedReader()
    stream = red_stream(20)
    lost = {5, 11, 12}  # a single loss, and two in a row (only the second is recoverable)
    out = [f for n, (p, pts) in enumerate(stream) if n not in lost for f in reader.frames(p, pts)]
    expected = [(frame(n), n * FRAME) for n in range(20) if n != 11]
    assert out == expected
    assert reader.recovered == 2


def test_reader_ignores_a_late_duplicate_and_a_malformed_payload() -> None:
    reader = RedReader()
    stream = red_stream(6)
    out = []
    for payload, pts in [stream[0], stream[1], stream[3], stream[2], stream[4]]:
        out += reader.frames(payload, pts)
    assert reader.frames(b"", 5 * FRAME) == []
    assert reader.malformed == 1
    # Frame 2 came back from packet 3's copy; packet 2 itself, late, adds nothing.
    assert [pts for _, pts in out] == [0, FRAME, 2 * FRAME, 3 * FRAME, 4 * FRAME]


def test_writer_copies_the_previous_frame_unless_told_not_to() -> None:
    writer = RedWriter(OPUS_PT)
    first = parse(writer.wrap(b"one", 0))
    assert first == ([], RedBlock(OPUS_PT, 0, b"one"))
    second = parse(writer.wrap(b"two", FRAME))
    assert second == ([RedBlock(OPUS_PT, FRAME, b"one")], RedBlock(OPUS_PT, 0, b"two"))
    writer.redundancy = False
    third = writer.wrap(b"three", 2 * FRAME)
    assert third == bytes([OPUS_PT]) + b"three"


def test_writer_leaves_out_a_copy_too_old_to_describe() -> None:
    writer = RedWriter(OPUS_PT)
    writer.wrap(b"before the silence", 0)
    redundant, primary = parse(writer.wrap(b"after", MAX_OFFSET + 1))
    assert redundant == []
    assert primary.data == b"after"


# ------------------------------------------------------------------ through the relay, for real


class RedAudioTrack(MediaStreamTrack):
    """What a browser that negotiated RED sends: each frame's RED packet carries the one before.

    The "Opus" frames are numbered bytes: the server never decodes audio, and the test can tell
    each frame from the others.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._writer = RedWriter(OPUS_PT)
        self._n = 0

    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        await asyncio.sleep(0.02)
        n, self._n = self._n, self._n + 1
        pts = n * FRAME
        data = self._writer.wrap(opus_frame(n), pts)
        return EncodedFrame(data, pts, Fraction(1, AUDIO_CLOCK), True, time.monotonic())


def opus_frame(n: int) -> bytes:
    return b"opus-%06d" % n


class RedClient(Client):
    """A browser stand-in that offers RED before Opus and sends RED."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_sender.replaceTrack(RedAudioTrack())
        audio = next(t for t in self.pc.getTransceivers() if t.sender is self.audio_sender)
        caps = RTCRtpSender.getCapabilities("audio").codecs
        audio.setCodecPreferences(
            [c for mime in ("audio/red", "audio/opus") for c in caps if c.mimeType.lower() == mime]
        )


async def test_a_lost_red_packet_is_put_back_by_the_server_and_relayed_as_red(
    no_leaked_tasks: None,
) -> None:
    aiortc_glue.install()
    room = MediaRoom("red", (), lambda seat, state: None)
    nurse, doctor = RedClient(), RedClient()
    try:
        await nurse.join(room, SPOKE)
        await doctor.join(room, HUB)
        # aiortc offers Opus as 96 and RED as 63; the answer says what RED carries.
        assert "a=fmtp:63 96/96" in doctor.pc.remoteDescription.sdp
        spoke, hub = room.peer(SPOKE), room.peer(HUB)
        assert spoke is not None
        assert hub is not None
        assert (spoke.red, hub.red) == (True, True)
        await wait_until(lambda: len(doctor.arrivals["audio"]) >= 25, "audio did not flow")
        # Drop one of the nurse's audio packets on its way to the server, for good.
        lossy = Lossy(nurse.audio_sender, lambda _: not lossy.dropped, repairable=False)
        await wait_until(lambda: bool(lossy.dropped), "no audio packet was dropped")
        await asyncio.sleep(0.5)
    finally:
        await nurse.pc.close()
        await doctor.pc.close()
        await room.close()
    heard = [bytes(f.data) for _, f in doctor.arrivals["audio"]]
    numbers = [int(d[5:]) for d in heard if d.startswith(b"opus-")]
    assert len(numbers) == len(heard), "the doctor got RED it could not open"
    # Every frame from the first the doctor heard on, once each and in order, the dropped one too.
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    pts = [f.pts for _, f in doctor.arrivals["audio"]]
    assert all(b - a == FRAME for a, b in itertools.pairwise(pts))
