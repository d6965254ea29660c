"""Live service windows: a per-hub override of the directory's service, kept in the store.

An administrator edits a hub's service on ``/admin/hub/<id>``.  The override is kept as JSON in
the hash ``wr:{hub}:service`` (fields ``service``, ``by``, ``at``) and every change is announced
on the hub's event stream (``event=service_changed``), so every server process applies it
without a restart.  A hub without an override, or whose stored override no longer validates,
serves by the directory.

Reads are synchronous (:meth:`ServiceConfigs.get`) from a per-process cache, because the
calendar is consulted on every keeper tick and every queue view.  The cache is updated at once
by a change made through this process, on a ``service_changed`` event (the hub feed calls
:meth:`ServiceConfigs.refresh`), and at most every :data:`REFRESH_S` seconds otherwise (the
keeper calls :meth:`ServiceConfigs.refresh_if_stale`), which covers events missed while the
store was unreachable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import ValidationError
from redis.exceptions import WatchError

from core.directory import Directory
from core.domain import HubId, UserId
from core.service import Service
from core.service_text import InvalidService, check_bounds
from core.store import UNAVAILABLE, Redis, StoreUnavailable

from .waiting_room import STREAM_MAXLEN, Clock, events_key, prefix, utc_now
from .windows import ServiceCalendar

logger = logging.getLogger(__name__)

#: The longest a process goes on with a cached service without asking the store.
REFRESH_S = 5.0
#: The revision of a hub that serves by its directory entry.
DIRECTORY_REVISION = "directory"
SERVICE_CHANGED = "service_changed"

__all__ = [
    "DIRECTORY_REVISION",
    "SERVICE_CHANGED",
    "EffectiveService",
    "InvalidService",
    "Override",
    "ServiceConfigError",
    "ServiceConfigs",
    "StaleRevision",
    "UnknownHub",
    "service_key",
]


class ServiceConfigError(Exception):
    """A service change that cannot be made."""

    code = "service_config_error"


class UnknownHub(ServiceConfigError):
    code = "unknown_hub"


class StaleRevision(ServiceConfigError):
    """The hub's service changed since the editor read it; nothing was saved."""

    code = "stale_revision"


def service_key(hub: str) -> str:
    return prefix(hub) + "service"


@dataclasses.dataclass(frozen=True)
class Override:
    """A service set through :meth:`ServiceConfigs.set`: by whom and when."""

    service: Service
    by: UserId
    at: datetime


@dataclasses.dataclass(frozen=True)
class EffectiveService:
    """The service a hub serves by now, and where it comes from."""

    hub: HubId
    service: Service
    #: ``None`` when the directory's service applies.
    override: Override | None
    #: Changes with every set or reset; an edit names the revision it started from.
    revision: str
    #: The store holds an override that does not validate (the directory's service applies).
    stored_invalid: bool = False


def _revision(row: dict[str, str]) -> str:
    if not row:
        return DIRECTORY_REVISION
    body = "\x1f".join((row.get("service", ""), row.get("by", ""), row.get("at", "")))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class ServiceConfigs:
    """Each hub's effective service: the stored override, or the directory's."""

    def __init__(
        self,
        store: Redis,
        directory: Directory,
        clock: Clock = utc_now,
        refresh_s: float = REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._refreshed_at: float | None = None
        self._cache: dict[HubId, EffectiveService] = {}
        #: Changes made through this process, per hub: a refresh that read the store before
        #: one of them must not put the older value back in the cache.
        self._changes: dict[HubId, int] = {}
        #: Revisions already reported as invalid, so a bad override is logged once, not per read.
        self._reported: set[str] = set()

    def _hub(self, hub: str) -> HubId:
        if hub not in self._directory.hubs:
            raise UnknownHub(f"unknown hub {hub!r}")
        return HubId(hub)

    def _default(self, hub: HubId) -> EffectiveService:
        return EffectiveService(hub, self._directory.hubs[hub].service, None, DIRECTORY_REVISION)

    def effective(self, hub: str) -> EffectiveService:
        """The hub's service as this process knows it (no store round trip)."""
        key = self._hub(hub)
        return self._cache.get(key) or self._default(key)

    def get(self, hub: str) -> Service:
        """The service ``hub`` serves by: its override if any, else the directory's."""
        return self.effective(hub).service

    def calendar(self, hub: str) -> ServiceCalendar:
        """The hub's effective service as concrete windows in its time zone."""
        return ServiceCalendar(self.get(hub), self._directory.hubs[HubId(hub)].tz)

    async def refresh(self, hubs: Iterable[HubId] | None = None) -> None:
        """Read the overrides of ``hubs`` (default: all) from the store into the cache."""
        everyone = hubs is None
        wanted = [HubId(h) for h in self._directory.hubs] if hubs is None else list(hubs)
        wanted = [self._hub(h) for h in wanted]
        changes = dict(self._changes)
        try:
            async with self._store.pipeline(transaction=False) as pipe:
                for hub in wanted:
                    pipe.hgetall(service_key(hub))
                rows = await pipe.execute()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        for hub, row in zip(wanted, rows, strict=True):
            if self._changes.get(hub) == changes.get(hub):
                self._store_in_cache(self._parse(hub, cast(dict[str, str], row)))
        if everyone:
            self._refreshed_at = self._monotonic()

    async def refresh_if_stale(self) -> None:
        """:meth:`refresh` every hub unless that was done in the last :data:`REFRESH_S` s."""
        if self._refreshed_at is None or self._monotonic() - self._refreshed_at >= self._refresh_s:
            await self.refresh()

    async def set(
        self, hub: str, service: Service, by_user: str, *, revision: str | None = None
    ) -> EffectiveService:
        """Make ``service`` the hub's service, on every server process, from now on.

        With ``revision`` (as :meth:`effective` gave it to the editor), refuse with
        :class:`StaleRevision` if someone changed the hub's service since.
        """
        key = self._hub(hub)
        check_bounds(service)
        now = _ms(self._clock())
        row = {"service": service.model_dump_json(), "by": by_user, "at": str(now)}
        await self._write(key, row, revision, action="set", by_user=by_user, now=now)
        effective = self._parse(key, row)
        self._store_in_cache(effective)
        logger.info("hub %s: service set by %s (revision %s)", key, by_user, effective.revision)
        return effective

    async def reset(
        self, hub: str, by_user: str = "", *, revision: str | None = None
    ) -> EffectiveService:
        """Drop the hub's override: it serves by the directory again, on every process."""
        key = self._hub(hub)
        now = _ms(self._clock())
        await self._write(key, None, revision, action="reset", by_user=by_user, now=now)
        effective = self._default(key)
        self._store_in_cache(effective)
        logger.info("hub %s: service reset to the directory's by %s", key, by_user or "?")
        return effective

    async def _write(
        self,
        hub: HubId,
        row: dict[str, str] | None,
        revision: str | None,
        *,
        action: str,
        by_user: str,
        now: int,
    ) -> None:
        # The override and its announcement go in one MULTI: a process that reads the event
        # finds the new override.  WATCH makes an edit based on an old revision fail instead
        # of silently undoing someone else's change.
        key = service_key(hub)
        event = {"event": SERVICE_CHANGED, "action": action, "by": by_user, "at": str(now)}
        try:
            async with self._store.pipeline(transaction=True) as pipe:
                if revision is not None:
                    await pipe.watch(key)
                    current = cast(dict[str, str], await pipe.hgetall(key))
                    if _revision(current) != revision:
                        raise StaleRevision(f"the service of hub {hub} changed meanwhile")
                    pipe.multi()  # type: ignore[no-untyped-call]
                pipe.delete(key)
                if row is not None:
                    pipe.hset(key, mapping=cast(dict[Any, Any], row))
                pipe.xadd(events_key(hub), event, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
                await pipe.execute()
        except WatchError:
            raise StaleRevision(f"the service of hub {hub} changed meanwhile") from None
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        self._changes[hub] = self._changes.get(hub, 0) + 1

    def _parse(self, hub: HubId, row: dict[str, str]) -> EffectiveService:
        revision = _revision(row)
        if not row:
            return self._default(hub)
        try:
            service = Service.model_validate_json(row.get("service", ""))
            check_bounds(service)
            override = Override(
                service=service,
                by=UserId(row.get("by", "")),
                at=datetime.fromtimestamp(int(row["at"]) / 1000, UTC),
            )
        except (ValidationError, InvalidService, KeyError, ValueError, OverflowError) as exc:
            if revision not in self._reported:
                self._reported.add(revision)
                logger.warning(
                    "hub %s: stored service override is invalid (%s); serving by the directory",
                    hub,
                    exc,
                )
            return dataclasses.replace(self._default(hub), revision=revision, stored_invalid=True)
        return EffectiveService(hub, service, override, revision)

    def _store_in_cache(self, effective: EffectiveService) -> None:
        before = self.effective(effective.hub)
        if before.revision != effective.revision:
            logger.info(
                "hub %s: service %s -> %s", effective.hub, before.revision, effective.revision
            )
        self._cache[effective.hub] = effective
