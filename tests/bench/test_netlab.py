"""Specification of ``bench.netlab``: an emulated weak link, measured from both of its ends.

Each test builds real namespaces (root is needed, and ``ip``/``sysctl``; a missing tool fails
the test, ``make system-deps`` installs them). The server end lives in this process, bound to
``link.server_addr``; the spoke end is a small agent process run in the spoke namespace, driven
over stdin/stdout. The agent takes arrival times from the kernel's receive stamps (wall clock,
the same in every namespace), so they compare directly with send times taken here and a late
wake-up of the agent on a busy machine does not count as link delay.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from bench.netlab import (
    CLAIMS_DIR,
    NAME_PREFIX,
    SCENARIOS,
    LinkSpec,
    NetlabError,
    WeakLink,
    require_tools,
    sweep_stale,
)
from bench.netstage import DropNext, ProtocolError, TargetedDrop, parse_command, parse_rtp

pytestmark = pytest.mark.timeout(60)

SEED = 231
HEADER = 28  # IPv4 + UDP: the stage's rate counts whole IP packets
SO_RCVBUFFORCE = 33  # Linux; Python does not name it. Root may exceed net.core.rmem_max.

# The spoke's end: one JSON command per line in, one JSON answer per line out.
AGENT = r"""
import json, socket, struct, sys, threading, time, urllib.request

SO_TIMESTAMPNS = 35  # Linux (SCM_TIMESTAMPNS is the same); Python does not name it
received = []  # (kernel receive time, payload size, tag, seq)
lock = threading.Lock()

def stamped_socket():
    # The kernel stamps each packet as it arrives: a late wake-up here does not count.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE, beyond rmem_max
    return sock

def receive(sock):
    data, ancillary, _, _ = sock.recvmsg(65535, 64)
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            return data, seconds + nanoseconds / 1e9
    return data, time.time()

sock = stamped_socket()
sock.bind(("0.0.0.0", 0))

def listen():
    while True:
        data, at = receive(sock)
        tag, seq = data[:4].decode(errors="replace"), int.from_bytes(data[4:8], "big")
        with lock:
            received.append((at, len(data), tag, seq))

threading.Thread(target=listen, daemon=True).start()

def pace(count, interval):
    start = time.monotonic()
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i

def send(c):
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = b"\0" * (c["size"] - 8)
    for i in pace(c["count"], c["interval"]):
        out.sendto(c["tag"].encode()[:4].ljust(4) + i.to_bytes(4, "big") + pad,
                   (c["host"], c["port"]))
    return {"sent": c["count"]}

def send_raw(c):
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    for offset, hexed in c["packets"]:
        delay = start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.sendto(bytes.fromhex(hexed), (c["host"], c["port"]))
    return {"sent": len(c["packets"])}

def ping(c):
    # Pipelined: a ping leaves every interval whatever became of the previous one.
    out = stamped_socket()
    out.settimeout(0.05)
    sent, replies, done = {}, {}, threading.Event()
    def collect():
        while not done.is_set():
            try:
                data, at = receive(out)
            except socket.timeout:
                continue
            replies.setdefault(int.from_bytes(data[4:8], "big"), at)
    collector = threading.Thread(target=collect)
    collector.start()
    for i in pace(c["count"], c["interval"]):
        sent[i] = time.time()
        out.sendto(b"ping" + i.to_bytes(4, "big") + bytes(56), (c["host"], c["port"]))
    time.sleep(c["wait"])
    done.set()
    collector.join()
    return {"rtts_ms": [(replies[i] - sent[i]) * 1000 for i in sorted(replies)], "sent": len(sent)}

def http(c):
    t = time.monotonic()
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from env
    with direct.open(c["url"], timeout=20) as r:
        body = r.read()
    return {"status": r.status, "length": len(body), "seconds": time.monotonic() - t}

def take(c):
    with lock:
        out = list(received)
        received.clear()
    return {"received": out}

ops = {"send": send, "send_raw": send_raw, "ping": ping, "http": http, "take": take,
       "port": lambda c: {"port": sock.getsockname()[1]}}
for line in sys.stdin:
    c = json.loads(line)
    sys.stdout.write(json.dumps(ops[c["op"]](c)) + "\n")
    sys.stdout.flush()
"""


# ------------------------------------------------------------------------------ the two ends


class Spoke:
    """The agent process in the spoke namespace."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lock = asyncio.Lock()

    async def __call__(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError(f"the spoke agent died ({await self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer


@asynccontextmanager
async def spoke_agent(link: WeakLink) -> AsyncIterator[Spoke]:
    proc = await asyncio.create_subprocess_exec(
        *link.netns_command([sys.executable, "-c", AGENT]),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 24,
    )
    try:
        yield Spoke(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@dataclass
class Server(asyncio.DatagramProtocol):
    """A UDP socket at the server address that records arrivals and may echo them."""

    echo: bool = False
    received: list[tuple[float, int, str, int]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        # A busy machine must not make this end drop what the link passed.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        tag = data[:4].decode(errors="replace")
        self.received.append((time.time(), len(data), tag, int.from_bytes(data[4:8])))
        self.raw.append(data)
        if self.echo and self.transport is not None:
            self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, addr: tuple[str, int], tag: str, count: int, size: int, first: int = 0) -> None:
        """``count`` packets of ``size`` bytes, tagged and numbered from ``first``."""
        assert self.transport is not None
        for i in range(first, first + count):
            self.transport.sendto(tag.encode().ljust(4) + i.to_bytes(4) + bytes(size - 8), addr)


@asynccontextmanager
async def server_socket(link: WeakLink, echo: bool = False) -> AsyncIterator[Server]:
    transport, server = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Server(echo=echo), local_addr=(link.server_addr, 0)
    )
    try:
        yield server
    finally:
        transport.close()


def rate_kbit(arrivals: list[tuple[float, int, str, int]]) -> float:
    """The delivered rate, IP bytes, from the first arrival to the last: the first packet
    only marks the start."""
    times = [a[0] for a in arrivals]
    ip_bytes = sum(a[1] + HEADER for a in arrivals[1:])
    return ip_bytes * 8 / (max(times) - min(times)) / 1000


def own_names(link_id: str) -> set[str]:
    """What of link ``link_id`` the root namespace can see: its two namespaces, its veth end,
    its claim file (the rest lives inside the namespaces)."""
    mine = f"{NAME_PREFIX}{link_id}-"
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found = set(re.findall(rf"{re.escape(mine)}[a-z]+", ns + links))
    found |= {p.name for p in CLAIMS_DIR.glob("net-*.json") if link_id in p.read_text()}
    return found


def complete(link: WeakLink) -> set[str]:
    return {
        link.spoke_netns,
        link.middle_netns,
        f"{NAME_PREFIX}{link.link_id}-s",
        link.plan.claim_path.name,
    }


@pytest.fixture(autouse=True)
def _tools() -> None:
    # A missing tool fails the test (never skips): `make test` installs them.
    require_tools()


# ------------------------------------------------------------------------------ delay


@pytest.mark.parametrize("scenario", ["rural", "poor"])
async def test_round_trip_time_matches_the_spec(scenario: str) -> None:
    spec = SCENARIOS[scenario]
    async with WeakLink(spec, seed=SEED) as link, spoke_agent(link) as spoke:
        async with server_socket(link, echo=True) as server:
            answer = await spoke(
                "ping",
                host=link.server_addr,
                port=server.port,
                count=40,
                interval=0.025,
                wait=spec.rtt_ms / 1000 + 0.3,
            )
        rtts = answer["rtts_ms"]
        stats = await link.fetch_stats()
    # At most a few pings are lost (loss both ways); the rest take the spec's round trip plus
    # the serialisation of two 88-byte packets at the link rate.
    assert len(rtts) >= 30
    assert abs(statistics.median(rtts) - spec.rtt_ms) <= 20
    # Robust to the odd late wake-up of the two (ordinary, unprivileged) endpoints.
    deciles = statistics.quantiles(rtts, n=10)
    assert deciles[-1] - deciles[0] <= 10
    assert stats["lateness_ms"]["p99"] <= 5


async def test_stage_adds_little_jitter_of_its_own() -> None:
    async with WeakLink(LinkSpec(None, 100), seed=SEED) as link, spoke_agent(link) as spoke:
        async with server_socket(link, echo=True) as server:
            answer = await spoke(
                "ping", host=link.server_addr, port=server.port, count=100, interval=0.01, wait=0.4
            )
        stats = await link.fetch_stats()
    rtts = sorted(answer["rtts_ms"])
    assert len(rtts) == 100
    assert rtts[0] >= 100
    assert rtts[49] <= 103
    # How late the stage released packets, against when it meant to.
    assert stats["lateness_ms"]["p50"] <= 1.5
    assert stats["lateness_ms"]["p99"] <= 3


async def test_jitter_spreads_one_way_delay_within_its_bound() -> None:
    count = 150
    sent: list[float] = []
    link = WeakLink(LinkSpec(None, 200, jitter_ms=30), seed=SEED)
    async with link, spoke_agent(link) as spoke, server_socket(link) as server:
        port = (await spoke("port"))["port"]
        for _ in range(count):
            sent.append(time.time())
            server.send((link.spoke_addr, port), "jit", 1, 100, first=len(sent) - 1)
            await asyncio.sleep(0.004)
        await asyncio.sleep(0.2)
        arrivals = (await spoke("take"))["received"]
    delays = [(a[0] - sent[a[3]]) * 1000 for a in arrivals]
    assert len(delays) == count
    assert min(delays) >= 70 - 1
    # 5th and 95th percentiles of uniform 70-130 ms are 73 and 127.
    twentieths = statistics.quantiles(delays, n=20)
    assert 70 <= twentieths[0] <= 78
    assert 122 <= twentieths[-1] <= 132
    assert 95 <= statistics.mean(delays) <= 105
    # Uniform over ±30 ms: a standard deviation of 30/√3 ≈ 17 ms.
    assert 14 <= statistics.stdev(delays) <= 20
    order = [a[3] for a in arrivals]
    assert order != sorted(order), "jitter larger than the spacing reorders packets"


# ------------------------------------------------------------------------------ rate


@pytest.mark.parametrize("kbit", [300, 150])
async def test_bottleneck_delivers_the_link_rate_both_ways(kbit: int) -> None:
    size, seconds = 1000, 3.0
    interval = (size + HEADER) * 8 / (2 * kbit * 1000)  # offer twice the link rate
    count = int(seconds / interval)
    async with WeakLink(LinkSpec(kbit, 40), seed=SEED) as link, spoke_agent(link) as spoke:
        port = (await spoke("port"))["port"]
        async with server_socket(link) as server:

            async def downstream() -> None:
                for _ in range(count):
                    server.send((link.spoke_addr, port), "down", 1, size)
                    await asyncio.sleep(interval)

            await asyncio.gather(
                spoke(
                    "send",
                    host=link.server_addr,
                    port=server.port,
                    tag="up",
                    count=count,
                    size=size,
                    interval=interval,
                ),
                downstream(),
            )
            await asyncio.sleep(0.3)  # drain the queue
            up = server.received
        down = (await spoke("take"))["received"]
        stats = await link.fetch_stats()
    for arrivals, direction in ((up, "to_server"), (down, "to_spoke")):
        assert rate_kbit(arrivals) == pytest.approx(kbit, rel=0.2)
        # About half the offer overflowed the queue; nothing else was lost.
        counts = stats[direction]
        assert counts["dropped_queue"] > count // 3
        assert counts["packets_out"] == len(arrivals)
        assert counts["max_backlog_ms"] <= 200


async def test_stage_keeps_up_with_two_megabits_both_ways() -> None:
    size, kbit, seconds = 1200, 1900, 2.0
    interval = (size + HEADER) * 8 / (kbit * 1000)  # about 190 packets/s each way
    count = int(seconds / interval)
    async with WeakLink(SCENARIOS["good"], seed=SEED) as link, spoke_agent(link) as spoke:
        port = (await spoke("port"))["port"]
        async with server_socket(link) as server:

            async def downstream() -> None:
                start = time.monotonic()
                for i in range(count):
                    await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
                    server.send((link.spoke_addr, port), "down", 1, size, first=i)

            before = (await link.fetch_stats())["cpu_s"]
            await asyncio.gather(
                spoke(
                    "send",
                    host=link.server_addr,
                    port=server.port,
                    tag="up",
                    count=count,
                    size=size,
                    interval=interval,
                ),
                downstream(),
            )
            await asyncio.sleep(0.2)
            up = server.received
        down = (await spoke("take"))["received"]
        stats = await link.fetch_stats()
    assert len(up) == len(down) == count
    assert rate_kbit(up) == pytest.approx(kbit, rel=0.1)
    assert rate_kbit(down) == pytest.approx(kbit, rel=0.1)
    assert stats["lateness_ms"]["p99"] <= 2.5
    assert stats["cpu_s"] - before < 0.5 * seconds


# ------------------------------------------------------------------------------ loss


@pytest.mark.parametrize("loss", [2.0, 5.0])
async def test_random_loss_matches_the_spec_each_way(loss: float) -> None:
    count = 2000
    async with WeakLink(LinkSpec(None, 20, loss), seed=SEED) as link:
        async with spoke_agent(link) as spoke, server_socket(link) as server:
            port = (await spoke("port"))["port"]

            async def downstream() -> None:
                for _ in range(count // 20):
                    server.send((link.spoke_addr, port), "down", 20, 100)
                    await asyncio.sleep(0.01)

            await asyncio.gather(
                spoke(
                    "send",
                    host=link.server_addr,
                    port=server.port,
                    tag="up",
                    count=count,
                    size=100,
                    interval=0.0005,
                ),
                downstream(),
            )
            await asyncio.sleep(0.2)
            down = (await spoke("take"))["received"]
            up = server.received
        stats = await link.fetch_stats()
    bound = 4 * math.sqrt(loss / 100 * (1 - loss / 100) / count) * 100  # four sigmas
    for arrivals, direction in ((up, "to_server"), (down, "to_spoke")):
        measured = (1 - len(arrivals) / count) * 100
        assert abs(measured - loss) <= bound, (direction, measured)
        assert stats[direction]["dropped_loss"] == count - len(arrivals)


# ------------------------------------------------------------------------------ outage


async def test_outage_loses_everything_both_ways_until_lifted() -> None:
    async with WeakLink(LinkSpec(300, 400), seed=SEED) as link, spoke_agent(link) as spoke:
        port = (await spoke("port"))["port"]
        async with server_socket(link) as server:
            to_spoke = (link.spoke_addr, port)
            up: dict[str, Any] = {"host": link.server_addr, "port": server.port}
            server.send(to_spoke, "fly", 3, 100)  # in flight for 200 ms when the outage starts
            await link.outage(True)
            server.send(to_spoke, "out", 10, 100)
            await spoke("send", **up, tag="out", count=10, size=100, interval=0.005)
            await asyncio.sleep(0.5)
            during = [*server.received, *(await spoke("take"))["received"]]
            await link.outage(False)
            server.send(to_spoke, "back", 10, 100)
            await spoke("send", **up, tag="back", count=10, size=100, interval=0.005)
            await asyncio.sleep(0.6)
            after_up = list(server.received)
            after_down = (await spoke("take"))["received"]
        stats = await link.fetch_stats()
    assert during == []
    assert sorted(a[3] for a in after_up) == list(range(10))
    assert sorted(a[3] for a in after_down) == list(range(10))
    assert stats["to_spoke"]["dropped_outage"] == 13
    assert stats["to_server"]["dropped_outage"] == 10
    assert stats["outage"] is False


# ------------------------------------------------------------------------------ drop_next


def rtp(ssrc: int, seq: int, timestamp: int, payload_type: int, size: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, payload_type, seq, timestamp, ssrc)
    return header + bytes(size - len(header))


def media_schedule() -> tuple[list[tuple[float, bytes]], set[int]]:
    """A second of fake SRTP: VP8-like video (payload type 96, 90 kHz clock, 15 frames/s of
    three packets of 1000-1200 bytes) and Opus-like audio (111, 48 kHz, every 20 ms) at
    aiortc's size, 260 bytes, larger than the size heuristic's bound."""
    video, audio = 0x1111, 0x2222
    packets: list[tuple[float, bytes]] = []
    for frame in range(15):
        t = frame / 15
        for part in range(3):
            seq = frame * 3 + part
            packets.append((t, rtp(video, seq, 1000 + frame * 6000, 96, 1000 + 100 * part)))
    for i in range(50):
        packets.append((i * 0.02, rtp(audio, i, 5000 + i * 960, 111, 260)))
    packets.sort(key=lambda p: p[0])
    return packets, {frame * 3 + part for frame in range(15) for part in range(3)}


async def test_drop_next_loses_exactly_one_video_packet_for_good() -> None:
    packets, video_seqs = media_schedule()
    late = [(t, p) for t, p in packets if t >= 0.6]
    async with WeakLink(LinkSpec(None, 20), seed=SEED) as link, spoke_agent(link) as spoke:
        async with server_socket(link) as server:
            target: dict[str, Any] = {"host": link.server_addr, "port": server.port}
            # Six tenths of a second teach the stage each stream's clock, then it is armed.
            early = [[t, p.hex()] for t, p in packets if t < 0.6]
            await spoke("send_raw", **target, packets=early)
            await link.drop_next("video")
            await spoke("send_raw", **target, packets=[[t - 0.6, p.hex()] for t, p in late])
            await asyncio.sleep(0.1)
            stats = await link.fetch_stats()
            (dropped,) = stats["targeted_drops"]
            # The sender repairs the loss with a plain resend and with RTX (another SSRC and
            # payload type, the same timestamp, two bytes more); both are dropped as well,
            # while resends of other packets pass.
            victim = rtp(0x1111, dropped["seq"], dropped["timestamp"], 96, dropped["size"])
            rtx = rtp(0x3333, 1, dropped["timestamp"], 97, dropped["size"] + 2)
            other = rtp(0x3333, 2, dropped["timestamp"] + 6000, 97, dropped["size"] + 2)
            repairs = [[0, victim.hex()], [0, rtx.hex()], [0.001, other.hex()]]
            await spoke("send_raw", **target, packets=repairs)
            await asyncio.sleep(0.1)
            received = [parse_rtp(raw) for raw in server.raw]
        stats = await link.fetch_stats()
    assert dropped["ssrc"] == 0x1111
    assert dropped["payload_type"] == 96
    assert dropped["seq"] in video_seqs
    assert stats["to_server"]["dropped_targeted"] == 3
    assert stats["retransmissions_dropped"] == 2
    assert stats["drop_next_armed"] is False
    # Every packet but the one arrived: all the audio (260-byte packets included), all the
    # other video, and the resend of another packet.
    heads = [(r.ssrc, r.seq) for r in received if r is not None]
    assert len(heads) == len(received) == len(packets)
    assert sorted(seq for ssrc, seq in heads if ssrc == 0x1111) == sorted(
        video_seqs - {dropped["seq"]}
    )
    assert sum(1 for ssrc, _ in heads if ssrc == 0x2222) == 50
    assert (0x3333, 2) in heads
    assert stats["to_server"]["dropped_loss"] == 0


def test_rtp_heuristic_ignores_rtcp_stun_and_dtls() -> None:
    assert parse_rtp(rtp(1, 2, 3, 96, 1200)) is not None
    assert parse_rtp(bytes([0x80, 200]) + bytes(30)) is None  # RTCP sender report
    assert parse_rtp(bytes([0x81, 0xC9]) + bytes(30)) is None  # RTCP receiver report
    assert parse_rtp(bytes([0x00, 0x01]) + bytes(30)) is None  # STUN binding request
    assert parse_rtp(bytes([0x17, 0xFE]) + bytes(30)) is None  # DTLS application data
    assert parse_rtp(rtp(1, 2, 3, 0, 1200)) is None  # PCMU, a static audio type


def test_targeted_drop_honours_its_filters_and_spares_padding() -> None:
    target = TargetedDrop()
    target.arm(DropNext(1, "video", True, payload_type=100))
    video = parse_rtp(rtp(7, 1, 3000, 96, 1200))
    probe = parse_rtp(bytes([0xA0, 100]) + rtp(8, 1, 3000, 100, 1200)[2:])  # P bit set
    wanted = parse_rtp(rtp(8, 2, 3000, 100, 1200))
    assert video is not None
    assert probe is not None
    assert wanted is not None
    assert probe.padding
    assert not target.should_drop(video, "video", 0.0)
    assert not target.should_drop(probe, "video", 0.0)
    assert target.should_drop(wanted, "video", 0.0)
    assert target.should_drop(wanted, "video", 1.0)  # its resend
    assert not target.should_drop(wanted, "video", 20.0)  # past the retransmission window
    assert [d["ssrc"] for d in target.dropped] == [8]
    assert target.retransmissions_dropped == 1


def test_stage_rejects_malformed_commands() -> None:
    for bad in (
        "not json",
        "[]",
        '{"op": "set", "to_server": {}, "to_spoke": {}}',
        '{"id": 1, "op": "launch"}',
        '{"id": 1, "op": "outage", "on": 1}',
        '{"id": 1, "op": "drop_next", "match": "screen"}',
        '{"id": 1, "op": "stats", "extra": true}',
        '{"id": 1, "op": "set", "to_server": {"loss_pct": 120}, "to_spoke": {}}',
        '{"id": 1, "op": "set", "to_server": {"delay": 5}, "to_spoke": {}}',
        '{"id": 1, "op": "drop_next", "match": "video", "payload_type": 96.5}',
        '{"id": 1, "op": "drop_next", "match": "video", "ssrc": -1}',
    ):
        with pytest.raises(ProtocolError):
            parse_command(bad)


def test_link_spec_rejects_impossible_links() -> None:
    for kwargs in ({"rate_kbit": 0}, {"rate_kbit": None, "loss_pct": 101}):
        with pytest.raises(ValueError, match="must"):
            LinkSpec(**kwargs)
    with pytest.raises(ValueError, match="negative"):
        LinkSpec(None, rtt_ms=-1)


# ------------------------------------------------------------------------------ live changes


async def test_set_changes_the_link_live() -> None:
    link = WeakLink(SCENARIOS["good"], seed=SEED)
    async with link, spoke_agent(link) as spoke, server_socket(link, echo=True) as server:
        ping: dict[str, Any] = {"host": link.server_addr, "port": server.port}
        fast = await spoke("ping", **ping, count=5, interval=0.01, wait=0.2)
        await link.set(LinkSpec(None, 250))
        slow = await spoke("ping", **ping, count=5, interval=0.01, wait=0.4)
    assert abs(statistics.median(fast["rtts_ms"]) - 40) <= 10
    assert abs(statistics.median(slow["rtts_ms"]) - 250) <= 10
    assert link.spec == LinkSpec(None, 250)


# ------------------------------------------------------------------------------ real traffic


async def test_http_over_tcp_crosses_a_rural_link() -> None:
    body = bytes(range(256)) * 120  # 30 kB: 0.8 s at 300 kbit/s at best

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/page", page)
    async with WeakLink(SCENARIOS["rural"], seed=SEED) as link, spoke_agent(link) as spoke:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, link.server_addr, 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            answer = await spoke("http", url=f"http://{link.server_addr}:{port}/page")
        finally:
            await runner.cleanup()
    assert answer["status"] == 200
    assert answer["length"] == len(body)
    assert answer["seconds"] >= len(body) * 8 / 300_000


SPOKE_PEER = r"""
import asyncio, json, sys
import av, numpy
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

class Bar(VideoStreamTrack):
    # A small moving bar: cheap to encode, and VP8 keeps it under the link rate.
    async def recv(self):
        pts, time_base = await self.next_timestamp()
        picture = numpy.zeros((120, 160, 3), numpy.uint8)
        picture[:, (pts // 3000) % 160] = 255
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame

async def main():
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(Bar())
    channel = pc.createDataChannel("echo")
    channel.on("message", lambda message: channel.send(message))
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await pc.setLocalDescription(await pc.createOffer())
    print(json.dumps({"sdp": pc.localDescription.sdp}), flush=True)
    answer = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    await asyncio.wait_for(opened.wait(), 20)
    print(json.dumps({"open": True}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await pc.close()

asyncio.run(main())
"""


def candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


def video_stream(sdp: str) -> tuple[int, set[int]]:
    """The VP8 payload type and the SSRCs of the video section of ``sdp``."""
    video = sdp.split("m=video", 1)[1].split("\r\nm=", 1)[0]
    payload_type = int(re.findall(r"a=rtpmap:(\d+) VP8/90000", video)[0])
    return payload_type, {int(ssrc) for ssrc in re.findall(r"a=ssrc:(\d+) ", video)}


async def wait_for_stats(link: WeakLink, key: str, timeout: float) -> dict[str, Any]:
    """The link's stats once ``key`` holds something, or after ``timeout``."""
    for _ in range(int(timeout / 0.05)):
        stats = await link.fetch_stats()
        if stats[key]:
            break
        await asyncio.sleep(0.05)
    return stats


async def test_aiortc_peers_connect_and_lose_one_real_video_packet_on_a_rural_link() -> None:
    async with WeakLink(SCENARIOS["rural"], seed=SEED) as link:
        proc = await asyncio.create_subprocess_exec(
            *link.netns_command([sys.executable, "-c", SPOKE_PEER]),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        echoes: asyncio.Queue[float] = asyncio.Queue()

        def on_channel(channel: RTCDataChannel) -> None:
            channel.on("message", lambda m: echoes.put_nowait(time.monotonic() - float(m)))
            channel.send(str(time.monotonic()))

        pc.on("datachannel", on_channel)
        try:
            offer = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            ours = candidate_addresses(pc.localDescription.sdp)
            proc.stdin.write(json.dumps({"sdp": pc.localDescription.sdp}).encode() + b"\n")
            await proc.stdin.drain()
            opened = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            rtt = await asyncio.wait_for(echoes.get(), 10)
            # Real SRTP now: once the stage knows the stream's clock, lose one video packet.
            await asyncio.sleep(1.0)
            await link.drop_next("video")
            stats = await wait_for_stats(link, "targeted_drops", 5)
        finally:
            await pc.close()
            if proc.returncode is None:
                proc.stdin.write(b"bye\n")
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    # aioice gathers every non-loopback address of its namespace: the spoke has only its
    # link address; the server side has the link's, the host's own and those of any other
    # link up at the time (pairs with those fail: the spoke has no route to them).
    assert candidate_addresses(offer["sdp"]) == {link.spoke_addr}
    assert link.server_addr in ours
    assert opened == {"open": True}
    assert rtt * 1000 >= 150
    assert stats["to_server"]["packets_out"] > 20
    assert stats["to_spoke"]["packets_out"] > 5
    vp8, ssrcs = video_stream(offer["sdp"])
    (dropped,) = stats["targeted_drops"]
    assert dropped["payload_type"] == vp8
    assert dropped["ssrc"] in ssrcs


# ------------------------------------------------------------------------------ teardown


async def test_teardown_removes_everything_even_when_the_body_raises() -> None:
    link = WeakLink(SCENARIOS["rural"])
    seen: set[str] = set()

    async def body() -> None:
        async with link:
            seen.update(own_names(link.link_id))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await body()
    assert seen == complete(link)
    assert own_names(link.link_id) == set()
    await link.close()  # idempotent
    with pytest.raises(NetlabError):
        await link.set(SCENARIOS["poor"])


async def test_teardown_survives_cancellation() -> None:
    started = asyncio.Event()
    link = WeakLink(SCENARIOS["poor"])

    async def body() -> None:
        async with link:
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(body())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert own_names(link.link_id) == set()


async def test_sweep_removes_a_killed_owners_link_and_spares_live_ones() -> None:
    async with WeakLink() as live:
        holder = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.netlab", "--log-level", "WARNING", "hold", "edge"),
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert holder.stdout is not None
        try:
            info = json.loads(await asyncio.wait_for(holder.stdout.readline(), 20))
        finally:
            holder.send_signal(signal.SIGKILL)  # no teardown: what a crash leaves behind
            await holder.wait()
        stale = info["link_id"]
        assert own_names(stale)
        assert stale in await sweep_stale()
        assert own_names(stale) == set()
        assert own_names(live.link_id) == complete(live)
        assert (await live.fetch_stats())["outage"] is False
