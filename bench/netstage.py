"""The impairment stage of an emulated weak link: delay, jitter, loss, a rate-limited bottleneck.

This kernel has no ``netem``, so the middle namespace of a :class:`bench.netlab.WeakLink` routes
every packet it receives from either side into a TUN device; this process, run inside that
namespace, reads them, holds each one as the link would and writes it back into the TUN, and the
kernel forwards it on (routing rules by input interface keep written packets from looping).

Per direction a packet goes through, in order: the outage switch; the one-shot targeted drop
(spoke to server only); the bottleneck, a link of ``rate_kbit`` that sends one packet at a time
from a FIFO queue holding at most ``queue_ms`` of backlog (a full queue drops the arriving
packet, as a router's tail drop does); random loss (after the bottleneck: lost on the air,
having used its link time); then propagation delay ``delay_ms`` plus a uniform jitter in
``[-jitter_ms, +jitter_ms]``. With no jitter packets leave in order; jitter may reorder them,
as netem's does. The rate counts whole IP packets (headers included).

Control is one JSON object per line on stdin, each answered on stdout with the same ``id``::

    {"id": 1, "op": "set", "to_server": {"rate_kbit": 300, "delay_ms": 75, "jitter_ms": 0,
                                         "loss_pct": 2, "queue_ms": 200}, "to_spoke": {...}}
    {"id": 2, "op": "outage", "on": true}
    {"id": 3, "op": "drop_next", "match": "video", "retransmissions": true,
     "payload_type": 96, "ssrc": null}
    {"id": 4, "op": "stats"}
    -> {"id": 4, "ok": true, "stats": {...}}   or   {"id": 4, "ok": false, "error": "..."}

Unasked, it prints ``{"event": "ready", ...}`` once the TUN is open and
``{"event": "stats", "stats": {...}}`` every quarter second. It exits when stdin closes.

Only the standard library is used, so the stage starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fcntl
import heapq
import ipaddress
import json
import logging
import os
import random
import signal
import struct
import sys
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields
from typing import Any

logger = logging.getLogger("bench.netstage")

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
#: Largest control line accepted; anything longer is a protocol error.
MAX_LINE = 64 * 1024
STATS_PERIOD_S = 0.25
#: A timer that fires this early still releases the packet: less than the loop's resolution.
EARLY_S = 0.0002
#: Packets read per wake-up before the loop gets a chance to release due ones.
READ_BATCH = 64
#: Lateness samples kept for the percentiles in the stats.
LATENESS_SAMPLES = 8192
#: UDP payloads above this many bytes look like video while a stream's clock is not yet known:
#: a video packet is usually near the MTU, an Opus packet of 20 ms at 32-64 kbit/s is 80-160.
VIDEO_MIN_BYTES = 200
#: Watch a stream this long before trusting its measured RTP clock rate.
CLOCK_LEARN_S = 0.5
#: Above this measured clock rate a stream is video (90 kHz); audio clocks are 8-48 kHz.
VIDEO_CLOCK_MIN_HZ = 70_000
#: Targeted drops listed in the stats (the latest ones).
MAX_REPORTED = 100
#: Streams whose clock is tracked at once; the oldest is forgotten beyond this.
MAX_STREAMS = 64
#: How long after a targeted drop the packet's retransmissions are dropped as well.
RETRANSMISSION_WINDOW_S = 10.0
#: An RTX packet is the original payload plus a 2-byte original sequence number; header
#: extensions may differ a little between the two.
RTX_SIZE_SLACK = 12
DIRECTIONS = ("to_server", "to_spoke")
MATCHES = ("video", "audio")


class ProtocolError(ValueError):
    """A control line that is not a valid command."""


# ------------------------------------------------------------------------------ commands


@dataclass(frozen=True)
class Impairment:
    """What one direction of the link does to packets."""

    rate_kbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_ms: float = 200.0


@dataclass(frozen=True)
class SetLink:
    id: int
    to_server: Impairment
    to_spoke: Impairment


@dataclass(frozen=True)
class Outage:
    id: int
    on: bool


@dataclass(frozen=True)
class DropNext:
    id: int
    match: str
    retransmissions: bool
    payload_type: int | None = None
    ssrc: int | None = None


@dataclass(frozen=True)
class GetStats:
    id: int


Command = SetLink | Outage | DropNext | GetStats


def _number(raw: dict[str, Any], key: str, low: float, high: float) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key} must be a number")
    if not low <= value <= high:
        raise ProtocolError(f"{key}={value} is outside [{low}, {high}]")
    return float(value)


def _optional_integer(raw: dict[str, Any], key: str, high: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ProtocolError(f"{key} must be an integer within [0, {high}]")
    return value


def _exact_keys(
    raw: dict[str, Any], required: AbstractSet[str], optional: AbstractSet[str] = frozenset()
) -> None:
    keys = set(raw)
    if missing := required - keys:
        raise ProtocolError(f"missing {sorted(missing)}")
    if unknown := keys - required - optional:
        raise ProtocolError(f"unknown {sorted(unknown)}")


def _impairment(raw: object) -> Impairment:
    if not isinstance(raw, dict):
        raise ProtocolError("an impairment must be an object")
    names = {f.name for f in fields(Impairment)}
    _exact_keys(raw, set(), names)
    rate = raw.get("rate_kbit")
    return Impairment(
        rate_kbit=None if rate is None else _number(raw, "rate_kbit", 1, 10_000_000),
        delay_ms=_number(raw, "delay_ms", 0, 60_000) if "delay_ms" in raw else 0.0,
        jitter_ms=_number(raw, "jitter_ms", 0, 60_000) if "jitter_ms" in raw else 0.0,
        loss_pct=_number(raw, "loss_pct", 0, 100) if "loss_pct" in raw else 0.0,
        queue_ms=_number(raw, "queue_ms", 1, 60_000) if "queue_ms" in raw else 200.0,
    )


def parse_command(line: str | bytes) -> Command:
    """One control line as a typed command, or :class:`ProtocolError`."""
    if len(line) > MAX_LINE:
        raise ProtocolError("line too long")
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("a command must be an object")
    ident = raw.get("id")
    if isinstance(ident, bool) or not isinstance(ident, int):
        raise ProtocolError("id must be an integer")
    op = raw.get("op")
    if op == "set":
        _exact_keys(raw, {"id", "op", "to_server", "to_spoke"})
        return SetLink(ident, _impairment(raw["to_server"]), _impairment(raw["to_spoke"]))
    if op == "outage":
        _exact_keys(raw, {"id", "op", "on"})
        if not isinstance(raw["on"], bool):
            raise ProtocolError("on must be a boolean")
        return Outage(ident, raw["on"])
    if op == "drop_next":
        _exact_keys(raw, {"id", "op", "match"}, {"retransmissions", "payload_type", "ssrc"})
        if raw["match"] not in MATCHES:
            raise ProtocolError(f"match must be one of {MATCHES}")
        retransmissions = raw.get("retransmissions", True)
        if not isinstance(retransmissions, bool):
            raise ProtocolError("retransmissions must be a boolean")
        payload_type = _optional_integer(raw, "payload_type", 127)
        ssrc = _optional_integer(raw, "ssrc", 2**32 - 1)
        return DropNext(ident, raw["match"], retransmissions, payload_type, ssrc)
    if op == "stats":
        _exact_keys(raw, {"id", "op"})
        return GetStats(ident)
    raise ProtocolError(f"unknown op {op!r}")


# ------------------------------------------------------------------------------ packets


@dataclass(frozen=True)
class Rtp:
    """The clear-text part of an (S)RTP packet: SRTP encrypts only the payload."""

    ssrc: int
    seq: int
    timestamp: int
    payload_type: int
    size: int
    #: The P bit: Chromium's bandwidth probes are padding-only packets with it set.
    padding: bool = False


def udp_payload(packet: bytes) -> bytes | None:
    """The UDP payload of an unfragmented IPv4 packet, or None."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    if struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:  # more-fragments flag or an offset
        return None
    ihl = (packet[0] & 0x0F) * 4
    return packet[ihl + 8 :]


def parse_rtp(payload: bytes) -> Rtp | None:
    """The RTP header of a UDP payload that looks like RTP, or None.

    RFC 7983 demultiplexing: RTP and RTCP start with version 2 (first byte 128-191), unlike STUN
    (0-3) and DTLS (20-63). RTCP packet types 192-223 read as payload types 64-95 once the
    marker bit is masked (RFC 5761 forbids them for RTP), and 0-35 are static audio types;
    neither counts as media here.
    """
    if len(payload) < 12 or payload[0] >> 6 != 2:
        return None
    payload_type = payload[1] & 0x7F
    if payload_type <= 35 or 64 <= payload_type <= 95:
        return None
    seq, timestamp, ssrc = struct.unpack_from("!HII", payload, 2)
    return Rtp(ssrc, seq, timestamp, payload_type, len(payload), bool(payload[0] & 0x20))


class StreamClocks:
    """Learns each RTP stream's clock rate from its timestamps against arrival times, to tell
    video (90 kHz) from audio (48 kHz and below) when sizes mislead: aiortc sends Opus at
    96 kbit/s, 240-byte payloads."""

    def __init__(self) -> None:
        # ssrc -> (first arrival, first timestamp, latest arrival, latest unwrapped timestamp)
        self._streams: collections.OrderedDict[int, tuple[float, int, float, int]] = (
            collections.OrderedDict()
        )

    def observe(self, rtp: Rtp, now: float) -> None:
        entry = self._streams.get(rtp.ssrc)
        if entry is None:
            self._streams[rtp.ssrc] = (now, rtp.timestamp, now, rtp.timestamp)
            if len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)
            return
        first_at, first_ts, _, last_ts = entry
        # Unwrap the 32-bit timestamp around the latest one: steps are small either way.
        step = (rtp.timestamp - last_ts + 2**31) % 2**32 - 2**31
        self._streams[rtp.ssrc] = (first_at, first_ts, now, last_ts + step)

    def clock_hz(self, ssrc: int) -> float | None:
        """The measured clock rate, once the stream has been watched long enough."""
        entry = self._streams.get(ssrc)
        if entry is None:
            return None
        first_at, first_ts, last_at, last_ts = entry
        if last_at - first_at < CLOCK_LEARN_S:
            return None
        return (last_ts - first_ts) / (last_at - first_at)

    def kind(self, rtp: Rtp) -> str:
        """``"video"`` or ``"audio"``: by clock rate when known, else by size."""
        clock = self.clock_hz(rtp.ssrc)
        if clock is not None:
            return "video" if clock >= VIDEO_CLOCK_MIN_HZ else "audio"
        return "video" if rtp.size > VIDEO_MIN_BYTES else "audio"


class TargetedDrop:
    """``drop_next``: drops the next matching RTP packet towards the server and, if asked, its
    retransmissions, so the loss is never repaired: a resend with the same SSRC and sequence
    number, or an RTX packet (another SSRC, another payload type, the same RTP timestamp,
    the original's size plus two bytes)."""

    def __init__(self) -> None:
        self.armed: DropNext | None = None
        self.dropped: collections.deque[dict[str, int]] = collections.deque(maxlen=MAX_REPORTED)
        self.retransmissions_dropped = 0
        self._victim: Rtp | None = None
        self._victim_until = 0.0

    def arm(self, command: DropNext) -> None:
        self.armed = command
        self._victim = None

    def _wanted(self, rtp: Rtp, kind: str) -> bool:
        armed = self.armed
        return (
            armed is not None
            and kind == armed.match
            and not rtp.padding
            and armed.payload_type in (None, rtp.payload_type)
            and armed.ssrc in (None, rtp.ssrc)
        )

    def should_drop(self, rtp: Rtp, kind: str, now: float) -> bool:
        if self.armed is not None and self._wanted(rtp, kind):
            retransmissions = self.armed.retransmissions
            self.armed = None
            self.dropped.append(
                {
                    "ssrc": rtp.ssrc,
                    "seq": rtp.seq,
                    "timestamp": rtp.timestamp,
                    "payload_type": rtp.payload_type,
                    "size": rtp.size,
                }
            )
            if retransmissions:
                self._victim, self._victim_until = rtp, now + RETRANSMISSION_WINDOW_S
            return True
        victim = self._victim
        if victim is None:
            return False
        if now > self._victim_until:
            self._victim = None
            return False
        if rtp.ssrc == victim.ssrc:
            resent = rtp.seq == victim.seq
        else:
            resent = (
                rtp.timestamp == victim.timestamp
                and rtp.payload_type != victim.payload_type
                and abs(rtp.size - victim.size - 2) <= RTX_SIZE_SLACK
            )
        if resent:
            self.retransmissions_dropped += 1
        return resent


# ------------------------------------------------------------------------------ the link


class Direction:
    """One direction of the link: its bottleneck state, its random source and its counters.

    ``busy_until`` is when the bottleneck finishes sending what it already holds; the backlog
    an arriving packet waits behind is ``busy_until - now``.
    """

    COUNTERS = (
        "packets_in",
        "bytes_in",
        "packets_out",
        "bytes_out",
        "dropped_loss",
        "dropped_queue",
        "dropped_outage",
        "dropped_targeted",
        "dropped_bytes",
        "write_errors",
    )

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.impairment = Impairment()
        self.busy_until = 0.0
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self.max_backlog_ms = 0.0

    def drop(self, cause: str, size: int) -> None:
        self.counts[f"dropped_{cause}"] += 1
        self.counts["dropped_bytes"] += size

    def schedule(self, size: int, now: float) -> float | None:
        """When a packet of ``size`` bytes arriving ``now`` reaches the far side, or None if
        the full queue or random loss drops it."""
        imp = self.impairment
        leave = now
        if imp.rate_kbit is not None:
            start = max(now, self.busy_until)
            backlog = start - now
            if backlog >= imp.queue_ms / 1000:
                self.drop("queue", size)
                return None
            self.max_backlog_ms = max(self.max_backlog_ms, backlog * 1000)
            leave = self.busy_until = start + size * 8 / (imp.rate_kbit * 1000)
        if imp.loss_pct and self.rng.random() * 100 < imp.loss_pct:
            self.drop("loss", size)
            return None
        delay = imp.delay_ms / 1000
        if imp.jitter_ms:
            delay = max(0.0, delay + self.rng.uniform(-imp.jitter_ms, imp.jitter_ms) / 1000)
        return leave + delay

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        out["max_backlog_ms"] = round(self.max_backlog_ms, 2)
        return out


class Stage:
    """Reads packets from the TUN, holds them in a heap ordered by release time, writes them
    back when due. Every packet read is either released or counted as dropped."""

    def __init__(self, tun_fd: int, spoke_net: ipaddress.IPv4Network, seed: int | None) -> None:
        self.fd = tun_fd
        self.spoke_net = int(spoke_net.network_address)
        self.spoke_mask = int(spoke_net.netmask)
        master = random.Random(seed)
        self.directions = {
            name: Direction(name, random.Random(master.getrandbits(64))) for name in DIRECTIONS
        }
        self.outage = False
        self.clocks = StreamClocks()
        self.target = TargetedDrop()
        self.other_dropped = 0
        # (release time, arrival order, direction, packet); the order keeps FIFO among equals.
        self.heap: list[tuple[float, int, Direction, bytes]] = []
        self.order = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.lateness_ms: collections.deque[float] = collections.deque(maxlen=LATENESS_SAMPLES)
        self.max_lateness_ms = 0.0
        self.loop = asyncio.get_running_loop()

    # -- control

    def apply(self, command: Command) -> None:
        if isinstance(command, SetLink):
            self.directions["to_server"].impairment = command.to_server
            self.directions["to_spoke"].impairment = command.to_spoke
            logger.info("link -> %s / %s", command.to_server, command.to_spoke)
        elif isinstance(command, Outage):
            if command.on and not self.outage:
                self._flush_in_flight()
            if command.on != self.outage:
                logger.info("outage %s -> %s", self.outage, command.on)
            self.outage = command.on
        elif isinstance(command, DropNext):
            self.target.arm(command)

    def _flush_in_flight(self) -> None:
        """An outage also loses what is on the wire or queued: nothing arrives while it lasts."""
        for _, _, direction, packet in self.heap:
            direction.drop("outage", len(packet))
        self.heap.clear()
        for direction in self.directions.values():
            direction.busy_until = 0.0
        self._arm_timer()

    def stats(self) -> dict[str, Any]:
        samples = sorted(self.lateness_ms)

        def pct(q: float) -> float:
            return round(samples[int((len(samples) - 1) * q)], 3) if samples else 0.0

        return {
            **{name: d.stats() for name, d in self.directions.items()},
            "outage": self.outage,
            "in_flight": len(self.heap),
            "dropped_not_ipv4": self.other_dropped,
            "drop_next_armed": self.target.armed is not None,
            "targeted_drops": list(self.target.dropped),
            "retransmissions_dropped": self.target.retransmissions_dropped,
            "lateness_ms": {
                "p50": pct(0.5),
                "p99": pct(0.99),
                "max": round(self.max_lateness_ms, 3),
                "samples": len(samples),
            },
            "cpu_s": round(time.process_time(), 3),
        }

    # -- packets

    def on_readable(self) -> None:
        for _ in range(READ_BATCH):
            try:
                packet = os.read(self.fd, 65535)
            except BlockingIOError:
                return
            self.ingest(packet, self.loop.time())

    def ingest(self, packet: bytes, now: float) -> None:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self.other_dropped += 1
            return
        (dst,) = struct.unpack_from("!I", packet, 16)
        toward_spoke = dst & self.spoke_mask == self.spoke_net
        direction = self.directions["to_spoke" if toward_spoke else "to_server"]
        size = len(packet)
        direction.counts["packets_in"] += 1
        direction.counts["bytes_in"] += size
        if self.outage:
            direction.drop("outage", size)
            return
        if not toward_spoke and self._targeted(packet, now):
            direction.drop("targeted", size)
            return
        release = direction.schedule(size, now)
        if release is None:
            return
        heapq.heappush(self.heap, (release, self.order, direction, packet))
        self.order += 1
        self._arm_timer()

    def _targeted(self, packet: bytes, now: float) -> bool:
        payload = udp_payload(packet)
        if payload is None:
            return False
        rtp = parse_rtp(payload)
        if rtp is None:
            return False
        self.clocks.observe(rtp, now)
        return self.target.should_drop(rtp, self.clocks.kind(rtp), now)

    def _arm_timer(self) -> None:
        if not self.heap:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            return
        due = self.heap[0][0]
        if self.timer is not None and self.timer_at == due:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = due
        self.timer = self.loop.call_at(due, self._release)

    def _release(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.heap and self.heap[0][0] <= now + EARLY_S:
            due, _, direction, packet = heapq.heappop(self.heap)
            try:
                os.write(self.fd, packet)
            except OSError as exc:
                direction.counts["write_errors"] += 1
                logger.warning("write to the TUN failed: %s", exc)
                continue
            direction.counts["packets_out"] += 1
            direction.counts["bytes_out"] += len(packet)
            late_ms = max(0.0, now - due) * 1000
            self.lateness_ms.append(late_ms)
            self.max_lateness_ms = max(self.max_lateness_ms, late_ms)
            now = self.loop.time()
        self._arm_timer()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# ------------------------------------------------------------------------------ process


def open_tun(name: str) -> int:
    """Attach to the existing TUN device ``name`` (created by ``ip tuntap``), non-blocking."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


async def serve(tun: str, spoke_net: ipaddress.IPv4Network, seed: int | None) -> None:
    """Forward packets until stdin closes or SIGTERM arrives."""
    loop = asyncio.get_running_loop()
    fd = open_tun(tun)
    stage = Stage(fd, spoke_net, seed)
    reader = asyncio.StreamReader(limit=MAX_LINE + 1)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(fd, stage.on_readable)

    def report() -> None:
        if not transport.is_closing():
            transport.write(_line({"event": "stats", "stats": stage.stats()}))
            loop.call_later(STATS_PERIOD_S, report)

    async def control() -> None:
        while True:
            try:
                raw = await reader.readline()
            except ValueError:
                logger.error("control line over %d bytes; stopping", MAX_LINE)
                return
            if not raw:
                return
            try:
                command = parse_command(raw)
            except ProtocolError as exc:
                transport.write(_line({"id": _loose_id(raw), "ok": False, "error": str(exc)}))
                continue
            stage.apply(command)
            transport.write(_line({"id": command.id, "ok": True, "stats": stage.stats()}))

    transport.write(_line({"event": "ready", "tun": tun, "pid": os.getpid()}))
    report()
    control_task = asyncio.create_task(control())
    stop_task = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({control_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (control_task, stop_task):
            task.cancel()
        await asyncio.gather(control_task, stop_task, return_exceptions=True)
        loop.remove_reader(fd)
        stage.close()
        os.close(fd)
        transport.close()
        logger.info("stage stopped: %s", stage.stats())


def _loose_id(raw: bytes) -> int | None:
    with contextlib.suppress(ValueError, AttributeError):
        ident = json.loads(raw).get("id")
        if isinstance(ident, int):
            return ident
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tun", required=True, help="the TUN device to attach to")
    parser.add_argument(
        "--spoke-net",
        required=True,
        type=ipaddress.IPv4Network,
        help="packets to this subnet go to the spoke; all others to the server",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for loss and jitter")
    parser.add_argument(
        "--realtime",
        type=int,
        default=0,
        metavar="PRIORITY",
        help="run under SCHED_FIFO at this priority (1-99), so that a busy machine does not "
        "delay releases; 0 keeps the normal scheduler",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="netstage %(levelname)s %(message)s"
    )
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime))
        except OSError as exc:
            logger.warning("no real-time scheduling (%s); releases may be late on a busy host", exc)
    asyncio.run(serve(args.tun, args.spoke_net, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
