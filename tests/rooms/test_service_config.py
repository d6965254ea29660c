"""Live service windows: an override kept in the store, read through a per-process cache, on
the embedded store and on a real Redis alike."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from datetime import UTC, datetime, timedelta

import pytest

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId
from core.service import AtClosing, Closure, ExtraDay, Service, Window
from core.service_text import MAX_ENTRIES, InvalidService, parse_service, service_toml
from core.store import Redis
from rooms import (
    HubFeed,
    ServiceConfigs,
    ServiceKeeper,
    StaleRevision,
    UnknownHub,
    WaitingRoom,
)
from rooms.service_config import DIRECTORY_REVISION, service_key

HUB = HubId("bhabua-sadar")
IST = timedelta(hours=5, minutes=30)


def ist(hh: int, mm: int = 0, day: int = 27) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=UTC) - IST


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


DAY_SHIFT = Service(
    windows=(Window(open="09:00", close="16:00"),),
    closures=(Closure(date=dt.date(2027, 1, 26), reason="Republic Day"),),
    capacity=40,
    at_closing=AtClosing.EXPIRE,
)


@pytest.fixture
def directory() -> Directory:
    return Directory.load(DEMO_DIRECTORY)


# ---------------------------------------------------------------- the store


async def test_an_override_round_trips_through_the_store(
    store: Redis, directory: Directory
) -> None:
    clock = Clock(ist(8))
    configs = ServiceConfigs(store, directory, clock)
    default = directory.hubs[HUB].service
    assert configs.get(HUB) == default
    assert configs.effective(HUB).override is None
    assert configs.effective(HUB).revision == DIRECTORY_REVISION

    saved = await configs.set(HUB, DAY_SHIFT, "admin")
    assert configs.get(HUB) == DAY_SHIFT
    assert saved.override is not None
    assert (saved.override.by, saved.override.at) == ("admin", ist(8))
    assert saved.revision != DIRECTORY_REVISION

    # Another process, reading the store, sees the same override.
    other = ServiceConfigs(store, directory, clock)
    assert other.get(HUB) == default  # nothing read yet
    await other.refresh()
    assert other.get(HUB) == DAY_SHIFT
    assert other.effective(HUB) == saved

    await configs.reset(HUB, "admin")
    assert configs.get(HUB) == default
    assert await store.exists(service_key(HUB)) == 0
    await other.refresh()
    assert other.get(HUB) == default

    events = await store.xrange("wr:{bhabua-sadar}:events")
    changes = [f for _, f in events if f["event"] == "service_changed"]
    assert [(f["action"], f["by"]) for f in changes] == [("set", "admin"), ("reset", "admin")]
    assert all(int(f["at"]) == int(ist(8).timestamp() * 1000) for f in changes)


async def test_the_key_carries_the_hub_as_hash_tag() -> None:
    assert service_key(HUB) == "wr:{bhabua-sadar}:service"


async def test_invalid_data_in_the_store_falls_back_to_the_directory(
    store: Redis, directory: Directory, caplog: pytest.LogCaptureFixture
) -> None:
    configs = ServiceConfigs(store, directory)
    default = directory.hubs[HUB].service
    overlapping = (
        '{"windows": [{"open": "09:00", "close": "13:00"}, {"open": "12:00", "close": "16:00"}]}'
    )
    for row in (
        {"service": "{not json", "by": "admin", "at": "1"},
        {"service": '{"windows": [], "colour": "red"}', "by": "admin", "at": "1"},
        {"service": overlapping, "by": "admin", "at": "1"},
        {"service": DAY_SHIFT.model_dump_json(), "by": "admin"},  # no time
        {"service": DAY_SHIFT.model_dump_json(), "by": "admin", "at": "yesterday"},
    ):
        await store.delete(service_key(HUB))
        await store.hset(service_key(HUB), mapping=row)  # type: ignore[arg-type]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rooms.service_config"):
            await configs.refresh()
            await configs.refresh()
        effective = configs.effective(HUB)
        assert effective.service == default, row
        assert effective.stored_invalid, row
        assert effective.override is None
        # Reported once per bad value, not on every read.
        assert len([r for r in caplog.records if "invalid" in r.message]) == 1, row
    # A reset clears the bad value; a set replaces it.
    await configs.set(HUB, DAY_SHIFT, "admin", revision=configs.effective(HUB).revision)
    assert configs.get(HUB) == DAY_SHIFT
    assert not configs.effective(HUB).stored_invalid


async def test_a_stale_edit_is_refused_and_saves_nothing(
    store: Redis, directory: Directory
) -> None:
    alice = ServiceConfigs(store, directory)
    bob = ServiceConfigs(store, directory)
    await alice.refresh()
    await bob.refresh()
    seen_by_bob = bob.effective(HUB).revision
    await alice.set(HUB, DAY_SHIFT, "alice", revision=alice.effective(HUB).revision)
    evening = Service(windows=(Window(open="17:00", close="20:00"),))
    with pytest.raises(StaleRevision):
        await bob.set(HUB, evening, "bob", revision=seen_by_bob)
    with pytest.raises(StaleRevision):
        await bob.reset(HUB, "bob", revision=seen_by_bob)
    await bob.refresh()
    assert bob.get(HUB) == DAY_SHIFT
    # Editing from what is there now works.
    await bob.set(HUB, evening, "bob", revision=bob.effective(HUB).revision)
    await alice.refresh()
    assert alice.get(HUB) == evening


async def test_unknown_hubs_are_refused(store: Redis, directory: Directory) -> None:
    configs = ServiceConfigs(store, directory)
    with pytest.raises(UnknownHub):
        configs.get("nowhere")
    with pytest.raises(UnknownHub):
        await configs.set("nowhere", DAY_SHIFT, "admin")
    with pytest.raises(UnknownHub):
        await configs.reset("nowhere")


async def test_bounds_hold_for_services_built_in_code(store: Redis, directory: Directory) -> None:
    configs = ServiceConfigs(store, directory)
    start = dt.date(2027, 1, 1)
    huge = Service(
        closures=tuple(
            Closure(date=start + dt.timedelta(days=i), reason="x") for i in range(MAX_ENTRIES + 1)
        )
    )
    with pytest.raises(InvalidService):
        await configs.set(HUB, huge, "admin")
    assert await store.exists(service_key(HUB)) == 0


async def test_a_process_rereads_the_store_every_few_seconds(
    store: Redis, directory: Directory
) -> None:
    monotonic = Monotonic()
    reader = ServiceConfigs(store, directory, refresh_s=5.0, monotonic=monotonic)
    await reader.refresh_if_stale()  # the first call always reads
    await ServiceConfigs(store, directory).set(HUB, DAY_SHIFT, "admin")
    await reader.refresh_if_stale()
    assert reader.get(HUB) != DAY_SHIFT  # read less than five seconds ago
    monotonic.now += 5.0
    await reader.refresh_if_stale()
    assert reader.get(HUB) == DAY_SHIFT


async def test_the_feed_passes_service_changes_on_at_once(
    store: Redis, directory: Directory
) -> None:
    """A second process learns of an edit from the hub's event stream, not from its timer."""
    hubs = [HUB]
    here = ServiceConfigs(store, directory)
    there = ServiceConfigs(store, directory, refresh_s=3600)
    await there.refresh()
    feed = HubFeed(store, WaitingRoom(store, directory), hubs, on_service_changed=there.refresh)
    feed.start()
    try:
        await asyncio.sleep(0.2)  # the feed has read where the stream stands
        await here.set(HUB, DAY_SHIFT, "admin")
        for _ in range(100):
            if there.get(HUB) == DAY_SHIFT:
                break
            await asyncio.sleep(0.05)
        assert there.get(HUB) == DAY_SHIFT
    finally:
        await feed.close()


async def test_the_keeper_follows_an_edit_without_a_restart(
    store: Redis, directory: Directory
) -> None:
    clock = Clock(ist(8))
    room = WaitingRoom(store, directory, clock)
    configs = ServiceConfigs(store, directory, clock)
    keeper = ServiceKeeper(room, [HUB], configs=configs)
    await keeper.tick()
    assert (await room.snapshot(HUB)).window is not None  # the demo hub serves all day
    await configs.set(HUB, DAY_SHIFT, "admin")
    await keeper.tick()
    assert (await room.snapshot(HUB)).window is None  # 08:00: before the new window
    clock.now = ist(9)
    await keeper.tick()
    snap = await room.snapshot(HUB)
    assert snap.window is not None
    assert snap.closes_at == ist(16)
    clock.now = ist(16)
    await keeper.tick()
    assert (await room.snapshot(HUB)).window is None
    await configs.reset(HUB)
    await keeper.tick()
    assert (await room.snapshot(HUB)).window is not None  # around the clock again


async def test_undoing_an_edit_reopens_the_window_it_closed(
    store: Redis, directory: Directory
) -> None:
    clock = Clock(ist(8))
    room = WaitingRoom(store, directory, clock)
    configs = ServiceConfigs(store, directory, clock)
    keeper = ServiceKeeper(room, [HUB], configs=configs)
    await keeper.tick()
    await configs.set(HUB, DAY_SHIFT, "admin")  # a mistake: closes the open window
    await keeper.tick()
    await configs.reset(HUB, "admin")  # undone a moment later
    await keeper.tick()
    assert (await room.snapshot(HUB)).window is not None


# ---------------------------------------------------------------- the text form


def test_the_text_form_round_trips(directory: Directory) -> None:
    rich = Service(
        windows=(
            Window(days=("mon", "wed"), open="09:00", close="13:00", capacity=30),  # type: ignore[arg-type]
            Window(days=("mon",), open="15:00", close="24:00"),  # type: ignore[arg-type]
        ),
        closures=(Closure(date=dt.date(2027, 1, 26), reason='Republic Day "गणतंत्र दिवस" \\ ok'),),
        extra_days=(
            ExtraDay(date=dt.date(2027, 2, 7), open="09:00", close="13:00", reason="eye camp"),
        ),
        capacity=55,
        consultation_minutes=20,
        at_closing=AtClosing.EXPIRE,
        urgent_advance_minutes=0,
    )
    for service in (rich, directory.hubs[HUB].service, Service()):
        text = service_toml(service)
        assert text.startswith("[hubs.service]\n")
        assert parse_service(text) == service


def test_bare_keys_are_accepted_too() -> None:
    text = 'capacity = 10\n[[windows]]\nopen = "09:00"\nclose = "12:00"\n'
    assert parse_service(text) == Service(
        capacity=10, windows=(Window(open="09:00", close="12:00"),)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[hubs.service]\ncapacity = 10\ncolour = 1\n", "colour: unknown key"),
        (
            '[[hubs.service.windows]]\nopen = "09:00"\nclose = "16:00"\nopn = "x"\n',
            "windows[1].opn: unknown key",
        ),
        (
            '[[hubs.service.windows]]\nopen = "9am"\nclose = "16:00"\n',
            "windows[1].open: '9am' is not a time of day",
        ),
        (
            '[[hubs.service.windows]]\nopen = "09:00"\nclose = "13:00"\n'
            '[[hubs.service.windows]]\nopen = "12:00"\nclose = "16:00"\n',
            "windows overlap on mon",
        ),
        (
            '[[hubs.service.windows]]\nopen = "16:00"\nclose = "09:00"\n',
            "windows[1]: window 16:00-09:00 closes before it opens",
        ),
        ('[[hubs.service.windows]]\nclose = "09:00"\n', "windows[1].open: missing"),
        ("[hubs.service]\ncapacity = 0\n", "capacity: Input should be greater than or equal to 1"),
        ("[hubs.service\n", "not valid TOML"),
        ("[[hubs]]\nid = 'x'\n", "write only the [hubs.service] section"),
        ("x" * 40_000, "longer than"),
        (
            "\n".join(
                f'[[closures]]\ndate = "2027-01-01"\nreason = "r{i}"'
                for i in range(MAX_ENTRIES + 1)
            ),
            f"closures: more than {MAX_ENTRIES} entries",
        ),
    ],
)
def test_problems_are_described_in_words(text: str, expected: str) -> None:
    with pytest.raises(InvalidService) as caught:
        parse_service(text)
    assert any(expected in p for p in caught.value.problems), caught.value.problems
    assert not any("Traceback" in p or "pydantic" in p.lower() for p in caught.value.problems)
