"""A hub's service day in figures: tokens issued, served and lost, how long patients waited to
be called, and how many were waiting through the day.

The counting (:func:`day_figures`) is pure, over tokens and stream events already read, so it is
tested without a store; :class:`Figures` does the reading.

Definitions, as the admin page states them:

- a token counts for the service day it was issued on (the hub's local date);
- its *wait* is the time the hub was open between its issue and its call: from issue, or from
  the window's opening for a token issued while closed (a token carried over also counts its
  time in the earlier window), to being called;
- *waiting* at a moment is every token issued and not yet called or ended, queued in the open
  window or held for the next one; the series is anchored on the store's present count and
  walked back through the day's events, so it ends exactly where the queue stands now.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import cast

from core.directory import Directory
from core.domain import HubId, TokenState
from core.store import UNAVAILABLE, Redis, StoreUnavailable

from .waiting_room import STREAM_MAXLEN, Token, WaitingRoom, events_key

#: Stream entries that mean a called patient did not come (counted when some code writes them).
NO_SHOW = "no_show"
#: Entries read per round trip, and at most in all, walking back through a hub's stream (it is
#: trimmed to about :data:`~rooms.waiting_room.STREAM_MAXLEN`).
READ_PAGE = 1_000
MAX_EVENTS = 2 * STREAM_MAXLEN


@dataclasses.dataclass(frozen=True)
class StreamEvent:
    """One entry of a hub's event stream."""

    at: datetime
    kind: str
    fields: Mapping[str, str]


def parse_event(entry_id: str, fields: Mapping[str, str]) -> StreamEvent | None:
    """A stream entry as an event; ``None`` for one without a kind or a readable time.

    An entry without ``at`` is dated by its stream id (the store's clock).
    """
    kind = fields.get("event")
    raw_at = fields.get("at") or entry_id.split("-", 1)[0]
    if not kind:
        return None
    try:
        at = datetime.fromtimestamp(int(raw_at) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return StreamEvent(at, kind, fields)


def queue_delta(event: StreamEvent) -> int:
    """How an event changes the number of tokens waiting (queued or held)."""
    match event.kind:
        case "issued":
            return 1
        case "called" | "cancelled":
            return -1
        case "ended":
            return 1 if event.fields.get("outcome") == "requeued" else 0
        case "window_closed" if event.fields.get("policy") == "expire":
            try:
                return -int(event.fields.get("tokens", "0"))
            except ValueError:
                return 0
    return 0


@dataclasses.dataclass(frozen=True)
class QueuePoint:
    """From ``at`` on, ``waiting`` tokens wait."""

    at: datetime
    waiting: int


@dataclasses.dataclass(frozen=True)
class DayFigures:
    hub: HubId
    date: date
    #: The service day, local midnight to local midnight, and the moment the figures were read.
    start: datetime
    end: datetime
    now: datetime
    issued: int
    served: int
    no_shows: int
    carried_over: int
    cancelled: int
    expired: int
    #: Tokens waiting now, queued or held (whatever day they were issued on).
    waiting: int
    waits: tuple[timedelta, ...]
    queue: tuple[QueuePoint, ...]
    open_spans: tuple[tuple[datetime, datetime], ...]

    @property
    def average_wait(self) -> timedelta | None:
        return sum(self.waits, timedelta()) / len(self.waits) if self.waits else None

    @property
    def p90_wait(self) -> timedelta | None:
        return percentile(self.waits, 90)

    @property
    def peak(self) -> int:
        return max((p.waiting for p in self.queue), default=0)


def percentile(values: Sequence[timedelta], pct: float) -> timedelta | None:
    """The nearest-rank percentile: the smallest value that ``pct`` % of values do not exceed."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def open_spans(
    events: Sequence[StreamEvent], start: datetime, now: datetime, open_now: bool
) -> list[tuple[datetime, datetime]]:
    """When the hub's window was open between ``start`` and ``now``, from its stream events."""
    marks = [e for e in events if e.kind in ("window_opened", "window_closed")]
    # Whether a window was open at the start of the day shows in the day's first window event.
    since: datetime | None = None
    if (marks and marks[0].kind == "window_closed") or (not marks and open_now):
        since = start
    spans: list[tuple[datetime, datetime]] = []
    for mark in marks:
        if mark.kind == "window_opened" and since is None:
            since = mark.at
        elif mark.kind == "window_closed" and since is not None:
            spans.append((since, mark.at))
            since = None
    if since is not None:
        spans.append((since, now))
    return spans


def open_time(spans: Iterable[tuple[datetime, datetime]], frm: datetime, to: datetime) -> timedelta:
    """How long the hub was open between ``frm`` and ``to``."""
    total = timedelta()
    for opened, closed in spans:
        overlap = min(closed, to) - max(opened, frm)
        if overlap > timedelta():
            total += overlap
    return total


def day_figures(
    hub: HubId,
    tokens: Iterable[Token],
    events: Iterable[StreamEvent],
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    waiting_now: int,
    open_now: bool,
) -> DayFigures:
    """The figures of the service day ``start``-``end`` as they stand at ``now``.

    ``tokens`` are the day's tokens, ``events`` the hub's stream entries (any order, any span:
    those outside the day up to ``now`` are ignored), ``waiting_now`` the tokens queued or held
    now and ``open_now`` whether a window is open now.
    """
    tokens = list(tokens)
    day = sorted((e for e in events if start <= e.at <= now), key=lambda e: e.at)
    spans = open_spans(day, start, now, open_now)
    states = [t.state for t in tokens]
    waits = tuple(
        open_time(spans, t.issued_at, t.called_at) for t in tokens if t.called_at is not None
    )
    waiting = waiting_now - sum(queue_delta(e) for e in day)
    queue = [QueuePoint(start, max(0, waiting))]
    for event in day:
        if delta := queue_delta(event):
            waiting += delta
            queue.append(QueuePoint(event.at, max(0, waiting)))
    return DayFigures(
        hub=hub,
        date=start.date(),
        start=start,
        end=end,
        now=now,
        issued=len(tokens),
        served=states.count(TokenState.COMPLETED),
        no_shows=sum(1 for e in day if e.kind == NO_SHOW),
        carried_over=states.count(TokenState.CARRIED_OVER),
        cancelled=states.count(TokenState.CANCELLED),
        expired=states.count(TokenState.EXPIRED),
        waiting=waiting_now,
        waits=waits,
        queue=tuple(queue),
        open_spans=tuple(spans),
    )


def service_day(moment: datetime, directory: Directory, hub: HubId) -> tuple[datetime, datetime]:
    """The hub's local day around ``moment``: its midnight and the next."""
    tz = directory.hub(hub).tz
    day = moment.astimezone(tz).date()
    return (
        datetime.combine(day, time(0), tzinfo=tz),
        datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz),
    )


class Figures:
    """Reads a hub's day from the store and counts it."""

    def __init__(
        self,
        store: Redis,
        waiting_room: WaitingRoom,
        directory: Directory,
        read_page: int = READ_PAGE,
    ) -> None:
        self._store = store
        self._waiting_room = waiting_room
        self._directory = directory
        self._read_page = read_page

    async def today(self, hub: HubId) -> DayFigures:
        """The hub's figures for its current service day."""
        now = self._waiting_room.now()
        start, end = service_day(now, self._directory, hub)
        snapshot = await self._waiting_room.snapshot(hub)
        events = await self.events_since(hub, start)
        return day_figures(
            hub,
            snapshot.today,
            events,
            start=start,
            end=end,
            now=now,
            waiting_now=len(snapshot.waiting) + len(snapshot.held),
            open_now=snapshot.window is not None,
        )

    async def events_since(self, hub: HubId, since: datetime) -> list[StreamEvent]:
        """The hub's stream events from ``since`` on, oldest first (at most :data:`MAX_EVENTS`).

        Read newest first, a page at a time, until an event older than ``since``.
        """
        out: list[StreamEvent] = []
        upper = "+"
        try:
            while len(out) < MAX_EVENTS:
                page = cast(
                    list[tuple[str, dict[str, str]]],
                    await self._store.xrevrange(
                        events_key(hub), max=upper, min="-", count=self._read_page
                    ),
                )
                for entry_id, fields in page:
                    event = parse_event(entry_id, fields)
                    if event is None:
                        continue
                    if event.at < since:
                        return out[::-1]
                    out.append(event)
                if len(page) < self._read_page:
                    break
                upper = "(" + page[-1][0]
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return out[::-1]
