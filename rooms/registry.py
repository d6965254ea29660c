"""Live rooms on this server process: who sits where, media, grace timers and the end.

A room's record (its token, nurse, doctor and state) lives in Redis, written by the waiting
room when a doctor calls a token; the room's media lives on one process, here.  A
:class:`LiveRoom` is created on the first join and removed when the room ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from core.directory import Directory, User
from core.domain import (
    ConsentGiver,
    ConsentMethod,
    EndReason,
    HubId,
    Participant,
    Role,
    RoomId,
    RoomState,
    TokenId,
    UserId,
    room_hub,
)
from core.settings import Settings
from core.store import StoreUnavailable
from core.tasks import TaskOwner
from media import MediaRoom, PeerState
from media.adaptation import Change

from .journal import Archiving, Journal, Previous, load_previous
from .quality import ClientReport, LinkMonitor
from .waiting_room import ROOM_HEARTBEAT_S, Token, WaitingRoom

logger = logging.getLogger(__name__)


class RoomError(Exception):
    code = "room_error"


class RoomNotFound(RoomError):
    code = "room_not_found"


class NotAParticipant(RoomError):
    code = "not_a_participant"


class RoomClosed(RoomError):
    code = "room_ended"


class NodeDraining(RoomError):
    """This process is draining for a restart: it keeps its live rooms but takes no new one."""

    code = "node_draining"


class RoomElsewhere(RoomError):
    """The room is placed on another node: only that node may make it live."""

    code = "room_moved"

    def __init__(self, node: str) -> None:
        super().__init__(f"this consultation is held by node {node}")
        self.node = node


class IllegalTransition(RoomError):
    code = "illegal_transition"


@dataclasses.dataclass(frozen=True)
class RoomEvent:
    """What a room tells the people in it."""

    kind: str  # "peer_state" | "ended" | "replaced" | "consent" | "quality" | "network"
    seat: Participant | None = None
    state: str | None = None
    reason: str | None = None


Listener = Callable[[RoomEvent], None]

_ALLOWED = {
    RoomState.CREATED: {RoomState.ACTIVE, RoomState.ENDED},
    RoomState.ACTIVE: {RoomState.ENDED},
    RoomState.ENDED: set(),
}


class LiveRoom:
    """One consultation's seats and media on this process."""

    def __init__(
        self,
        room_id: RoomId,
        hub: HubId,
        record: dict[str, str],
        token: Token,
        settings: Settings,
        waiting_room: WaitingRoom,
        directory: Directory,
        archiving: Archiving,
        on_ended: Callable[[LiveRoom], None],
        previous: Previous | None = None,
    ) -> None:
        self.id = room_id
        self.hub = hub
        self.token_id = TokenId(record["token"])
        self.nurse = UserId(record["nurse"])
        self.doctor = UserId(record["doctor"])
        self.state = RoomState(record["state"])
        self.history: list[RoomState] = [self.state]
        self._settings = settings
        self._waiting_room = waiting_room
        self._on_ended = on_ended
        self._listeners: dict[Participant, Listener] = {}
        self._grace: dict[Participant, asyncio.Task[None] | None] = {}
        self._tasks = TaskOwner(f"room {room_id}")
        self.media = MediaRoom(
            room_id, settings.ice_servers, self._peer_state, tune=settings.link_tuning
        )
        created_ms = record.get("created_at")
        started_at = (
            datetime.fromtimestamp(int(created_ms) / 1000, UTC)
            if created_ms
            else waiting_room.now()
        )
        self.journal = Journal(
            room_id=room_id,
            hub=hub,
            token=token,
            started_at=started_at,
            directory=directory,
            archiving=archiving,
            clock=waiting_room.now,
            media=self.media,
            previous=previous,
        )
        self.journal.note("called", by=self.doctor, at=started_at)
        self.links = LinkMonitor(
            self.media, on_step=self._quality_step, on_network=self._network_sampled
        )
        # Without link tuning (a comparison run) browsers are left to their own devices.
        if settings.link_tuning:
            self._tasks.spawn(self.links.run(), name="links")
        # The store hears at once, and every beat, that this process holds the room: the
        # keepers' sweep leaves it alone while it lives here, and ends it once we are gone.
        self._tasks.spawn(self._alive(), name="alive")
        if previous is not None:
            self._tasks.spawn(self.journal.resume_recording(), name="resume recording")
        # Seats whose media has come up once: a later "connected" is a reconnection.
        self._media_seen: set[Participant] = set()
        self._media_lost: set[Participant] = set()
        self.end_reason: EndReason | None = None
        self._ending: asyncio.Task[None] | None = None
        # The spoke has the hub's no-show time from the call to join; then the room ends and
        # the token goes a few places back (or, the second time, is dropped).
        self._spoke_joined = False
        if self.state is RoomState.CREATED and record.get("created_at"):
            deadline = int(record["created_at"]) / 1000 + waiting_room.no_show_after_s(hub)
            delay = max(0.0, deadline - waiting_room.now().timestamp())
            self._tasks.spawn(self._no_show_timer(delay), name="no-show")

    def _transition(self, new: RoomState) -> None:
        if new not in _ALLOWED[self.state]:
            raise IllegalTransition(f"room {self.id}: {self.state} -> {new} is not allowed")
        logger.info("room %s: %s -> %s", self.id, self.state, new)
        self.state = new
        self.history.append(new)

    def seat_of(self, user: User) -> Participant:
        return _seat_in({"nurse": self.nurse, "doctor": self.doctor}, user)

    def attach(self, seat: Participant, listener: Listener) -> None:
        """Seat a participant's session; a previous session for the seat is told it was replaced."""
        if self.state is RoomState.ENDED:
            raise RoomClosed("this consultation has ended")
        previous = self._listeners.get(seat)
        self._listeners[seat] = listener
        self._cancel_grace(seat)
        self.journal.note("joined", seat=seat, by=self._username(seat))
        if seat is Participant.SPOKE:
            self._spoke_joined = True
        # Listeners are bound methods: compare with ==, a new bound object is made on each access.
        if previous is not None and previous != listener:
            previous(RoomEvent("replaced", seat=seat))

    def detach(self, seat: Participant, listener: Listener) -> None:
        """A participant's session went away without hanging up: wait, then end the room."""
        if self._listeners.get(seat) != listener:
            return
        del self._listeners[seat]
        if self.state is not RoomState.ENDED:
            self.journal.note("left", seat=seat, by=self._username(seat))
            # The media stays: on a weak link the websocket often drops (a missed pong) while
            # the peer connection lives on, and the page comes back to the same seat.  A closed
            # tab closes its peer connection itself; the grace timer ends the room either way.
            self._broadcast(RoomEvent("peer_state", seat=seat, state="absent"))
            self._start_grace(seat)

    def peer_states(self) -> dict[Participant, str]:
        """Each seat's peer connection state, ``absent`` where the seat has none."""
        out = {}
        for seat in Participant:
            peer = self.media.peer(seat)
            out[seat] = peer.state.value if peer is not None else "absent"
        return out

    async def offer(self, seat: Participant, sdp: str) -> str:
        if self.state is RoomState.ENDED:
            raise RoomClosed("this consultation has ended")
        return await self.media.connect(seat, sdp)

    def _username(self, seat: Participant) -> str:
        return self.nurse if seat is Participant.SPOKE else self.doctor

    def _peer_state(self, seat: Participant, state: PeerState) -> None:
        self._broadcast(RoomEvent("peer_state", seat=seat, state=state.value))
        if state is PeerState.CONNECTED:
            if seat not in self._media_seen:
                self._media_seen.add(seat)
                self.journal.note("media_connected", seat=seat)
            elif seat in self._media_lost:
                self.journal.note("reconnected", seat=seat)
            self._media_lost.discard(seat)
            self._cancel_grace(seat)
            # The consultation takes place when both seats' current peer connections are up at
            # the same moment (asked of the media, not of a set that a departure could leave stale).
            if self.state is RoomState.CREATED and all(
                (peer := self.media.peer(s)) is not None and peer.state is PeerState.CONNECTED
                for s in Participant
            ):
                self._transition(RoomState.ACTIVE)
                self._tasks.spawn(self._activate(), name="activate")
        elif state in (PeerState.FAILED, PeerState.CLOSED):
            if seat in self._media_seen and seat not in self._media_lost:
                self._media_lost.add(seat)
                self.journal.note("reconnecting", seat=seat)
            self._start_grace(seat)

    # ------------------------------------------------------------------ consent

    def _require_live(self) -> None:
        if self.state is RoomState.ENDED:
            raise RoomClosed("this consultation has ended")

    async def record_consent(
        self,
        seat: Participant,
        source: str | None,
        *,
        given_by: ConsentGiver,
        method: ConsentMethod,
        caregiver: str | None,
        relation: str | None,
    ) -> None:
        """The nurse records the patient's consent to recording."""
        self._require_live()
        if seat is not Participant.SPOKE:
            raise NotAParticipant("the nurse records the patient's consent")
        await self.journal.record_consent(
            self.nurse,
            source,
            given_by=given_by,
            method=method,
            caregiver=caregiver,
            relation=relation,
        )
        self._broadcast(RoomEvent("consent", seat=seat))

    async def confirm_consent(self, seat: Participant, source: str | None) -> None:
        """The doctor confirms the consent; recording starts."""
        self._require_live()
        if seat is not Participant.HUB:
            raise NotAParticipant("the doctor confirms the patient's consent")
        await self.journal.confirm_consent(self.doctor, source)
        self._broadcast(RoomEvent("consent", seat=seat))

    async def withdraw_consent(self, seat: Participant, source: str | None) -> None:
        self._require_live()
        await self.journal.withdraw_consent(self._username(seat), seat, source)
        self._broadcast(RoomEvent("consent", seat=seat))

    # ------------------------------------------------------------------ link quality

    def _quality_step(self, seat: Participant, change: Change) -> None:
        self.journal.note(
            "quality_step",
            seat=seat,
            step=change.step.index,
            label=change.step.label,
            reason=change.reason,
        )
        self._broadcast(RoomEvent("quality", seat=seat, reason=change.reason))

    def _network_sampled(self) -> None:
        self._broadcast(RoomEvent("network"))

    def link_report(
        self,
        seat: Participant,
        report: ClientReport,
        probe_kbps: float | None,
        brake: bool = False,
    ) -> None:
        self._require_live()
        self.links.report(seat, report)
        if probe_kbps is not None and self._settings.link_tuning:
            self.links.probe(seat, probe_kbps)
        if brake and self._settings.link_tuning:
            self.links.brake(seat)

    def set_low_bandwidth(self, seat: Participant, on: bool) -> None:
        """The nurse's switch (the spoke's link is the weak one)."""
        self._require_live()
        if seat is not Participant.SPOKE:
            raise NotAParticipant("the nurse switches low-bandwidth mode")
        if on != self.links.low_bandwidth:
            self.journal.note("low_bandwidth", seat=seat, by=self.nurse, on=on)
            self.links.set_low_bandwidth(on)
            for s in Participant:
                self._broadcast(RoomEvent("quality", seat=s, reason="low_bandwidth"))

    def hang_up(self, seat: Participant) -> asyncio.Task[None]:
        if self.state is not RoomState.ENDED:
            self.journal.note("hangup", seat=seat, by=self._username(seat))
        return self.end(EndReason.HANGUP)

    async def _activate(self) -> None:
        try:
            await self._waiting_room.activate_room(self.hub, self.id)
        except StoreUnavailable as exc:
            # The call goes on; the token's state catches up when the room ends.
            logger.warning("room %s: could not mark the token in consultation: %s", self.id, exc)

    def _start_grace(self, seat: Participant) -> None:
        if self.state is RoomState.ENDED or self._grace.get(seat) is not None:
            return
        self._grace[seat] = self._tasks.spawn(self._grace_timer(seat), name=f"grace {seat}")

    def _cancel_grace(self, seat: Participant) -> None:
        task = self._grace.pop(seat, None)
        if task is not None:
            task.cancel()

    async def _alive(self) -> None:
        """Refresh the room's ``alive_at`` in the store every beat until the room ends here.

        Best effort: a beat the store misses is tried again at the next one, and nothing here
        ends the room.
        """
        told = False
        while True:
            try:
                stored = await self._waiting_room.touch_room(self.hub, self.id)
            except StoreUnavailable as exc:
                logger.debug("room %s: heartbeat not recorded (%s)", self.id, exc)
            except Exception:
                logger.exception("room %s: heartbeat failed", self.id)
            else:
                if stored not in (RoomState.CREATED, RoomState.ACTIVE) and not told:
                    told = True
                    # A sweep ended it while this process could not beat (or it was ended
                    # from elsewhere); the call goes on here, the token keeps the store's word.
                    logger.warning("room %s: the store has it %s", self.id, stored)
            await asyncio.sleep(ROOM_HEARTBEAT_S)

    async def _no_show_timer(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._spoke_joined and self.state is RoomState.CREATED:
            logger.info("room %s: the spoke did not join in time", self.id)
            self.end(EndReason.NO_SHOW)

    async def _grace_timer(self, seat: Participant) -> None:
        await asyncio.sleep(self._settings.room_grace_s)
        self._grace.pop(seat, None)
        logger.info(
            "room %s: %s did not come back within %.1fs", self.id, seat, self._settings.room_grace_s
        )
        self.end(EndReason.PEER_LOST)

    def end(self, reason: EndReason) -> asyncio.Task[None]:
        """End the room for both seats (idempotent); the returned task finishes the cleanup."""
        if self._ending is None:
            self.end_reason = reason
            self.journal.ending = True
            self._transition(RoomState.ENDED)
            self._broadcast(RoomEvent("ended", reason=reason.value))
            self._listeners.clear()
            self._ending = asyncio.get_running_loop().create_task(
                self._finish(reason), name=f"room {self.id}: end"
            )
        return self._ending

    async def _finish(self, reason: EndReason) -> None:
        try:
            await self._tasks.close()
            await self.media.close()
            try:
                await self.journal.seal(reason)
            except Exception:
                # The waiting room must still learn that the room ended.
                logger.exception("room %s: could not write its record", self.id)
            await self.journal.close()
            for attempt in range(5):
                try:
                    outcome = await self._waiting_room.end_room(
                        self.hub, self.id, reason.value, took_place=RoomState.ACTIVE in self.history
                    )
                    logger.info(
                        "room %s ended (%s); token %s %s", self.id, reason, self.token_id, outcome
                    )
                    break
                except StoreUnavailable as exc:
                    logger.warning("room %s: cannot record the end yet (%s)", self.id, exc)
                    await asyncio.sleep(0.5 * (attempt + 1))
        finally:
            self._on_ended(self)

    def _broadcast(self, event: RoomEvent) -> None:
        for listener in list(self._listeners.values()):
            listener(event)


def _seat_in(record: dict[str, str], user: User) -> Participant:
    if user.role is Role.NURSE and user.id == record["nurse"]:
        return Participant.SPOKE
    if user.role is Role.DOCTOR and user.id == record["doctor"]:
        return Participant.HUB
    raise NotAParticipant("only the nurse and the doctor of this consultation may join it")


class RoomRegistry:
    """The live rooms of this process (every add has its remove in :meth:`LiveRoom.end`)."""

    def __init__(
        self,
        settings: Settings,
        waiting_room: WaitingRoom,
        directory: Directory,
        archiving: Archiving,
    ) -> None:
        self._settings = settings
        self._waiting_room = waiting_room
        self._directory = directory
        self._archiving = archiving
        self._rooms: dict[RoomId, LiveRoom] = {}
        self._loading: dict[RoomId, asyncio.Lock] = {}
        self._ending: set[asyncio.Task[None]] = set()
        self._closing = False
        self._draining = False

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[LiveRoom]:
        """The rooms live on this process now (a copy: rooms may end while it is read)."""
        return iter(list(self._rooms.values()))

    def get(self, room_id: RoomId) -> LiveRoom | None:
        return self._rooms.get(room_id)

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        """Take no new rooms from now on (idempotent); the live ones go on until they end.

        A join of a room that is not live here is refused with :class:`NodeDraining`, so that the
        client tries again and the load balancer sends it to another process.
        """
        if not self._draining:
            self._draining = True
            logger.info("rooms: draining, %d live", len(self._rooms))

    async def open(self, room_id: str, user: User) -> tuple[LiveRoom, Participant]:
        """The live room for ``room_id`` and ``user``'s seat in it.

        The room's record is loaded from the store on first use, and only for one of its two
        participants: nobody else can make a room live on this process.
        """
        try:
            hub = room_hub(room_id)
        except ValueError:
            raise RoomNotFound("no such consultation") from None
        rid = RoomId(room_id)
        live = self._rooms.get(rid)
        if live is None:
            # The two seats' joins may come at once: one loads the room (and seals what an
            # earlier life left, on disk), the other waits for it.
            lock = self._loading.setdefault(rid, asyncio.Lock())
            try:
                async with lock:
                    live = self._rooms.get(rid) or await self._load(rid, hub, user)
            finally:
                if not lock.locked():
                    self._loading.pop(rid, None)
        if live.state is RoomState.ENDED:
            raise RoomClosed("this consultation has ended")
        return live, live.seat_of(user)

    async def _load(self, rid: RoomId, hub: HubId, user: User) -> LiveRoom:
        """Make the room live here from its record in the store (see :meth:`open`)."""
        if self._draining:
            raise NodeDraining("this server is restarting; join again to reach another one")
        record = await self._waiting_room.room(hub, rid)
        if record is None:
            raise RoomNotFound("no such consultation")
        if record["state"] == RoomState.ENDED:
            raise RoomClosed("this consultation has ended")
        placed = record.get("node", "")
        if placed and placed != self._settings.node_id:
            raise RoomElsewhere(placed)
        _seat_in(record, user)
        token = await self._waiting_room.token(hub, TokenId(record["token"]))
        if token is None:
            raise RoomNotFound("this consultation's token is missing")
        # A room that is placed here and open in the store but not live here lost its
        # process (this node restarted, or the room was moved here from a node that died):
        # pick up what its earlier life recorded.
        previous = await asyncio.to_thread(
            load_previous, self._archiving, rid, self._waiting_room.now()
        )
        if self._closing:
            raise RoomClosed("the server is shutting down")
        if self._draining:
            raise NodeDraining("this server is restarting; join again to reach another one")
        live = LiveRoom(
            rid,
            hub,
            record,
            token,
            self._settings,
            self._waiting_room,
            self._directory,
            self._archiving,
            self._removed,
            previous,
        )
        self._rooms[rid] = live
        return live

    def _removed(self, room: LiveRoom) -> None:
        self._rooms.pop(room.id, None)

    async def close(self) -> None:
        """End every live room (server shutdown) and wait until each is cleaned up."""
        self._closing = True
        ending = [room.end(EndReason.SHUTDOWN) for room in list(self._rooms.values())]
        if ending:
            await asyncio.gather(*ending, return_exceptions=True)
