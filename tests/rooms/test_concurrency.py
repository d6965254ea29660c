"""Many doctors and nurses at once on one real Redis: every token is served once, none is lost,
numbers never repeat or skip.

The doctors run as concurrent coroutines spread over several "server processes": each
simulated node has a store client (connection pool) and a :class:`WaitingRoom` of its own, as
each Setu process has, and its doctors share them, as the sessions of one process do.  A pool
opens one connection per command in flight, so Redis really sees dozens of clients calling at
the same moment (the test checks that it did); what keeps them apart is the atomicity of the
Lua scripts, which is what is under test here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId, Sex, SpokeId, TokenId, TokenState, UserId
from core.store import Redis, open_store
from rooms import Patient, QueueEmpty, ServiceKeeper, Token, WaitingRoom
from rooms.waiting_room import events_key, prefix

HUB = HubId("bhabua-sadar")
SPOKES = (SpokeId("akhlaspur"), SpokeId("sihoriya"))
#: Simulated server processes, each with its own store client; the doctors are spread over them.
NODES = 5
DOCTORS = 50
TOKENS = 1_000
#: 10:00 in Bhabua (UTC+5:30), inside the demo hub's around-the-clock window.
START = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
#: Upper bound on any one phase of a test; the machine may be loaded.
DEADLINE_S = 60.0


class TickingClock:
    """A clock that moves one millisecond each time it is read.

    Every issue and call reads it once, so each gets a moment of its own and the service day
    stays the same for the whole test.  ``frozen`` stops it, to make actions simultaneous.
    """

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.frozen = False

    def __call__(self) -> datetime:
        if not self.frozen:
            self.now += timedelta(milliseconds=1)
        return self.now


@dataclass
class Nodes:
    rooms: list[WaitingRoom]
    stores: list[Redis]
    clock: TickingClock

    def room(self, i: int) -> WaitingRoom:
        return self.rooms[i % len(self.rooms)]


def roomy_directory(tmp_path: Path) -> Directory:
    """The demo directory with a window large enough for every token of these tests."""
    text = DEMO_DIRECTORY.read_text()
    assert "capacity = 120" in text
    path = tmp_path / "directory.toml"
    path.write_text(text.replace("capacity = 120", "capacity = 10000"))
    return Directory.load(path)


@pytest.fixture
async def nodes(redis_url: str, tmp_path: Path) -> AsyncIterator[Nodes]:
    directory = roomy_directory(tmp_path)
    clock = TickingClock(START)
    stores = [open_store(redis_url) for _ in range(NODES)]
    try:
        rooms = [WaitingRoom(store, directory, clock) for store in stores]
        await ServiceKeeper(rooms[0], [HUB]).tick()
        yield Nodes(rooms, stores, clock)
    finally:
        for store in stores:
            await store.aclose()


def patient(label: str) -> Patient:
    return Patient(name=f"Patient {label}", age=40, sex=Sex.FEMALE, complaint="fever")


def nurse_of(spoke: SpokeId, i: int = 0) -> UserId:
    return UserId(f"nurse.{spoke}" + (f".{i}" if i else ""))


async def doctor_until_empty(room: WaitingRoom, name: UserId, go: asyncio.Event) -> list[Token]:
    """Call the head of the queue until nobody is waiting; the tokens got, in order."""
    await go.wait()
    got = []
    while True:
        try:
            got.append(await room.call_next(HUB, name, f"node-{name}"))
        except QueueEmpty:
            return got


async def hashes(store: Redis, kind: str) -> dict[str, dict[str, str]]:
    """Every ``token:`` or ``room:`` hash of the hub in the store, by key."""
    keys = [k async for k in store.scan_iter(match=prefix(HUB) + kind + ":*", count=1000)]
    return {k: await store.hgetall(k) for k in keys}


def check_numbering(tokens: list[Token]) -> dict[str, int]:
    """Numbers are unique and gap-free (1..n) within each service day; returns n per day."""
    by_day: dict[str, list[int]] = defaultdict(list)
    for t in tokens:
        by_day[t.id.split(".")[1]].append(t.number)
    for day, numbers in by_day.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), f"numbers of {day}"
    return {day: len(numbers) for day, numbers in by_day.items()}


async def test_fifty_doctors_serve_a_thousand_tokens_exactly_once(nodes: Nodes) -> None:
    issued = [
        await nodes.room(i).issue(SPOKES[i % 2], nurse_of(SPOKES[i % 2]), patient(str(i)))
        for i in range(TOKENS)
    ]
    assert [t.number for t in issued] == list(range(1, TOKENS + 1))
    snap = await nodes.rooms[0].snapshot(HUB)
    assert [t.id for t in snap.waiting] == [t.id for t in issued]

    go = asyncio.Event()
    names = [UserId(f"dr.{i:02d}") for i in range(DOCTORS)]
    doctors = [
        asyncio.create_task(doctor_until_empty(nodes.room(i), name, go))
        for i, name in enumerate(names)
    ]
    started = time.monotonic()
    go.set()
    results = await asyncio.wait_for(asyncio.gather(*doctors), DEADLINE_S)
    elapsed = time.monotonic() - started

    served = [t for got in results for t in got]
    counts = Counter(t.id for t in served)
    duplicated = {tid: n for tid, n in counts.items() if n > 1}
    assert not duplicated, f"tokens served more than once: {duplicated}"
    missing = {t.id for t in issued} - set(counts)
    assert not missing, f"{len(missing)} tokens never served, e.g. {sorted(missing)[:5]}"
    assert len(served) == TOKENS
    # Every doctor's first call was in flight at the same time as the others' and found the
    # queue full, so every doctor served someone: the calls really overlapped.
    assert all(results), [len(got) for got in results]
    for name, got in zip(names, results, strict=True):
        # Each call takes the head of the queue, so one doctor's patients come in issue order.
        numbers = [t.number for t in got]
        assert numbers == sorted(numbers), f"{name} was given tokens out of order: {numbers}"
        for t in got:
            assert t.state is TokenState.CALLED
            assert t.doctor == name
            assert t.room is not None

    # The store agrees: nobody waits, each token is called once by the doctor who got it, and
    # each call opened exactly one room, for that token.
    store = nodes.stores[0]
    assert await store.zcard(prefix(HUB) + "queue") == 0
    tokens = await hashes(store, "token")
    rooms = await hashes(store, "room")
    assert len(tokens) == TOKENS
    assert len(rooms) == TOKENS
    doctor_of = {t.id: t.doctor for t in served}
    room_of = {t.id: t.room for t in served}
    for record in tokens.values():
        assert record["state"] == "called", record
        assert record["doctor"] == doctor_of[TokenId(record["id"])]
        assert record["room"] == room_of[TokenId(record["id"])]
    assert sorted(r["token"] for r in rooms.values()) == sorted(counts)
    called_events = [
        fields["token"]
        for _id, fields in await store.xrange(events_key(HUB))
        if fields["event"] == "called"
    ]
    assert sorted(called_events) == sorted(counts)
    # Several connections per node: Redis saw concurrent clients, not one queue of commands.
    clients = (await store.info("clients"))["connected_clients"]
    assert clients > NODES + 1, clients
    print(f"{DOCTORS} doctors served {TOKENS} tokens in {elapsed:.2f}s over {clients} clients")


async def test_nurses_keep_issuing_while_doctors_call(nodes: Nodes) -> None:
    """Issue and call interleaved: 10 nurses issue 600 tokens while 50 doctors make 500 calls.

    Afterwards each acknowledged token is either served by exactly one doctor or still
    waiting (in the queue, in its state); nothing else is in the store.
    """
    per_nurse, calls_per_doctor = 60, 10
    nurses = [(SPOKES[i % 2], nurse_of(SPOKES[i % 2], i + 1)) for i in range(10)]
    go = asyncio.Event()

    async def nurse(i: int, spoke: SpokeId, name: UserId) -> list[Token]:
        await go.wait()
        room = nodes.room(i)
        return [await room.issue(spoke, name, patient(f"{name}/{k}")) for k in range(per_nurse)]

    async def doctor(i: int, name: UserId) -> list[Token]:
        await go.wait()
        room = nodes.room(i)
        got: list[Token] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < calls_per_doctor:
            try:
                got.append(await room.call_next(HUB, name, f"node-{i % NODES}"))
            except QueueEmpty:
                # The nurses have not caught up yet: try again shortly, as a doctor would.
                assert time.monotonic() < deadline, f"{name}: queue stayed empty"
                await asyncio.sleep(0.002)
        return got

    nurse_tasks = [
        asyncio.create_task(nurse(i, spoke, name)) for i, (spoke, name) in enumerate(nurses)
    ]
    doctor_tasks = [asyncio.create_task(doctor(i, UserId(f"dr.{i:02d}"))) for i in range(DOCTORS)]
    go.set()
    issued_by = await asyncio.wait_for(asyncio.gather(*nurse_tasks), DEADLINE_S)
    served_by = await asyncio.wait_for(asyncio.gather(*doctor_tasks), DEADLINE_S)

    acked = [t for tokens in issued_by for t in tokens]
    served = [t for tokens in served_by for t in tokens]
    assert len(acked) == len(nurses) * per_nurse
    assert len({t.id for t in acked}) == len(acked), "one id acknowledged twice"
    assert len(served) == DOCTORS * calls_per_doctor
    counts = Counter(t.id for t in served)
    assert max(counts.values()) == 1, "a token was served twice"
    acked_ids = {t.id for t in acked}
    assert set(counts) <= acked_ids, "a doctor was given a token nobody was told about"

    # Every acknowledged token is served exactly once or still waiting, never both, never lost.
    snap = await nodes.rooms[0].snapshot(HUB)
    waiting = [t.id for t in snap.waiting]
    assert len(set(waiting)) == len(waiting)
    assert set(waiting) == acked_ids - set(counts)
    assert not set(waiting) & set(counts)
    assert all(t.state is TokenState.WAITING for t in snap.waiting)
    assert snap.held == ()
    by_id = {t.id: t for t in snap.today}
    assert set(by_id) == acked_ids, "the day's index differs from what the nurses were told"
    for t in served:
        stored = by_id[t.id]
        assert stored.state is TokenState.CALLED
        assert (stored.doctor, stored.room) == (t.doctor, t.room)

    # Numbers: unique and gap-free per service day, and the store's sequence agrees.
    per_day = check_numbering(acked)
    store = nodes.stores[0]
    for day, n in per_day.items():
        assert int(await store.get(prefix(HUB) + f"seq:{day}") or 0) == n
        assert await store.zcard(prefix(HUB) + f"day:{day}") == n

    # First in, first out for each nurse: her tokens queue in the order she issued them, so
    # those served are the first ones she issued and the rest still wait, in order.
    served_ids = set(counts)
    position = {tid: i for i, tid in enumerate(waiting)}
    for tokens in issued_by:
        flags = [t.id in served_ids for t in tokens]
        k = flags.index(False) if False in flags else len(flags)
        assert not any(flags[k:]), f"{tokens[0].nurse}: a later token overtook an earlier one"
        rest = [position[t.id] for t in tokens[k:]]
        assert rest == sorted(rest), f"{tokens[0].nurse}'s waiting tokens out of order"


async def test_tokens_issued_in_the_same_millisecond_are_called_in_issue_order(
    nodes: Nodes,
) -> None:
    """Two nurses register patients at the same millisecond: the one numbered first is called
    first.  It is the 999th and 1,000th token of the hub that do it, a pair that any busy hub
    meets sooner or later (the hub's order counter is never reset)."""
    for i in range(TOKENS - 2):
        await nodes.room(i).issue(SPOKES[i % 2], nurse_of(SPOKES[i % 2]), patient(str(i)))
    nodes.clock.now += timedelta(milliseconds=1)
    nodes.clock.frozen = True
    pair = await asyncio.gather(
        nodes.room(0).issue(SPOKES[0], nurse_of(SPOKES[0]), patient("same ms, A")),
        nodes.room(1).issue(SPOKES[1], nurse_of(SPOKES[1]), patient("same ms, B")),
    )
    assert sorted(t.number for t in pair) == [TOKENS - 1, TOKENS]
    assert pair[0].issued_at == pair[1].issued_at
    snap = await nodes.rooms[0].snapshot(HUB)
    numbers = [t.number for t in snap.waiting]
    assert len(numbers) == TOKENS
    assert numbers[-3:] == [TOKENS - 2, TOKENS - 1, TOKENS], (
        f"queue order of the last tokens: {numbers[-3:]}"
    )
    called = await nodes.rooms[0].call_next(HUB, UserId("dr.sharma"), "node-0")
    assert called.number == 1
