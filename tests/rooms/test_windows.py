"""Service windows: validated strictly, turned into concrete moments in the hub's time zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
from pydantic import ValidationError

from core.service import AtClosing, Service
from rooms.windows import ServiceCalendar

IST = zoneinfo.ZoneInfo("Asia/Kolkata")


def service(**fields: Any) -> Service:
    return Service.model_validate(fields)


def at(day: int, hh: int, mm: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hh, mm, tzinfo=IST)


def test_every_day_nine_to_four() -> None:
    cal = ServiceCalendar(service(windows=[{"open": "09:00", "close": "16:00"}]), IST)
    window = cal.window_at(at(27, 10))
    assert window is not None
    assert (window.start, window.end) == (at(27, 9), at(27, 16))
    assert cal.window_at(at(27, 8, 59)) is None
    assert cal.window_at(at(27, 16)) is None  # closing time is outside
    nxt = cal.next_opening(at(27, 17))
    assert nxt is not None
    assert nxt.start == at(28, 9)
    # The same moment seen from UTC.
    assert cal.window_at(dt.datetime(2026, 11, 27, 4, 0, tzinfo=dt.UTC)) is not None


def test_split_windows_closures_and_extra_days() -> None:
    s = service(
        windows=[
            {
                "days": ["mon", "tue", "wed", "thu", "fri", "sat"],
                "open": "11:00",
                "close": "13:00",
                "capacity": 20,
            },
            {"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "open": "15:00", "close": "17:00"},
        ],
        closures=[{"date": "2026-11-27", "reason": "Guru Nanak Jayanti"}],
        extra_days=[
            {"date": "2026-11-29", "open": "09:00", "close": "12:00", "reason": "eye camp"}
        ],
        capacity=30,
        at_closing="expire",
    )
    assert s.at_closing is AtClosing.EXPIRE
    cal = ServiceCalendar(s, IST)
    assert cal.windows_on(dt.date(2026, 11, 27)) == []  # a Friday, but closed
    monday = cal.windows_on(dt.date(2026, 11, 30))
    assert [(w.start.hour, w.end.hour, w.capacity) for w in monday] == [(11, 13, 20), (15, 17, 30)]
    sunday = cal.windows_on(dt.date(2026, 11, 29))
    assert [(w.start.hour, w.end.hour) for w in sunday] == [(9, 12)]
    nxt = cal.next_opening(at(27, 12))
    assert nxt is not None
    assert nxt.start == at(28, 11)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"windows": [{"open": "16:00", "close": "09:00"}]}, "closes before it opens"),
        ({"windows": [{"open": "9:00", "close": "16:00"}]}, "pattern"),
        ({"windows": [{"open": "09:00", "close": "24:30"}]}, "pattern"),
        (
            {
                "windows": [
                    {"open": "09:00", "close": "13:00"},
                    {"days": ["mon"], "open": "12:00", "close": "14:00"},
                ]
            },
            "overlap on mon",
        ),
        ({"windows": [{"days": ["funday"], "open": "09:00", "close": "10:00"}]}, "days"),
        ({"windows": [{"days": [], "open": "09:00", "close": "10:00"}]}, "names no day"),
        ({"closures": [{"date": "2026-01-26", "reason": "x"}] * 2}, "closed twice"),
        (
            {
                "closures": [{"date": "2026-01-26", "reason": "x"}],
                "extra_days": [{"date": "2026-01-26", "open": "09:00", "close": "10:00"}],
            },
            "both closed and an extra day",
        ),
        ({"at_closing": "forget"}, "at_closing"),
        ({"windows": [{"open": "09:00", "close": "16:00", "colour": "red"}]}, "colour"),
    ],
)
def test_bad_windows_are_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        service(**fields)


def test_around_the_clock() -> None:
    cal = ServiceCalendar(service(windows=[{"open": "00:00", "close": "24:00"}]), IST)
    window = cal.window_at(at(27, 23, 59))
    assert window is not None
    assert window.end == at(28, 0)
    later = cal.window_at(at(28, 0))
    assert later is not None
    assert later.start == at(28, 0)


def test_no_window_means_no_service() -> None:
    cal = ServiceCalendar(service(), IST)
    assert cal.window_at(at(27, 10)) is None
    assert cal.next_opening(at(27, 10)) is None
