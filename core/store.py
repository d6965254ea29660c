"""The connection to the shared store: a real Redis, or the embedded Redis-compatible one.

Both speak the same protocol to the same code: the embedded store (fakeredis with a real Lua
interpreter) runs the very scripts and commands a real Redis runs, so tests run once against each.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

#: The client type every package uses; it always decodes responses to ``str``.
Redis = aioredis.Redis

logger = logging.getLogger(__name__)

#: The errors that mean "the store cannot be reached right now" rather than "a bug".
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class StoreUnavailable(Exception):
    """The shared store (Redis) cannot be reached; the action can be tried again later."""


def open_store(redis_url: str | None) -> Redis:
    """A client for ``redis_url``, or for a fresh embedded store when it is ``None``."""
    if redis_url is None:
        import fakeredis

        logger.warning(
            "using the embedded store: queues, tokens and rooms are kept in this process only "
            "and are lost when it stops (give --redis-url for a real Redis)"
        )
        server = fakeredis.FakeServer()
        client: Redis = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        return client
    return aioredis.Redis.from_url(
        redis_url,
        decode_responses=True,
        # With maintenance notifications on (redis-py's default "auto"), pooled connections are
        # not checked before use, so after a Redis restart every idle one fails a command.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry_on_timeout=False,
    )
