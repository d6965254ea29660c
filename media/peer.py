"""One participant's peer connection, terminated on the server.

The browser offers; the server answers with VP8 and Opus only (Opus inside RED when the
browser offers RED first), sends the other participant's relayed tracks, and taps the received
tracks so that their frames reach the relay encoded.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import secrets
import time
from collections.abc import Callable

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from core.settings import IceServer

from . import aiortc_glue
from .frames import EncodedFrame
from .red import RedWriter
from .relay import RelayTrack, SenderView

logger = logging.getLogger(__name__)


class PeerState(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    CLOSED = "closed"


_PC_STATES = {
    "new": PeerState.NEW,
    "connecting": PeerState.CONNECTING,
    "connected": PeerState.CONNECTED,
    "disconnected": PeerState.DISCONNECTED,
    "failed": PeerState.FAILED,
    "closed": PeerState.CLOSED,
}

#: What the server asks of the browsers' Opus encoders: mono speech, in-band FEC so the far
#: browser can conceal a lost packet, DTX in silence, and a cap that leaves room for video.
OPUS_FMTP = "minptime=10;useinbandfec=1;usedtx=1;stereo=0;sprop-stereo=0;maxaveragebitrate=32000"

FrameSink = Callable[[str, EncodedFrame, object], None]


class NegotiationError(Exception):
    """The browser's offer cannot be answered (no audio or video we can relay, bad SDP)."""


def rtc_configuration(servers: tuple[IceServer, ...]) -> RTCConfiguration:
    # An explicit list, even empty: aiortc's default is a public STUN server that stalls
    # gathering for seconds on a closed network.
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers
        ]
    )


class Peer:
    """The server end of one participant's ``RTCPeerConnection``."""

    def __init__(
        self,
        label: str,
        ice_servers: tuple[IceServer, ...],
        outbound: dict[str, RelayTrack],
        sink: FrameSink,
        on_state: Callable[[Peer, PeerState], None],
        on_keyframe_request: Callable[[str], None],
        tune: bool = True,
    ) -> None:
        self.id = secrets.token_hex(3)
        #: Loss-tolerant jitter buffers; off leaves aiortc's own (for comparisons).
        self._tune = tune
        self.label = f"{label}/{self.id}"
        self._pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self._outbound = outbound
        self._sink = sink
        self._on_state = on_state
        self._on_keyframe_request = on_keyframe_request
        self.state = PeerState.NEW
        self.receivers: dict[str, RTCRtpReceiver] = {}
        self._views: dict[str, SenderView] = {}
        self._senders: dict[str, RTCRtpSender] = {}
        self._video_pace: float | None = None
        self._estimate_cap: float | None = None
        self._hushed = False
        self._red: RedWriter | None = None
        self._closed = False
        self._pc.on("connectionstatechange", self._state_changed)
        self._pc.on("track", self._track)
        # Transceivers made before the offer arrives carry our codec preferences into the
        # negotiation; the offer's m-lines attach to them in order of kind.
        self._transceivers = {
            kind: self._pc.addTransceiver(kind, direction="sendrecv") for kind in ("audio", "video")
        }
        for transceiver in self._transceivers.values():
            _prefer_relayable_codecs(transceiver, red=False)

    def _state_changed(self) -> None:
        new = _PC_STATES.get(self._pc.connectionState, PeerState.FAILED)
        if new is self.state or self.state is PeerState.CLOSED:
            return
        logger.info("peer %s: %s -> %s", self.label, self.state, new)
        self.state = new
        self._on_state(self, new)

    def _track(self, track: MediaStreamTrack) -> None:
        kind = track.kind
        if kind not in self._outbound or kind in self.receivers:
            return
        receiver = next(t.receiver for t in self._pc.getTransceivers() if t.receiver.track is track)
        resync = (
            aiortc_glue.tune_receiver(
                receiver,
                kind,
                label=self.label,
                rtt=lambda: aiortc_glue.round_trip_time(self._pc),
            )
            if self._tune
            else _nothing
        )
        loop = asyncio.get_running_loop()
        aiortc_glue.tap_track(
            track,
            aiortc_glue.FrameTap(
                loop,
                on_frame=lambda frame: self._sink(kind, frame, self),
                on_end=lambda: None,
                on_overflow=resync,
            ),
            receiver,
        )
        self.receivers[kind] = receiver
        view = self._views[kind] = SenderView(self._outbound[kind])
        sender: RTCRtpSender = self._pc.addTrack(view)
        self._senders[kind] = sender
        aiortc_glue.on_keyframe_request(sender, lambda: self._on_keyframe_request(kind))

    async def answer(self, offer_sdp: str) -> str:
        """Answer the browser's offer; returns the answer SDP."""
        # RED only for a browser that asks for it (lists it before Opus): an answer that puts RED
        # first makes the other end send it, and an aiortc client would try to encode into it.
        _prefer_relayable_codecs(self._transceivers["audio"], red=_offers_red_first(offer_sdp))
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError, OperationError and others
            raise NegotiationError(f"cannot use the offer: {exc}") from exc
        if set(self.receivers) != {"audio", "video"}:
            raise NegotiationError("the offer must send both audio and video")
        try:
            answer = await self._pc.createAnswer()
            await self._pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises bare exceptions on codec mismatch
            raise NegotiationError(f"cannot answer the offer: {exc}") from exc
        opus_pt = aiortc_glue.sends_red(self._transceivers["audio"])
        if opus_pt is not None:
            self._red = RedWriter(opus_pt)
            self._views["audio"].wrap = self._red.wrap
            logger.info("peer %s: audio as RED", self.label)
        return _tune_answer(self._pc.localDescription.sdp)

    @property
    def red(self) -> bool:
        """Whether this leg negotiated RED: audio both ways carries copies of earlier frames."""
        return self._red is not None

    def set_audio_redundancy(self, on: bool) -> None:
        """Whether the audio sent to this browser carries a copy of the previous frame (when the
        leg negotiated RED): it doubles the audio's payload, for a downlink that can afford it."""
        if self._red is not None and self._red.redundancy != on:
            self._red.redundancy = on
            logger.info("peer %s: audio redundancy %s", self.label, "on" if on else "off")

    def hears(self, kind: str) -> bool:
        """Whether media of ``kind`` has arrived from the browser (a keyframe can be asked for)."""
        receiver = self.receivers.get(kind)
        return receiver is not None and bool(receiver.getSynchronizationSources())

    def pace_video(self, kbps: float | None) -> None:
        """Send the relayed video no faster than ``kbps`` (``None``: as it comes)."""
        sender = self._senders.get("video")
        if sender is None or kbps == self._video_pace:
            return
        self._video_pace = kbps
        aiortc_glue.pace(sender, kbps)
        pace = "no limit" if kbps is None else f"{kbps:g} kbit/s" if kbps else "nothing sent"
        logger.info("peer %s: video paced at %s", self.label, pace)

    async def cap_estimate(self, kbps: float | None) -> None:
        """Cap the bandwidth estimate the browser gets from the server (REMB, over RTCP: it
        arrives within a round trip however congested the websocket is); ``None`` lifts it.
        Each call while capped sends the cap again: on a failing link one may be lost."""
        receiver = self.receivers.get("video")
        if receiver is None or self._closed or (kbps is None and self._estimate_cap is None):
            return
        if kbps != self._estimate_cap:
            cap = "lifted" if kbps is None else f"{kbps:g} kbit/s"
            logger.info("peer %s: bandwidth estimate cap %s", self.label, cap)
        self._estimate_cap = kbps
        await aiortc_glue.cap_remb(receiver, kbps)

    def hush_video(self, on: bool) -> None:
        """While ``on``, the server asks the browser for no retransmission and no keyframe of
        its video (paused on audio only: what it still sends takes its audio's room)."""
        receiver = self.receivers.get("video")
        if receiver is None or self._closed or on == self._hushed:
            return
        self._hushed = on
        logger.info("peer %s: video requests %s", self.label, "off" if on else "on")
        aiortc_glue.hush(receiver, on)

    def uplink_queue_ms(self) -> float | None:
        """The standing queue on the browser's uplink, from its audio's arrival times (``None``
        with aiortc's own jitter buffers, or while no audio arrives)."""
        receiver = self.receivers.get("audio")
        if receiver is None or self._closed:
            return None
        buffer = aiortc_glue.jitter_buffer(receiver)
        if not isinstance(buffer, aiortc_glue.ImmediateJitterBuffer):
            return None
        return buffer.delay.queue_ms(time.monotonic())

    def report_far_loss(self, loss: float) -> None:
        """Tell the browser (in the receiver reports of its audio) that at least ``loss`` of
        its packets are lost: what the leg beyond the server loses, so that its Opus encoder
        adds as much in-band FEC as that leg needs."""
        receiver = self.receivers.get("audio")
        if receiver is not None and not self._closed:
            aiortc_glue.report_loss_floor(receiver, loss)

    async def request_keyframe(self, kind: str) -> None:
        receiver = self.receivers.get(kind)
        if receiver is not None and not self._closed:
            await aiortc_glue.request_keyframe(receiver)

    async def stats(self) -> dict[str, dict[str, float]]:
        """aiortc's statistics by ``type:kind`` (``inbound-rtp:video``, ...), numbers only;
        ``transport`` sums the transports' counters (with BUNDLE there is one): the only
        received byte counts aiortc keeps, every datagram's UDP payload."""
        report = await self._pc.getStats()
        out: dict[str, dict[str, float]] = {}
        transport: dict[str, float] = {}
        for stat in report.values():
            kind = getattr(stat, "kind", None)
            numbers = {
                k: float(v)
                for k, v in vars(stat).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            if stat.type in ("inbound-rtp", "outbound-rtp", "remote-inbound-rtp") and kind:
                out[f"{stat.type}:{kind}"] = numbers
            elif stat.type == "transport":
                for k, v in numbers.items():
                    transport[k] = transport.get(k, 0.0) + v
        if transport:
            out["transport"] = transport
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pc.close()
        if self.state is not PeerState.CLOSED:
            logger.info("peer %s: %s -> closed", self.label, self.state)
            self.state = PeerState.CLOSED


def _nothing() -> None:
    """What to do about frames lost after aiortc's own jitter buffer: nothing it can help."""


def _prefer_relayable_codecs(transceiver: RTCRtpTransceiver, red: bool) -> None:
    """VP8 and Opus on both legs: a relay that does not transcode must never mix codecs.

    With ``red``, RED comes first for audio: an answer lists the offer's codecs in this order,
    and a browser sends RED only when the answer puts it before Opus.
    """
    kind = transceiver.kind
    caps = RTCRtpSender.getCapabilities(kind).codecs
    audio = [aiortc_glue.RED_MIME, "audio/opus"] if red else ["audio/opus"]
    wanted = ["video/vp8"] if kind == "video" else audio
    main = [c for w in wanted for c in caps if c.mimeType.lower() == w]
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"] if kind == "video" else []
    transceiver.setCodecPreferences(main + rtx)


def _offers_red_first(sdp: str) -> bool:
    """Whether the offer's audio lists RED before Opus (what Setu's pages do)."""
    rtpmaps = {m.group(1): m.group(0) for m in _ANY_RTPMAP.finditer(sdp)}
    for line in sdp.splitlines():
        if line.startswith("m=audio "):
            for pt in line.split()[3:]:
                rtpmap = rtpmaps.get(pt, "")
                if _RED_RTPMAP.match(rtpmap):
                    return True
                if _OPUS_RTPMAP.match(rtpmap):
                    return False
    return False


_OPUS_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000/2$", re.MULTILINE | re.IGNORECASE)
_RED_RTPMAP = re.compile(r"^a=rtpmap:(\d+) red/48000/2$", re.MULTILINE | re.IGNORECASE)
_ANY_RTPMAP = re.compile(r"^a=rtpmap:(\d+) [^\r\n]*", re.MULTILINE)


def _tune_answer(sdp: str) -> str:
    """Add our Opus parameters to the answer, and RED's (one earlier Opus frame per packet):
    aiortc writes neither, and a browser sends RED only with them."""
    lines = sdp.split("\r\n")
    match = next((m for m in map(_OPUS_RTPMAP.match, lines) if m), None)
    if match is None:
        return sdp
    pt = match.group(1)
    _set_fmtp(lines, match.group(0), pt, OPUS_FMTP)
    red = next((m for m in map(_RED_RTPMAP.match, lines) if m), None)
    if red is not None:
        _set_fmtp(lines, red.group(0), red.group(1), f"{pt}/{pt}")
    return "\r\n".join(lines)


def _set_fmtp(lines: list[str], rtpmap: str, pt: str, params: str) -> None:
    lines[:] = [ln for ln in lines if not ln.startswith(f"a=fmtp:{pt} ")]
    lines.insert(lines.index(rtpmap) + 1, f"a=fmtp:{pt} {params}")
