"""The store on Redis Sentinel and on Redis Cluster, with real processes on loopback: the
waiting room's main flow, the hub feed, live service edits and sign-ins run the same on both;
a Sentinel failover is followed; bad store URLs are clear errors.

The cluster's three masters each own a third of the hash slots, and the hubs here are chosen so
that their keys fall on all three: whatever reads several hubs at once must split its keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId, Sex, SpokeId, TokenId, TokenState, UserId
from core.settings import SettingsError, load_settings
from core.store import (
    Redis,
    SentinelMaster,
    StoreAddress,
    StoreUnavailable,
    open_store,
    parse_store_url,
    same_slot_groups,
)
from rooms import (
    HubFeed,
    HubSnapshot,
    Patient,
    ServiceConfigs,
    ServiceKeeper,
    StaleRevision,
    WaitingRoom,
)
from rooms.waiting_room import events_key
from server import create_app
from signaling.auth import Accounts, AuthError, LockedOut
from tests.conftest import RedisClusterNodes, RedisSentinelSet, free_port
from tests.helpers import make_settings
from tests.signaling.test_consultation import register_and_call

AiohttpClient = Any

#: On the test cluster (slots split in three by ``redis-cli --cluster create``) these hubs' keys
#: live on three different masters: slots 5870, 15043 and 1179.
HUBS = (HubId("bhabua-sadar"), HubId("mohania"), HubId("chainpur"))
DOCTOR = UserId("dr.sharma")
NURSE = UserId("nurse.test")
#: 10:00 in Kaimur, inside every test hub's around-the-clock window.
START = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)

EXTRA_HUB = """
[[hubs]]
id = "{hub}"
name = "Hospital {hub}"
timezone = "Asia/Kolkata"

[hubs.service]
capacity = 10000

[[hubs.service.windows]]
open = "00:00"
close = "24:00"

[[spokes]]
id = "{hub}-hwc"
name = "HWC {hub}"
block = "bhabua"
hub = "{hub}"
"""


def spoke_of(hub: HubId) -> SpokeId:
    return SpokeId("akhlaspur" if hub == HUBS[0] else f"{hub}-hwc")


def patient(label: str) -> Patient:
    return Patient(name=f"Patient {label}", age=47, sex=Sex.FEMALE, complaint="cough")


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    """The demo directory, with two more hubs (a spoke each) and room for every token."""
    text = DEMO_DIRECTORY.read_text().replace("capacity = 120", "capacity = 10000")
    text += "".join(EXTRA_HUB.format(hub=hub) for hub in HUBS[1:])
    path = tmp_path / "directory.toml"
    path.write_text(text)
    return Directory.load(path)


@pytest.fixture(params=["sentinel", "cluster"])
def topology_url(request: pytest.FixtureRequest) -> str:
    """The URL of a Sentinel-watched Redis, then of a Redis Cluster, each flushed first."""
    servers: RedisSentinelSet | RedisClusterNodes = request.getfixturevalue(
        "redis_sentinel" if request.param == "sentinel" else "redis_cluster"
    )
    servers.flush()
    return servers.url


@pytest.fixture
async def store(topology_url: str) -> AsyncIterator[Redis]:
    client = open_store(topology_url)
    yield client
    await client.aclose()


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------- URLs


def test_the_url_forms() -> None:
    assert parse_store_url(
        "redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6,[fd00::7]:26380/setu/2"
        "?sentinel_password=other"
    ) == StoreAddress(
        "sentinel",
        hosts=(("10.0.0.5", 26379), ("10.0.0.6", 26379), ("fd00::7", 26380)),
        service="setu",
        db=2,
        password="s3cret",
        sentinel_password="other",
    )
    assert parse_store_url("redis+cluster://setu:pw@node-a:7000,node-b/") == StoreAddress(
        "cluster", hosts=(("node-a", 7000), ("node-b", 6379)), username="setu", password="pw"
    )
    assert parse_store_url("redis://127.0.0.1:6379/0").kind == "redis"
    assert load_settings(["--redis-url", "redis+cluster://a:1,b:2"], {}).redis_url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x", "redis://"),
        ("sentinel://h:26379/setu", "redis\\+sentinel://"),
        ("redis+sentinel://:hunter2@h:26379", "service's name"),
        ("redis+sentinel://:hunter2@h:26379/setu/zero", "database after the service"),
        ("redis+sentinel://h:26379/setu?password=hunter2", "only sentinel_password"),
        ("redis+sentinel://:hunter2@h:263790/setu", "not host:port"),
        ("redis+cluster://", "not host:port"),
        ("redis+cluster://:hunter2@a:1,b:2/3", "database 0 only"),
        ("redis+cluster://a:1,,b:2", "not host:port"),
        ("redis+cluster://a:1?timeout=3", "takes no options"),
        ("redis://:hunter2@h:port/0", "Port"),
    ],
)
def test_bad_urls_are_clear_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(["--redis-url", url], {})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1/setu", "redis+cluster://127.0.0.1:1"],
)
async def test_no_client_sends_a_command_twice(url: str) -> None:
    """A lost reply does not say whether a script ran: none of the clients may run it again on
    its own (``tests/rooms/test_durability.py`` shows why, on one Redis)."""
    store = open_store(url)
    try:
        if isinstance(store, RedisCluster):
            assert store.retry.get_retries() == 0
        else:
            assert store.connection_pool.make_connection().retry.get_retries() == 0
    finally:
        await store.aclose()


# ------------------------------------------------------------------ the same flow on both


async def test_the_waiting_room_flow_and_the_feed(store: Redis, directory: Directory) -> None:
    """Tokens issued, called, consulted and ended at three hubs; the keeper opens their windows
    and the feed passes each hub's events on, whatever node the hub's keys live on."""
    hubs = list(HUBS)
    room = WaitingRoom(store, directory, lambda: START)
    await ServiceKeeper(room, hubs).tick()
    groups = same_slot_groups(store, [events_key(hub) for hub in hubs])
    if isinstance(store, RedisCluster):
        assert len(groups) == 3
        nodes = {store.get_node_from_key(events_key(hub)).name for hub in hubs}
        assert len(nodes) == 3  # one hub per master
    else:
        assert isinstance(store, SentinelMaster)
        assert len(groups) == 1
    for hub in hubs:
        assert await room.open_window_key(hub) is not None
    seen: dict[HubId, list[HubSnapshot]] = {hub: [] for hub in hubs}
    feed = HubFeed(store, room, hubs)
    for hub in hubs:
        feed.subscribe(hub, seen[hub].append)
    feed.start()
    try:
        await asyncio.sleep(0.3)  # the feed has read where each stream stands
        for hub in hubs:
            first = await room.issue(spoke_of(hub), NURSE, patient(f"{hub}-1"))
            second = await room.issue(spoke_of(hub), NURSE, patient(f"{hub}-2"))
            assert (first.number, second.number) == (1, 2)
            called = await room.call_next(hub, DOCTOR, "node-a")
            assert called.id == first.id
            assert called.room is not None
            assert await room.activate_room(hub, called.room) == "active"
            assert await room.end_room(hub, called.room, "hangup", took_place=True) == "completed"
            token = await room.token(hub, first.id)
            assert token is not None
            assert token.state is TokenState.COMPLETED
            snap = await room.snapshot(hub)
            assert [t.id for t in snap.waiting] == [second.id]
            assert [t.id for t in snap.today] == [first.id, second.id]
        for hub in hubs:
            await eventually(
                lambda hub=hub: any(
                    [t.state for t in s.today] == [TokenState.COMPLETED, TokenState.WAITING]
                    for s in seen[hub]
                ),
                f"the feed shows hub {hub}'s consultation",
            )
            assert all(t.hub == hub for s in seen[hub] for t in s.today)
    finally:
        await feed.close()


async def test_live_service_edits_watch_their_revision(store: Redis, directory: Directory) -> None:
    """The edit's WATCH-MULTI transaction (the override and its event) runs on one slot."""
    hub = HUBS[1]
    configs = ServiceConfigs(store, directory, lambda: START)
    await configs.refresh()
    before = configs.effective(hub).revision
    changed = directory.hub(hub).service.model_copy(update={"capacity": 30})
    edited = await configs.set(hub, changed, "admin", revision=before)
    with pytest.raises(StaleRevision):
        await configs.set(hub, changed, "admin", revision=before)
    other = ServiceConfigs(store, directory)
    await other.refresh()
    assert other.effective(hub).revision == edited.revision
    assert other.get(hub).capacity == 30


async def test_sign_in_and_lockout(store: Redis, directory: Directory) -> None:
    key = await Accounts.shared_cookie_key(store, None)
    assert key == await Accounts.shared_cookie_key(store, None)
    accounts = Accounts(store, directory, key)
    try:
        created = await accounts.ensure_passwords("right-password-1")
        assert {p.username for p in created} == set(directory.users)
        assert (await accounts.login("dr.sharma", "right-password-1")).id == DOCTOR
        for _ in range(5):
            with pytest.raises(AuthError):
                await accounts.login("dr.sharma", "wrong")
        with pytest.raises(LockedOut):
            await accounts.login("dr.sharma", "right-password-1")
    finally:
        accounts.close()


async def test_the_server_runs_on_it(aiohttp_client: AiohttpClient, topology_url: str) -> None:
    """The whole app: sign-ins, a registration over the websocket, its push to the doctor's
    queue, and the call."""
    client = await aiohttp_client(create_app(make_settings(topology_url)))
    nurse, doctor, room_id = await register_and_call(client)
    assert room_id.startswith("bhabua-sadar.")
    await nurse.close()
    await doctor.close()


# ---------------------------------------------------------------------------- failover


async def test_a_sentinel_failover_is_followed(
    own_redis_sentinel: RedisSentinelSet, directory: Directory
) -> None:
    """The master is killed; the sentinels promote its replica and the same client, the keeper
    and the feed go on with it.  Tokens the replica had acknowledged (``WAIT``) are all there."""
    servers = own_redis_sentinel
    store = open_store(servers.url)
    hub = HUBS[0]
    room = WaitingRoom(store, directory, lambda: START)
    keeper = ServiceKeeper(room, [hub])
    seen: list[HubSnapshot] = []
    feed = HubFeed(store, room, [hub])
    feed.subscribe(hub, seen.append)
    try:
        await keeper.tick()
        issued = [await room.issue(spoke_of(hub), NURSE, patient(str(i))) for i in range(3)]
        assert await store.execute_command("WAIT", 1, 5000) == 1  # the replica has them
        feed.start()
        await asyncio.sleep(0.3)
        old_master = servers.kill_master()
        started = time.monotonic()
        while True:  # StoreUnavailable until the sentinels agree and promote the replica
            try:
                snap = await room.snapshot(hub)
                break
            except StoreUnavailable:
                assert time.monotonic() - started < 30, "no new master within 30 s"
                await asyncio.sleep(0.2)
        assert servers.master_port() != old_master
        assert [t.id for t in snap.waiting] == [t.id for t in issued]
        # Writes go to the new master: a token, a call, the keeper's tick, the feed's news.
        late = await room.issue(spoke_of(hub), NURSE, patient("after"))
        assert late.number == 4
        assert (await room.call_next(hub, DOCTOR, "node-a")).id == issued[0].id
        await keeper.tick()
        await eventually(
            lambda: any(late.id in [t.id for t in s.waiting] for s in seen),
            "the feed reads the new master's stream",
            timeout=15,
        )
    finally:
        await feed.close()
        await store.aclose()


async def test_no_sentinel_reachable_is_store_unavailable(directory: Directory) -> None:
    store = open_store(f"redis+sentinel://127.0.0.1:{free_port()}/setu")
    try:
        with pytest.raises(StoreUnavailable):
            await WaitingRoom(store, directory).token(HUBS[0], TokenId("nothing"))
    finally:
        await store.aclose()
