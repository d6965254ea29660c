"""Encoded media as it travels through the relay: never decoded, never re-encoded."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000


@dataclasses.dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One depayloaded VP8 frame or Opus packet.

    ``pts`` counts in ``time_base`` from the source's first frame.  aiortc's senders pack any
    object that is not a decoded frame by calling ``bytes()`` on it and reading ``pts`` and
    ``time_base``, which is what lets the relay forward these as they are.
    """

    data: bytes
    pts: int
    time_base: Fraction
    is_keyframe: bool
    #: Wall-clock arrival (``time.monotonic()``) at the server, for recording and measurement.
    arrival: float

    def __bytes__(self) -> bytes:
        return self.data

    def shifted(self, offset: int) -> EncodedFrame:
        return dataclasses.replace(self, pts=self.pts + offset)


def vp8_is_keyframe(data: bytes) -> bool:
    """RFC 6386 §9.1: bit 0 of the first byte of a VP8 frame is 0 on a key frame."""
    return bool(data) and not data[0] & 0x01
