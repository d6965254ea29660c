"""The waiting room: tokens for patients, ordered per hub, stored in Redis.

Every change is one Lua script, so it is atomic, and every key of a hub carries the hub as a
hash tag (``wr:{hub}:...``) so that the scripts also run on Redis Cluster.  Each change is
appended to the hub's event stream, which is how every server process learns of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from redis.exceptions import NoScriptError, RedisError

from core.directory import Directory
from core.domain import HubId, Priority, RoomId, Sex, SpokeId, TokenId, TokenState, UserId
from core.service import AtClosing, Service
from core.store import UNAVAILABLE, Redis, StoreUnavailable

from .lifecycle import FINAL
from .windows import OpenWindow, ServiceCalendar

logger = logging.getLogger(__name__)

_SCRIPTS = Path(__file__).with_name("scripts")
#: Tokens, rooms and day indexes outlive their service day by this long.
RECORD_TTL_S = 14 * 24 * 3600
#: Approximate length kept of each hub's event stream.
STREAM_MAXLEN = 10_000
#: Subtracted once from the score of a token carried over to the next window, so that it comes
#: before every token issued since (scores are issue times in ms x 1000, about 1.8e15 now; the
#: result stays well inside a double's exact integers).
CARRY_OFFSET = 4 * 10**15
#: How many recent consultations the wait estimate averages.
RECENT_CONSULTS = 10
#: A doctor counts as on duty while their dashboard has been seen within this long.
ON_DUTY_S = 60
#: A token this close to the head of the queue is told its turn is near.
TURN_NEAR_POSITIONS = 2
#: A token that misses its call this many times is dropped as a no-show.
MAX_NO_SHOWS = 2
#: How often the process holding a live room writes ``alive_at`` into the room's record.
ROOM_HEARTBEAT_S = 5.0
#: Allowance for the clocks of two server processes disagreeing: the sweep compares one
#: process's ``alive_at`` (or ``created_at``) with another's clock.
CLOCK_SKEW_MARGIN_S = 10.0
#: At most this many rooms of a hub are looked at by one sweep.
SWEEP_BATCH = 100

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def room_stale_after_s(room_grace_s: float) -> float:
    """How old a room's last beat may be before the sweep ends it (its process is gone).

    The participants get the grace period to come back (on another process, say), as the live
    room would give them; two beats cover a missed one; and the margin covers clock skew.
    A live room's ``alive_at`` is never older than one beat, so a sweeping server whose clock
    runs ahead of the holder's by up to ``room_grace_s + ROOM_HEARTBEAT_S + margin`` (75 s
    with the default grace) still leaves it alone; a server whose clock lags sweeps late.
    """
    return room_grace_s + 2 * ROOM_HEARTBEAT_S + CLOCK_SKEW_MARGIN_S


class WaitingRoomError(Exception):
    """A token action that cannot be done, with a code a client can show."""

    code = "waiting_room_error"


class QueueEmpty(WaitingRoomError):
    code = "queue_empty"


class TokenNotFound(WaitingRoomError):
    code = "token_not_found"


class TokenNotWaiting(WaitingRoomError):
    code = "token_not_waiting"


@dataclasses.dataclass(frozen=True)
class Patient:
    name: str
    age: int
    sex: Sex
    complaint: str
    phone: str | None = None
    priority: Priority = Priority.NORMAL


@dataclasses.dataclass(frozen=True)
class Token:
    id: TokenId
    number: int
    hub: HubId
    spoke: SpokeId
    nurse: UserId
    state: TokenState
    patient: Patient
    issued_at: datetime
    order: int
    doctor: UserId | None = None
    room: RoomId | None = None
    called_at: datetime | None = None
    #: The hub's service day that numbered it (``YYYYMMDD``).
    date: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Token:
        return cls(
            id=TokenId(h["id"]),
            number=int(h["number"]),
            hub=HubId(h["hub"]),
            spoke=SpokeId(h["spoke"]),
            nurse=UserId(h["nurse"]),
            state=TokenState(h["state"]),
            patient=Patient(
                name=h["name"],
                age=int(h["age"]),
                sex=Sex(h["sex"]),
                complaint=h["complaint"],
                phone=h.get("phone") or None,
                priority=Priority(h.get("priority") or Priority.NORMAL),
            ),
            issued_at=_from_ms(h["issued_at"]),
            order=int(h["order"]),
            doctor=UserId(h["doctor"]) if h.get("doctor") else None,
            room=RoomId(h["room"]) if h.get("room") else None,
            called_at=_from_ms(h["called_at"]) if h.get("called_at") else None,
            date=h.get("date", ""),
            started_at=_from_ms(h["started_at"]) if h.get("started_at") else None,
            ended_at=_from_ms(h["ended_at"]) if h.get("ended_at") else None,
        )


@dataclasses.dataclass(frozen=True)
class SweptRoom:
    """A room the sweep ended: nobody opened it in time, or the process holding it is gone."""

    room: RoomId
    token: TokenId
    reason: str  # ``no_show`` or ``peer_lost``
    outcome: str  # what became of the token: ``completed``, ``requeued`` or ``no_show``


@dataclasses.dataclass(frozen=True)
class HubSnapshot:
    """A hub's queue and today's tokens, as read at one moment."""

    hub: HubId
    waiting: tuple[Token, ...]  # in the order they will be called
    today: tuple[Token, ...]  # every token of the service day, by number
    #: Tokens held for the next window (carried over first, then scheduled), in order.
    held: tuple[Token, ...] = ()
    #: The open window's key and closing time, or ``None`` while the hub is closed.
    window: str | None = None
    closes_at: datetime | None = None
    #: Doctors of the hub watching its queue in the last minute, on any server process.
    doctors_on_duty: int = 0
    #: Spokes whose page has been away longer than the presence grace (passed over by calls).
    spokes_away: frozenset[SpokeId] = frozenset()

    def consult_minutes(self, default: float) -> float:
        """The average length of the day's last ten consultations (``default`` before any)."""
        done = [
            (t.ended_at - t.started_at).total_seconds() / 60
            for t in self.today
            if t.state is TokenState.COMPLETED and t.started_at and t.ended_at
        ][-RECENT_CONSULTS:]
        return sum(done) / len(done) if done else default

    def estimated_wait_minutes(self, position: int, default_consult: float) -> int:
        """How long the token at ``position`` may wait, from recent consultations and doctors."""
        doctors = max(1, self.doctors_on_duty)
        return math.ceil((position - 1) * self.consult_minutes(default_consult) / doctors)

    def position(self, token_id: TokenId) -> int | None:
        for i, token in enumerate(self.waiting):
            if token.id == token_id:
                return i + 1
        return None


def _token_from_script(encoded: str) -> Token:
    """A token hash as a script returns it: ``HGETALL``'s flat list, encoded as JSON."""
    flat = json.loads(encoded)
    return Token.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


def _from_ms(raw: str) -> datetime:
    return datetime.fromtimestamp(int(raw) / 1000, UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def prefix(hub: str) -> str:
    return f"wr:{{{hub}}}:"


def events_key(hub: str) -> str:
    return prefix(hub) + "events"


def room_key(hub: str, room_id: str) -> str:
    return prefix(hub) + "room:" + room_id


def open_rooms_key(hub: str) -> str:
    """The hub's open rooms (``created`` or ``active``), scored by their last sign of life in
    ms: the call, then each beat of the process holding the room."""
    return prefix(hub) + "open_rooms"


class WaitingRoom:
    """Token actions on the shared store.  Safe to use from many processes at once."""

    def __init__(
        self,
        store: Redis,
        directory: Directory,
        clock: Clock = utc_now,
        service_for: Callable[[HubId], Service] | None = None,
    ) -> None:
        """``service_for`` gives a hub's service in force (an administrator's edit, say);
        by default, the directory's."""
        self._store = store
        self._directory = directory
        self._clock = clock
        self._service_for = service_for
        self._scripts = {
            name: store.register_script((_SCRIPTS / f"{name}.lua").read_text())
            for name in (
                "issue",
                "call_next",
                "activate_room",
                "move_room",
                "end_room",
                "touch_room",
                "cancel",
                "open_window",
                "close_window",
                "skip",
                "recall",
            )
        }

    def service(self, hub: HubId) -> Service:
        """The hub's service windows and rules in force now."""
        if self._service_for is not None:
            return self._service_for(hub)
        return self._directory.hub(hub).service

    def calendar(self, hub: HubId) -> ServiceCalendar:
        return ServiceCalendar(self.service(hub), self._directory.hub(hub).tz)

    def now(self) -> datetime:
        return self._clock()

    def no_show_after_s(self, hub: HubId) -> float:
        """How long a called spoke has to join its room."""
        return self.service(hub).no_show_minutes * 60.0

    def next_opening(self, hub: HubId) -> datetime | None:
        """When the hub's next window opens (after now), if within a month."""
        window = self.calendar(hub).next_opening(self._clock())
        return window.start if window else None

    def service_date(self, hub: HubId, moment: datetime | None = None) -> str:
        """The hub's local calendar date (``YYYYMMDD``), which numbers its tokens."""
        moment = moment or self._clock()
        return moment.astimezone(self._directory.hub(hub).tz).strftime("%Y%m%d")

    async def _run(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        try:
            return await self._scripts[name](keys=keys, args=args)
        except NoScriptError:  # pragma: no cover - redis-py reloads scripts itself
            raise
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def issue(self, spoke: SpokeId, nurse: UserId, patient: Patient) -> Token:
        """Give a patient the next token of the spoke's hub."""
        hub = HubId(self._directory.spoke(spoke).hub)
        now = self._clock()
        date = self.service_date(hub, now)
        advance_ms = 0
        if patient.priority is Priority.URGENT:
            advance_ms = self.service(hub).urgent_advance_minutes * 60_000
        p = prefix(hub)
        result = await self._run(
            "issue",
            [
                p + f"seq:{date}",
                p + "order",
                p + "queue",
                p + f"day:{date}",
                p + "events",
                p + "window",
                p + "held",
                p + "clock",
            ],
            [
                p,
                hub,
                date,
                spoke,
                nurse,
                _ms(now),
                RECORD_TTL_S,
                patient.name,
                patient.age,
                patient.sex.value,
                patient.phone or "",
                patient.complaint,
                STREAM_MAXLEN,
                patient.priority.value,
                advance_ms,
            ],
        )
        token = _token_from_script(result[3])
        logger.info("token %s issued at spoke %s", token.id, spoke)
        return token

    async def call_next(
        self, hub: HubId, doctor: UserId, node: str, token_id: TokenId | None = None
    ) -> Token:
        """Take the head of the queue (or ``token_id``) for ``doctor`` and open its room."""
        room_id = RoomId(f"{hub}.{secrets.token_urlsafe(9)}")
        p = prefix(hub)
        result = await self._run(
            "call_next",
            [p + "queue", p + "events", p + "spokes", open_rooms_key(hub)],
            [
                p,
                doctor,
                room_id,
                _ms(self._clock()),
                RECORD_TTL_S,
                node,
                token_id or "",
                STREAM_MAXLEN,
                self.service(hub).presence_grace_minutes * 60_000,
            ],
        )
        status = str(result[0])
        if status == "empty":
            raise QueueEmpty("nobody is waiting")
        if status == "away":
            raise QueueEmpty(
                "the spokes of every waiting token are offline; their tokens keep their places"
            )
        if status == "not_waiting":
            raise TokenNotWaiting(f"token {token_id} is not waiting")
        token = _token_from_script(result[2])
        logger.info("token %s called by %s into room %s", token.id, doctor, room_id)
        return token

    async def move_room(self, hub: HubId, room_id: RoomId, seen: str, to: str) -> str | None:
        """Place an open room on node ``to`` if it is still on node ``seen``; the room's node
        after the call (``to``, or whichever node another caller moved it to first), ``ended``
        for a room that has ended, ``None`` for one that does not exist."""
        result = await self._run("move_room", [room_key(hub, room_id)], [seen, to])
        if result is None:
            return None
        if result != to:
            return str(result)
        logger.info("room %s placed again: node %s -> %s", room_id, seen or "(none)", to)
        return to

    async def activate_room(self, hub: HubId, room_id: RoomId) -> str:
        p = prefix(hub)
        result = await self._run(
            "activate_room",
            [room_key(hub, room_id), p + "events"],
            [p, _ms(self._clock()), STREAM_MAXLEN],
        )
        return str(result)

    async def end_room(
        self, hub: HubId, room_id: RoomId, reason: str, took_place: bool = False
    ) -> str:
        """End a room; returns what became of its token: ``completed``, ``requeued`` or
        ``no_show``.

        ``took_place`` says that media flowed even if the store missed the room's activation
        (it was unreachable then): such a consultation completes its token.  A room ended
        with reason ``no_show`` puts its token a few places back, or drops it the second time.
        """
        result = await self._end_room(hub, room_id, reason, took_place, sweep=None)
        return str(result[0])

    async def _end_room(
        self,
        hub: HubId,
        room_id: RoomId,
        reason: str,
        took_place: bool,
        sweep: tuple[int, int] | None,
    ) -> list[str]:
        """end_room.lua; ``sweep`` is its (no-show, stale) cut-offs in ms when sweeping."""
        p = prefix(hub)
        service = self.service(hub)
        result = await self._run(
            "end_room",
            [
                room_key(hub, room_id),
                p + "queue",
                p + "events",
                p + "window",
                p + "held",
                open_rooms_key(hub),
            ],
            [
                p,
                _ms(self._clock()),
                reason,
                STREAM_MAXLEN,
                "1" if took_place else "0",
                CARRY_OFFSET,
                service.requeue_places,
                MAX_NO_SHOWS,
                room_id,
                sweep[0] if sweep else "",
                sweep[1] if sweep else "",
            ],
        )
        return [str(item) for item in result]

    async def touch_room(self, hub: HubId, room_id: RoomId) -> str:
        """Note that this process holds ``room_id`` live now (its heartbeat, for the sweep).

        Returns the room's state in the store; an ended or missing room is left as it is.
        """
        result = await self._run(
            "touch_room",
            [room_key(hub, room_id), open_rooms_key(hub)],
            [room_id, _ms(self._clock())],
        )
        return str(result)

    async def sweep_rooms(
        self, hub: HubId, stale_after_s: float, limit: int = SWEEP_BATCH
    ) -> list[SweptRoom]:
        """End the hub's abandoned rooms; returns those it ended.

        A room ``created`` that no process ever opened ends as ``no_show`` once the hub's
        no-show time (and the clock-skew margin) has passed since the call; a room whose
        holder last beat more than ``stale_after_s`` ago (see :func:`room_stale_after_s`)
        ends as ``peer_lost``: its token completes if the room was active, and goes back to
        its place if not.  Each room is judged and ended in one script run, so a beat or a
        normal end racing the sweep either keeps the room or ends it once.  The candidates
        come from the hub's index of open rooms, oldest sign of life first, at most ``limit``.
        """
        now = _ms(self._clock())
        no_show_cutoff = now - int((self.no_show_after_s(hub) + CLOCK_SKEW_MARGIN_S) * 1000)
        stale_cutoff = now - int(stale_after_s * 1000)
        try:
            candidates = await self._store.zrangebyscore(
                open_rooms_key(hub),
                "-inf",
                f"({max(no_show_cutoff, stale_cutoff)}",
                start=0,
                num=limit,
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        swept = []
        for room_id in candidates:
            rid = RoomId(str(room_id))
            result = await self._end_room(
                hub, rid, "", took_place=False, sweep=(no_show_cutoff, stale_cutoff)
            )
            if len(result) == 3:
                outcome, token_id, reason = result
                swept.append(SweptRoom(rid, TokenId(token_id), reason, outcome))
                logger.info("room %s swept (%s); token %s %s", rid, reason, token_id, outcome)
        return swept

    async def skip(self, hub: HubId, token_id: TokenId, doctor: UserId) -> None:
        """Move a waiting token back by the hub's ``requeue_places``."""
        p = prefix(hub)
        places = self.service(hub).requeue_places
        result = await self._run(
            "skip",
            [p + "queue", p + "events"],
            [p, token_id, places, doctor, _ms(self._clock()), STREAM_MAXLEN],
        )
        if result != "ok":
            raise TokenNotWaiting(f"token {token_id} is not waiting")

    async def recall(self, hub: HubId, token_id: TokenId, doctor: UserId) -> None:
        """Put a no-show back at the head of the queue (the patient came back)."""
        p = prefix(hub)
        result = await self._run(
            "recall",
            [p + "queue", p + "events", p + "window", p + "held"],
            [p, token_id, doctor, _ms(self._clock()), STREAM_MAXLEN, CARRY_OFFSET],
        )
        if result == "missing":
            raise TokenNotFound(f"no token {token_id}")
        if result != "ok":
            raise TokenNotWaiting(f"token {token_id} is {result}; only a no-show can be recalled")

    async def cancel(self, spoke: SpokeId, token_id: TokenId) -> None:
        hub = HubId(self._directory.spoke(spoke).hub)
        p = prefix(hub)
        result = await self._run(
            "cancel",
            [p + "queue", p + "events", p + "held"],
            [p, token_id, spoke, _ms(self._clock()), STREAM_MAXLEN],
        )
        if result == "missing":
            raise TokenNotFound(f"no token {token_id} at this spoke")
        if result != "ok":
            raise TokenNotWaiting(f"token {token_id} is {result}, not waiting")

    async def token(self, hub: HubId, token_id: TokenId) -> Token | None:
        try:
            raw = await self._store.hgetall(prefix(hub) + "token:" + token_id)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return Token.from_hash(cast(dict[str, str], raw)) if raw else None

    async def room(self, hub: HubId, room_id: RoomId) -> dict[str, str] | None:
        try:
            raw = await self._store.hgetall(room_key(hub, room_id))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return cast(dict[str, str], raw) or None

    async def snapshot(self, hub: HubId) -> HubSnapshot:
        """The hub's queue in order and all of today's tokens, read in one round trip each.

        ``today`` also carries the earlier day's tokens that are not over yet (carried over past
        midnight, or still in a consultation), so that nobody's token drops out of sight.
        """
        p = prefix(hub)
        now = self._clock()
        date = self.service_date(hub, now)
        yesterday = self.service_date(hub, now - timedelta(days=1))
        try:
            async with self._store.pipeline(transaction=True) as pipe:
                pipe.zrange(p + "queue", 0, -1)
                pipe.zrange(p + f"day:{date}", 0, -1)
                pipe.zrange(p + "held", 0, -1)
                pipe.hgetall(p + "window")
                pipe.zrange(p + f"day:{yesterday}", 0, -1)
                pipe.zcount(p + "doctors", _ms(now) - ON_DUTY_S * 1000, "+inf")
                pipe.zrange(p + "spokes", 0, -1, withscores=True)
                results = await pipe.execute()
            waiting_ids, today_ids, held_ids, window, earlier_ids, doctors, spokes = results
            ids = list(dict.fromkeys([*waiting_ids, *today_ids, *held_ids, *earlier_ids]))
            async with self._store.pipeline(transaction=False) as pipe:
                for token_id in ids:
                    pipe.hgetall(p + "token:" + token_id)
                rows = await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        except RedisError:
            raise
        tokens = {t.id: t for t in (Token.from_hash(r) for r in rows if r)}
        open_earlier = [
            tokens[TokenId(i)]
            for i in [*earlier_ids, *waiting_ids, *held_ids]
            if TokenId(i) in tokens
            and tokens[TokenId(i)].state not in FINAL
            and tokens[TokenId(i)].date != date
        ]
        return HubSnapshot(
            hub=hub,
            waiting=tuple(tokens[TokenId(i)] for i in waiting_ids if TokenId(i) in tokens),
            today=tuple(
                dict.fromkeys(
                    [
                        *open_earlier,
                        *(tokens[TokenId(i)] for i in today_ids if TokenId(i) in tokens),
                    ]
                )
            ),
            held=tuple(tokens[TokenId(i)] for i in held_ids if TokenId(i) in tokens),
            window=window.get("key") or None,
            closes_at=_from_ms(window["closes_at"]) if window.get("closes_at") else None,
            doctors_on_duty=int(doctors),
            spokes_away=frozenset(
                SpokeId(str(spoke))
                for spoke, seen in spokes
                if _ms(now) - int(seen) > self.service(hub).presence_grace_minutes * 60_000
            ),
        )

    async def snapshot_head(self, hub: HubId, count: int) -> list[Token]:
        """The first ``count`` waiting tokens, in order."""
        p = prefix(hub)
        try:
            ids = await self._store.zrange(p + "queue", 0, count - 1)
            async with self._store.pipeline(transaction=False) as pipe:
                for token_id in ids:
                    pipe.hgetall(p + "token:" + str(token_id))
                rows = await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [Token.from_hash(r) for r in rows if r]

    async def spoke_present(self, hub: HubId, spoke: SpokeId) -> None:
        """Note that ``spoke``'s page is connected now (its tokens are callable)."""
        try:
            await self._store.zadd(prefix(hub) + "spokes", {spoke: _ms(self._clock())})
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def doctor_present(self, hub: HubId, doctor: UserId) -> None:
        """Note that ``doctor`` is watching the hub's queue now (for the wait estimate)."""
        key = prefix(hub) + "doctors"
        now = _ms(self._clock())
        try:
            async with self._store.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {doctor: now})
                pipe.zremrangebyscore(key, "-inf", now - 10 * ON_DUTY_S * 1000)
                await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def claim_turn_near(self, hub: HubId, token_id: TokenId) -> bool:
        """``True`` exactly once per token: whoever claims it sends the notice."""
        try:
            return bool(
                await self._store.hsetnx(prefix(hub) + "token:" + token_id, "near_notified", 1)
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def open_window(self, hub: HubId, window: OpenWindow) -> int:
        """Open ``window`` at ``hub`` (idempotent); returns how many held tokens it admitted.

        Nothing happens while another window is open, or if this one has already been closed
        or is over: the caller closes the other first (:meth:`close_window`).
        """
        p = prefix(hub)
        keys = [p + "window", p + "queue", p + "held", p + "events", p + "window:closed"]
        key = window.start.isoformat()
        args: list[str | int] = [
            p,
            key,
            window.capacity,
            _ms(window.end),
            _ms(self._clock()),
            STREAM_MAXLEN,
        ]
        result = await self._run("open_window", keys, args)
        if str(result[0]) == "opened":
            logger.info("hub %s: window %s open, %s held tokens admitted", hub, key, result[1])
        return int(result[1]) if str(result[0]) == "opened" else 0

    async def close_window(self, hub: HubId, early: bool = False) -> int:
        """Close the hub's open window (idempotent); returns how many tokens it carried/expired.

        The store refuses before the window's own closing time unless ``early`` (its hours
        were changed), so that a server whose clock lags cannot close what another opened.
        """
        p = prefix(hub)
        policy = self.service(hub).at_closing
        result = await self._run(
            "close_window",
            [p + "window", p + "queue", p + "held", p + "events", p + "window:closed"],
            [
                p,
                policy.value,
                _ms(self._clock()),
                STREAM_MAXLEN,
                CARRY_OFFSET,
                "1" if early else "0",
            ],
        )
        if int(result[1]):
            logger.info(
                "hub %s: window closed, %s waiting tokens %s",
                hub,
                result[1],
                "carried over" if policy is AtClosing.CARRY_OVER else "expired",
            )
        return int(result[1])

    async def open_window_key(self, hub: HubId) -> str | None:
        current = await self.open_window_span(hub)
        return current[0] if current else None

    async def open_window_span(self, hub: HubId) -> tuple[str, datetime] | None:
        """The open window's key and closing time, as the store has them."""
        try:
            key, closes_at = await self._store.hmget(prefix(hub) + "window", ["key", "closes_at"])
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        if not key or not closes_at:
            return None
        return str(key), _from_ms(str(closes_at))
