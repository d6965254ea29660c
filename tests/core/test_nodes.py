"""The node registry: each server process's record in the store, kept fresh by a heartbeat,
gone on a clean shutdown or when the heartbeats stop; and the load it reports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.nodes import (
    INDEX,
    NODES,
    CpuMeter,
    LoopLag,
    Node,
    NodeLoad,
    NodeRegistry,
    node_key,
)
from core.store import Redis, StoreUnavailable
from server import create_app
from tests.conftest import free_port
from tests.helpers import make_settings

AiohttpClient = Any


class Loads:
    """Each test node's load, changed by the test between heartbeats."""

    def __init__(self) -> None:
        self.by_node: dict[str, NodeLoad] = {}

    def of(self, node_id: str) -> Callable[[], NodeLoad]:
        self.by_node.setdefault(node_id, NodeLoad())
        return lambda: self.by_node[node_id]


@pytest.fixture
async def nodes(store: Redis) -> AsyncIterator[Callable[..., NodeRegistry]]:
    """Makes node registries on the store under test; closes them all at the end."""
    made: list[NodeRegistry] = []

    def make(node_id: str, load: Callable[[], NodeLoad] = NodeLoad, **kw: Any) -> NodeRegistry:
        registry = NodeRegistry(store, make_settings(node_id=node_id, port=9000), load, **kw)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        await registry.close()


async def test_a_node_registers_on_start_and_leaves_on_close(
    store: Redis, nodes: Callable[..., NodeRegistry]
) -> None:
    node = nodes("node-a", lambda: NodeLoad(rooms=2, peers=3))
    observer = nodes("observer")  # never started: only reads
    assert await observer.live_nodes() == []
    await node.start()
    [seen] = await observer.live_nodes()
    assert (seen.id, seen.rooms, seen.peers, seen.port) == ("node-a", 2, 3, 9000)
    assert seen.host == "127.0.0.1"
    assert seen.version == node.version != ""
    assert "127.0.0.1" not in seen.addresses  # loopback is no address for media
    assert seen.heartbeat_age_s(time.time()) < 5
    assert 0 < await store.pttl(node_key("node-a")) <= 15_000
    assert await store.zscore(INDEX, "node-a") is not None

    await node.close()
    assert await observer.live_nodes() == []
    assert await store.exists(node_key("node-a")) == 0
    assert await store.zscore(INDEX, "node-a") is None
    await node.close()  # idempotent


async def test_the_app_registers_its_node_and_removes_it_on_shutdown(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url)))
    app = client.server.app
    [node] = await app[NODES].live_nodes()
    assert node.id == "node-test"
    assert node.rooms == node.peers == 0
    other = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert other.hget(node_key("node-test"), "rooms") == "0"
        assert other.zrange(INDEX, 0, -1) == ["node-test"]
        await client.close()
        assert other.exists(node_key("node-test")) == 0
        assert other.zrange(INDEX, 0, -1) == []
    finally:
        other.close()


async def test_a_node_whose_heartbeat_stops_is_no_longer_live(
    nodes: Callable[..., NodeRegistry],
) -> None:
    silent = nodes("node-silent", ttl_s=0.3, interval_s=60)
    beating = nodes("node-beating", ttl_s=0.4, interval_s=0.1)
    observer = nodes("observer")
    await silent.start()
    await beating.start()
    assert [n.id for n in await observer.live_nodes()] == ["node-beating", "node-silent"]
    await asyncio.sleep(0.8)
    # The silent node's record expired in the store (it never said goodbye); the other's
    # heartbeats kept its record alive past twice its time to live.
    assert [n.id for n in await observer.live_nodes()] == ["node-beating"]


async def test_least_loaded_picks_the_node_with_fewer_rooms(
    nodes: Callable[..., NodeRegistry],
) -> None:
    loads = Loads()
    a = nodes("node-a", loads.of("node-a"), interval_s=60)
    b = nodes("node-b", loads.of("node-b"), interval_s=60)
    assert await a.least_loaded() is None
    loads.by_node["node-a"] = NodeLoad(rooms=3, peers=6)
    loads.by_node["node-b"] = NodeLoad(rooms=1, peers=2)
    await a.start()
    await b.start()
    chosen = await a.least_loaded()
    assert chosen is not None
    assert chosen.id == "node-b"
    # The next heartbeat reports the new load; placement follows it.
    loads.by_node["node-a"] = NodeLoad(rooms=0, peers=0)
    await a.beat()
    chosen = await b.least_loaded()
    assert chosen is not None
    assert chosen.id == "node-a"
    # Equal rooms: fewer peer connections win.
    loads.by_node["node-a"] = NodeLoad(rooms=1, peers=2)
    loads.by_node["node-b"] = NodeLoad(rooms=1, peers=1)
    await a.beat()
    await b.beat()
    chosen = await a.least_loaded()
    assert chosen is not None
    assert chosen.id == "node-b"


async def test_a_store_that_is_down_stops_nothing(
    caplog: pytest.LogCaptureFixture, no_leaked_tasks: None
) -> None:
    # Nothing listens on this loopback port; no retries, so that the test is quick.
    store = aioredis.Redis(port=free_port(), decode_responses=True, retry=Retry(NoBackoff(), 0))
    node = NodeRegistry(store, make_settings(node_id="node-x"), NodeLoad, interval_s=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="core.nodes"):
            await node.start()
            await asyncio.sleep(0.2)  # a few heartbeats fail; one warning says so
        warnings = [r for r in caplog.records if "heartbeat not recorded" in r.getMessage()]
        assert len(warnings) == 1
        with pytest.raises(StoreUnavailable):
            await node.live_nodes()
        with caplog.at_level(logging.WARNING, logger="core.nodes"):
            await node.close()
        assert any("could not remove its record" in r.getMessage() for r in caplog.records)
    finally:
        await node.close()
        await store.aclose()


def test_a_record_reads_back_and_a_foreign_one_is_ignored() -> None:
    node = Node(
        id="node-a",
        version="0.1.0",
        started_at=1_790_000_000.0,
        heartbeat_at=1_790_000_005.5,
        host="10.0.0.5",
        port=8080,
        addresses=("10.0.0.5", "fd00::5"),
        rooms=4,
        peers=7,
        cpu_percent=37.5,
        loop_lag_s=0.012,
    )
    assert Node.from_fields(node.fields()) == node
    assert Node.from_fields({**node.fields(), "addresses": ""}) == Node(
        **{**node.__dict__, "addresses": ()}
    )
    assert Node.from_fields({"id": "node-a"}) is None
    assert Node.from_fields({**node.fields(), "rooms": "many"}) is None
    assert node.heartbeat_age_s(1_790_000_004.0) == 0.0  # a clock behind the node's


async def test_the_lag_sampler_sees_a_blocked_loop() -> None:
    lag = LoopLag(period_s=0.02, window=100)
    task = asyncio.get_running_loop().create_task(lag.run())
    try:
        await asyncio.sleep(0.2)
        assert 0.0 <= lag.max < 0.1  # an idle loop wakes the sampler about on time
        asyncio.get_running_loop().call_soon(time.sleep, 0.15)  # a blocking call
        await asyncio.sleep(0.2)
        assert 0.1 <= lag.max < 1.0
        assert 0.0 <= lag.last < lag.max  # later samples are on time again
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    lag.record(-0.001)  # a timer that fired a hair early is no lag
    assert lag.last == 0.0


def test_cpu_meter_gives_percent_of_one_core_between_samples() -> None:
    cpu = iter([10.0, 10.5, 12.5, 12.5])
    wall = iter([100.0, 101.0, 102.0, 102.0])
    meter = CpuMeter(cpu=lambda: next(cpu), wall=lambda: next(wall))
    assert meter.sample() == pytest.approx(50.0)
    assert meter.sample() == pytest.approx(200.0)  # two threads busy
    assert meter.sample() == pytest.approx(200.0)  # no time passed: the last figure stands
