"""The service keeper: opens and closes each hub's windows in the store as the clock passes,
and sweeps the rooms that nobody opened in time or whose server process is gone.

Every server process runs one; the scripts it calls are idempotent, so several keepers agree
without any coordination of their own.  Tests call :meth:`ServiceKeeper.tick` after moving
their clock instead of waiting for the loop.

Given the :class:`~rooms.service_config.ServiceConfigs`, the keeper follows each hub's
effective service (an administrator's live edit, or the directory's) and refreshes it from the
store at most every few seconds; without them it follows the directory, as the waiting room does.

Given ``room_stale_after_s`` (see :func:`~rooms.waiting_room.room_stale_after_s`), the keeper
also sweeps each hub's open rooms every :data:`SWEEP_EVERY_S` of the waiting room's clock
(:meth:`WaitingRoom.sweep_rooms`); without it, it leaves rooms alone.  Every keeper may sweep:
each room is judged and ended in one script, so two keepers never end a room twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from core.domain import HubId
from core.store import StoreUnavailable
from core.tasks import TaskOwner

from .notify import LogNotifier, Notifier
from .service_config import ServiceConfigs
from .waiting_room import TURN_NEAR_POSITIONS, SweptRoom, WaitingRoom
from .windows import ServiceCalendar

logger = logging.getLogger(__name__)

TICK_S = 1.0
#: How often (by the waiting room's clock) the keeper sweeps the hubs' rooms.
SWEEP_EVERY_S = 5.0


class ServiceKeeper:
    def __init__(
        self,
        waiting_room: WaitingRoom,
        hubs: list[HubId],
        tick_s: float = TICK_S,
        configs: ServiceConfigs | None = None,
        notifier: Notifier | None = None,
        room_stale_after_s: float | None = None,
    ):
        self._waiting_room = waiting_room
        self._notifier: Notifier = notifier or LogNotifier()
        self._configs = configs
        self._hubs = hubs
        self._tick_s = tick_s
        self._tasks = TaskOwner("service-keeper")
        self._stopping = asyncio.Event()
        self._store_ok = True
        self._stale_after_s = room_stale_after_s
        self._swept_at: datetime | None = None

    def start(self) -> None:
        self._tasks.spawn(self._run(), name="run")

    async def close(self) -> None:
        self._stopping.set()
        await self._tasks.close()

    async def tick(self) -> None:
        """Bring every hub's open window in the store in line with the clock, once; and every
        :data:`SWEEP_EVERY_S`, sweep the hubs' abandoned rooms (when given a stale time)."""
        if self._configs is not None:
            await self._configs.refresh_if_stale()
        now = self._waiting_room.now()
        for hub in self._hubs:
            calendar = self._calendar(hub)
            window = calendar.window_at(now)
            current = await self._waiting_room.open_window_span(hub)
            if current is not None and (window is None or current[0] != window.start.isoformat()):
                # Close what the store has open, at its own time; before it only if the hub's
                # hours no longer have that window (an edit), never because our clock lags.
                key, closes_at = current
                planned = any(
                    w.start.isoformat() == key and w.end == closes_at
                    for w in calendar.windows_on(closes_at.astimezone(calendar.tz).date())
                    + calendar.windows_on(
                        (closes_at - timedelta(seconds=1)).astimezone(calendar.tz).date()
                    )
                )
                await self._waiting_room.close_window(hub, early=not planned)
                current = await self._waiting_room.open_window_span(hub)
            if window is not None and current is None:
                await self._waiting_room.open_window(hub, window)
            await self._notify_turn_near(hub)
        # Every few seconds, not every tick; and at once if the clock went back.
        if self._stale_after_s is not None and (
            self._swept_at is None
            or not timedelta(0) <= now - self._swept_at < timedelta(seconds=SWEEP_EVERY_S)
        ):
            await self.sweep_rooms()
            self._swept_at = now

    async def sweep_rooms(self) -> list[SweptRoom]:
        """End every hub's abandoned rooms now; returns those ended."""
        if self._stale_after_s is None:
            return []
        swept = []
        for hub in self._hubs:
            swept += await self._waiting_room.sweep_rooms(hub, self._stale_after_s)
        return swept

    async def _notify_turn_near(self, hub: HubId) -> None:
        head = await self._waiting_room.snapshot_head(hub, TURN_NEAR_POSITIONS)
        for position, token in enumerate(head, start=1):
            if await self._waiting_room.claim_turn_near(hub, token.id):
                await self._notifier.turn_near(token, position)

    def _calendar(self, hub: HubId) -> ServiceCalendar:
        if self._configs is not None:
            return self._configs.calendar(hub)
        return self._waiting_room.calendar(hub)

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
            except Exception:
                # Windows must keep opening and closing; log and try again next tick.
                logger.exception("service keeper: unexpected error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._tick_s)
