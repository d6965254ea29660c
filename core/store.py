"""The connection to the shared store: a real Redis (alone, watched by Sentinel, or a Cluster),
or the embedded Redis-compatible one.

All of them speak the same protocol to the same code: the embedded store (fakeredis with a real
Lua interpreter) runs the very scripts and commands a real Redis runs, so tests run once against
each.  On a Cluster a command, script or transaction may only use keys of one hash slot: every
key of a hub carries the hub as a hash tag (``wr:{hub}:...``), and the few commands that read
several hubs at once split their keys with :func:`same_slot_groups`.

The URL forms (``--redis-url``)::

    redis://[[user]:password@]host[:port][/db]          one Redis (rediss:// for TLS)
    unix://[[user]:password@]/path/to/redis.sock[?db=N]
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=P]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]

For Sentinel the hosts are the sentinels (port 26379 by default), ``service`` is the name they
monitor the master by, and the user and password are the master's (and its replicas');
``sentinel_password`` is for sentinels that have a ``requirepass`` of their own.  For a Cluster
the hosts are a few of its nodes (port 6379 by default): the client learns the rest from them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

#: The client every package uses; it always decodes responses to ``str``.  A Cluster's client
#: is a class of its own with the same commands, so code is type-checked against both; what the
#: types cannot say is that the keys of one command must share a hash slot there.
Redis = aioredis.Redis | RedisCluster

logger = logging.getLogger(__name__)

#: The errors that mean "the store cannot be reached right now" rather than "a bug".  Sentinel's
#: "no master found" is a ``ConnectionError``; a Cluster reports a node that is down or slots
#: that moved with the other three.
UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
)

SENTINEL_PORT = 26379
REDIS_PORT = 6379


def _no_retry() -> Retry:
    """The client never sends a command again on its own: a reply lost on the way back does not
    say whether a script ran, and running ``issue`` twice would give one patient two tokens.  A
    command that meets a broken connection fails (:class:`StoreUnavailable` to the caller, who
    may try again); the next command connects afresh, after a failover to the new master."""
    return Retry(NoBackoff(), 0)


#: Timeouts and health checks common to every kind of store.
_CONNECTION: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "health_check_interval": 15,
}

_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")
_SERVICE = re.compile(r"[A-Za-z0-9._-]+")


class StoreUnavailable(Exception):
    """The shared store (Redis) cannot be reached; the action can be tried again later."""


class InvalidStoreUrl(ValueError):
    """A store URL Setu cannot use.  The message never repeats the URL's password."""


@dataclass(frozen=True)
class StoreAddress:
    """Where the store is, as read from its URL by :func:`parse_store_url` (a ``redis`` URL is
    passed to redis-py as it is)."""

    kind: Literal["redis", "sentinel", "cluster"]
    #: ``sentinel``: the sentinels; ``cluster``: the startup nodes.
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def parse_store_url(url: str) -> StoreAddress:
    """Read a ``--redis-url``; :class:`InvalidStoreUrl` says what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidStoreUrl(_SCHEMES_HELP)
    if scheme in ("redis", "rediss", "unix"):
        try:
            parse_url(url)
        except ValueError as exc:
            raise InvalidStoreUrl(str(exc)) from None
        return StoreAddress("redis")
    if scheme not in ("redis+sentinel", "redis+cluster"):
        raise InvalidStoreUrl(f"{_SCHEMES_HELP}, not {scheme}://")
    kind: Literal["sentinel", "cluster"] = "sentinel" if scheme == "redis+sentinel" else "cluster"
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = _hosts(scheme, hostlist, SENTINEL_PORT if kind == "sentinel" else REDIS_PORT)
    options = _query(scheme, query, allowed=("sentinel_password",) if kind == "sentinel" else ())
    if kind == "cluster":
        if path not in ("", "0"):
            raise InvalidStoreUrl(
                f"{scheme}:// takes no database or path (a Redis Cluster has database 0 only)"
            )
        return StoreAddress(kind, hosts=hosts, username=username, password=password)
    service, _, db = path.rstrip("/").partition("/")
    if not _SERVICE.fullmatch(service):
        raise InvalidStoreUrl(
            f"{scheme}:// needs the monitored service's name after the sentinels: "
            "redis+sentinel://host:26379,host:26379/<service>[/<db>]"
        )
    if db and not db.isdigit():
        raise InvalidStoreUrl(f"{scheme}://: the database after the service is a number")
    return StoreAddress(
        kind,
        hosts=hosts,
        service=service,
        db=int(db or 0),
        username=username,
        password=password,
        sentinel_password=options.get("sentinel_password"),
    )


_SCHEMES_HELP = (
    "the store URL must begin with redis://, rediss://, unix://, redis+sentinel:// or "
    "redis+cluster://"
)


def _hosts(scheme: str, hostlist: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in hostlist.split(","):
        match = _HOST_PORT.fullmatch(item)
        port = int(match["port"] or default_port) if match else 0
        if match is None or not 0 < port < 65536:
            raise InvalidStoreUrl(
                f"{scheme}://: {item!r} is not host:port (write host:port,host:port,...)"
            )
        hosts.append((match["host"].strip("[]"), port))
    return tuple(hosts)


def _query(scheme: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(parsed) - set(allowed))
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
        raise InvalidStoreUrl(f"{scheme}:// {takes}, not {', '.join(unknown)}")
    return {name: values[-1] for name, values in parsed.items()}


class SentinelMaster(aioredis.Redis):
    """The master of a service that Sentinel watches: every new connection asks the sentinels
    where the master is now, so a failover is followed.  Closing it also closes the sentinels'
    connections (redis-py's ``Sentinel`` leaves them open)."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinel_manager is not None:
                await self.sentinel_manager.aclose()


class ClusterStore(RedisCluster):
    """A Redis Cluster client that reports "no node reachable" as the connection error it is
    (redis-py raises its generic cluster exception, which also stands for programming errors
    such as keys of different slots in one command)."""

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        try:
            return await super().initialize(additional_startup_nodes_info, last_failed_node_name)
        except RedisClusterException as exc:
            if isinstance(exc.__cause__, UNAVAILABLE):
                raise RedisConnectionError(str(exc)) from exc
            raise


def open_store(redis_url: str | None) -> Redis:
    """A client for ``redis_url``, or for a fresh embedded store when it is ``None``.

    Nothing connects yet: the first command does.  :class:`InvalidStoreUrl` for a bad URL.
    """
    if redis_url is None:
        import fakeredis

        logger.warning(
            "using the embedded store: queues, tokens and rooms are kept in this process only "
            "and are lost when it stops (give --redis-url for a real Redis)"
        )
        server = fakeredis.FakeServer()
        client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        return client
    address = parse_store_url(redis_url)
    # With maintenance notifications on (redis-py's default "auto"), pooled connections are
    # not checked before use, so after a Redis restart every idle one fails a command.
    no_notifications = MaintNotificationsConfig(enabled=False)
    if address.kind == "cluster":
        return ClusterStore(
            startup_nodes=[ClusterNode(host, port) for host, port in address.hosts],
            username=address.username,
            password=address.password,
            decode_responses=True,
            # redis-py's cluster client would otherwise retry a command up to ten times.
            retry=_no_retry(),
            maint_notifications_config=no_notifications,
            **_CONNECTION,
        )
    if address.kind == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(address.hosts),
            # Asking where the master is may be repeated safely, but each sentinel is asked
            # once per connection: the next one answers if it is down, and redis-py's default
            # of ten tries each would keep an action waiting for seconds when none answers.
            sentinel_kwargs={
                "password": address.sentinel_password,
                "socket_connect_timeout": _CONNECTION["socket_connect_timeout"],
                "socket_timeout": _CONNECTION["socket_timeout"],
                "retry": _no_retry(),
            },
            db=address.db,
            username=address.username,
            password=address.password,
            decode_responses=True,
            retry=_no_retry(),
            maint_notifications_config=no_notifications,
            **_CONNECTION,
        )
        master = cast(
            SentinelMaster, sentinel.master_for(address.service, redis_class=SentinelMaster)
        )
        master.sentinel_manager = sentinel
        return master
    return aioredis.Redis.from_url(
        redis_url,
        decode_responses=True,
        maint_notifications_config=no_notifications,
        retry_on_timeout=False,
        **_CONNECTION,
    )


def same_slot_groups(store: Redis, keys: Iterable[str]) -> list[list[str]]:
    """``keys`` in groups that one multi-key command (``XREAD``, say) may name together: one
    group on a single Redis, one per hash slot on a Cluster.  Order is kept within a group."""
    keys = list(keys)
    if not isinstance(store, RedisCluster):
        return [keys] if keys else []
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())
