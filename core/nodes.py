"""This server process as one node among several: its record in the store, heartbeat and load.

Every Setu process (a *node*) keeps a hash ``nodes:{setu}:node:<id>`` in the store: where to
reach it (the HTTP host and port it listens on, and the host addresses its media gathers ICE
candidates on, as aioice finds them), its version, when it started, and its load at its last
heartbeat: live rooms, connected peer connections, CPU and event-loop lag.  The hash is written
every :data:`HEARTBEAT_S` and expires :data:`NODE_TTL_S` after the last write, so a node that
dies without a word drops out by itself; a node that stops cleanly removes it at once.  The
sorted set ``nodes:{setu}:all`` (scored by the last heartbeat, in ms) lists the ids to read.

A node is live while its hash exists: Redis expires it, so no two machines' clocks are compared.
The heartbeat time in the record is the node's own clock, shown as an age for information only.
All keys share the hash tag ``{setu}``: on a Redis Cluster they live in one slot, so the
transactions and pipelines here work there too.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import importlib.metadata
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

from aiohttp import web
from aioice.ice import get_host_addresses

from .appkeys import STORE
from .settings import Settings
from .store import UNAVAILABLE, Redis, StoreUnavailable
from .tasks import TaskOwner

logger = logging.getLogger(__name__)

#: A node's heartbeat.  Frequent, because a dead node's rooms move only once its record has
#: expired: the clients of a room on a killed node must be back in it within ten seconds.
HEARTBEAT_S = 1.0
#: Three heartbeats and a half: one missed beat (a slow store, a busy loop) does not drop a node.
NODE_TTL_S = 3.5
#: How often the lag sampler wakes; its lag is how much later than asked it wakes.
LAG_PERIOD_S = 0.25
#: Ids in the index whose last beat is this much older than the pruner's clock are dropped.
#: Generous, as the clocks are different machines'; a dropped live node comes back at its next
#: beat, and a stale id costs only a read that finds no hash.
PRUNE_AFTER_S = 10 * NODE_TTL_S
#: Start-up waits this long at most for the first heartbeat; it goes on in the background.
START_WAIT_S = 1.0
#: Shutdown does not wait longer than this for an unreachable store; the record then expires.
LEAVE_TIMEOUT_S = 2.0

PREFIX = "nodes:{setu}:"
INDEX = PREFIX + "all"


#: HINCRBY on a record that exists only: a missing one must not come back without its expiry.
_COUNT_PLACED = """
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hincrby', KEYS[1], 'rooms', 1)
end
return 0
"""


def node_key(node_id: str) -> str:
    return PREFIX + "node:" + node_id


@dataclasses.dataclass(frozen=True)
class NodeLoad:
    """What a node is carrying, as the packages that own the rooms count it."""

    rooms: int = 0
    #: Peer connections whose media is up.
    peers: int = 0
    #: Draining for a restart: it keeps its live rooms but is given no new one.
    draining: bool = False


@dataclasses.dataclass(frozen=True)
class Node:
    """One node's record, as written at its last heartbeat."""

    id: str
    version: str
    started_at: float  # Unix time, seconds
    heartbeat_at: float  # Unix time on the node's own clock
    host: str  # the HTTP listen address
    port: int
    #: Host addresses for media (ICE host candidates), loopback excluded.
    addresses: tuple[str, ...]
    rooms: int
    peers: int
    #: Process CPU over the last heartbeat interval, in percent of one core (threads included).
    cpu_percent: float
    #: The worst event-loop lag over the last heartbeat interval.
    loop_lag_s: float
    draining: bool = False

    def heartbeat_age_s(self, now: float) -> float:
        return max(0.0, now - self.heartbeat_at)

    def load_order(self) -> tuple[int, int, float, float, str]:
        """Sort key of :meth:`NodeRegistry.least_loaded`: rooms first, the id breaks ties."""
        return (self.rooms, self.peers, self.cpu_percent, self.loop_lag_s, self.id)

    def fields(self) -> dict[str, str]:
        return {
            "id": self.id,
            "version": self.version,
            "started_at": f"{self.started_at:.3f}",
            "heartbeat_at": f"{self.heartbeat_at:.3f}",
            "host": self.host,
            "port": str(self.port),
            "addresses": ",".join(self.addresses),
            "rooms": str(self.rooms),
            "peers": str(self.peers),
            "cpu_percent": f"{self.cpu_percent:.1f}",
            "loop_lag_s": f"{self.loop_lag_s:.4f}",
            "draining": "1" if self.draining else "0",
        }

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> Node | None:
        """The record in ``raw``, or ``None`` if it is not one (another version's, say)."""
        try:
            return cls(
                id=raw["id"],
                version=raw["version"],
                started_at=float(raw["started_at"]),
                heartbeat_at=float(raw["heartbeat_at"]),
                host=raw["host"],
                port=int(raw["port"]),
                addresses=tuple(a for a in raw["addresses"].split(",") if a),
                rooms=int(raw["rooms"]),
                peers=int(raw["peers"]),
                cpu_percent=float(raw["cpu_percent"]),
                loop_lag_s=float(raw["loop_lag_s"]),
                draining=raw.get("draining") == "1",
            )
        except (KeyError, ValueError):
            logger.debug("ignoring a node record that is not one: %r", raw)
            return None


class LoopLag:
    """How late the event loop wakes a task that sleeps :data:`LAG_PERIOD_S`.

    :meth:`run` samples until cancelled (in an owned task).  ``last`` is the latest sample,
    :attr:`max` the worst of the last ``window`` ones.
    """

    def __init__(self, period_s: float = LAG_PERIOD_S, window: int = 20) -> None:
        self.period_s = period_s
        self.last = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=window)

    @property
    def max(self) -> float:
        return max(self._recent, default=0.0)

    def record(self, late_s: float) -> None:
        self.last = max(0.0, late_s)
        self._recent.append(self.last)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.period_s
            await asyncio.sleep(self.period_s)
            self.record(loop.time() - asked)


class CpuMeter:
    """The process's CPU use between two :meth:`sample` calls, in percent of one core.

    ``time.process_time`` counts every thread of the process (aiortc's codec and network
    threads too), user and system time.
    """

    def __init__(
        self,
        cpu: Callable[[], float] = time.process_time,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cpu = cpu
        self._wall = wall
        self._last = (cpu(), wall())
        self.percent = 0.0

    def seconds(self) -> float:
        """CPU seconds the process has used since it started."""
        return self._cpu()

    def sample(self) -> float:
        cpu, wall = self._cpu(), self._wall()
        if wall > self._last[1]:
            self.percent = max(0.0, (cpu - self._last[0]) / (wall - self._last[1]) * 100)
        self._last = (cpu, wall)
        return self.percent


def _version() -> str:
    try:
        return importlib.metadata.version("setu")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _media_addresses() -> list[str]:
    """The host addresses aiortc's ICE agent gathers candidates on (aioice's own choice)."""
    return [str(a) for a in get_host_addresses(use_ipv4=True, use_ipv6=True)]


class NodeRegistry:
    """This node's record in the store, and the other nodes' records.

    :meth:`start` registers the node and starts its heartbeat and lag sampler; :meth:`close`
    (idempotent) stops them and removes the record.  Both are best effort when the store is
    down: a heartbeat the store misses is tried again at the next one.
    """

    def __init__(
        self,
        store: Redis,
        settings: Settings,
        load: Callable[[], NodeLoad],
        *,
        interval_s: float = HEARTBEAT_S,
        ttl_s: float = NODE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = settings.node_id
        self._store = store
        self._settings = settings
        self._load = load
        self._interval_s = interval_s
        self._ttl_s = ttl_s
        self._clock = clock
        self.started_at = clock()
        self.version = "unknown"
        self.addresses: tuple[str, ...] = ()
        self.lag = LoopLag(window=max(1, math.ceil(interval_s / LAG_PERIOD_S)))
        self.cpu = CpuMeter()
        self._tasks = TaskOwner(f"node {self.id}")
        self._store_down = False
        self._closed = False

    async def start(self) -> None:
        """Register (if the store answers soon) and keep the record fresh from then on."""
        self.version, addresses = await asyncio.to_thread(lambda: (_version(), _media_addresses()))
        self.addresses = tuple(addresses)
        self._tasks.spawn(self.lag.run(), name="loop lag")
        first = self._tasks.spawn(self._beat_logged(), name="first beat")
        self._tasks.spawn(self._heartbeat(), name="heartbeat")
        # Registered before the first request is served, as a rule; but a store that is down
        # (its client retries for seconds) does not hold up the start.
        if first is not None:
            await asyncio.wait({first}, timeout=START_WAIT_S)
        logger.info(
            "node %s: %s, HTTP %s:%d, media on %s",
            self.id,
            self.version,
            self._settings.host,
            self._settings.port,
            ", ".join(self.addresses) or "no host address",
        )

    def current(self) -> Node:
        """This node's record as of now (the CPU figure is the last heartbeat interval's)."""
        load = self._load()
        return Node(
            id=self.id,
            version=self.version,
            started_at=self.started_at,
            heartbeat_at=self._clock(),
            host=self._settings.host,
            port=self._settings.port,
            addresses=self.addresses,
            rooms=load.rooms,
            peers=load.peers,
            cpu_percent=self.cpu.percent,
            loop_lag_s=self.lag.max,
            draining=load.draining,
        )

    async def beat(self) -> None:
        """Write this node's record and refresh its expiry; raises :class:`StoreUnavailable`."""
        self.cpu.sample()
        node = self.current()
        key = node_key(self.id)
        now_ms = int(node.heartbeat_at * 1000)
        try:
            async with self._store.pipeline(transaction=True) as pipe:
                # Replaced whole, so that no field of an older version's record lingers.
                pipe.delete(key)
                pipe.hset(key, mapping=cast(dict[Any, Any], node.fields()))
                pipe.pexpire(key, int(self._ttl_s * 1000))
                pipe.zadd(INDEX, {self.id: now_ms})
                pipe.zremrangebyscore(INDEX, "-inf", now_ms - int(PRUNE_AFTER_S * 1000))
                await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def live_nodes(self) -> list[Node]:
        """Every node whose record has not expired, this one included, by id."""
        try:
            ids = cast(list[str], await self._store.zrange(INDEX, 0, -1))
            async with self._store.pipeline(transaction=False) as pipe:
                for node_id in ids:
                    pipe.hgetall(node_key(node_id))
                rows = await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        nodes = (Node.from_fields(row) for row in rows if row)
        return sorted((n for n in nodes if n is not None), key=lambda n: n.id)

    async def least_loaded(self) -> Node | None:
        """The live node with the fewest rooms (then peers, CPU, lag) that takes new rooms,
        ``None`` if none does."""
        live = [n for n in await self.live_nodes() if not n.draining]
        return min(live, key=Node.load_order, default=None)

    async def is_live(self, node_id: str) -> bool:
        """Whether ``node_id``'s record has not expired; raises :class:`StoreUnavailable`."""
        try:
            return bool(await self._store.exists(node_key(node_id)))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def count_placed(self, node_id: str) -> None:
        """Count a room just placed on ``node_id`` in its record until its next heartbeat
        (which counts it itself once it is live), so that rooms placed one after the other
        between two heartbeats spread over the nodes.  A record that has expired is left so."""
        try:
            await self._store.eval(_COUNT_PLACED, 1, node_key(node_id))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._beat_logged()

    async def _beat_logged(self) -> None:
        try:
            await self.beat()
        except StoreUnavailable as exc:
            if not self._store_down:
                logger.warning(
                    "node %s: heartbeat not recorded, the store is unavailable (%s); "
                    "trying again every %.0fs",
                    self.id,
                    exc,
                    self._interval_s,
                )
            self._store_down = True
        except Exception:
            logger.exception("node %s: heartbeat failed", self.id)
        else:
            if self._store_down:
                logger.info("node %s: heartbeat recorded again", self.id)
            self._store_down = False

    async def close(self) -> None:
        """Stop the heartbeat and remove this node's record (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._tasks.close()
        try:
            async with asyncio.timeout(LEAVE_TIMEOUT_S):
                async with self._store.pipeline(transaction=True) as pipe:
                    pipe.delete(node_key(self.id))
                    pipe.zrem(INDEX, self.id)
                    await pipe.execute()
        except UNAVAILABLE as exc:
            # TimeoutError is an OSError: a hung store lands here too.
            logger.warning(
                "node %s: could not remove its record (%s); it expires within %.0fs",
                self.id,
                exc,
                self._ttl_s,
            )
        else:
            logger.info("node %s: removed from the store", self.id)


NODES = web.AppKey("nodes", NodeRegistry)


def setup(
    app: web.Application, settings: Settings, load: Callable[[web.Application], NodeLoad]
) -> None:
    """Register this process as a node while ``app`` runs; ``load`` counts its rooms and peers.

    Call it after the packages whose objects ``load`` reads: cleanup contexts start in order,
    so those exist by the first heartbeat, and stop in reverse, so the node leaves the store
    before they close.
    """

    async def nodes_ctx(app: web.Application) -> AsyncIterator[None]:
        nodes = NodeRegistry(app[STORE], settings, lambda: load(app))
        app[NODES] = nodes
        try:
            await nodes.start()
        except BaseException:
            await nodes.close()
            raise
        yield
        await nodes.close()

    app.cleanup_ctx.append(nodes_ctx)
