"""The media of one consultation: two seats, each a browser's peer connection, relayed.

Frames received from one seat go, still encoded, into the relay tracks that the other seat's
peer connection sends.  A seat may be re-connected (a new peer connection replaces the old):
the relay tracks stay, so the other side only sees a short gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from core.domain import Participant
from core.settings import IceServer
from core.tasks import TaskOwner

from .frames import EncodedFrame
from .peer import Peer, PeerState
from .relay import KeyframeLimiter, RelayTrack

logger = logging.getLogger(__name__)

KINDS = ("audio", "video")

PeerStateCallback = Callable[[Participant, PeerState], None]


class MediaConsumer(Protocol):
    """Something besides the other seat that takes a room's encoded frames (the recorder).

    ``push`` runs on the event loop for every frame a seat sends; it must not block.
    ``source`` is the seat's current peer connection: it changes when the seat reconnects.
    """

    def push(self, seat: Participant, kind: str, frame: EncodedFrame, source: object) -> None: ...


class MediaRoom:
    """Relays audio and video between the spoke seat and the hub seat of a room."""

    def __init__(
        self,
        label: str,
        ice_servers: tuple[IceServer, ...],
        on_peer_state: PeerStateCallback,
        *,
        tune: bool = True,
    ) -> None:
        self.label = label
        self._tune = tune
        self._ice_servers = ice_servers
        self._on_peer_state = on_peer_state
        self._tasks = TaskOwner(f"media {label}")
        self._peers: dict[Participant, Peer] = {}
        self._seat_locks = {seat: asyncio.Lock() for seat in Participant}
        self._closing: set[asyncio.Future[None]] = set()
        self._closed = False
        self._consumers: list[MediaConsumer] = []
        #: ``outbound[seat][kind]`` is what ``seat`` receives: the other seat's media.
        self.outbound: dict[Participant, dict[str, RelayTrack]] = {}
        self._keyframe: dict[Participant, KeyframeLimiter] = {}
        for seat in Participant:
            source = seat.other
            self._keyframe[source] = KeyframeLimiter(
                lambda source=source: self._request_keyframe(source)  # type: ignore[misc]
            )
            self.outbound[seat] = {
                kind: RelayTrack(
                    kind, self._keyframe[source], label=f"{label}:{source}->{seat}:{kind}"
                )
                for kind in KINDS
            }

    def peer(self, seat: Participant) -> Peer | None:
        return self._peers.get(seat)

    async def connect(self, seat: Participant, offer_sdp: str) -> str:
        """Answer a seat's offer, replacing the seat's previous peer connection if any."""
        # One negotiation per seat at a time: a late offer from a replaced page waits its turn
        # instead of racing the new page's, and each removes only its own peer.
        async with self._seat_locks[seat]:
            return await self._connect(seat, offer_sdp)

    async def _connect(self, seat: Participant, offer_sdp: str) -> str:
        if self._closed:
            raise RuntimeError("media room is closed")
        old = self._peers.pop(seat, None)
        if old is not None:
            await self._close_peer(old)
            if self._closed:
                raise RuntimeError("media room is closed")
        peer = Peer(
            label=f"{self.label}:{seat}",
            ice_servers=self._ice_servers,
            outbound=self.outbound[seat],
            sink=lambda kind, frame, src, seat=seat: self._relay(seat, kind, frame, src),  # type: ignore[misc]
            on_state=lambda p, state, seat=seat: self._peer_state(seat, p, state),  # type: ignore[misc]
            on_keyframe_request=lambda kind, seat=seat: self._keyframe[seat.other](),  # type: ignore[misc]
            tune=self._tune,
        )
        self._peers[seat] = peer
        try:
            answer = await peer.answer(offer_sdp)
        except BaseException:
            if self._peers.get(seat) is peer:
                del self._peers[seat]
            await self._close_peer(peer)
            raise
        # A new receiver can only start decoding from a keyframe.
        self.outbound[seat]["video"].restart_from_keyframe()
        return answer

    def _relay(self, source: Participant, kind: str, frame: EncodedFrame, peer: object) -> None:
        if self._peers.get(source) is peer:
            self.outbound[source.other][kind].push(frame, peer)
            for consumer in self._consumers:
                consumer.push(source, kind, frame, peer)

    def add_consumer(self, consumer: MediaConsumer) -> None:
        """Send every frame from now on to ``consumer`` too, and ask both seats for a keyframe."""
        self._consumers.append(consumer)
        for seat in Participant:
            self.request_keyframe(seat)

    def remove_consumer(self, consumer: MediaConsumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    def request_keyframe(self, seat: Participant) -> None:
        """Ask ``seat``'s browser for a video keyframe (rate-limited)."""
        self._keyframe[seat]()

    def _peer_state(self, seat: Participant, peer: Peer, state: PeerState) -> None:
        if self._peers.get(seat) is not peer:
            return  # a replaced peer connection no longer speaks for its seat
        self._on_peer_state(seat, state)

    def _request_keyframe(self, source: Participant) -> bool:
        peer = self._peers.get(source)
        if peer is None or not peer.hears("video"):
            return False
        self._tasks.spawn(peer.request_keyframe("video"), name=f"pli {source}")
        return True

    async def _close_peer(self, peer: Peer) -> None:
        """Close a peer connection to the end even if the caller is cancelled meanwhile: a
        half-closed one would keep its sockets and threads.  :meth:`close` waits for these."""
        task = asyncio.ensure_future(peer.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        await asyncio.shield(task)

    async def disconnect(self, seat: Participant) -> None:
        peer = self._peers.pop(seat, None)
        if peer is not None:
            await self._close_peer(peer)

    async def close(self) -> None:
        """Close both peer connections and every relay track (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._consumers.clear()
        for seat in list(self._peers):
            await self.disconnect(seat)
        for tracks in self.outbound.values():
            for track in tracks.values():
                track.stop()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self._tasks.close()
        logger.info("media room %s closed", self.label)
