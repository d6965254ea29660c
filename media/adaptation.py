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
        """What the step costs on the wire: video at its cap, audio as RED (each frame sent
        twice) with its packet overhead."""
        return self.max_bitrate_kbps + self.audio_kbps * AUDIO_COPIES + AUDIO_OVERHEAD_KBPS


LADDER: tuple[Step, ...] = (
    Step(0, 500, 1.0, 15, True, "640x360 15 fps"),
    Step(1, 250, 4 / 3, 15, True, "480x270 15 fps"),
    Step(2, 100, 2.0, 10, True, "320x180 10 fps", audio_kbps=24),
    Step(3, 60, 2.0, 8, True, "320x180 8 fps", audio_kbps=16),
    Step(4, 0, 2.0, 5, False, "audio only", audio_kbps=8),
)
AUDIO_ONLY = LADDER[-1].index
#: Where a call starts without a measurement of the link, and the nurse's low-bandwidth floor.
START_STEP = 1
LOW_BANDWIDTH_STEP = 3
#: The headers of 50 audio packets a second (IP, UDP, RTP with extensions, SRTP tag).
AUDIO_OVERHEAD_KBPS = 24.0
#: Browsers send audio as RED (media/red.py): every Opus frame goes out twice, so the low steps
#: lower Opus's own rate to keep speech clear on a link that loses packets and fits on one that
#: carries 60 kbit/s: 8 kbit/s Opus, sent twice with its headers, is about 45 kbit/s on the
#: wire (narrowband speech, clear enough to go on talking).
AUDIO_COPIES = 2

#: From this step on, the server paces the video it relays to the other seat (whose downlink is
#: what put the sender there) at this multiple of the step's cap: keyframes then reach a slow
#: link spread out instead of overflowing its queue.  Above it the link has room for bursts,
#: and a call's first keyframe is never held back.
PACE_FROM_STEP = 2
PACE_FACTOR = 1.5


def pace_kbps(step: Step) -> float | None:
    """The pace for video relayed from a sender at ``step`` (``None``: unpaced; 0: nothing,
    not even retransmissions of what was sent before the pause, on audio only)."""
    if step.index < PACE_FROM_STEP:
        return None
    return step.max_bitrate_kbps * PACE_FACTOR


#: Loss (smoothed over reports) from which the sender steps down.
LOSS_DOWN = 0.10
#: Loss in one report at which it steps down two rungs at once.
LOSS_SEVERE = 0.25
#: Loss in one report that says the link carries a fraction of what is sent (or severe loss on
#: a link seen to carry less than :data:`COLLAPSE_KBPS`): it steps down again without waiting
#: for :data:`DOWN_SPACING_S`, straight to audio only (a 60 kbit/s link must reach it in
#: seconds).  A poor link of 150 kbit/s overloaded at first loses as much, but carries more.
LOSS_COLLAPSE = 0.5
COLLAPSE_KBPS = 90.0
#: Loss below which the links count as healthy.  Rural links lose a few per cent whatever is
#: sent (RED, Opus FEC and NACK absorb it): only loss that grows with the rate is congestion.
#: A poor link loses 5 % with audio alone: below this, video may come back.
LOSS_OK = 0.08
#: Weight of the newest report in the smoothed loss.
LOSS_SMOOTHING = 0.5
#: Round trip above the lowest seen that means a queue is building at a bottleneck.
QUEUE_DOWN_MS = 300.0
QUEUE_OK_MS = 120.0
#: The same for a queue on one direction of one leg (``LegSample.queue_ms``): a tail-drop queue
#: of 200 ms that stays over 150 ms for a whole second is the sender's, and must shrink.
ONE_WAY_QUEUE_DOWN_MS = 150.0
ONE_WAY_QUEUE_OK_MS = 60.0
#: How long a queue must persist to count: the least delay over this long (a keyframe's burst
#: fills a queue for a moment; a sender above the link's rate keeps it full).
STANDING_S = 1.0
#: The lowest round trip over this long is the path's own, without a queue.  A path does
#: change (a call moves from a good link to a long rural one): an all-time lowest would take
#: the new path's length for a queue for ever, and never let video come back.
BASE_RTT_WINDOW_S = 8.0
#: Healthy this long before trying the next rung up.
UP_HOLD_S = 8.0
MAX_BACKOFF_S = 64.0
#: How long what a full link carried caps the rungs tried above it: rural links change, but a
#: link that carried 55 kbit/s with its queue full will not carry video a few seconds later.
CEILING_S = 45.0
#: A report taken this soon after a step down still counts what was sent before it: severe
#: loss in it does not say what the new step carries.
SETTLE_S = 2.0
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
    #: The queue on this leg's own direction, in ms, where it can be told apart from the other
    #: direction's (the round trip holds both): :class:`OneWayDelay` for an uplink.
    queue_ms: float | None = None
    #: What the leg delivered over the interval, headers included, as the server counted it,
    #: while it was full (its queue stayed long, or it lost a quarter and more of what was
    #: sent, which a tail-drop queue does only when full): what it can carry (uplinks only).
    carried_kbps: float | None = None
    #: The loss is the far leg's (the other seat's downlink, from its receiver's reports),
    #: whose rate the server can only estimate: with no rate known, it is no collapse.
    far: bool = False

    def describe(self) -> str:
        """The figures measured, for a log line: ``loss 0.42, rtt 640 ms, carried 57 kbit/s``."""
        parts = []
        for name, value, unit, fmt in (
            ("loss", self.loss, "", ".2f"),
            ("rtt", self.rtt_ms, " ms", ".0f"),
            ("queue", self.queue_ms, " ms", ".0f"),
            ("carried", self.carried_kbps, " kbit/s", ".0f"),
        ):
            if value is not None:
                parts.append(f"{name} {value:{fmt}}{unit}")
        return ", ".join(parts) or "nothing measured"

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
        queue_ms=pick([s.queue_ms for s in samples], True),
        carried_kbps=pick([s.carried_kbps for s in samples], False),
    )


def collapsed(link: LegSample) -> bool:
    """Whether ``link`` is far below even the low rungs (video has no room on it), not
    briefly overloaded: it lost severely while carrying little, or half of what was sent while
    what it carries is not known."""
    if link.loss is None or link.loss < LOSS_SEVERE:
        return False
    if link.carried_kbps is not None:
        return link.carried_kbps < COLLAPSE_KBPS
    return link.loss >= LOSS_COLLAPSE and not link.far


class _WindowMin:
    """The least value of the last ``window`` seconds (a monotonic deque: O(1) per value)."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._values: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, now: float, value: float) -> None:
        values = self._values
        while values and values[-1][1] >= value:
            values.pop()
        values.append((now, value))

    def get(self, now: float) -> float | None:
        values = self._values
        while values and values[0][0] < now - self._window:
            values.popleft()
        return values[0][1] if values else None


class BaseRtt:
    """The round trip above the path's own, the lowest of the last :data:`BASE_RTT_WINDOW_S`."""

    def __init__(self) -> None:
        self._base = _WindowMin(BASE_RTT_WINDOW_S)

    def excess(self, now: float, rtt_ms: float) -> float:
        self._base.add(now, rtt_ms)
        base = self._base.get(now)
        return rtt_ms - (rtt_ms if base is None else base)


class OneWayDelay:
    """The standing queue on one direction of a leg, from when packets arrive.

    Each packet's arrival time less its media timestamp is its one-way delay plus a constant
    (the clocks' offset): over the last :data:`BASE_RTT_WINDOW_S` the least of it is the path
    with an empty queue, and over the last :data:`STANDING_S` the least is that path plus the
    queue that did not drain.  Only the arriving direction counts, unlike a round trip.
    """

    def __init__(self, clock_rate: int) -> None:
        self._rate = float(clock_rate)
        self._last_ts: int | None = None
        self._media_s = 0.0
        self._base = _WindowMin(BASE_RTT_WINDOW_S)
        self._recent = _WindowMin(STANDING_S)
        self._last_arrival: float | None = None

    def packet(self, arrival: float, timestamp: int) -> None:
        """A packet stamped ``timestamp`` (RTP, 32 bits) arrived at ``arrival`` (seconds)."""
        if self._last_ts is not None:
            step = (timestamp - self._last_ts) % (1 << 32)
            if step >= 1 << 31:
                return  # older than the newest: reordered, says nothing new
            self._media_s += step / self._rate
        self._last_ts = timestamp
        delay = arrival - self._media_s
        self._base.add(arrival, delay)
        self._recent.add(arrival, delay)
        self._last_arrival = arrival

    def queue_ms(self, now: float) -> float | None:
        """The standing queue now, or ``None`` when nothing arrived lately."""
        if self._last_arrival is None or now - self._last_arrival > STANDING_S:
            return None
        base, recent = self._base.get(now), self._recent.get(now)
        if base is None or recent is None:
            return None
        return max(0.0, (recent - base) * 1000)


def step_for_bandwidth(kbps: float) -> int:
    """The highest rung whose video fits in ``kbps`` beside audio (a pre-call measurement)."""
    for step in LADDER:
        if not step.video or step.wire_kbps <= kbps * DOWN_MARGIN:
            return step.index
    return AUDIO_ONLY


@dataclasses.dataclass(frozen=True)
class Change:
    step: Step
    reason: str  # "loss" | "delay" | "recovered" | "low_bandwidth" | "start" | "browser"


class Adapter:
    """Chooses the step of one sending browser; feed it a sample per report (:meth:`update`)."""

    def __init__(self, now: float, start: int = START_STEP) -> None:
        self.step = LADDER[start]
        self.low_bandwidth = False
        self._healthy_since: float | None = None
        self._last_down = -1e9
        self._last_up = -1e9
        self._backoff = UP_HOLD_S
        #: What the link was seen to carry while full (kbit/s), and when: no rung above it is
        #: tried for :data:`CEILING_S` (each try would cost the conversation a burst of loss).
        self._ceiling: tuple[float, float] | None = None
        self._base_rtt = BaseRtt()
        self._loss: float | None = None
        self.history: list[tuple[float, int, str]] = [(now, start, "start")]

    def _move(self, index: int, reason: str, now: float) -> Change:
        old = self.step
        self.step = LADDER[index]
        if index > old.index:
            self._last_down = now
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

    def brake(
        self, now: float, reason: str = "browser", carried_kbps: float | None = None
    ) -> Change | None:
        """The link collapsed (the sending page saw it and paused its video, or the other
        direction of the same link lost too much): audio only at once.  ``carried_kbps`` is
        what the link carried then, if known."""
        self._note_ceiling(carried_kbps, now)
        if self.step.index == AUDIO_ONLY:
            return None
        return self._move(AUDIO_ONLY, reason, now)

    def fit(self, now: float, carried_kbps: float) -> Change | None:
        """The link this sender's media crosses was seen full carrying ``carried_kbps`` (the
        other direction of it, in practice): down to the step that fits, if above it."""
        self._note_ceiling(carried_kbps, now)
        if self.step.wire_kbps <= carried_kbps or self.step.index == AUDIO_ONLY:
            return None
        return self._move(self._keeping_video(self._fitting(carried_kbps)), "loss", now)

    def _keeping_video(self, target: int) -> int:
        """``target``, but the last rung with video instead of audio only when this sender is
        above that rung: video stops only from its last rung, or when the brake calls a
        collapse."""
        if target == AUDIO_ONLY and self.step.index < AUDIO_ONLY - 1:
            return AUDIO_ONLY - 1
        return target

    def _note_ceiling(self, carried_kbps: float | None, now: float) -> None:
        """What the link carried while its queue stayed full, if known (``carried_kbps`` is
        reported only then: a sender below the link's rate says nothing of that rate)."""
        if carried_kbps is not None:
            self._ceiling = (carried_kbps, now)

    def ceiling_kbps(self, now: float) -> float | None:
        """What the link was last seen to carry while full, if that was in the last
        :data:`CEILING_S`."""
        if self._ceiling is None or now - self._ceiling[1] >= CEILING_S:
            return None
        return self._ceiling[0]

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
        # A queue measured on the path's own directions says whose it is; a round trip does
        # not (the other direction's queue is in it too), so it must grow more to count.
        queue, queue_down, queue_ok = 0.0, QUEUE_DOWN_MS, QUEUE_OK_MS
        if link.queue_ms is not None:
            queue, queue_down, queue_ok = link.queue_ms, ONE_WAY_QUEUE_DOWN_MS, ONE_WAY_QUEUE_OK_MS
        elif link.rtt_ms is not None:
            queue = self._base_rtt.excess(now, link.rtt_ms)
        index = self.step.index

        spaced = now - self._last_down >= DOWN_SPACING_S
        if index < AUDIO_ONLY:
            # Severe loss once the last step has settled says the step was a guess that did
            # not fit (one rung for delay, or a rate that rose again): it is not made to wait
            # for the spacing, while the link's audio suffers.  Not the far leg's loss: its
            # receiver's reports come late, and still count the rate before the step.
            settled = now - self._last_down >= SETTLE_S and not link.far
            severe = raw >= LOSS_SEVERE and (spaced or settled or collapsed(link))
            # The last rung holds on moderate loss: a poor link loses a tenth as video comes
            # back, which RED and retransmissions absorb.
            last_rung_holds = index == AUDIO_ONLY - 1 and raw < LOSS_SEVERE
            if severe or (spaced and loss >= LOSS_DOWN and not last_rung_holds):
                # Congestion loss says what the link carries: what the full link was counted
                # to carry, or else what was sent less what was lost.  Go straight to the step
                # that fits, at least one down; but video stops only from its last rung, or on
                # a collapsed link: the loss just after a step still counts some of the rate
                # before it.
                self._note_ceiling(link.carried_kbps, now)
                if link.carried_kbps is None:
                    target = self._fitting(self.step.wire_kbps * (1 - raw))
                elif self.step.wire_kbps > link.carried_kbps:
                    target = self._fitting(link.carried_kbps)
                else:
                    # The step fits what the full link carried: the loss is the rate before
                    # the last step, still queued or still being sent.
                    target = None
                if target is not None:
                    if not collapsed(link):
                        target = self._keeping_video(target)
                    return self._move(target, "loss", now)
            # A step that fits what the full link carried is not what fills its queue (the
            # rate before the last step is, or the other direction's, which the round trip
            # holds too); nor is the last rung's, with no count at all.
            fits = link.carried_kbps is not None and self.step.wire_kbps <= link.carried_kbps
            guessed = link.carried_kbps is None
            if spaced and queue >= queue_down and not fits and not (last_rung_holds and guessed):
                # A standing queue says the link is full: what it carried is what it can
                # carry.  Without that count, one rung.
                target = index + 1
                if link.carried_kbps is not None:
                    target = max(target, self._fitting(link.carried_kbps))
                    self._note_ceiling(link.carried_kbps, now)
                return self._move(target, "delay", now)

        healthy = loss < LOSS_OK and queue < queue_ok
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
        ceilings = [c for c in (self.ceiling_kbps(now), link.carried_kbps) if c is not None]
        if ceilings and LADDER[index - 1].wire_kbps > min(ceilings):
            return None
        return self._move(index - 1, "recovered", now)

    def _fitting(self, carried_kbps: float) -> int:
        # No margin: what was carried is counted net of the link's random loss, already less
        # than what it can carry.
        for step in LADDER[self.step.index + 1 :]:
            if not step.video or step.wire_kbps <= carried_kbps:
                return step.index
        return AUDIO_ONLY
