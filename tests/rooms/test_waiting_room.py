"""The waiting room's scripts, run on the embedded store and on a real Redis alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId, Priority, Sex, SpokeId, TokenId, TokenState, UserId
from core.store import Redis
from rooms import Patient, QueueEmpty, ServiceKeeper, TokenNotFound, TokenNotWaiting, WaitingRoom

HUB = HubId("bhabua-sadar")
AKHLASPUR, SIHORIYA = SpokeId("akhlaspur"), SpokeId("sihoriya")
NURSE_A, NURSE_S = UserId("nurse.akhlaspur"), UserId("nurse.sihoriya")
DOCTOR = UserId("dr.sharma")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def patient(name: str = "Sita Devi") -> Patient:
    return Patient(name=name, age=31, sex=Sex.FEMALE, complaint="fever for three days")


@pytest.fixture
def clock() -> Clock:
    # 10:00 in Bhabua (UTC+5:30).
    return Clock(datetime(2026, 11, 27, 4, 30, tzinfo=UTC))


@pytest.fixture
async def room(store: Redis, clock: Clock) -> WaitingRoom:
    """The demo hub's waiting room, its around-the-clock window open."""
    waiting_room = WaitingRoom(store, Directory.load(DEMO_DIRECTORY), clock)
    await ServiceKeeper(waiting_room, [HUB]).tick()
    return waiting_room


async def test_tokens_are_numbered_per_hub_per_day(room: WaitingRoom, clock: Clock) -> None:
    first = await room.issue(AKHLASPUR, NURSE_A, patient("A"))
    second = await room.issue(SIHORIYA, NURSE_S, patient("B"))
    assert (first.number, second.number) == (1, 2)  # one sequence for the hub, both spokes
    assert first.id == "bhabua-sadar.20261127.1"
    assert first.state is TokenState.WAITING
    # 23:59 in Bhabua is still the same service day; 00:01 is the next one.
    clock.now = datetime(2026, 11, 27, 18, 29, tzinfo=UTC)
    assert (await room.issue(AKHLASPUR, NURSE_A, patient("C"))).number == 3
    clock.now = datetime(2026, 11, 27, 18, 31, tzinfo=UTC)
    next_day = await room.issue(AKHLASPUR, NURSE_A, patient("D"))
    assert next_day.number == 1
    assert next_day.id == "bhabua-sadar.20261128.1"


async def test_call_next_is_first_in_first_out(room: WaitingRoom, clock: Clock) -> None:
    issued = []
    for i in range(3):
        issued.append(await room.issue(AKHLASPUR, NURSE_A, patient(f"P{i}")))
        clock.now += timedelta(seconds=1)
    snap = await room.snapshot(HUB)
    assert [t.id for t in snap.waiting] == [t.id for t in issued]
    assert snap.position(issued[2].id) == 3
    called = await room.call_next(HUB, DOCTOR, "node-a")
    assert called.id == issued[0].id
    assert called.state is TokenState.CALLED
    assert called.doctor == DOCTOR
    assert called.room is not None
    assert called.room.startswith("bhabua-sadar.")
    record = await room.room(HUB, called.room)
    assert record is not None
    assert record["token"] == called.id
    assert record["nurse"] == NURSE_A
    assert record["node"] == "node-a"
    snap = await room.snapshot(HUB)
    assert snap.position(issued[1].id) == 1
    assert snap.position(issued[0].id) is None


async def test_calling_an_empty_queue(room: WaitingRoom) -> None:
    with pytest.raises(QueueEmpty):
        await room.call_next(HUB, DOCTOR, "node-a")


async def test_call_a_named_token(room: WaitingRoom) -> None:
    a = await room.issue(AKHLASPUR, NURSE_A, patient("A"))
    b = await room.issue(AKHLASPUR, NURSE_A, patient("B"))
    assert (await room.call_next(HUB, DOCTOR, "n", b.id)).id == b.id
    with pytest.raises(TokenNotWaiting):
        await room.call_next(HUB, DOCTOR, "n", b.id)
    assert (await room.call_next(HUB, DOCTOR, "n")).id == a.id


async def test_two_doctors_never_get_the_same_token(room: WaitingRoom) -> None:
    tokens = [await room.issue(AKHLASPUR, NURSE_A, patient(f"P{i}")) for i in range(60)]

    async def doctor(name: str) -> list[TokenId]:
        got = []
        while True:
            try:
                got.append((await room.call_next(HUB, UserId(name), "n")).id)
            except QueueEmpty:
                return got

    results = await asyncio.gather(*(doctor(f"dr.{i}") for i in range(8)))
    served = [t for r in results for t in r]
    assert sorted(served) == sorted(t.id for t in tokens)
    assert len(set(served)) == len(served)


async def test_room_end_completes_or_requeues(room: WaitingRoom) -> None:
    a = await room.issue(AKHLASPUR, NURSE_A, patient("A"))
    b = await room.issue(AKHLASPUR, NURSE_A, patient("B"))
    called = await room.call_next(HUB, DOCTOR, "n")
    assert called.room is not None
    # Media never flowed: the patient goes back to the head of the queue, not the tail.
    assert await room.end_room(HUB, called.room, "hangup") == "requeued"
    snap = await room.snapshot(HUB)
    assert [t.id for t in snap.waiting] == [a.id, b.id]
    assert snap.waiting[0].room is None
    again = await room.call_next(HUB, DOCTOR, "n")
    assert again.room is not None
    assert await room.activate_room(HUB, again.room) == "active"
    token = await room.token(HUB, a.id)
    assert token is not None
    assert token.state is TokenState.IN_CONSULTATION
    assert await room.end_room(HUB, again.room, "hangup") == "completed"
    assert await room.end_room(HUB, again.room, "hangup") == "ended"  # idempotent
    token = await room.token(HUB, a.id)
    assert token is not None
    assert token.state is TokenState.COMPLETED


async def test_a_consultation_whose_activation_was_missed_still_completes(
    room: WaitingRoom,
) -> None:
    a = await room.issue(AKHLASPUR, NURSE_A, patient("A"))
    called = await room.call_next(HUB, DOCTOR, "n")
    assert called.room is not None
    # The store was unreachable when media came up; the server knows the call took place.
    assert await room.end_room(HUB, called.room, "hangup", took_place=True) == "completed"
    token = await room.token(HUB, a.id)
    assert token is not None
    assert token.state is TokenState.COMPLETED


async def test_cancel_only_own_spokes_waiting_tokens(room: WaitingRoom) -> None:
    a = await room.issue(AKHLASPUR, NURSE_A, patient("A"))
    with pytest.raises(TokenNotFound):
        await room.cancel(SIHORIYA, a.id)
    await room.cancel(AKHLASPUR, a.id)
    with pytest.raises(TokenNotWaiting):
        await room.cancel(AKHLASPUR, a.id)
    snap = await room.snapshot(HUB)
    assert snap.waiting == ()
    assert snap.today[0].state is TokenState.CANCELLED


async def test_every_change_is_in_the_hub_stream(room: WaitingRoom, store: Redis) -> None:
    await room.issue(AKHLASPUR, NURSE_A, patient("A"))
    called = await room.call_next(HUB, DOCTOR, "n")
    assert called.room is not None
    await room.end_room(HUB, called.room, "hangup")
    events = await store.xrange("wr:{bhabua-sadar}:events")
    assert [fields["event"] for _, fields in events] == [
        "window_opened",
        "issued",
        "called",
        "ended",
    ]


async def test_keys_share_the_hub_hash_tag(room: WaitingRoom, store: Redis) -> None:
    await room.issue(AKHLASPUR, NURSE_A, patient("A"))
    await room.call_next(HUB, DOCTOR, "n")
    keys = [k async for k in store.scan_iter("wr:*")]
    assert keys
    assert all(k.startswith("wr:{bhabua-sadar}:") for k in keys)


def urgent(name: str) -> Patient:
    return Patient(
        name=name, age=60, sex=Sex.MALE, complaint="breathless", priority=Priority.URGENT
    )


async def test_urgent_first_but_nobody_waits_forever(room: WaitingRoom, clock: Clock) -> None:
    # The demo hub lets an urgent token overtake normal ones issued up to 30 minutes before it.
    old = await room.issue(AKHLASPUR, NURSE_A, patient("waited 40 minutes"))
    clock.now += timedelta(minutes=30)
    recent = await room.issue(AKHLASPUR, NURSE_A, patient("waited 10 minutes"))
    clock.now += timedelta(minutes=10)
    first_urgent = await room.issue(SIHORIYA, NURSE_S, urgent("urgent 1"))
    clock.now += timedelta(seconds=1)
    second_urgent = await room.issue(SIHORIYA, NURSE_S, urgent("urgent 2"))
    assert second_urgent.patient.priority is Priority.URGENT
    snap = await room.snapshot(HUB)
    assert [t.id for t in snap.waiting] == [old.id, first_urgent.id, second_urgent.id, recent.id]
    called = [(await room.call_next(HUB, DOCTOR, "n")).id for _ in range(4)]
    assert called == [old.id, first_urgent.id, second_urgent.id, recent.id]


async def test_a_requeued_token_keeps_its_place(room: WaitingRoom, clock: Clock) -> None:
    first = await room.issue(AKHLASPUR, NURSE_A, patient("A"))
    clock.now += timedelta(minutes=1)
    await room.issue(AKHLASPUR, NURSE_A, patient("B"))
    clock.now += timedelta(minutes=1)
    await room.issue(SIHORIYA, NURSE_S, urgent("C"))  # counts as issued 29 minutes earlier
    called = await room.call_next(HUB, DOCTOR, "n")
    assert called.patient.name == "C"
    assert called.room is not None
    await room.end_room(HUB, called.room, "hangup")  # never started: back in its place
    snap = await room.snapshot(HUB)
    assert [t.patient.name for t in snap.waiting] == ["C", "A", "B"]
    assert snap.waiting[1].id == first.id


async def test_skip_moves_a_token_back(room: WaitingRoom) -> None:
    tokens = [await room.issue(AKHLASPUR, NURSE_A, patient(f"P{i}")) for i in range(5)]
    await room.skip(HUB, tokens[0].id, DOCTOR)  # the demo hub's requeue_places is 3
    snap = await room.snapshot(HUB)
    assert [t.patient.name for t in snap.waiting] == ["P1", "P2", "P3", "P0", "P4"]
    await room.skip(HUB, tokens[4].id, DOCTOR)  # already last: stays last
    snap = await room.snapshot(HUB)
    assert snap.waiting[-1].id == tokens[4].id
    await room.skip(HUB, tokens[3].id, DOCTOR)  # fewer than 3 behind it: goes last
    snap = await room.snapshot(HUB)
    assert [t.patient.name for t in snap.waiting] == ["P1", "P2", "P0", "P4", "P3"]
    with pytest.raises(TokenNotWaiting):
        await room.skip(HUB, TokenId("bhabua-sadar.20261127.99"), DOCTOR)


async def test_no_show_goes_back_then_drops_and_can_be_recalled(room: WaitingRoom) -> None:
    tokens = [await room.issue(AKHLASPUR, NURSE_A, patient(f"P{i}")) for i in range(5)]
    first = await room.call_next(HUB, DOCTOR, "n")
    assert first.room is not None
    assert await room.end_room(HUB, first.room, "no_show") == "requeued"
    snap = await room.snapshot(HUB)
    assert [t.patient.name for t in snap.waiting] == ["P1", "P2", "P3", "P0", "P4"]
    assert snap.waiting[3].state is TokenState.WAITING
    again = await room.call_next(HUB, DOCTOR, "n", tokens[0].id)
    assert again.room is not None
    assert await room.end_room(HUB, again.room, "no_show") == "no_show"
    token = await room.token(HUB, tokens[0].id)
    assert token is not None
    assert token.state is TokenState.NO_SHOW
    assert tokens[0].id not in [t.id for t in (await room.snapshot(HUB)).waiting]
    # The patient turns up after all: a doctor recalls the token to the head of the queue.
    await room.recall(HUB, tokens[0].id, DOCTOR)
    snap = await room.snapshot(HUB)
    assert snap.waiting[0].id == tokens[0].id
    assert snap.waiting[0].state is TokenState.WAITING
    with pytest.raises(TokenNotWaiting):
        await room.recall(HUB, tokens[1].id, DOCTOR)  # not a no-show
    with pytest.raises(TokenNotFound):
        await room.recall(HUB, TokenId("bhabua-sadar.20261127.99"), DOCTOR)
