"""The service keeper: opens and closes each hub's windows in the store as the clock passes.

Every server process runs one; the scripts it calls are idempotent, so several keepers agree
without any coordination of their own.  Tests call :meth:`ServiceKeeper.tick` after moving
their clock instead of waiting for the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.domain import HubId
from core.store import StoreUnavailable
from core.tasks import TaskOwner

from .waiting_room import WaitingRoom

logger = logging.getLogger(__name__)

TICK_S = 1.0


class ServiceKeeper:
    def __init__(self, waiting_room: WaitingRoom, hubs: list[HubId], tick_s: float = TICK_S):
        self._waiting_room = waiting_room
        self._hubs = hubs
        self._tick_s = tick_s
        self._tasks = TaskOwner("service-keeper")
        self._stopping = asyncio.Event()
        self._store_ok = True

    def start(self) -> None:
        self._tasks.spawn(self._run(), name="run")

    async def close(self) -> None:
        self._stopping.set()
        await self._tasks.close()

    async def tick(self) -> None:
        """Bring every hub's open window in the store in line with the clock, once."""
        now = self._waiting_room.now()
        for hub in self._hubs:
            window = self._waiting_room.calendar(hub).window_at(now)
            current = await self._waiting_room.open_window_key(hub)
            if window is not None and current != window.start.isoformat():
                await self._waiting_room.open_window(hub, window)
            elif window is None and current is not None:
                await self._waiting_room.close_window(hub)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
                if not self._store_ok:
                    logger.info("service keeper: store reachable again")
                self._store_ok = True
            except StoreUnavailable as exc:
                if self._store_ok:
                    logger.warning("service keeper: store unavailable (%s); retrying", exc)
                self._store_ok = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._tick_s)
