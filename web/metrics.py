"""``GET /metrics``: this node's figures in the Prometheus text format, version 0.0.4.

Who may read them: a scraper on this machine, and signed-in administrators.  A request is this
machine's when it comes from a loopback address, carries no signed-in user's cookie and shows
no sign of a reverse proxy (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``, ``Via``).  The
proxy of docs/deploy.md adds none of these, and behind it every visitor comes from loopback: it
must refuse ``/metrics`` itself (docs/deploy.md, "Monitoring").  A signed-in nurse, doctor or
auditor gets 403 from anywhere, as does an anonymous request from elsewhere.

Labels name hubs, seats, media kinds and directions; never a room, token, user or patient.
The hubs' figures come from the shared store, so every node reports the same ones.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import math
import time
import weakref
from collections.abc import Iterable, Mapping

from aiohttp import web

from core.appkeys import DIRECTORY
from core.domain import HubId, Participant, Role
from core.nodes import NODES, NodeLoad
from core.store import StoreUnavailable
from media import PeerState
from media.relay import RelayTrack
from rooms import FIGURES, ROOMS, DayFigures, Figures, LiveRoom, RoomRegistry
from rooms.figures import percentile
from signaling import SESSIONS, current_user

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Headers a reverse proxy may add: a request that has one did not start on this machine.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "Via")
#: A hub's figures are read from the store at most this often; scrapes in between reuse them.
HUB_FIGURES_MAX_AGE_S = 30.0
#: A scrape gives up on the store after this long and reports ``setu_store_up 0``.
STORE_TIMEOUT_S = 5.0
OUTCOMES = ("received", "forwarded", "dropped")
KINDS = ("audio", "video")

Labels = Mapping[str, str]
Sample = tuple[Labels, float]


# ---------------------------------------------------------------- the text format


class Exposition:
    """Metric families in the text format, each with its ``# HELP`` and ``# TYPE`` line."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, name: str, kind: str, help_: str, samples: Iterable[Sample] = ()) -> None:
        """A family; without samples (nothing measured yet) only its HELP and TYPE."""
        self._lines.append(f"# HELP {name} {_escape(help_, quote=False)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def one(self, name: str, kind: str, help_: str, value: float) -> None:
        self.add(name, kind, help_, [({}, value)])

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _escape(text: str, *, quote: bool = True) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


# ---------------------------------------------------------------- what the rooms carry


def live_rooms(registry: RoomRegistry) -> list[LiveRoom]:
    """The rooms live on this node now."""
    return list(registry)


def _connected_peers(rooms: Iterable[LiveRoom]) -> int:
    return sum(
        state == PeerState.CONNECTED for room in rooms for state in room.peer_states().values()
    )


def node_load(app: web.Application) -> NodeLoad:
    """What this node carries, for its heartbeat (:func:`core.nodes.setup`)."""
    registry = app[ROOMS]
    rooms = live_rooms(registry)
    return NodeLoad(rooms=len(rooms), peers=_connected_peers(rooms), draining=registry.draining)


def _direction(receiver: Participant) -> str:
    return f"{receiver.other}_to_{receiver}"


class RelayTotals:
    """The frames of every room's relay tracks, added up across rooms that came and went.

    The tracks' own counts go when their room ends, so each scrape adds what every live track
    counted since the previous scrape.  What a room relayed between the last scrape and its
    end is not counted: the totals are a lower bound, and never go down.
    """

    def __init__(self) -> None:
        self._seen: weakref.WeakKeyDictionary[RelayTrack, tuple[int, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._totals: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def update(self, rooms: Iterable[LiveRoom]) -> None:
        for room in rooms:
            for receiver, tracks in room.media.outbound.items():
                for kind, track in tracks.items():
                    stats = track.stats
                    now = (stats.received, stats.forwarded, stats.dropped)
                    before = self._seen.get(track, (0, 0, 0))
                    for outcome, count, last in zip(OUTCOMES, now, before, strict=True):
                        self._totals[(kind, _direction(receiver), outcome)] += max(0, count - last)
                    self._seen[track] = now

    def samples(self) -> list[Sample]:
        return [
            (
                {"kind": kind, "direction": _direction(receiver), "outcome": outcome},
                self._totals[(kind, _direction(receiver), outcome)],
            )
            for kind in KINDS
            for receiver in Participant
            for outcome in OUTCOMES
        ]


def _link_samples(
    rooms: Iterable[LiveRoom],
) -> tuple[list[Sample], list[Sample], list[Sample], list[Sample]]:
    """Loss per seat and leg, and round trip per seat, over the live rooms: worst and mean."""
    loss: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    rtt: dict[str, list[float]] = collections.defaultdict(list)
    for room in rooms:
        for seat, view in room.links.network().items():
            if view.up_loss is not None:
                loss[(seat, "up")].append(view.up_loss)
            if view.down_loss is not None:
                loss[(seat, "down")].append(view.down_loss)
            if view.rtt_ms is not None:
                rtt[seat].append(view.rtt_ms / 1000)
    loss_labels = [({"seat": seat, "leg": leg}, values) for (seat, leg), values in loss.items()]
    rtt_labels = [({"seat": seat}, values) for seat, values in rtt.items()]
    return (
        [(labels, max(values)) for labels, values in loss_labels],
        [(labels, sum(values) / len(values)) for labels, values in loss_labels],
        [(labels, max(values)) for labels, values in rtt_labels],
        [(labels, sum(values) / len(values)) for labels, values in rtt_labels],
    )


# ---------------------------------------------------------------- the hubs' day


class HubFigures:
    """Each hub's figures of the day, read from the store at most every
    :data:`HUB_FIGURES_MAX_AGE_S` (the read walks the day's tokens and events)."""

    def __init__(self, max_age_s: float = HUB_FIGURES_MAX_AGE_S) -> None:
        self._max_age_s = max_age_s
        self._read_at = -math.inf
        self._figures: list[DayFigures] = []
        # One read at a time: scrapes that arrive meanwhile wait for it and share it.
        self._lock = asyncio.Lock()

    async def get(self, figures: Figures, hubs: Iterable[HubId]) -> list[DayFigures]:
        """The figures, fresh enough; raises :class:`StoreUnavailable` (or TimeoutError)."""
        async with self._lock:
            if time.monotonic() - self._read_at > self._max_age_s:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    self._figures = [await figures.today(hub) for hub in hubs]
                self._read_at = time.monotonic()
            return self._figures


def _wait_samples(days: Iterable[DayFigures], pct: float) -> list[Sample]:
    out: list[Sample] = []
    for day in days:
        wait = percentile(day.waits, pct)
        if wait is not None:
            out.append(({"hub": day.hub}, wait.total_seconds()))
    return out


# ---------------------------------------------------------------- the page


class Collector:
    """What ``/metrics`` keeps between scrapes (one per application)."""

    def __init__(self) -> None:
        self.relay = RelayTotals()
        self.hubs = HubFigures()

    async def collect(self, app: web.Application) -> str:
        nodes = app[NODES]
        rooms = live_rooms(app[ROOMS])
        self.relay.update(rooms)
        try:
            days: list[DayFigures] | None = await self.hubs.get(
                app[FIGURES], [HubId(h) for h in app[DIRECTORY].hubs]
            )
        except (StoreUnavailable, TimeoutError) as exc:
            logger.debug("metrics: no hub figures, the store is unavailable (%s)", exc)
            days = None
        loss_max, loss_mean, rtt_max, rtt_mean = _link_samples(rooms)

        out = Exposition()
        out.add(
            "setu_node_info",
            "gauge",
            "This node's id and Setu version; always 1.",
            [({"node": nodes.id, "version": nodes.version}, 1)],
        )
        out.one("setu_live_rooms", "gauge", "Consultation rooms live on this node.", len(rooms))
        out.one(
            "setu_peers",
            "gauge",
            "Browsers' peer connections on this node whose media is up.",
            _connected_peers(rooms),
        )
        out.one(
            "setu_websocket_sessions",
            "gauge",
            "Open websocket sessions on this node.",
            len(app[SESSIONS]),
        )
        out.add(
            "setu_relay_frames_total",
            "counter",
            "Encoded frames the relay took in, passed on and dropped, by media kind and "
            "direction (a lower bound: a room's last moments before it ends may be missed).",
            self.relay.samples(),
        )
        out.add(
            "setu_link_loss_ratio_max",
            "gauge",
            "Worst packet loss over the live rooms, by seat and leg (up: from the browser).",
            loss_max,
        )
        out.add(
            "setu_link_loss_ratio_mean",
            "gauge",
            "Mean packet loss over the live rooms, by seat and leg (up: from the browser).",
            loss_mean,
        )
        out.add(
            "setu_link_rtt_seconds_max",
            "gauge",
            "Worst round trip between this node and a seat's browser, over the live rooms.",
            rtt_max,
        )
        out.add(
            "setu_link_rtt_seconds_mean",
            "gauge",
            "Mean round trip between this node and a seat's browser, over the live rooms.",
            rtt_mean,
        )
        out.one(
            "setu_event_loop_lag_seconds",
            "gauge",
            "How late the event loop woke a sleeping task, latest sample.",
            nodes.lag.last,
        )
        out.one(
            "setu_event_loop_lag_max_seconds",
            "gauge",
            "How late the event loop woke a sleeping task, worst over the last heartbeat.",
            nodes.lag.max,
        )
        out.one(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the process, all its threads.",
            nodes.cpu.seconds(),
        )
        out.one(
            "setu_node_start_time_seconds",
            "gauge",
            "When this node started serving, in seconds since the Unix epoch.",
            nodes.started_at,
        )
        out.one(
            "setu_store_up",
            "gauge",
            "1 if the shared store answered the last read of hub figures (at most "
            f"{HUB_FIGURES_MAX_AGE_S:.0f} s ago), else 0.",
            0 if days is None else 1,
        )
        out.add(
            "setu_queue_length",
            "gauge",
            "Tokens waiting at the hub: queued, or held for its next window.",
            [({"hub": day.hub}, day.waiting) for day in days or ()],
        )
        out.add(
            "setu_wait_seconds_p50",
            "gauge",
            "Median wait, issue to call (time the hub was open), of today's called tokens.",
            _wait_samples(days or (), 50),
        )
        out.add(
            "setu_wait_seconds_p90",
            "gauge",
            "90th percentile wait, issue to call (time the hub was open), of today's called "
            "tokens.",
            _wait_samples(days or (), 90),
        )
        return out.text()


COLLECTOR = web.AppKey("metrics_collector", Collector)


def _from_this_machine(request: web.Request) -> bool:
    if any(header in request.headers for header in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def may_read(request: web.Request) -> bool:
    """Administrators, and anonymous requests from this machine (see the module's docstring)."""
    user = current_user(request)
    if user is not None:
        return user.role is Role.ADMIN
    return _from_this_machine(request)


async def metrics(request: web.Request) -> web.StreamResponse:
    if not may_read(request):
        raise web.HTTPForbidden(text="metrics are for this machine and for administrators")
    text = await request.app[COLLECTOR].collect(request.app)
    return web.Response(
        body=text.encode(), headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
    )


def setup(app: web.Application) -> None:
    app[COLLECTOR] = Collector()
    app.router.add_get("/metrics", metrics)
