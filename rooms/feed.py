"""The hub feed: every server process follows each hub's event stream and pushes fresh queue
snapshots to the people watching that hub on this process.

One task per process reads all hubs' streams (``XREAD BLOCK``); on Redis Cluster, where one
command's keys must share a hash slot, one task per slot reads that slot's hubs.  For each batch
it reads a hub's snapshot once and hands it to every local subscriber; subscribers only post to
their own bounded outbox, so a slow browser never delays the others.  A ``service_changed``
entry (an administrator's edit) is passed on first, so the snapshots that follow see the new
service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.domain import HubId
from core.store import UNAVAILABLE, Redis, StoreUnavailable, same_slot_groups
from core.tasks import TaskOwner

from .service_config import SERVICE_CHANGED
from .waiting_room import HubSnapshot, WaitingRoom, events_key

logger = logging.getLogger(__name__)

#: How long one XREAD waits for news: below the client's socket timeout, or a quiet hub would
#: look like an outage; short enough that closing the feed is quick.
READ_BLOCK_MS = 1000

Subscriber = Callable[[HubSnapshot], None]
#: Told which hubs' service changed, before their snapshots are published.
ServiceListener = Callable[[list[HubId]], Awaitable[None]]


class Subscription:
    def __init__(self, feed: HubFeed, hub: HubId, subscriber: Subscriber) -> None:
        self._feed = feed
        self.hub = hub
        self.subscriber = subscriber

    def cancel(self) -> None:
        self._feed._unsubscribe(self)


class HubFeed:
    """Follows hub event streams and fans snapshots out to local subscribers."""

    def __init__(
        self,
        store: Redis,
        waiting_room: WaitingRoom,
        hubs: list[HubId],
        on_service_changed: ServiceListener | None = None,
    ) -> None:
        self._store = store
        self._on_service_changed = on_service_changed
        self._waiting_room = waiting_room
        self._hubs = hubs
        self._subscribers: dict[HubId, set[Subscription]] = {hub: set() for hub in hubs}
        self._tasks = TaskOwner("hub-feed")
        self._stopping = asyncio.Event()
        self._followers: list[asyncio.Task[Any]] = []

    def start(self) -> None:
        by_key = {events_key(hub): hub for hub in self._hubs}
        for i, keys in enumerate(same_slot_groups(self._store, by_key)):
            task = self._tasks.spawn(self._follow([by_key[key] for key in keys]), f"follow-{i}")
            if task is not None:
                self._followers.append(task)

    async def close(self) -> None:
        # Cancelling redis-py in the middle of a blocking read can leave the task waiting on
        # a future that never completes; ask the loop to stop between reads instead.
        self._stopping.set()
        if self._followers:
            await asyncio.wait(self._followers, timeout=READ_BLOCK_MS / 1000 + 3)
        await self._tasks.close()

    def subscribe(self, hub: HubId, subscriber: Subscriber) -> Subscription:
        sub = Subscription(self, hub, subscriber)
        self._subscribers[hub].add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscribers[sub.hub].discard(sub)

    async def _follow(self, hubs: list[HubId]) -> None:
        """Read the streams of ``hubs`` (all in one hash slot on a Cluster) until closed."""
        last: dict[Any, Any] = {}
        backoff = 0.2
        store_ok = True
        while not self._stopping.is_set():
            try:
                if not last:
                    # Start from what is in the streams now; watchers read a fresh snapshot on
                    # subscribing, so earlier events need no replay.
                    for hub in hubs:
                        newest = await self._store.xrevrange(events_key(hub), count=1)
                        last[events_key(hub)] = newest[0][0] if newest else "0-0"
                    if not store_ok:
                        store_ok = True
                        logger.info("store reachable again; refreshing every watched hub")
                        store_ok = await self._publish(hubs)
                batch: Any = await self._store.xread(last, block=READ_BLOCK_MS, count=500)
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE as exc:
                if store_ok:
                    logger.warning("hub feed: store unavailable (%s); retrying", exc)
                store_ok = False
                last = {}
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception:
                # Whatever went wrong, the feed must go on: every page's live queue rests on it.
                logger.exception("hub feed: unexpected error; starting again")
                last = {}
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                continue
            changed: list[HubId] = []
            reconfigured: list[HubId] = []
            for stream, entries in batch or []:
                if entries:
                    last[stream] = entries[-1][0]
                    hub = HubId(stream.split("{", 1)[1].split("}", 1)[0])
                    changed.append(hub)
                    if any(fields.get("event") == SERVICE_CHANGED for _, fields in entries):
                        reconfigured.append(hub)
            if reconfigured and self._on_service_changed is not None:
                # Should the store fail here, the keeper's periodic refresh catches up.
                with contextlib.suppress(StoreUnavailable):
                    await self._on_service_changed(reconfigured)
            if not await self._publish(changed):
                store_ok = False

    async def _publish(self, hubs: list[HubId]) -> bool:
        """Hand each hub's fresh snapshot to its subscribers; ``False`` if the store failed."""
        ok = True
        for hub in hubs:
            if not self._subscribers.get(hub):
                continue
            try:
                snapshot = await self._waiting_room.snapshot(hub)
            except StoreUnavailable:
                ok = False
                continue
            for sub in list(self._subscribers[hub]):
                sub.subscriber(snapshot)
        return ok
