"""Redundant audio (RED, RFC 2198) around Opus, on the legs whose browser negotiated it.

A RED packet carries the current Opus frame (the *primary*) and copies of earlier ones, each
with its age in RTP timestamp units.  Chromium offers ``red/48000/2`` with one earlier frame
(``fmtp 111/111``) and sends it when the answer lists it before Opus: a single lost packet then
costs nothing, because the next one brings its frame again.  Opus's own in-band FEC is weaker
(a coarser copy, and only when the encoder decides it has the bits for one).

The server never forwards RED as it came.  :class:`RedReader` turns each incoming leg's RED
into plain Opus frames, putting back a lost frame from the next packet's copy, so that the
relay, the recorder and the statistics see one Opus stream whatever the browser sent.
:class:`RedWriter` wraps the relayed frames again for a leg that negotiated RED, with the
previous frame as the copy when the leg can afford it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

#: RFC 2198 field limits: a block's age fits in 14 bits, its length in 10.
MAX_OFFSET = (1 << 14) - 1
MAX_BLOCK = (1 << 10) - 1


class RedError(ValueError):
    """A payload that is not well-formed RED."""


@dataclasses.dataclass(frozen=True, slots=True)
class RedBlock:
    """One encoding in a RED payload: its payload type, age and data."""

    payload_type: int
    offset: int
    data: bytes


def parse(payload: bytes) -> tuple[list[RedBlock], RedBlock]:
    """(the redundant blocks oldest first, the primary) of a RED payload."""
    headers: list[tuple[int, int, int]] = []
    at = 0
    while True:
        if at >= len(payload):
            raise RedError("RED headers run past the payload")
        first = payload[at]
        if not first & 0x80:
            primary_pt = first & 0x7F
            at += 1
            break
        if at + 4 > len(payload):
            raise RedError("a RED block header is cut short")
        word = int.from_bytes(payload[at + 1 : at + 4], "big")
        headers.append((first & 0x7F, word >> 10, word & 0x3FF))
        at += 4
    blocks = []
    for pt, offset, length in headers:
        if at + length > len(payload):
            raise RedError("a RED block runs past the payload")
        blocks.append(RedBlock(pt, offset, payload[at : at + length]))
        at += length
    return blocks, RedBlock(primary_pt, 0, payload[at:])


def build(payload_type: int, primary: bytes, redundant: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """A RED payload: ``redundant`` as (age, data) oldest first, then ``primary``."""
    head = bytearray()
    body = bytearray()
    for offset, data in redundant:
        if not 0 < offset <= MAX_OFFSET or len(data) > MAX_BLOCK:
            raise RedError(f"a RED block of age {offset} and {len(data)} bytes does not fit")
        head.append(0x80 | payload_type)
        head += ((offset << 10) | len(data)).to_bytes(3, "big")
        body += data
    head.append(payload_type)
    return bytes(head + body + primary)


class RedReader:
    """Plain Opus frames out of one incoming leg's RED packets, lost ones put back.

    Timestamps are the receiver's, counted from the stream's first frame (they never wrap).
    A copy is used only for a frame newer than the last one passed on: a frame that did arrive
    is never passed twice.
    """

    def __init__(self) -> None:
        self._last: int | None = None
        #: Frames put back from a later packet's copy, and payloads that were not RED.
        self.recovered = 0
        self.malformed = 0

    def frames(self, payload: bytes, pts: int) -> list[tuple[bytes, int]]:
        """(data, pts) of the frames ``payload`` (a RED packet stamped ``pts``) brings."""
        try:
            redundant, primary = parse(payload)
        except RedError:
            self.malformed += 1
            return []
        out: list[tuple[bytes, int]] = []
        last = self._last
        if last is not None:
            for block in redundant:
                at = pts - block.offset
                if block.data and last < at < pts:
                    out.append((block.data, at))
                    self.recovered += 1
        if last is None or pts > last:
            if primary.data:
                out.append((primary.data, pts))
            self._last = pts
        return out


class RedWriter:
    """RED packets for one outgoing leg that negotiated RED.

    Each packet carries the relayed frame and, while :attr:`redundancy` is on, a copy of the
    frame before it (unless it is too old or too big to describe, after a silence for example).
    With it off, packets carry the primary alone (one byte of header): the leg stays RED, which
    is what it negotiated, at nearly the cost of plain Opus.
    """

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self.redundancy = True
        self._previous: tuple[bytes, int] | None = None

    def wrap(self, data: bytes, pts: int) -> bytes:
        previous, self._previous = self._previous, (data, pts)
        copies: list[tuple[int, bytes]] = []
        if self.redundancy and previous is not None:
            old, old_pts = previous
            age = pts - old_pts
            if 0 < age <= MAX_OFFSET and len(old) <= MAX_BLOCK:
                copies.append((age, old))
        return build(self.payload_type, data, copies)
