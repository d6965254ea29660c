"""A hub's day in figures: the counting over tokens and events, and the reading of the stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId
from core.store import Redis
from rooms import Figures, WaitingRoom
from rooms.figures import (
    StreamEvent,
    open_spans,
    open_time,
    parse_event,
    percentile,
    queue_delta,
)

HUB = HubId("bhabua-sadar")


def at(hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 11, 27, hh, mm, tzinfo=UTC)


def event(kind: str, when: datetime, **fields: str) -> StreamEvent:
    return StreamEvent(when, kind, {"event": kind, **fields})


def test_percentile_is_nearest_rank() -> None:
    minutes = [timedelta(minutes=m) for m in (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)]
    assert percentile(minutes, 90) == timedelta(minutes=90)
    assert percentile(minutes[:2], 90) == timedelta(minutes=20)
    assert percentile(minutes[:1], 90) == timedelta(minutes=10)
    assert percentile([], 90) is None


def test_stream_entries_are_parsed_defensively() -> None:
    assert parse_event("1-0", {"event": "issued", "at": "1000"}) == StreamEvent(
        datetime.fromtimestamp(1, UTC), "issued", {"event": "issued", "at": "1000"}
    )
    # Without `at`, the stream id (the store's clock) dates the entry.
    no_time = parse_event("2000-3", {"event": "no_show"})
    assert no_time is not None
    assert no_time.at == datetime.fromtimestamp(2, UTC)
    assert parse_event("1-0", {"at": "1000"}) is None
    assert parse_event("1-0", {"event": "issued", "at": "soon"}) is None


def test_queue_deltas() -> None:
    now = at(5)
    assert queue_delta(event("issued", now, state="scheduled")) == 1
    assert queue_delta(event("called", now)) == -1
    assert queue_delta(event("cancelled", now)) == -1
    assert queue_delta(event("ended", now, outcome="requeued")) == 1
    assert queue_delta(event("ended", now, outcome="completed")) == 0
    assert queue_delta(event("window_closed", now, policy="expire", tokens="3")) == -3
    assert queue_delta(event("window_closed", now, policy="carry_over", tokens="3")) == 0
    assert queue_delta(event("window_opened", now, admitted="3")) == 0
    assert queue_delta(event("service_changed", now)) == 0


def test_open_spans_come_from_window_events() -> None:
    start, now = at(0), at(20)
    opened_closed = [event("window_opened", at(9)), event("window_closed", at(16))]
    assert open_spans(opened_closed, start, now, open_now=False) == [(at(9), at(16))]
    # A window open since yesterday shows in a first event that closes it.
    assert open_spans([event("window_closed", at(2))], start, now, open_now=False) == [
        (start, at(2))
    ]
    # No window event today: open all day, or not at all, as the store says now.
    assert open_spans([], start, now, open_now=True) == [(start, now)]
    assert open_spans([], start, now, open_now=False) == []
    # Still open now.
    assert open_spans([event("window_opened", at(18))], start, now, open_now=True) == [
        (at(18), now)
    ]


def test_open_time_counts_only_open_hours() -> None:
    spans = [(at(9), at(12)), (at(14), at(16))]
    assert open_time(spans, at(8), at(10)) == timedelta(hours=1)  # issued while closed
    assert open_time(spans, at(9, 30), at(10)) == timedelta(minutes=30)
    assert open_time(spans, at(11), at(15)) == timedelta(hours=2)  # carried over
    assert open_time(spans, at(12, 30), at(13)) == timedelta()


async def test_events_are_read_back_to_the_start_of_the_day(store: Redis) -> None:
    directory = Directory.load(DEMO_DIRECTORY)
    figures = Figures(store, WaitingRoom(store, directory), directory, read_page=3)
    key = "wr:{bhabua-sadar}:events"
    stamps = [at(h) for h in range(0, 24, 2)]
    for moment in stamps:
        await store.xadd(key, {"event": "issued", "at": str(int(moment.timestamp() * 1000))})
    await store.xadd(key, {"junk": "entry"})
    events = await figures.events_since(HUB, at(7))
    assert [e.at for e in events] == [s for s in stamps if s >= at(7)]
    assert len(await figures.events_since(HUB, at(0))) == len(stamps)
