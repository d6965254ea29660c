"""Tokens live inside the hub's service windows: scheduled while closed, carried over or
expired at closing, capped per window.  A clock the test moves drives it all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId, Sex, SpokeId, TokenState, UserId
from core.store import Redis
from rooms import Patient, QueueEmpty, ServiceKeeper, WaitingRoom

HUB = HubId("bhabua-sadar")
SPOKE, NURSE, DOCTOR = SpokeId("akhlaspur"), UserId("nurse.akhlaspur"), UserId("dr.sharma")
IST_OFFSET = timedelta(hours=5, minutes=30)


def ist(hh: int, mm: int = 0, day: int = 27) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=UTC) - IST_OFFSET


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def directory(tmp_path: Path, at_closing: str = "carry_over", capacity: int = 100) -> Directory:
    text = DEMO_DIRECTORY.read_text()
    text = text.replace('open = "00:00"\nclose = "24:00"', 'open = "09:00"\nclose = "16:00"')
    text = text.replace('at_closing = "carry_over"', f'at_closing = "{at_closing}"')
    text = text.replace("capacity = 120", f"capacity = {capacity}")
    path = tmp_path / "directory.toml"
    path.write_text(text)
    return Directory.load(path)


def patient(name: str) -> Patient:
    return Patient(name=name, age=40, sex=Sex.FEMALE, complaint="cough")


async def setup(
    store: Redis, tmp_path: Path, start: datetime, **kw: object
) -> tuple[WaitingRoom, ServiceKeeper, Clock]:
    clock = Clock(start)
    room = WaitingRoom(store, directory(tmp_path, **kw), clock)  # type: ignore[arg-type]
    keeper = ServiceKeeper(room, [HUB])
    await keeper.tick()
    return room, keeper, clock


async def test_tokens_issued_before_opening_wait_for_the_window(
    store: Redis, tmp_path: Path
) -> None:
    room, keeper, clock = await setup(store, tmp_path, ist(8, 30))
    early = await room.issue(SPOKE, NURSE, patient("early"))
    assert early.state is TokenState.SCHEDULED
    assert early.number == 1
    with pytest.raises(QueueEmpty):
        await room.call_next(HUB, DOCTOR, "n")
    snap = await room.snapshot(HUB)
    assert snap.window is None
    assert [t.id for t in snap.held] == [early.id]
    assert room.next_opening(HUB) == ist(9)
    clock.now = ist(9)
    await keeper.tick()
    snap = await room.snapshot(HUB)
    assert snap.window is not None
    assert snap.closes_at == ist(16)
    assert [t.id for t in snap.waiting] == [early.id]
    assert snap.waiting[0].state is TokenState.WAITING
    later = await room.issue(SPOKE, NURSE, patient("later"))
    assert later.state is TokenState.WAITING
    assert (await room.call_next(HUB, DOCTOR, "n")).id == early.id


async def test_closing_carries_waiting_tokens_to_the_head_of_the_next_window(
    store: Redis, tmp_path: Path
) -> None:
    room, keeper, clock = await setup(store, tmp_path, ist(15, 0))
    a = await room.issue(SPOKE, NURSE, patient("A"))
    b = await room.issue(SPOKE, NURSE, patient("B"))
    c = await room.issue(SPOKE, NURSE, patient("C"))
    in_room = await room.call_next(HUB, DOCTOR, "n")  # A is being seen at closing time
    assert in_room.room is not None
    await room.activate_room(HUB, in_room.room)
    clock.now = ist(16, 0)
    await keeper.tick()
    snap = await room.snapshot(HUB)
    assert snap.window is None
    assert [t.id for t in snap.held] == [b.id, c.id]
    assert {t.state for t in snap.held} == {TokenState.CARRIED_OVER}
    # A consultation under way when the window closes goes on to its end.
    assert await room.end_room(HUB, in_room.room, "hangup") == "completed"
    # After closing, new tokens wait for tomorrow, behind the carried-over ones.
    clock.now = ist(18, 0)
    d = await room.issue(SPOKE, NURSE, patient("D"))
    assert d.state is TokenState.SCHEDULED
    clock.now = ist(9, 0, day=28)
    await keeper.tick()
    snap = await room.snapshot(HUB)
    assert [t.id for t in snap.waiting] == [b.id, c.id, d.id]
    # Yesterday's tokens still in play stay in the day's list, so the nurse keeps seeing them.
    assert {b.id, c.id, d.id} <= {t.id for t in snap.today}
    assert a.id not in {t.id for t in snap.today}  # completed yesterday: over
    assert d.number == 4  # 18:00 is still the 27th's service day
    assert a.number == 1
    tomorrow = await room.issue(SPOKE, NURSE, patient("E"))
    assert tomorrow.number == 1  # a new service day numbers from 1 again


async def test_expire_policy(store: Redis, tmp_path: Path) -> None:
    room, keeper, clock = await setup(store, tmp_path, ist(15, 59), at_closing="expire")
    a = await room.issue(SPOKE, NURSE, patient("A"))
    clock.now = ist(16, 0)
    await keeper.tick()
    token = await room.token(HUB, a.id)
    assert token is not None
    assert token.state is TokenState.EXPIRED
    snap = await room.snapshot(HUB)
    assert snap.held == ()
    assert snap.waiting == ()


async def test_capacity_holds_the_overflow_for_the_next_window(
    store: Redis, tmp_path: Path
) -> None:
    room, keeper, clock = await setup(store, tmp_path, ist(10), capacity=2)
    tokens = [await room.issue(SPOKE, NURSE, patient(f"P{i}")) for i in range(3)]
    assert [t.state for t in tokens] == [
        TokenState.WAITING,
        TokenState.WAITING,
        TokenState.SCHEDULED,
    ]
    clock.now = ist(16)
    await keeper.tick()
    clock.now = ist(9, day=28)
    await keeper.tick()
    snap = await room.snapshot(HUB)
    # The two carried over come first, and fill tomorrow's capacity of 2.
    assert [t.id for t in snap.waiting] == [tokens[0].id, tokens[1].id]
    assert [t.id for t in snap.held] == [tokens[2].id]


async def test_withdrawing_a_scheduled_token(store: Redis, tmp_path: Path) -> None:
    room, _keeper, _clock = await setup(store, tmp_path, ist(7))
    a = await room.issue(SPOKE, NURSE, patient("A"))
    await room.cancel(SPOKE, a.id)
    snap = await room.snapshot(HUB)
    assert snap.held == ()
    assert snap.today[0].state is TokenState.CANCELLED


async def test_keepers_agree_without_coordination(store: Redis, tmp_path: Path) -> None:
    room, keeper, clock = await setup(store, tmp_path, ist(8))
    await room.issue(SPOKE, NURSE, patient("A"))
    clock.now = ist(9)
    other = ServiceKeeper(room, [HUB])
    await keeper.tick()
    await other.tick()
    await keeper.tick()
    snap = await room.snapshot(HUB)
    assert len(snap.waiting) == 1
    events = await store.xrange("wr:{bhabua-sadar}:events")
    assert [f["event"] for _, f in events].count("window_opened") == 1


async def test_a_server_whose_clock_lags_neither_closes_nor_reopens_windows(
    store: Redis, tmp_path: Path
) -> None:
    """Two servers a fraction of a second apart around opening and closing time."""
    ahead = Clock(ist(9) + timedelta(milliseconds=200))
    behind = Clock(ist(9) - timedelta(milliseconds=200))
    d = directory(tmp_path, at_closing="expire")
    room_ahead, room_behind = WaitingRoom(store, d, ahead), WaitingRoom(store, d, behind)
    keeper_ahead, keeper_behind = (
        ServiceKeeper(room_ahead, [HUB]),
        ServiceKeeper(room_behind, [HUB]),
    )
    held = await room_behind.issue(SPOKE, NURSE, patient("before nine"))
    await keeper_ahead.tick()  # opens 09:00
    await keeper_behind.tick()  # still 08:59:59.8 here: must not close it (and expire her)
    snap = await room_ahead.snapshot(HUB)
    assert snap.window is not None
    assert [t.id for t in snap.waiting] == [held.id]
    # At closing time the same, the other way round.
    ahead.now, behind.now = (
        ist(16) + timedelta(milliseconds=200),
        ist(16) - timedelta(milliseconds=200),
    )
    await keeper_ahead.tick()  # closes 16:00 (the token expires: that is this hub's policy)
    await keeper_behind.tick()  # still 15:59:59.8 here: must not reopen 09:00
    snap = await room_behind.snapshot(HUB)
    assert snap.window is None
    token = await room_behind.token(HUB, held.id)
    assert token is not None
    assert token.state is TokenState.EXPIRED
