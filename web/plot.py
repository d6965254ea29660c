"""The plot of a hub's queue through the day, as coordinates an SVG template draws.

Drawn on the server (no script, no external request; the page's CSP allows SVG markup): this
module only computes positions and labels, the template writes the elements, so every text on
it is escaped by Jinja like any other.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

from rooms import DayFigures

WIDTH, HEIGHT = 720, 260
#: Margins around the plotting area, room for tick labels and axis titles.
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 12, 48
HOUR_STEP = 3
#: "Nice" steps for the vertical axis: 1, 2, 5, 10, 20, 50, ...
_NICE = (1, 2, 5)
MAX_Y_TICKS = 5


@dataclasses.dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclasses.dataclass(frozen=True)
class Band:
    """A span when a window was open, as an x position and a width."""

    x: float
    width: float


@dataclasses.dataclass(frozen=True)
class QueuePlot:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    #: The step line, as SVG ``points``.
    points: str
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    bands: tuple[Band, ...]
    now_x: float
    y_max: int

    @property
    def mid_x(self) -> float:
        return round((self.left + self.right) / 2, 1)

    @property
    def mid_y(self) -> float:
        return round((self.top + self.bottom) / 2, 1)


def nice_ceiling(value: int) -> tuple[int, int]:
    """An axis top at or above ``value`` and its tick step, at most :data:`MAX_Y_TICKS` ticks."""
    value = max(value, 1)
    magnitude = 1
    while True:
        for nice in _NICE:
            step = nice * magnitude
            if math.ceil(value / step) <= MAX_Y_TICKS:
                return math.ceil(value / step) * step, step
        magnitude *= 10


def queue_plot(figures: DayFigures, width: int = WIDTH, height: int = HEIGHT) -> QueuePlot:
    """Where to draw ``figures.queue`` over the whole service day, in hub local time."""
    left, right, top, bottom = LEFT, width - RIGHT, TOP, height - BOTTOM
    span = (figures.end - figures.start).total_seconds()
    y_max, y_step = nice_ceiling(figures.peak)

    start = figures.start.astimezone(UTC)  # in UTC, so that a DST day measures true hours

    def x(moment: datetime) -> float:
        offset = (moment.astimezone(UTC) - start).total_seconds()
        return round(left + (right - left) * min(max(offset / span, 0.0), 1.0), 1)

    def y(value: int) -> float:
        return round(bottom - (bottom - top) * value / y_max, 1)

    points: list[str] = []
    previous: int | None = None
    for point in figures.queue:
        if previous is not None:
            points.append(f"{x(point.at)},{y(previous)}")
        points.append(f"{x(point.at)},{y(point.waiting)}")
        previous = point.waiting
    if previous is not None:
        points.append(f"{x(figures.now)},{y(previous)}")

    tz = figures.start.tzinfo
    x_ticks = []
    moment = start
    while moment <= figures.end:
        label = "24:00" if moment == figures.end else moment.astimezone(tz).strftime("%H:%M")
        x_ticks.append(Tick(x(moment), label))
        moment += timedelta(hours=HOUR_STEP)
    y_ticks = [Tick(y(v), str(v)) for v in range(0, y_max + 1, y_step)]
    bands = [Band(x(a), round(x(b) - x(a), 1)) for a, b in figures.open_spans]
    return QueuePlot(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        points=" ".join(points),
        x_ticks=tuple(x_ticks),
        y_ticks=tuple(y_ticks),
        bands=tuple(bands),
        now_x=x(figures.now),
        y_max=y_max,
    )
