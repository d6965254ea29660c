"""What the spoke is told while she waits: an estimate, and a notice when her turn is near."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId, Sex, SpokeId, UserId
from core.store import Redis
from rooms import Patient, QueueEmpty, ServiceKeeper, Token, WaitingRoom

HUB = HubId("bhabua-sadar")
SPOKE, NURSE = SpokeId("akhlaspur"), UserId("nurse.akhlaspur")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.notices: list[tuple[str, int]] = []

    async def turn_near(self, token: Token, position: int) -> None:
        self.notices.append((token.patient.name, position))


def patient(name: str) -> Patient:
    return Patient(name=name, age=30, sex=Sex.FEMALE, complaint="headache")


async def test_estimates_follow_recent_consultations_and_doctors(store: Redis) -> None:
    clock = Clock()
    room = WaitingRoom(store, Directory.load(DEMO_DIRECTORY), clock)
    await ServiceKeeper(room, [HUB]).tick()
    for i in range(4):
        await room.issue(SPOKE, NURSE, patient(f"P{i}"))
    snap = await room.snapshot(HUB)
    # No consultation yet: the hub's 15 minutes each, one doctor assumed.
    assert [snap.estimated_wait_minutes(p, 15) for p in (1, 2, 4)] == [0, 15, 45]
    # Two consultations of 6 and 10 minutes, two doctors on duty.
    for minutes in (6, 10):
        called = await room.call_next(HUB, UserId("dr.sharma"), "n")
        assert called.room is not None
        await room.activate_room(HUB, called.room)
        clock.now += timedelta(minutes=minutes)
        await room.end_room(HUB, called.room, "hangup")
    await room.doctor_present(HUB, UserId("dr.sharma"))
    await room.doctor_present(HUB, UserId("dr.khan"))
    snap = await room.snapshot(HUB)
    assert snap.doctors_on_duty == 2
    assert snap.consult_minutes(15) == 8
    assert snap.estimated_wait_minutes(2, 15) == 4
    # A doctor not seen for over a minute is off duty.
    clock.now += timedelta(minutes=2)
    assert (await room.snapshot(HUB)).doctors_on_duty == 0


async def test_turn_near_is_told_once_per_token(store: Redis) -> None:
    clock = Clock()
    room = WaitingRoom(store, Directory.load(DEMO_DIRECTORY), clock)
    recorder = Recorder()
    keeper = ServiceKeeper(room, [HUB], notifier=recorder)
    other_server = ServiceKeeper(room, [HUB], notifier=recorder)
    await keeper.tick()
    for i in range(3):
        await room.issue(SPOKE, NURSE, patient(f"P{i}"))
    await keeper.tick()
    await other_server.tick()
    assert recorder.notices == [("P0", 1), ("P1", 2)]
    await room.call_next(HUB, UserId("dr.sharma"), "n")
    await keeper.tick()
    assert recorder.notices[-1] == ("P2", 2)
    assert len(recorder.notices) == 3


async def test_an_offline_spoke_keeps_its_place_but_is_passed_over(store: Redis) -> None:
    clock = Clock()
    room = WaitingRoom(store, Directory.load(DEMO_DIRECTORY), clock)
    await ServiceKeeper(room, [HUB]).tick()
    other = SpokeId("sihoriya")
    first = await room.issue(SPOKE, NURSE, patient("from Akhlaspur"))
    second = await room.issue(other, UserId("nurse.sihoriya"), patient("from Sihoriya"))
    await room.spoke_present(HUB, SPOKE)
    await room.spoke_present(HUB, other)
    clock.now += timedelta(minutes=1)
    await room.spoke_present(HUB, other)  # Akhlaspur's link dropped a minute ago
    clock.now += timedelta(minutes=1, seconds=30)  # past the demo hub's 2-minute grace for it
    snap = await room.snapshot(HUB)
    assert snap.spokes_away == {SPOKE}
    assert [t.id for t in snap.waiting] == [first.id, second.id]  # its place is kept
    called = await room.call_next(HUB, UserId("dr.sharma"), "n")
    assert called.id == second.id  # but the present spoke is called first
    with pytest.raises(QueueEmpty, match="offline"):
        await room.call_next(HUB, UserId("dr.sharma"), "n")
    await room.spoke_present(HUB, SPOKE)  # back
    assert (await room.call_next(HUB, UserId("dr.sharma"), "n")).id == first.id
