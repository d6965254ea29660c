"""The room sweep: the keepers end the rooms that nobody opened in time and the rooms whose
server process is gone, and never a room that a process holds live.

Store tests run on the embedded store and on a real Redis, with clocks the tests move; the last
test kills a real ``server.py`` in the middle of a consultation and restarts it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from core.appkeys import STORE
from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId, RoomId, Sex, SpokeId, TokenId, TokenState, UserId
from core.store import Redis, open_store
from rooms import ROOMS, SERVICE_KEEPER, Patient, ServiceKeeper, Token, WaitingRoom
from rooms.waiting_room import (
    CLOCK_SKEW_MARGIN_S,
    SweptRoom,
    events_key,
    open_rooms_key,
    room_key,
    room_stale_after_s,
)
from server import create_app
from tests.helpers import DOCTOR, NURSE, PATIENT, ProtocolClient, make_settings
from tests.rooms.test_durability import (
    SetuProcess,
    error_for,
    join_with_media,
    redis_with_aof,
    reopen,
    token_state,
)

AiohttpClient = Any

HUB = HubId("bhabua-sadar")
SPOKE, NURSE_A, DOCTOR_S = SpokeId("akhlaspur"), UserId("nurse.akhlaspur"), UserId("dr.sharma")
#: The demo hub's 5 minutes to join, and the sweep's allowance for clock skew on top.
NO_SHOW_DUE = timedelta(minutes=5, seconds=CLOCK_SKEW_MARGIN_S)
#: With the default grace of 60 s.
STALE_S = room_stale_after_s(60.0)
STALE = timedelta(seconds=STALE_S)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def patient(name: str) -> Patient:
    return Patient(name=name, age=45, sex=Sex.FEMALE, complaint="fever")


@pytest.fixture
def clock() -> Clock:
    # 10:00 in Bhabua (UTC+5:30), inside the demo hub's around-the-clock window.
    return Clock(datetime(2026, 11, 27, 4, 30, tzinfo=UTC))


@pytest.fixture
async def room(store: Redis, clock: Clock) -> WaitingRoom:
    waiting_room = WaitingRoom(store, Directory.load(DEMO_DIRECTORY), clock)
    await ServiceKeeper(waiting_room, [HUB]).tick()  # opens the window; sweeps nothing
    return waiting_room


@pytest.fixture
def keeper(room: WaitingRoom) -> ServiceKeeper:
    return ServiceKeeper(room, [HUB], room_stale_after_s=STALE_S)


async def issue(room: WaitingRoom, *names: str) -> list[Token]:
    return [await room.issue(SPOKE, NURSE_A, patient(name)) for name in names]


async def call(room: WaitingRoom, token: Token | None = None) -> tuple[TokenId, RoomId]:
    called = await room.call_next(HUB, DOCTOR_S, "node-a", token.id if token else None)
    assert called.room is not None
    return called.id, called.room


async def index(store: Redis) -> dict[str, int]:
    """The hub's open rooms and their last signs of life."""
    rows = cast(
        list[tuple[str, float]], await store.zrange(open_rooms_key(HUB), 0, -1, withscores=True)
    )
    return {r: int(score) for r, score in rows}


async def ended_events(store: Redis, room_id: str) -> list[dict[str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], await store.xrange(events_key(HUB)))
    return [f for _, f in entries if f.get("event") == "ended" and f.get("room") == room_id]


async def waiting(room: WaitingRoom) -> list[str]:
    return [t.patient.name for t in (await room.snapshot(HUB)).waiting]


async def record(store: Redis, room_id: str) -> dict[str, str]:
    return cast(dict[str, str], await store.hgetall(room_key(HUB, room_id)))


async def token(room: WaitingRoom, token_id: TokenId) -> Token:
    found = await room.token(HUB, token_id)
    assert found is not None
    return found


# ------------------------------------------------------------------ the index of open rooms


async def test_calls_ends_and_beats_keep_the_index_of_open_rooms(
    room: WaitingRoom, clock: Clock, store: Redis
) -> None:
    await issue(room, "A", "B", "C")
    _, first = await call(room)
    called_at = ms(clock.now)
    clock.now += timedelta(seconds=3)
    _, second = await call(room)
    assert await index(store) == {first: called_at, second: ms(clock.now)}

    # A beat of the process holding the room moves its sign of life.
    clock.now += timedelta(seconds=4)
    assert await room.touch_room(HUB, first) == "created"
    assert (await record(store, first))["alive_at"] == str(ms(clock.now))
    assert (await index(store))[first] == ms(clock.now)

    assert await room.end_room(HUB, first, "hangup") == "requeued"
    assert list(await index(store)) == [second]
    await room.activate_room(HUB, second)
    assert await room.end_room(HUB, second, "hangup") == "completed"
    assert await index(store) == {}
    # A late beat neither brings the room back nor puts it in the index again.
    assert await room.touch_room(HUB, second) == "ended"
    assert "alive_at" not in await record(store, second)
    assert await index(store) == {}
    assert await room.touch_room(HUB, RoomId(f"{HUB}.no-such-room")) == "missing"
    assert not await store.exists(room_key(HUB, f"{HUB}.no-such-room"))


async def test_the_sweep_forgets_expired_records_and_rooms_it_cannot_judge(
    room: WaitingRoom, keeper: ServiceKeeper, clock: Clock, store: Redis
) -> None:
    await issue(room, "A", "B")
    _, expired = await call(room)
    await store.delete(room_key(HUB, expired))  # its 14 days are over
    # Made active by a server that does not beat (an older version): no alive_at at all.
    _, unbeaten = await call(room)
    await room.activate_room(HUB, unbeaten)
    clock.now += timedelta(hours=2)
    assert await keeper.sweep_rooms() == []
    assert await index(store) == {}
    assert (await record(store, unbeaten))["state"] == "active"


# ------------------------------------------------------------------ nobody opened the room


async def test_a_room_nobody_opens_ends_as_a_no_show_after_the_no_show_time(
    room: WaitingRoom, keeper: ServiceKeeper, clock: Clock, store: Redis
) -> None:
    a, *_ = await issue(room, "A", "B", "C", "D", "E")
    token_id, room_id = await call(room)
    assert token_id == a.id

    clock.now += NO_SHOW_DUE - timedelta(seconds=1)
    assert await keeper.sweep_rooms() == []
    assert (await record(store, room_id))["state"] == "created"
    assert (await token(room, a.id)).state is TokenState.CALLED

    clock.now += timedelta(seconds=2)
    assert await keeper.sweep_rooms() == [SweptRoom(room_id, a.id, "no_show", "requeued")]
    stored = await record(store, room_id)
    assert (stored["state"], stored["end_reason"]) == ("ended", "no_show")
    # As the live room's own no-show timer would have it: three places back the first time.
    assert await waiting(room) == ["B", "C", "D", "A", "E"]
    [event] = await ended_events(store, room_id)
    assert (event["reason"], event["outcome"], event["token"]) == ("no_show", "requeued", a.id)
    assert await keeper.sweep_rooms() == []  # once only

    # The second time, the token is dropped as a no-show.
    _, again = await call(room, a)
    clock.now += NO_SHOW_DUE + timedelta(seconds=1)
    assert await keeper.sweep_rooms() == [SweptRoom(again, a.id, "no_show", "no_show")]
    assert (await token(room, a.id)).state is TokenState.NO_SHOW
    assert await waiting(room) == ["B", "C", "D", "E"]
    assert await index(store) == {}


async def test_the_keeper_sweeps_every_few_seconds_and_only_when_asked_to(
    room: WaitingRoom, keeper: ServiceKeeper, clock: Clock, store: Redis
) -> None:
    await issue(room, "A", "B")
    _, first = await call(room)
    clock.now += timedelta(hours=1)
    await ServiceKeeper(room, [HUB]).tick()  # a keeper without a stale time leaves rooms alone
    assert (await record(store, first))["state"] == "created"

    _, later = await call(room)
    clock.now += NO_SHOW_DUE
    await keeper.tick()  # sweeps the first room; the later one is due a moment after
    assert (await record(store, first))["state"] == "ended"
    assert (await record(store, later))["state"] == "created"
    clock.now += timedelta(seconds=1)
    await keeper.tick()  # not at every tick...
    assert (await record(store, later))["state"] == "created"
    clock.now += timedelta(seconds=4)
    await keeper.tick()  # ...but every few seconds
    assert (await record(store, later))["state"] == "ended"


# ------------------------------------------------------------------ the holder is gone


async def test_an_active_room_whose_holder_stopped_beating_completes_as_peer_lost(
    room: WaitingRoom, keeper: ServiceKeeper, clock: Clock, store: Redis
) -> None:
    a, _ = await issue(room, "A", "B")
    _, room_id = await call(room)
    await room.touch_room(HUB, room_id)  # a process made the room live
    clock.now += timedelta(seconds=40)
    await room.activate_room(HUB, room_id)
    await room.touch_room(HUB, room_id)  # its last beat: then the process dies

    clock.now += STALE
    assert await keeper.sweep_rooms() == []
    assert (await token(room, a.id)).state is TokenState.IN_CONSULTATION
    clock.now += timedelta(seconds=1)
    assert await keeper.sweep_rooms() == [SweptRoom(room_id, a.id, "peer_lost", "completed")]
    done = await token(room, a.id)
    assert done.state is TokenState.COMPLETED
    assert done.ended_at == clock.now
    stored = await record(store, room_id)
    assert (stored["state"], stored["end_reason"]) == ("ended", "peer_lost")
    [event] = await ended_events(store, room_id)
    assert (event["reason"], event["outcome"]) == ("peer_lost", "completed")
    assert await waiting(room) == ["B"]
    assert await index(store) == {}


async def test_a_created_room_whose_holder_died_gives_the_token_its_place_back(
    room: WaitingRoom, keeper: ServiceKeeper, clock: Clock, store: Redis
) -> None:
    a, _, _ = await issue(room, "A", "B", "C")
    _, room_id = await call(room)
    await room.touch_room(HUB, room_id)  # the doctor opened it; the nurse had not joined yet
    clock.now += STALE + timedelta(seconds=1)
    assert await keeper.sweep_rooms() == [SweptRoom(room_id, a.id, "peer_lost", "requeued")]
    # Back at the head: not a no-show (the spoke may never have had the chance to join).
    assert await waiting(room) == ["A", "B", "C"]
    back = await token(room, a.id)
    assert (back.state, back.room, back.doctor) == (TokenState.WAITING, None, None)
    assert "no_shows" not in await store.hgetall(f"wr:{{{HUB}}}:token:{a.id}")
    [event] = await ended_events(store, room_id)
    assert (event["reason"], event["outcome"]) == ("peer_lost", "requeued")


# ------------------------------------------------------------------ a live room is left alone


async def test_a_room_kept_alive_by_its_beats_is_never_swept(
    room: WaitingRoom, keeper: ServiceKeeper, clock: Clock, store: Redis
) -> None:
    a, _ = await issue(room, "A", "B")
    _, room_id = await call(room)
    # Ten minutes, past both the no-show time and the stale time: a live room's own timers
    # (no-show, grace) decide its end, never the sweep.
    for step in range(120):
        await room.touch_room(HUB, room_id)
        if step == 60:
            await room.activate_room(HUB, room_id)
        clock.now += timedelta(seconds=5)
        await keeper.tick()
    assert (await record(store, room_id))["state"] == "active"
    assert (await token(room, a.id)).state is TokenState.IN_CONSULTATION
    assert list(await index(store)) == [room_id]
    assert await ended_events(store, room_id) == []


async def test_a_sweeper_whose_clock_runs_ahead_leaves_a_beating_room_alone(
    store: Redis, room: WaitingRoom, clock: Clock
) -> None:
    """The sweep compares the holder's ``alive_at`` with its own clock: a server a minute ahead
    (within the grace, a beat and the margin) must not end a room that another keeps alive."""
    ahead = Clock(clock.now + timedelta(seconds=60))
    other = WaitingRoom(store, Directory.load(DEMO_DIRECTORY), ahead)
    sweeper = ServiceKeeper(other, [HUB], room_stale_after_s=STALE_S)
    (a,) = await issue(room, "A")
    _, room_id = await call(room)
    for _ in range(60):
        await room.touch_room(HUB, room_id)
        for moment in (clock, ahead):
            moment.now += timedelta(seconds=5)
        assert await sweeper.sweep_rooms() == []  # just before the next beat: the worst time
    # Once the holder stops, the sweeper ends the room when the last beat is stale by its own
    # clock: a minute early, 21 s after the last beat.  (A sweeper that lags is as late.)
    for moment in (clock, ahead):
        moment.now += STALE - timedelta(seconds=65)
    assert await sweeper.sweep_rooms() == []
    for moment in (clock, ahead):
        moment.now += timedelta(seconds=1)
    assert await sweeper.sweep_rooms() == [SweptRoom(room_id, a.id, "peer_lost", "requeued")]


async def test_a_live_room_on_this_process_beats_and_is_never_swept(
    aiohttp_client: AiohttpClient, store_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real thing: a doctor's join makes the room live on this process, which writes
    ``alive_at`` at once and at every beat; the keeper's sweep never ends it, however far the
    clock moves, and the room still ends normally."""
    monkeypatch.setattr("rooms.registry.ROOM_HEARTBEAT_S", 0.02)
    offset = [timedelta()]

    def clock() -> datetime:
        return datetime.now(UTC) + offset[0]

    settings = make_settings(store_url)
    client = await aiohttp_client(create_app(settings, clock=clock))
    app = client.server.app
    shared: Redis = app[STORE]
    nurse, doctor = ProtocolClient(client, NURSE), ProtocolClient(client, DOCTOR)
    try:
        await nurse.connect()
        await doctor.connect()
        await nurse.request("register_patient", "token_issued", patient=PATIENT)
        room_id = (await doctor.request("call_next", "room_opened"))["room_id"]
        await doctor.request("join", "joined", room_id=room_id)
        assert app[ROOMS].get(room_id) is not None

        async def beat_seen(since: int) -> None:
            deadline = time.monotonic() + 10
            while int((await shared.hget(room_key(HUB, room_id), "alive_at")) or 0) < since:
                assert time.monotonic() < deadline, "no beat"
                await asyncio.sleep(0.01)

        await beat_seen(ms(clock()))
        stale_s = room_stale_after_s(settings.room_grace_s)
        # Well past the no-show time and the stale time, in steps shorter than the stale time
        # (the app's own keeper sweeps in the background too).
        for _ in range(70):
            offset[0] += timedelta(seconds=stale_s / 3)
            await beat_seen(ms(clock()))
            assert await app[SERVICE_KEEPER].sweep_rooms() == []
        assert offset[0] > NO_SHOW_DUE + STALE
        assert (await shared.hgetall(room_key(HUB, room_id)))["state"] == "created"
        assert app[ROOMS].get(room_id) is not None

        await doctor.request("hangup", "room_ended")
        deadline = time.monotonic() + 10
        while (await shared.hget(room_key(HUB, room_id), "state")) != "ended":
            assert time.monotonic() < deadline, "the hang-up was not recorded"
            await asyncio.sleep(0.02)
        assert (await shared.hget(room_key(HUB, room_id), "end_reason")) == "hangup"
        assert await shared.zrange(open_rooms_key(HUB), 0, -1) == []
    finally:
        await nurse.close()
        await doctor.close()


# ------------------------------------------------------------------ races


@pytest.mark.parametrize("first", ["sweep", "end", "both"])
async def test_a_sweep_racing_the_room_s_own_end_ends_it_once(
    room: WaitingRoom, keeper: ServiceKeeper, clock: Clock, store: Redis, first: str
) -> None:
    """The holder stalled past the stale time, then ends the room (a hang-up) just as a keeper
    sweeps it: whichever comes first ends it, the other finds it ended."""
    (a,) = await issue(room, "A")
    _, room_id = await call(room)
    await room.touch_room(HUB, room_id)
    await room.activate_room(HUB, room_id)
    clock.now += STALE + timedelta(seconds=1)
    other = ServiceKeeper(room, [HUB], room_stale_after_s=STALE_S)
    if first == "sweep":
        swept = await keeper.sweep_rooms()
        assert await room.end_room(HUB, room_id, "hangup", took_place=True) == "ended"
        assert swept == [SweptRoom(room_id, a.id, "peer_lost", "completed")]
    elif first == "end":
        assert await room.end_room(HUB, room_id, "hangup", took_place=True) == "completed"
        assert await keeper.sweep_rooms() == []
    else:
        ended, *sweeps = await asyncio.gather(
            room.end_room(HUB, room_id, "hangup", took_place=True),
            keeper.sweep_rooms(),
            other.sweep_rooms(),
        )
        swept = [s for one in sweeps for s in one]
        assert (ended, len(swept)) in (("completed", 0), ("ended", 1))
    assert len(await ended_events(store, room_id)) == 1
    assert (await token(room, a.id)).state is TokenState.COMPLETED
    assert await index(store) == {}
    # The holder's beat that was on its way finds the room ended and leaves it so.
    assert await room.touch_room(HUB, room_id) == "ended"
    assert await index(store) == {}


# ------------------------------------------------------------------ a real server is killed


class ShortGraceProcess(SetuProcess):
    """``python server.py`` as in test_durability, with a short ``--room-grace``."""

    def __init__(self, redis_url: str, workdir: Path, grace_s: float) -> None:
        super().__init__(
            redis_url, workdir, node_id="node-sweep", extra_args=["--room-grace", str(grace_s)]
        )


async def test_a_consultation_of_a_killed_server_is_swept_after_the_restart(
    tmp_path: Path,
) -> None:
    """kill -9 of the server holding an active consultation: once restarted (with a 2 s grace),
    its keeper finds the room's beats stale, completes the token and ends the room, and a
    participant who comes back is told ``room_ended``."""
    grace_s = 2.0
    stale_s = room_stale_after_s(grace_s)
    redis = redis_with_aof(tmp_path / "redis", "always")
    redis.start()
    server = ShortGraceProcess(redis.url, tmp_path, grace_s)
    store = open_store(redis.url)
    people: list[ProtocolClient] = []
    peers = []
    try:
        server.start()
        await server.wait_ready()
        nurse = ProtocolClient(server, NURSE)  # type: ignore[arg-type]
        doctor = ProtocolClient(server, DOCTOR)  # type: ignore[arg-type]
        people = [nurse, doctor]
        for who in people:
            await who.connect()
        issued = await nurse.request("register_patient", "token_issued", patient=PATIENT)
        token_id = issued["token"]["id"]
        room_id = (await doctor.request("call_next", "room_opened"))["room_id"]
        peers = [await join_with_media(nurse, room_id), await join_with_media(doctor, room_id)]
        await asyncio.gather(*(p.wait_for(video=10, audio=20, timeout=30) for p in peers))
        deadline = time.monotonic() + 20
        while await token_state(redis, token_id) != TokenState.IN_CONSULTATION:
            assert time.monotonic() < deadline, "the consultation never started"
            await asyncio.sleep(0.05)
        assert (await store.hgetall(room_key(HUB, room_id)))["alive_at"]

        server.stop(kill=True)
        killed = time.monotonic()
        for p in peers:
            await p.close()
        for who in people:
            await who.expect("_closed")
        server.start()
        await server.wait_ready()
        # The last beat was at most one beat before the kill: not swept before it is stale.
        if time.monotonic() - killed < stale_s - 6:
            assert await token_state(redis, token_id) == TokenState.IN_CONSULTATION

        deadline = killed + stale_s + 15
        while await token_state(redis, token_id) != TokenState.COMPLETED:
            assert time.monotonic() < deadline, f"not swept:\n{server.log()}"
            await asyncio.sleep(0.1)
        swept_after = time.monotonic() - killed
        stored = await store.hgetall(room_key(HUB, room_id))
        assert (stored["state"], stored["end_reason"]) == ("ended", "peer_lost")
        assert await store.zrange(open_rooms_key(HUB), 0, -1) == []
        assert f"room {room_id} swept (peer_lost)" in server.log()

        for who in people:
            await reopen(who, server)
            refused = await error_for(who, "join", room_id=room_id)
            assert refused["code"] == "room_ended", refused
        queue = await doctor.request("watch_queue", "queue")
        assert [t["state"] for t in queue["today"]] == ["completed"]
        print(f"swept {swept_after:.1f}s after the kill (stale after {stale_s:.0f}s)")
    finally:
        for p in peers:
            await p.close()
        for who in people:
            await who.close()
        server.stop(kill=True)
        await store.aclose()
        redis.stop()
