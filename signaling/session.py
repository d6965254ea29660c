"""One client's session: an actor with one reader, one writer and a bounded outbox.

The reader validates each message (:func:`parse_message`) and dispatches it; everything the
session says goes through :meth:`Session.post`, which never blocks.  A client that lets its
outbox fill is disconnected rather than allowed to slow down anyone else.

The client is a browser's websocket, or (on the node that holds a room) a link from the node
where that browser's websocket landed (:mod:`signaling.bus`).  A session on the websocket
whose room is on another node forwards the room's messages over such a link and relays what
comes back; when the link is lost (that node died, the room moves), it closes the websocket
with :data:`CLOSE_RECONNECT`, and the page reconnects and joins again, as after a network
change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets

from aiohttp import WSCloseCode

from core.directory import Directory, User
from core.domain import EndReason, HubId, Participant, Role, SpokeId, TokenId
from core.settings import Settings
from core.store import StoreUnavailable
from core.tasks import TaskOwner
from core.turn import client_ice_servers
from media import NegotiationError
from rooms import (
    ClientReport,
    ConsentError,
    HubFeed,
    HubSnapshot,
    LiveRoom,
    Patient,
    RoomError,
    RoomEvent,
    RoomRegistry,
    Subscription,
    WaitingRoom,
    WaitingRoomError,
)

from . import messages as m
from .bus import CLOSE_NORMAL, Link, NodeBus
from .routing import Router
from .transport import CLOSE_TOO_SLOW, Transport
from .views import queue_for, token_out

logger = logging.getLogger(__name__)

#: Close codes of our own (4000-4999 are for applications).
CLOSE_REPLACED = 4009
#: The consultation's server is gone or the room moved: reconnect and join again.
CLOSE_RECONNECT = 4010

#: Messages about the joined room: sent on to the room's node when it is another one.
ROOM_MESSAGES = (
    m.Offer,
    m.Hangup,
    m.RecordConsent,
    m.ConfirmConsent,
    m.WithdrawConsent,
    m.LinkReport,
    m.SetLowBandwidth,
    m.GetIceServers,
)
#: Refusals of a forwarded join after which the edge finds the room's node again and retries.
_RELOCATE = ("room_moved", "node_draining")
_JOIN_ATTEMPTS = 3


def _peek(text: str) -> dict[str, object]:
    """The reply fields of a message the room's node encoded (it is ours: no validation)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class Forbidden(Exception):
    code = "forbidden"


class Session:
    """A signed-in user's connection: a websocket, or a link from another node."""

    def __init__(
        self,
        transport: Transport,
        user: User,
        settings: Settings,
        directory: Directory,
        waiting_room: WaitingRoom,
        feed: HubFeed,
        rooms: RoomRegistry,
        remote: str | None = None,
        *,
        router: Router | None = None,
        bus: NodeBus | None = None,
    ) -> None:
        self.id = secrets.token_hex(3)
        #: The client's address, as the audit log records it.
        self.remote = remote
        self.transport = transport
        self.user = user
        self._settings = settings
        self._directory = directory
        self._waiting_room = waiting_room
        self._feed = feed
        self._rooms = rooms
        self._router = router
        self._bus = bus
        #: Messages, or text already encoded by the room's node, for the client.
        self._outbox: asyncio.Queue[m.ServerMessage | str | None] = asyncio.Queue(
            settings.outbox_size
        )
        self._tasks = TaskOwner(f"session {self.id}")
        self._subscription: Subscription | None = None
        self._room: LiveRoom | None = None
        self._seat: Participant | None = None
        #: The link to the room's node, when it is another node.
        self._link: Link | None = None
        self._link_join: tuple[m.Join, str, int] | None = None
        self._negotiating: asyncio.Lock = asyncio.Lock()
        self._writer_task: asyncio.Task[None] | None = None
        self.label = f"{self.id}({user.username})"

    # ------------------------------------------------------------------ the writer

    def post(self, message: m.ServerMessage | str) -> None:
        """Queue a message for the client; drops the client if it cannot keep up."""
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("session %s: outbox full, disconnecting", self.label)
            self._close_soon(CLOSE_TOO_SLOW, b"too slow")

    def _close_soon(self, code: int, message: bytes) -> None:
        self._tasks.spawn(self.transport.close(code, message), "close")

    async def _writer(self) -> None:
        while (message := await self._outbox.get()) is not None:
            try:
                await self.transport.send(
                    message if isinstance(message, str) else m.encode(message)
                )
            except ConnectionError:
                return

    # ------------------------------------------------------------------ the reader

    async def run(self) -> None:
        self._writer_task = self._tasks.spawn(self._writer(), name="writer")
        user = self.user
        if self.transport.one_room:
            await self._serve_link()
            return
        self.post(
            m.Welcome(
                user=m.UserOut(
                    username=user.username,
                    name=user.name,
                    role=user.role.value,
                    hub=user.hub,
                    spoke=user.spoke,
                ),
                node=self._settings.node_id,
                heartbeat_s=self._settings.heartbeat_s,
            )
        )
        logger.info("session %s: open", self.label)
        try:
            async for frame in self.transport.frames():
                if isinstance(frame, str):
                    await self._handle_text(frame)
                else:
                    self.post(m.Error(code="bad_message", message="binary frames are not used"))
        finally:
            await self._cleanup()

    async def _serve_link(self) -> None:
        """A seat for a client whose websocket is on another node: the room's messages only,
        and the session ends with the room (or when the other node closes the link)."""
        logger.info("session %s: linked from another node", self.label)
        try:
            async for frame in self.transport.frames():
                if isinstance(frame, str):
                    await self._handle_text(frame)
                if self._room is None:
                    break
        finally:
            await self._cleanup()

    async def _handle_text(self, raw: str) -> None:
        try:
            message = m.parse_message(raw)
        except m.ProtocolError as exc:
            self.post(m.Error(code=exc.code, message=exc.message, re=exc.request_id))
            return
        try:
            if self._link is not None and isinstance(message, ROOM_MESSAGES):
                await self._link.forward(raw)
                return
            await self._dispatch(message, raw)
        except (WaitingRoomError, RoomError, Forbidden, NegotiationError, ConsentError) as exc:
            code = getattr(exc, "code", "negotiation_failed")
            self.post(m.Error(code=code, message=str(exc), re=message.id))
        except StoreUnavailable:
            self.post(
                m.Error(
                    code="store_unavailable",
                    message="the queue service is unreachable right now; please try again shortly",
                    re=message.id,
                )
            )
        except Exception:
            # A bug must not end the session (and with it a live consultation's seat).
            logger.exception("session %s: %s failed", self.label, message.type)
            self.post(
                m.Error(
                    code="internal",
                    message="the server could not do this; it has been logged",
                    re=message.id,
                )
            )

    async def _dispatch(self, msg: m.ClientMessage, raw: str) -> None:
        match msg:
            case m.Ping():
                self.post(m.Pong(re=msg.id))
                if self._subscription is not None:
                    # Pages ping every heartbeat: presence by heartbeat, not by the socket.
                    await self._present(self._subscription.hub)
            case m.WatchQueue():
                await self._watch_queue(msg)
            case m.RegisterPatient():
                await self._register(msg)
            case m.CancelToken():
                await self._cancel(msg)
            case m.CallNext():
                await self._call_next(msg)
            case m.SkipToken():
                await self._skip(msg)
            case m.RecallToken():
                await self._recall(msg)
            case m.Join():
                await self._join(msg, raw)
            case m.Offer():
                await self._offer(msg)
            case m.Hangup():
                self._hangup(msg)
            case m.RecordConsent() | m.ConfirmConsent() | m.WithdrawConsent():
                await self._consent(msg)
            case m.LinkReport():
                self._link_report(msg)
            case m.SetLowBandwidth():
                self._low_bandwidth(msg)
            case m.GetIceServers():
                self._seated()
                # A new peer connection (after a network change) needs credentials that have
                # not expired since the join.
                self.post(m.IceServers(ice_servers=self._ice_servers(), re=msg.id))

    def _require(self, *roles: Role) -> None:
        if self.user.role not in roles:
            raise Forbidden(f"a {self.user.role} may not do this")

    # ------------------------------------------------------------------ waiting room

    def _hub(self) -> HubId:
        hub = self._directory.hub_of(self.user)
        if hub is None:
            raise Forbidden("only nurses and doctors have a queue")
        return hub

    async def _watch_queue(self, msg: m.WatchQueue) -> None:
        self._require(Role.NURSE, Role.DOCTOR)
        hub = self._hub()
        if self._subscription is None:
            self._subscription = self._feed.subscribe(hub, self._queue_changed)
        await self._present(hub)
        snapshot = await self._waiting_room.snapshot(hub)
        self.post(self._queue_view(snapshot).model_copy(update={"re": msg.id}))

    async def _present(self, hub: HubId) -> None:
        """Best effort: presence feeds estimates and passing-over, never a reply of its own."""
        try:
            if self.user.role is Role.DOCTOR:
                await self._waiting_room.doctor_present(hub, self.user.id)
            elif self.user.role is Role.NURSE and self.user.spoke:
                await self._waiting_room.spoke_present(hub, SpokeId(self.user.spoke))
        except StoreUnavailable:
            logger.debug("session %s: presence not recorded (store unavailable)", self.label)

    def _queue_view(self, snapshot: HubSnapshot) -> m.QueueOut:
        opens_at = self._waiting_room.next_opening(snapshot.hub)
        return queue_for(self.user, snapshot, self._directory, opens_at)

    def _queue_changed(self, snapshot: HubSnapshot) -> None:
        self.post(self._queue_view(snapshot))

    async def _register(self, msg: m.RegisterPatient) -> None:
        self._require(Role.NURSE)
        p = msg.patient
        token = await self._waiting_room.issue(
            SpokeId(self.user.spoke or ""),
            self.user.id,
            Patient(
                name=p.name,
                age=p.age,
                sex=p.sex,
                complaint=p.complaint,
                phone=p.phone,
                priority=p.priority,
            ),
        )
        self.post(m.TokenIssued(token=token_out(token, self._directory), re=msg.id))

    async def _cancel(self, msg: m.CancelToken) -> None:
        self._require(Role.NURSE)
        await self._waiting_room.cancel(SpokeId(self.user.spoke or ""), TokenId(msg.token_id))
        self.post(m.TokenCancelled(token_id=msg.token_id, re=msg.id))

    async def _call_next(self, msg: m.CallNext) -> None:
        self._require(Role.DOCTOR)
        hub = self._hub()
        token_id = TokenId(msg.token_id) if msg.token_id else None
        if token_id is not None and not token_id.startswith(hub + "."):
            raise Forbidden("that token belongs to another hub")
        node = self._settings.node_id if self._router is None else await self._router.place()
        token = await self._waiting_room.call_next(hub, self.user.id, node, token_id)
        assert token.room is not None
        self.post(
            m.RoomOpened(room_id=token.room, token=token_out(token, self._directory), re=msg.id)
        )

    def _own_hub_token(self, token_id: str) -> tuple[HubId, TokenId]:
        self._require(Role.DOCTOR)
        hub = self._hub()
        if not token_id.startswith(hub + "."):
            raise Forbidden("that token belongs to another hub")
        return hub, TokenId(token_id)

    async def _skip(self, msg: m.SkipToken) -> None:
        hub, token_id = self._own_hub_token(msg.token_id)
        await self._waiting_room.skip(hub, token_id, self.user.id)
        self.post(
            self._queue_view(await self._waiting_room.snapshot(hub)).model_copy(
                update={"re": msg.id}
            )
        )

    async def _recall(self, msg: m.RecallToken) -> None:
        hub, token_id = self._own_hub_token(msg.token_id)
        await self._waiting_room.recall(hub, token_id, self.user.id)
        self.post(
            self._queue_view(await self._waiting_room.snapshot(hub)).model_copy(
                update={"re": msg.id}
            )
        )

    # ------------------------------------------------------------------ consultation

    async def _join(self, msg: m.Join, raw: str) -> None:
        self._require(Role.NURSE, Role.DOCTOR)
        if self._room is not None or self._link is not None:
            raise Forbidden("this connection has already joined a consultation")
        if self._router is not None and not self.transport.one_room:
            node = await self._router.locate(msg.room_id)
            if node != self._router.node_id:
                await self._join_through(node, msg, raw, attempt=1)
                return
        room, seat = await self._rooms.open(msg.room_id, self.user)
        token = await self._waiting_room.token(room.hub, room.token_id)
        other = self._directory.user(room.doctor if seat is Participant.SPOKE else room.nurse)
        if token is None or other is None:
            raise RoomError("this consultation's records are missing")
        # No await from here on: the room cannot end between the seat being taken and the reply.
        room.attach(seat, self._room_event)
        self._room, self._seat = room, seat
        place = (
            self._directory.spoke(token.spoke).name
            if seat is Participant.HUB
            else self._directory.hub(room.hub).name
        )
        self.post(
            m.Joined(
                room_id=room.id,
                seat=seat.value,
                # Fresh TURN credentials on every join: a page that comes back gets new ones.
                ice_servers=self._ice_servers(),
                peer=m.PeerOut(name=other.name, role=other.role.value, place=place),
                token=token_out(token, self._directory),
                media=room.peer_states()[seat] == "connected",
                re=msg.id,
            )
        )
        for other_seat, state in room.peer_states().items():
            self.post(m.PeerState(seat=other_seat.value, state=state))
        self.post(self._consent_view(room))
        if self._settings.link_tuning:
            for s in Participant:
                self.post(self._quality_view(room, s, "start"))
        logger.info("session %s: joined room %s as %s", self.label, room.id, seat)

    # ------------------------------------------------------------------ a room on another node

    async def _join_through(self, node: str, msg: m.Join, raw: str, attempt: int) -> None:
        """Join a room held by ``node``: open a link to it and send the join on; the replies
        come back through :meth:`_relayed`."""
        assert self._bus is not None
        link = self._bus.connect(node, self._relayed, self._link_closed)
        self._link, self._link_join = link, (msg, raw, attempt)
        logger.info(
            "session %s: room %s is on node %s (link %s)", self.label, msg.room_id, node, link.id
        )
        try:
            await link.open(self.user.id, self.remote)
            await link.forward(raw)
        except StoreUnavailable:
            self._link = self._link_join = None
            await link.close()
            raise

    def _relayed(self, text: str) -> None:
        """A message from the room's node for the client."""
        pending = self._link_join
        if pending is not None:
            join = pending[0]
            reply = _peek(text)
            if reply.get("re") == join.id and reply.get("type") == "joined":
                self._link_join = None
            elif reply.get("re") == join.id and reply.get("type") == "error":
                self._link_join = None
                if reply.get("code") in _RELOCATE and pending[2] < _JOIN_ATTEMPTS:
                    self._tasks.spawn(self._join_again(pending, str(reply.get("code"))), "rejoin")
                    return
        self.post(text)

    async def _join_again(self, pending: tuple[m.Join, str, int], why: str) -> None:
        """The room's node refused the join (the room moved, or the node is draining): find the
        room's node again and send the join there."""
        msg, raw, attempt = pending
        link = self._link
        self._link = None
        avoid = link.node if link is not None and why == "node_draining" else None
        if link is not None:
            await link.close()
        try:
            assert self._router is not None
            node = await self._router.locate(msg.room_id, avoid=avoid)
            if node == self._router.node_id:
                await self._handle_text(raw)
            else:
                await self._join_through(node, msg, raw, attempt + 1)
        except (WaitingRoomError, RoomError, StoreUnavailable) as exc:
            code = getattr(exc, "code", "store_unavailable")
            self.post(m.Error(code=code, message=str(exc), re=msg.id))

    def _link_closed(self, link: Link, code: int) -> None:
        if link is not self._link:
            return
        self._link = self._link_join = None
        if code == CLOSE_NORMAL:
            return  # the room ended, or the join was refused: the client has been told
        if code == CLOSE_REPLACED:
            self._close_soon(CLOSE_REPLACED, b"replaced")
            return
        logger.info(
            "session %s: lost the room's node %s; asking the page to reconnect",
            self.label,
            link.node,
        )
        self._close_soon(CLOSE_RECONNECT, b"reconnect")

    async def _offer(self, msg: m.Offer) -> None:
        room, seat = self._room, self._seat
        if room is None or seat is None:
            raise Forbidden("join a consultation before sending an offer")
        # Negotiation waits on ICE; run it beside the reader so pings and hang-ups still flow.
        self._tasks.spawn(self._negotiate(room, seat, msg), name="negotiate")

    async def _negotiate(self, room: LiveRoom, seat: Participant, msg: m.Offer) -> None:
        async with self._negotiating:
            if self._room is not room:
                return  # this page left or was replaced while the offer waited
            try:
                answer = await room.offer(seat, msg.sdp)
            except (NegotiationError, RoomError) as exc:
                code = getattr(exc, "code", "negotiation_failed")
                self.post(m.Error(code=code, message=str(exc), re=msg.id))
                return
            except Exception:
                # Every offer gets an answer or an error, whatever went wrong inside aiortc.
                logger.exception("session %s: negotiation failed", self.label)
                self.post(
                    m.Error(code="negotiation_failed", message="could not set up media", re=msg.id)
                )
                return
            self.post(m.Answer(sdp=answer, re=msg.id))

    def _hangup(self, msg: m.Hangup) -> None:
        room = self._room
        if room is None:
            raise Forbidden("not in a consultation")
        logger.info("session %s: hung up room %s", self.label, room.id)
        # The reply to the hang-up is this session's room_ended; the other side gets a push.
        seat = self._seat
        self._room = self._seat = None
        if seat is not None:
            room.hang_up(seat)
        else:
            room.end(EndReason.HANGUP)
        self.post(m.RoomEnded(room_id=room.id, reason=EndReason.HANGUP.value, re=msg.id))

    async def _consent(self, msg: m.RecordConsent | m.ConfirmConsent | m.WithdrawConsent) -> None:
        room, seat = self._room, self._seat
        if room is None or seat is None:
            raise Forbidden("join a consultation first")
        match msg:
            case m.RecordConsent():
                await room.record_consent(
                    seat,
                    self.remote,
                    given_by=msg.given_by,
                    method=msg.method,
                    caregiver=msg.caregiver,
                    relation=msg.relation,
                )
            case m.ConfirmConsent():
                await room.confirm_consent(seat, self.remote)
            case m.WithdrawConsent():
                await room.withdraw_consent(seat, self.remote)
        self.post(self._consent_view(room).model_copy(update={"re": msg.id}))

    def _ice_servers(self) -> list[m.IceServerOut]:
        return [
            m.IceServerOut(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in client_ice_servers(self._settings, self.user.id)
        ]

    def _seated(self) -> tuple[LiveRoom, Participant]:
        room, seat = self._room, self._seat
        if room is None or seat is None:
            raise Forbidden("join a consultation first")
        return room, seat

    def _link_report(self, msg: m.LinkReport) -> None:
        room, seat = self._seated()
        report = ClientReport(
            available_out_kbps=msg.available_out_kbps,
            out_kbps=msg.out_kbps,
            rtt_ms=msg.rtt_ms,
            in_kbps=msg.in_kbps,
            in_loss=msg.in_loss,
            in_jitter_ms=msg.in_jitter_ms,
            in_fps=msg.in_fps,
        )
        room.link_report(seat, report, msg.probe_kbps, brake=msg.brake)
        # Reports are frequent and need no reply unless the client asked for one.
        if msg.id is not None:
            self.post(m.Pong(re=msg.id))

    def _low_bandwidth(self, msg: m.SetLowBandwidth) -> None:
        room, seat = self._seated()
        room.set_low_bandwidth(seat, msg.on)
        self.post(self._quality_view(room, seat, "low_bandwidth").model_copy(update={"re": msg.id}))

    @staticmethod
    def _quality_view(room: LiveRoom, seat: Participant, reason: str) -> m.Quality:
        step = room.links.step(seat)
        return m.Quality(
            seat=seat.value,
            step=step.index,
            label=step.label,
            video=step.video,
            max_bitrate_kbps=step.max_bitrate_kbps,
            scale_down=step.scale_down,
            max_fps=step.max_fps,
            audio_kbps=step.audio_kbps,
            reason=reason,
            low_bandwidth=room.links.low_bandwidth,
        )

    @staticmethod
    def _network_view(room: LiveRoom) -> m.Network:
        legs = {
            seat: m.LegOut(
                up=view.up.value,
                down=view.down.value,
                rtt_ms=view.rtt_ms,
                up_loss=view.up_loss,
                down_loss=view.down_loss,
            )
            for seat, view in room.links.network().items()
        }
        return m.Network(spoke=legs[Participant.SPOKE], hub=legs[Participant.HUB])

    @staticmethod
    def _consent_view(room: LiveRoom) -> m.ConsentOut:
        record = room.journal.consent_record() or {}
        return m.ConsentOut(
            room_id=room.id,
            state=room.journal.consent.state.value,
            recording=room.journal.recording.value,
            **{k: v for k, v in record.items() if k != "state"},
        )

    def _room_event(self, event: RoomEvent) -> None:
        room = self._room
        if room is None:
            return
        if event.kind == "quality" and event.seat is not None:
            self.post(self._quality_view(room, event.seat, event.reason or "changed"))
            return
        if event.kind == "network":
            self.post(self._network_view(room))
            return
        if event.kind == "consent":
            if event.seat is not self._seat:  # the one who acted gets the reply instead
                self.post(self._consent_view(room))
            return
        if event.kind == "peer_state" and event.seat is not None and event.state is not None:
            self.post(m.PeerState(seat=event.seat.value, state=event.state))
        elif event.kind == "ended":
            self.post(m.RoomEnded(room_id=room.id, reason=event.reason or "ended"))
            self._room = self._seat = None
            if self.transport.one_room:
                self.transport.finish()
        elif event.kind == "replaced":
            self.post(m.Error(code="replaced", message="this consultation was opened elsewhere"))
            self._room = self._seat = None
            self._close_soon(CLOSE_REPLACED, b"replaced")

    # ------------------------------------------------------------------ the end

    async def shutdown(self) -> None:
        """Server shutdown: let queued messages go out (briefly), then close the socket."""
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(None)
        writer = self._writer_task
        if writer is not None:
            await asyncio.wait({writer}, timeout=1.0)
        await self.transport.close(WSCloseCode.GOING_AWAY, b"server shutdown")

    async def _cleanup(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
        if self._room is not None and self._seat is not None:
            self._room.detach(self._seat, self._room_event)
            self._room = None
        if self._link is not None:
            link, self._link = self._link, None
            await link.close()
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(None)
        if self.transport.one_room:
            # What is queued (the room's end, say) goes out before the link ends.
            if self._writer_task is not None:
                await asyncio.wait({self._writer_task}, timeout=2.0)
            await self.transport.close(CLOSE_NORMAL, b"")
        await self._tasks.close()
        logger.info("session %s: closed", self.label)
