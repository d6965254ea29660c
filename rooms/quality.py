"""Link quality in a room: measure both seats' legs, pick each sender's step, tell the pages.

Every :data:`REPORT_S` the :class:`LinkMonitor` reads the server's own view of each seat's
peer connection (packets received and lost on the uplink, the receiver reports and round trip
on the downlink) and combines it with what each browser last reported from ``getStats()``
(its uplink estimate, what it receives and loses).  One :class:`~media.adaptation.Adapter` per
sending seat then decides that browser's step from its uplink and the other seat's downlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from core.domain import Participant
from media import MediaRoom, Peer, PeerState
from media.adaptation import (
    AUDIO_ONLY,
    COLLAPSE_KBPS,
    DOWN_MARGIN,
    LADDER,
    LOSS_SEVERE,
    ONE_WAY_QUEUE_DOWN_MS,
    Adapter,
    BaseRtt,
    Change,
    Grade,
    LegSample,
    Step,
    collapsed,
    pace_kbps,
    step_for_bandwidth,
    worst,
)

logger = logging.getLogger(__name__)

#: How often the links are sampled and the steps decided: a link that collapses must be seen
#: within a second (the pages report every two seconds, and the indicators follow that).
REPORT_S = 1.0
#: The pages' indicators (``network``) go out every this many samples: every two seconds.
NETWORK_EVERY = 2
#: The bandwidth estimate (REMB) a browser on audio only gets, again every sample: below the
#: pages' brake threshold (consult.js), so that its page pauses its video at its next check.
#: Audio is not held to it (without transport-wide feedback a browser's audio keeps its rate).
AUDIO_ONLY_ESTIMATE_KBPS = 24.0
#: A browser's report older than this no longer describes its link.
STALE_S = 6.0
_AUDIO_CLOCK_PER_MS = 48.0


@dataclasses.dataclass(frozen=True)
class ClientReport:
    """What a browser measured over its last interval (``link_report``)."""

    available_out_kbps: float | None = None
    out_kbps: float | None = None
    rtt_ms: float | None = None
    in_kbps: float | None = None
    in_loss: float | None = None
    in_jitter_ms: float | None = None
    in_fps: float | None = None


@dataclasses.dataclass(frozen=True)
class LegView:
    """One seat's two legs as the pages show them."""

    up: Grade
    down: Grade
    rtt_ms: float | None
    up_loss: float | None
    down_loss: float | None


#: Fewer packets than this in an interval say too little about loss to act on.
MIN_PACKETS = 50
#: What a datagram costs on the wire beyond its UDP payload: the IPv4 and UDP headers.
DATAGRAM_BYTES = 28
#: How long a downlink's loss stands for it when no new receiver report has come.
DOWN_LOSS_KEPT_S = 3.0


@dataclasses.dataclass
class _Counters:
    peer: object
    received: float
    lost: float
    sent: float
    lost_far: float
    #: Nothing arrived in the last interval (an outage): the next interval's count of lost
    #: packets includes the whole outage and says nothing of the link as it is now.
    silent: bool = False
    #: Bytes on the wire (payload and headers) received from the browser and sent to it, and
    #: when.
    wire_in: float = 0.0
    wire_out: float = 0.0
    at: float = 0.0
    #: The downlink's last measured loss and when: receiver reports come about once a second
    #: (audio's every few), so a sample without a new one keeps the last for a while.
    down_loss: float | None = None
    down_at: float = 0.0


class LinkMonitor:
    """Samples a room's links and runs the adapters; call :meth:`run` in an owned task."""

    def __init__(
        self,
        media: MediaRoom,
        *,
        on_step: Callable[[Participant, Change], None],
        on_network: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        interval: float = REPORT_S,
    ) -> None:
        self._media = media
        self._on_step = on_step
        self._on_network = on_network
        self._clock = clock
        self._interval = interval
        now = clock()
        self.adapters = {seat: Adapter(now) for seat in Participant}
        self.low_bandwidth = False
        self._reports: dict[Participant, tuple[float, ClientReport]] = {}
        self._counters: dict[Participant, _Counters] = {}
        self._server_up: dict[Participant, LegSample] = {}
        self._server_down: dict[Participant, LegSample] = {}
        #: What the server sent each browser over the last interval, headers included (kbit/s).
        self._sent_kbps: dict[Participant, float] = {}
        self._base_rtt: dict[Participant, BaseRtt] = {}
        self._braked = asyncio.Event()
        self._samples = 0

    def step(self, seat: Participant) -> Step:
        return self.adapters[seat].step

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._braked.wait(), self._interval)
            if self._braked.is_set():
                # A brake: apply the new steps at once, sample on the usual beat.
                self._braked.clear()
                for seat in Participant:
                    await self._shape(seat)
                continue
            await self.sample()

    # ------------------------------------------------------------------ inputs

    def report(self, seat: Participant, report: ClientReport) -> None:
        self._reports[seat] = (self._clock(), report)

    def probe(self, seat: Participant, kbps: float) -> None:
        """A pre-call measurement of ``seat``'s uplink: start no higher than it allows."""
        adapter = self.adapters[seat]
        index = max(step_for_bandwidth(kbps), adapter.step.index)
        if index != adapter.step.index:
            adapter.step = LADDER[index]
            self._on_step(seat, Change(adapter.step, "start"))

    def brake(self, seat: Participant, reason: str = "browser") -> None:
        """``seat``'s link is collapsing (its page paused its video itself, or its uplink lost
        too much for anything but audio): both directions of that link go to audio only at
        once (the other seat's media comes down it), and come back by the usual healthy hold."""
        now = self._clock()
        carried = self._measured_up(seat).carried_kbps
        seen = f"carried {'?' if carried is None else f'{carried:.0f}'} kbit/s"
        for s in (seat, seat.other):
            change = self.adapters[s].brake(now, reason, carried)
            if change is not None:
                self._step(s, change, seen)
            elif s is seat:
                # Already on audio only: say so again, so that a braking page that had not yet
                # heard it lets go of its brake.
                self._on_step(s, Change(self.adapters[s].step, reason))
        self._braked.set()

    def set_low_bandwidth(self, on: bool) -> None:
        """The nurse's switch caps both directions: the spoke's link carries both."""
        self.low_bandwidth = on
        now = self._clock()
        for seat, adapter in self.adapters.items():
            change = adapter.set_low_bandwidth(on, now)
            if change is not None:
                self._on_step(seat, change)

    # ------------------------------------------------------------------ sampling

    async def sample(self) -> None:
        for seat in Participant:
            await self._measure(seat)
        now = self._clock()
        for seat in Participant:
            peer = self._media.peer(seat)
            if peer is None or peer.state is not PeerState.CONNECTED:
                continue
            self._far_loss(seat, peer, now)
            path = self._path(seat, now)
            logger.debug("room %s: %s path %s", self._media.label, seat, path)
            change = self.adapters[seat].update(path, now)
            if change is not None:
                self._step(seat, change, path.describe())
                if self._collapsed(seat, change):
                    self.brake(seat, "loss")
                else:
                    self._fit_other(seat, now)
        for seat in Participant:
            await self._shape(seat)
        self._samples += 1
        if self._samples % NETWORK_EVERY == 0:
            self._on_network()

    def _step(self, seat: Participant, change: Change, seen: str) -> None:
        """Send ``seat``'s new step, logged with what the decision saw."""
        logger.info(
            "room %s: %s sends %s (%s; %s)",
            self._media.label,
            seat,
            change.step.label,
            change.reason,
            seen,
        )
        self._on_step(seat, change)

    def _fit_other(self, seat: Participant, now: float) -> None:
        """``seat``'s own uplink was seen full: the other seat's media comes down the same link
        (which carries at least as much down as up), so the other seat goes to the step that
        fits it at once, without waiting for the late reports of its own leg."""
        carried = self._measured_up(seat).carried_kbps
        if carried is None:
            return
        other = seat.other
        change = self.adapters[other].fit(now, carried)
        if change is not None:
            self._step(other, change, f"{seat}'s uplink carried {carried:.0f} kbit/s")

    def _collapsed(self, seat: Participant, change: Change) -> bool:
        """Whether ``seat``'s own uplink collapsed (see :func:`collapsed`) into audio only: the
        same link carries the other seat's media down, which must then stop too (it is the
        spoke's link, in practice, that fails both ways)."""
        return (
            change.step.index == AUDIO_ONLY
            and change.reason == "loss"
            and collapsed(self._measured_up(seat))
        )

    async def _shape(self, sender: Participant) -> None:
        """What the server does of ``sender``'s step itself, without waiting for the page to
        apply it: the video it relays is paced on the low steps and held while the step is
        audio only (the receiver's downlink is free at once), and the sender's bandwidth
        estimate is capped to what audio needs (over RTCP, so it arrives even when the step,
        sent over the websocket, is stuck behind a collapsing link), and asked for no
        retransmission or keyframe of its video.  With both seats on audio only, the audio
        relayed to the receiver goes without its redundant copy, unless the link was seen to
        carry it."""
        step = self.adapters[sender].step
        audio_only = step.index == AUDIO_ONLY
        peer = self._media.peer(sender)
        if peer is not None:
            # Before the relay lets go of its hold, which asks the sender for a keyframe.
            peer.hush_video(audio_only)
        self._media.outbound[sender.other]["video"].hold(audio_only)
        receiver = self._media.peer(sender.other)
        if receiver is not None:
            receiver.pace_video(pace_kbps(step))
            # Audio only both ways, on a link seen to carry too little for a second copy of
            # each frame: one copy.  Where it fits (edge's 60 kbit/s carries some 45 of RED
            # audio), the copy is what keeps the link's random loss out of the conversation.
            collapsed = audio_only and self.adapters[sender.other].step.index == AUDIO_ONLY
            receiver.set_audio_redundancy(not collapsed or self._red_fits())
        if peer is not None and peer.state is PeerState.CONNECTED:
            await peer.cap_estimate(AUDIO_ONLY_ESTIMATE_KBPS if audio_only else None)

    def _red_fits(self) -> bool:
        """Whether the weaker link, seen full lately, carried audio only as RED with a margin."""
        now = self._clock()
        seen = [c for a in self.adapters.values() if (c := a.ceiling_kbps(now)) is not None]
        return bool(seen) and min(seen) * DOWN_MARGIN >= LADDER[AUDIO_ONLY].wire_kbps

    async def _measure(self, seat: Participant) -> None:
        peer = self._media.peer(seat)
        if peer is None or peer.state is not PeerState.CONNECTED:
            self._server_up.pop(seat, None)
            self._server_down.pop(seat, None)
            self._sent_kbps.pop(seat, None)
            self._counters.pop(seat, None)
            return
        stats = await peer.stats()
        kinds = ("audio", "video")
        inbound = [stats.get(f"inbound-rtp:{kind}", {}) for kind in kinds]
        remote = [stats.get(f"remote-inbound-rtp:{kind}", {}) for kind in kinds]
        received = sum(s.get("packetsReceived", 0.0) for s in inbound)
        lost = sum(max(0.0, s.get("packetsLost", 0.0)) for s in inbound)
        # What the browser's receiver reports say it lost of what we sent it, cumulatively (one
        # report's fraction covers a handful of packets of a slow stream), over what we had sent
        # when each report came: both counts then cover the same span, however late the
        # reports come over a congested uplink (what we sent in the meantime is not in it).
        sent = sum(s.get("packetsReceived", 0.0) + s.get("packetsLost", 0.0) for s in remote)
        lost_far = sum(max(0.0, s.get("packetsLost", 0.0)) for s in remote)
        up_loss = down_loss = up_kbps = None
        silent = False
        now = self._clock()
        down_at = now
        # Everything that arrived over the uplink (media, RTCP, retransmissions), as the link
        # counts it: aiortc keeps byte counts per transport only, not per stream.
        transport = stats.get("transport", {})
        wire_in = (
            transport.get("bytesReceived", 0.0)
            + transport.get("packetsReceived", 0.0) * DATAGRAM_BYTES
        )
        wire_out = (
            transport.get("bytesSent", 0.0) + transport.get("packetsSent", 0.0) * DATAGRAM_BYTES
        )
        down_kbps = None
        last = self._counters.get(seat)
        if last is not None and last.peer is peer:
            d_received, d_lost = received - last.received, max(0.0, lost - last.lost)
            silent = d_received <= 0
            if not last.silent and d_received + d_lost >= MIN_PACKETS:
                up_loss = d_lost / (d_received + d_lost)
                if now > last.at:
                    up_kbps = (wire_in - last.wire_in) * 8 / 1000 / (now - last.at)
            if now > last.at:
                down_kbps = (wire_out - last.wire_out) * 8 / 1000 / (now - last.at)
            d_sent, d_lost_far = sent - last.sent, max(0.0, lost_far - last.lost_far)
            if not last.silent and d_sent >= MIN_PACKETS:
                down_loss = min(1.0, d_lost_far / d_sent)
            elif not last.silent:
                # Too few reported since: count on from the same point next time, and keep the
                # last figure while it is recent.
                sent, lost_far, down_at = last.sent, last.lost_far, last.down_at
                if now - last.down_at <= DOWN_LOSS_KEPT_S:
                    down_loss = last.down_loss
        self._counters[seat] = _Counters(
            peer,
            received,
            lost,
            sent,
            lost_far,
            silent=silent,
            wire_in=wire_in,
            wire_out=wire_out,
            at=now,
            down_loss=down_loss,
            down_at=down_at,
        )
        rtts = [s["roundTripTime"] * 1000 for s in remote if s.get("roundTripTime")]
        jitter = inbound[0].get("jitter")
        rtt = max(rtts) if rtts else None
        # The round trip holds both directions' queues; the uplink's is measured on its own,
        # so the downlink's is what is left.  Each sender then steps down for its own queue.
        up_queue = standing = peer.uplink_queue_ms()
        down_queue = None
        if rtt is not None:
            excess = self._base_rtt.setdefault(seat, BaseRtt()).excess(self._clock(), rtt)
            if up_queue is not None:
                # A queue on the uplink lengthens the round trip too: what the arrival times
                # show beyond that is the sender's clock running slow against its timestamps
                # (a sender pacing itself with timers drifts; a capture clock does not).
                up_queue = min(up_queue, max(0.0, excess))
                down_queue = max(0.0, excess - up_queue)
        # Full: its queue stood, or a quarter and more was lost (a tail-drop queue drops that
        # much only when full; random loss on a rural link is a few per cent).
        full = (standing or 0.0) >= ONE_WAY_QUEUE_DOWN_MS or (up_loss or 0.0) >= LOSS_SEVERE
        self._server_up[seat] = LegSample(
            loss=up_loss,
            rtt_ms=rtt,
            jitter_ms=None if jitter is None else jitter / _AUDIO_CLOCK_PER_MS,
            queue_ms=up_queue,
            # What the uplink carried is what it can carry only while it is full.
            carried_kbps=up_kbps if full else None,
        )
        self._server_down[seat] = LegSample(loss=down_loss, rtt_ms=rtt, queue_ms=down_queue)
        if down_kbps is not None:
            self._sent_kbps[seat] = down_kbps

    def _far_loss(self, sender: Participant, peer: Peer, now: float) -> None:
        """The sender's audio crosses the other seat's downlink after the server: report that
        leg's loss back to the sender, whose Opus FEC can then cover it."""
        other = self._media.peer(sender.other)
        if other is None or other.state is not PeerState.CONNECTED:
            return
        loss = self._downlink(sender.other, now).loss
        if loss is not None:
            peer.report_far_loss(loss)

    def _client(self, seat: Participant, now: float) -> ClientReport:
        at, report = self._reports.get(seat, (0.0, ClientReport()))
        return report if now - at <= STALE_S else ClientReport()

    def _measured_up(self, seat: Participant) -> LegSample:
        """What the server measured of ``seat``'s uplink at the last sample."""
        return self._server_up.get(seat, LegSample())

    def _uplink(self, seat: Participant, now: float) -> LegSample:
        c = self._client(seat, now)
        return worst(
            self._measured_up(seat),
            LegSample(rtt_ms=c.rtt_ms, available_kbps=c.available_out_kbps),
        )

    def _downlink(self, seat: Participant, now: float) -> LegSample:
        c = self._client(seat, now)
        down = worst(
            self._server_down.get(seat, LegSample()),
            LegSample(loss=c.in_loss, jitter_ms=c.in_jitter_ms, kbps=c.in_kbps),
        )
        # A downlink losing a quarter and more is full: what it carried is about what the
        # server sent into it less what was lost.  The loss covers a span a little older than
        # the rate, and a higher rate before a step down loses more: the figure counts only to
        # tell a poor link from a collapsed one, never to call a link collapsed.
        sent = self._sent_kbps.get(seat)
        if down.loss is not None and down.loss >= LOSS_SEVERE and sent is not None:
            carried = sent * (1 - down.loss)
            if carried >= COLLAPSE_KBPS:
                down = dataclasses.replace(down, carried_kbps=carried)
        return down

    def _path(self, sender: Participant, now: float) -> LegSample:
        """What ``sender``'s media crosses: its uplink, then the other seat's downlink."""
        uplink = self._uplink(sender, now)
        other = self._media.peer(sender.other)
        if other is None or other.state is not PeerState.CONNECTED:
            return uplink
        downlink = self._downlink(sender.other, now)
        path = worst(uplink, downlink)
        # What the uplink carried says what the path can carry only if the uplink is where
        # the queue is; a sender below a full downlink's rate carries little of its own accord.
        if (downlink.queue_ms or 0.0) > (uplink.queue_ms or 0.0):
            path = dataclasses.replace(path, carried_kbps=downlink.carried_kbps)
        if (downlink.loss or 0.0) > (uplink.loss or 0.0):
            path = dataclasses.replace(path, far=True)
        if path.carried_kbps is None:
            # The other seat's downlink is its uplink's link, the other way: with no figure of
            # its own, what that uplink carried while full is the best guess (village links
            # carry at least as much down as up), so that a sender whose video floods the
            # spoke's downlink goes to the step that fits at once, not one rung at a time.
            path = dataclasses.replace(
                path, carried_kbps=self.adapters[sender.other].ceiling_kbps(now)
            )
        return path

    def network(self) -> dict[Participant, LegView]:
        now = self._clock()
        out = {}
        for seat in Participant:
            up, down = self._uplink(seat, now), self._downlink(seat, now)
            connected = seat in self._server_up
            out[seat] = LegView(
                up=up.grade() if connected else Grade.UNKNOWN,
                down=down.grade() if connected else Grade.UNKNOWN,
                rtt_ms=None if up.rtt_ms is None else round(up.rtt_ms),
                up_loss=None if up.loss is None else round(up.loss, 3),
                down_loss=None if down.loss is None else round(down.loss, 3),
            )
        return out

    def video_paused(self, seat: Participant) -> bool:
        return self.adapters[seat].step.index == AUDIO_ONLY
