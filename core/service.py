"""A hub's service: the daily windows in which it sees patients, and their rules.

Read from the directory (``[hubs.service]``), validated strictly: times are ``HH:MM``, a
window closes after it opens, windows of one day never overlap, a date is closed or extra once.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Clock = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=120, strip_whitespace=True)]


class Weekday(enum.StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def number(self) -> int:
        """Monday is 0, as in :meth:`datetime.date.weekday`."""
        return list(Weekday).index(self)


EVERY_DAY = tuple(Weekday)


class AtClosing(enum.StrEnum):
    """What becomes of tokens still waiting when a window closes."""

    CARRY_OVER = "carry_over"  # to the head of the next window, in their original order
    EXPIRE = "expire"  # ended, with a reason the spoke sees


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Model):
    """A weekly window: on these days, from ``open`` to ``close`` in the hub's time zone."""

    days: tuple[Weekday, ...] = EVERY_DAY
    open: Clock
    close: Clock
    #: Tokens this window may serve; ``None`` takes the hub's default.
    capacity: Annotated[int, Field(ge=1, le=10_000)] | None = None

    @model_validator(mode="after")
    def _closes_after_opening(self) -> Self:
        if _minutes(self.close) <= _minutes(self.open):
            raise ValueError(f"window {self.open}-{self.close} closes before it opens")
        if not self.days:
            raise ValueError(f"window {self.open}-{self.close} names no day")
        return self

    @property
    def span(self) -> tuple[int, int]:
        return _minutes(self.open), _minutes(self.close)


class Closure(_Model):
    """A date the hub does not serve (a holiday), whatever its weekly windows say."""

    date: dt.date
    reason: Reason


class ExtraDay(_Model):
    """A dated window besides the weekly ones (a health camp on a Sunday)."""

    date: dt.date
    open: Clock
    close: Clock
    capacity: Annotated[int, Field(ge=1, le=10_000)] | None = None
    reason: Reason | None = None

    @model_validator(mode="after")
    def _closes_after_opening(self) -> Self:
        if _minutes(self.close) <= _minutes(self.open):
            raise ValueError(f"extra day {self.date} closes before it opens")
        return self


class Service(_Model):
    """A hub's service windows and the rules that go with them."""

    windows: tuple[Window, ...] = ()
    closures: tuple[Closure, ...] = ()
    extra_days: tuple[ExtraDay, ...] = ()
    #: Tokens one window may serve unless it says otherwise.
    capacity: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: How long one consultation may last.
    consultation_minutes: Annotated[int, Field(ge=1, le=240)] = 15
    at_closing: AtClosing = AtClosing.CARRY_OVER
    #: How long a waiting spoke's page may be away (its link dropped) before its tokens are
    #: passed over by "call next"; they keep their places and are called once it is back.
    presence_grace_minutes: Annotated[int, Field(ge=1, le=120)] = 2
    #: How long a called spoke has to join before it counts as a no-show.
    no_show_minutes: Annotated[int, Field(ge=1, le=60)] = 5
    #: How many places back a first no-show (or a skipped token) goes; a second no-show drops it.
    requeue_places: Annotated[int, Field(ge=1, le=50)] = 3
    #: An urgent token goes ahead of normal ones issued up to this long before it, and no
    #: further: a normal token that has waited longer is never overtaken (ageing).
    urgent_advance_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = 30

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for day in Weekday:
            spans = sorted(w.span for w in self.windows if day in w.days)
            for (_, end), (start, _) in itertools.pairwise(spans):
                if start < end:
                    raise ValueError(f"windows overlap on {day.value}")
        closed = [c.date for c in self.closures]
        if len(set(closed)) != len(closed):
            raise ValueError("a date is closed twice")
        extra = [e.date for e in self.extra_days]
        if len(set(extra)) != len(extra):
            raise ValueError("a date has two extra windows (give one extra day per date)")
        both = set(closed) & set(extra)
        if both:
            raise ValueError(f"{min(both)} is both closed and an extra day")
        return self
