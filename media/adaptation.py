"""The adaptation ladder: what each sending browser should send, from what the links carry.

The relay forwards encoded media as it is, so the server cannot thin a stream for a weak
receiver: the sending browser must send less (``RTCRtpSender.setParameters``).  For each
sending seat an :class:`Adapter` looks at two legs, the sender's uplink to the server and the
other seat's downlink from it, and picks a :class:`Step` of :data:`LADDER`.  Audio is never
touched: the last step pauses video to keep the conversation going.

Hysteresis: a step down is taken at once (a weak link must be relieved within a couple of
reports); a step up only after the links have looked healthy for :data:`UP_HOLD_S`, and an up
that had to be undone soon after makes the next attempt wait twice as long (up to
:data:`MAX_BACKOFF_S`), so a link at the edge of a step does not flap.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Step:
    """One rung: limits for the browser's video encoder (the capture is 640x360 at 15 fps)."""

    index: int
    max_bitrate_kbps: int
    scale_down: float
    max_fps: int
    video: bool
    label: str
    #: Cap on the Opus encoder: lower only where the link cannot carry more.
    audio_kbps: int = 32

    @property
    def wire_kbps(self) -> float:
        """What the step costs on the wire: video at its cap, audio with its packet overhead."""
        return self.max_bitrate_kbps + self.audio_kbps + AUDIO_OVERHEAD_KBPS


LADDER: tuple[Step, ...] = (
    Step(0, 500, 1.0, 15, True, "640x360 15 fps"),
    Step(1, 250, 4 / 3, 15, True, "480x270 15 fps"),
    Step(2, 100, 2.0, 10, True, "320x180 10 fps"),
    Step(3, 60, 2.0, 8, True, "320x180 8 fps", audio_kbps=24),
    Step(4, 0, 2.0, 5, False, "audio only", audio_kbps=20),
)
AUDIO_ONLY = LADDER[-1].index
#: Where a call starts without a measurement of the link, and the nurse's low-bandwidth floor.
START_STEP = 1
LOW_BANDWIDTH_STEP = 3
#: What audio needs on the wire: Opus capped at 32 kbit/s plus RTP/UDP/IP/SRTP overhead at 50
#: packets a second (measured: 60 to 64 kbit/s from Chromium).
AUDIO_KBPS = 60.0
#: The headers of 50 audio packets a second (IP, UDP, RTP with extensions, SRTP tag).
AUDIO_OVERHEAD_KBPS = 24.0

#: Loss (smoothed over reports) from which the sender steps down.
LOSS_DOWN = 0.10
#: Loss in one report at which it steps down two rungs at once.
LOSS_SEVERE = 0.25
#: Loss below which the links count as healthy.  Rural links lose a few per cent whatever is
#: sent (Opus FEC and NACK absorb it): only loss that grows with the rate is congestion.
LOSS_OK = 0.06
#: Weight of the newest report in the smoothed loss.
LOSS_SMOOTHING = 0.5
#: Round trip above the lowest seen that means a queue is building at a bottleneck.
QUEUE_DOWN_MS = 300.0
QUEUE_OK_MS = 120.0
#: The lowest round trip over this long is the path's own, without a queue.  A path does
#: change (a call moves from a good link to a long rural one): an all-time lowest would take
#: the new path's length for a queue for ever, and never let video come back.
BASE_RTT_WINDOW_S = 8.0
#: Healthy this long before trying the next rung up.
UP_HOLD_S = 8.0
MAX_BACKOFF_S = 64.0
#: Never two steps down within this long: the effect of the last one needs time to show (the
#: bottleneck's queue drains, and the next report must cover the new rate only).
DOWN_SPACING_S = 4.0
#: A pre-call measurement fits a rung when it covers its bitrate plus audio with this margin.
DOWN_MARGIN = 0.85


class Grade(enum.StrEnum):
    """A leg's quality as people see it on the consult page."""

    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"
    BAD = "bad"
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class LegSample:
    """One leg over the last report interval; ``None`` where nothing was measured."""

    loss: float | None = None
    rtt_ms: float | None = None
    jitter_ms: float | None = None
    #: Media arriving over the leg.
    kbps: float | None = None
    #: The sending browser's own estimate of its uplink (``availableOutgoingBitrate``).
    available_kbps: float | None = None

    def grade(self) -> Grade:
        if self.loss is None and self.rtt_ms is None:
            return Grade.UNKNOWN
        loss, rtt = self.loss or 0.0, self.rtt_ms or 0.0
        if loss < 0.02 and rtt < 300:
            return Grade.GOOD
        if loss < 0.05 and rtt < 500:
            return Grade.FAIR
        if loss < 0.15 and rtt < 1000:
            return Grade.POOR
        return Grade.BAD


def worst(*samples: LegSample) -> LegSample:
    """The legs in series: the highest loss and round trip, the lowest rate and estimate."""

    def pick(values: list[float | None], high: bool) -> float | None:
        known = [v for v in values if v is not None]
        if not known:
            return None
        return max(known) if high else min(known)

    return LegSample(
        loss=pick([s.loss for s in samples], True),
        rtt_ms=pick([s.rtt_ms for s in samples], True),
        jitter_ms=pick([s.jitter_ms for s in samples], True),
        kbps=pick([s.kbps for s in samples], False),
        available_kbps=pick([s.available_kbps for s in samples], False),
    )


def step_for_bandwidth(kbps: float) -> int:
    """The highest rung whose video fits in ``kbps`` beside audio (a pre-call measurement)."""
    for step in LADDER:
        if not step.video or step.wire_kbps <= kbps * DOWN_MARGIN:
            return step.index
    return AUDIO_ONLY


@dataclasses.dataclass(frozen=True)
class Change:
    step: Step
    reason: str  # "loss" | "delay" | "recovered" | "low_bandwidth" | "start"


class Adapter:
    """Chooses the step of one sending browser; feed it a sample per report (:meth:`update`)."""

    def __init__(self, now: float, start: int = START_STEP) -> None:
        self.step = LADDER[start]
        self.low_bandwidth = False
        self._healthy_since: float | None = None
        self._last_down = -1e9
        self._last_down_reason = ""
        self._last_up = -1e9
        self._backoff = UP_HOLD_S
        self._rtts: collections.deque[tuple[float, float]] = collections.deque()
        self._loss: float | None = None
        self.history: list[tuple[float, int, str]] = [(now, start, "start")]

    def _move(self, index: int, reason: str, now: float) -> Change:
        old = self.step
        self.step = LADDER[index]
        if index > old.index:
            self._last_down = now
            self._last_down_reason = reason
            # Undoing a recent up: the link cannot carry that rung; wait longer next time.
            if now - self._last_up < 2 * UP_HOLD_S:
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        else:
            self._last_up = now
        self._healthy_since = None
        self._loss = None  # the new rate's loss is what counts from here
        self.history.append((now, index, reason))
        logger.debug("step %s -> %s (%s)", old.label, self.step.label, reason)
        return Change(self.step, reason)

    def set_low_bandwidth(self, on: bool, now: float) -> Change | None:
        """The nurse's switch: never above :data:`LOW_BANDWIDTH_STEP` while it is on."""
        self.low_bandwidth = on
        if on and self.step.index < LOW_BANDWIDTH_STEP:
            return self._move(LOW_BANDWIDTH_STEP, "low_bandwidth", now)
        if not on:
            self._healthy_since = now  # may climb again after a healthy hold
        return None

    def update(self, link: LegSample, now: float) -> Change | None:
        """Take one report of the path (uplink and downlink combined with :func:`worst`).

        Congestion shows as loss and as a growing round trip; those decide.  The browser's
        own bandwidth estimate does not: it is capped by the very limit a step sets, so it
        would only ever confirm the step it is at (and drag a capped sender further down).
        """
        if link.loss is None:
            # Nothing measured (an outage, or too few packets): no reason to move either way.
            self._healthy_since = None
            return None
        raw = link.loss
        loss = self._loss = (
            raw if self._loss is None else LOSS_SMOOTHING * raw + (1 - LOSS_SMOOTHING) * self._loss
        )
        queue = 0.0
        if link.rtt_ms is not None:
            self._rtts.append((now, link.rtt_ms))
            while self._rtts[0][0] < now - BASE_RTT_WINDOW_S:
                self._rtts.popleft()
            queue = link.rtt_ms - min(rtt for _, rtt in self._rtts)
        index = self.step.index

        spaced = now - self._last_down >= DOWN_SPACING_S
        if index < AUDIO_ONLY:
            # A step for delay is one rung taken on a guess; severe loss right after it says
            # what the link carries and is not made to wait for the spacing.
            severe = raw >= LOSS_SEVERE and (spaced or self._last_down_reason == "delay")
            if severe or (spaced and loss >= LOSS_DOWN):
                # Congestion loss says what the link carries: what was sent, less what was
                # lost.  Go straight to the step that fits, at least one down.
                return self._move(self._fitting(self.step.wire_kbps * (1 - raw)), "loss", now)
            if spaced and queue >= QUEUE_DOWN_MS:
                return self._move(index + 1, "delay", now)

        healthy = loss < LOSS_OK and queue < QUEUE_OK_MS
        if not healthy:
            self._healthy_since = None
            return None
        if self._healthy_since is None:
            self._healthy_since = now
            return None
        floor = LOW_BANDWIDTH_STEP if self.low_bandwidth else 0
        if index <= floor or now - self._healthy_since < self._backoff:
            return None
        if now - self._last_down < self._backoff:
            return None
        return self._move(index - 1, "recovered", now)

    def _fitting(self, carried_kbps: float) -> int:
        for step in LADDER[self.step.index + 1 :]:
            if not step.video or step.wire_kbps <= carried_kbps * DOWN_MARGIN:
                return step.index
        return AUDIO_ONLY
