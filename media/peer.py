"""One participant's peer connection, terminated on the server.

The browser offers; the server answers with VP8 and Opus only, sends the other participant's
relayed tracks, and taps the received tracks so that their frames reach the relay encoded.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import secrets
from collections.abc import Callable

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from core.settings import IceServer

from . import aiortc_glue
from .frames import EncodedFrame
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
        self._closed = False
        self._pc.on("connectionstatechange", self._state_changed)
        self._pc.on("track", self._track)
        # Transceivers made before the offer arrives carry our codec preferences into the
        # negotiation; the offer's m-lines attach to them in order of kind.
        for kind in ("audio", "video"):
            _prefer_relayable_codecs(self._pc.addTransceiver(kind, direction="sendrecv"))

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
        sender: RTCRtpSender = self._pc.addTrack(SenderView(self._outbound[kind]))
        aiortc_glue.on_keyframe_request(sender, lambda: self._on_keyframe_request(kind))

    async def answer(self, offer_sdp: str) -> str:
        """Answer the browser's offer; returns the answer SDP."""
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
        return _tune_answer(self._pc.localDescription.sdp)

    def hears(self, kind: str) -> bool:
        """Whether media of ``kind`` has arrived from the browser (a keyframe can be asked for)."""
        receiver = self.receivers.get(kind)
        return receiver is not None and bool(receiver.getSynchronizationSources())

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
        report = await self._pc.getStats()
        out: dict[str, dict[str, float]] = {}
        for stat in report.values():
            kind = getattr(stat, "kind", None)
            if stat.type in ("inbound-rtp", "outbound-rtp", "remote-inbound-rtp") and kind:
                out[f"{stat.type}:{kind}"] = {
                    k: float(v)
                    for k, v in vars(stat).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
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


def _prefer_relayable_codecs(transceiver: object) -> None:
    """VP8 and Opus on both legs: a relay that does not transcode must never mix codecs."""
    kind = transceiver.kind  # type: ignore[attr-defined]
    caps = RTCRtpSender.getCapabilities(kind).codecs
    wanted = "video/vp8" if kind == "video" else "audio/opus"
    main = [c for c in caps if c.mimeType.lower() == wanted]
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"] if kind == "video" else []
    transceiver.setCodecPreferences(main + rtx)  # type: ignore[attr-defined]


_OPUS_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000/2$", re.MULTILINE | re.IGNORECASE)


def _tune_answer(sdp: str) -> str:
    """Add our Opus parameters to the answer (aiortc writes none)."""
    lines = sdp.split("\r\n")
    match = next((m for m in map(_OPUS_RTPMAP.match, lines) if m), None)
    if match is None:
        return sdp
    pt = match.group(1)
    fmtp = f"a=fmtp:{pt} {OPUS_FMTP}"
    lines = [ln for ln in lines if not ln.startswith(f"a=fmtp:{pt} ")]
    at = lines.index(match.group(0))
    lines.insert(at + 1, fmtp)
    return "\r\n".join(lines)
