"""When a hub serves: its weekly windows, closures and extra days, turned into moments."""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo

from core.service import Service

#: How far ahead :meth:`ServiceCalendar.next_opening` looks.
HORIZON_DAYS = 31


@dataclasses.dataclass(frozen=True)
class OpenWindow:
    """One concrete window: from ``start`` to ``end`` (aware datetimes), serving ``capacity``."""

    start: dt.datetime
    end: dt.datetime
    capacity: int

    def __contains__(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end


class ServiceCalendar:
    """A hub's service turned into concrete windows in its time zone."""

    def __init__(self, service: Service, tz: zoneinfo.ZoneInfo) -> None:
        self._service = service
        self._tz = tz

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return self._tz

    def windows_on(self, day: dt.date) -> list[OpenWindow]:
        """The windows of one local date, in order."""
        s = self._service
        if any(c.date == day for c in s.closures):
            return []
        spans = [
            (w.open, w.close, w.capacity or s.capacity)
            for w in s.windows
            if any(d.number == day.weekday() for d in w.days)
        ]
        spans += [
            (e.open, e.close, e.capacity or s.capacity) for e in s.extra_days if e.date == day
        ]
        out = [
            OpenWindow(self._at(day, start), self._at(day, end), capacity)
            for start, end, capacity in spans
        ]
        return sorted(out, key=lambda w: w.start)

    def _at(self, day: dt.date, hhmm: str) -> dt.datetime:
        if hhmm == "24:00":  # the end of the day: midnight that starts the next
            return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=self._tz)
        hours, minutes = (int(x) for x in hhmm.split(":"))
        return dt.datetime.combine(day, dt.time(hours, minutes), tzinfo=self._tz)

    def window_at(self, moment: dt.datetime) -> OpenWindow | None:
        """The window open at ``moment``, if any."""
        local = moment.astimezone(self._tz)
        for window in self.windows_on(local.date()):
            if moment in window:
                return window
        return None

    def next_opening(self, moment: dt.datetime) -> OpenWindow | None:
        """The first window that opens after ``moment`` (within a month)."""
        day = moment.astimezone(self._tz).date()
        for offset in range(HORIZON_DAYS):
            for window in self.windows_on(day + dt.timedelta(days=offset)):
                if window.start > moment:
                    return window
        return None
