"""The control for ``bench.scale``: what this machine charges a relay for being split in two.

    python -m bench.split --flows 8 --seconds 20 --json bench-results/split.json

``bench.scale`` finds that two Setu nodes spend more CPU on four consultations than one node
does, while the path between nodes costs next to nothing.  This benchmark measures the same
split with no Setu code at all.  A minimal UDP relay (``--serve``: one uvloop event loop, as
``server.py`` runs) handles every datagram alike: it parses an RTP-like header, does
``--work`` rounds of allocation and dictionary work, and sends the datagram back.  ``--flows``
flows reach it from this process the way ``bench.scale``'s client peers send media: each flow
a 20 ms audio packet and 15 video frames a second of ``--burst`` packets, from a random phase.

* **1**: one relay process receives every flow;
* **2**: two relay processes receive half of the flows each.

Two variants of the relay do the same work:

* **loop**: in one function, a few lines that stay in the CPU's caches;
* **path**: spread over ``--stages`` distinct functions and classes, a long code path like a
  Python media stack's (aiortc's, for each relayed packet).

For each variant the rounds go 1, 2, 2, 1 relays, so that a drift of the shared machine's
speed over the run weighs on both alike.  Each round starts fresh relay processes, lets the
flows run for a second, then measures for ``--seconds`` / 2.  ``cpu_per_packet_us_V_N`` is
the relays' CPU (psutil, user + system) over the datagrams they sent back, and
**``split_efficiency_V``** = ``cpu_per_packet_us_V_1 / cpu_per_packet_us_V_2``: what
``scaling_efficiency`` would be if that relay were all a node did.  ``wakeups_per_packet``
(voluntary context switches over datagrams) shows how many datagrams a wake-up handled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil
import uvloop

from bench.common import (
    AUDIO_PACKET_S,
    EXIT_TERMINATED,
    machine,
    now_iso,
    run_main,
    setup_logging,
    versions,
    write_report,
)

logger = logging.getLogger("bench.split")

#: The RTP fixed header's layout: flags, payload type, sequence, timestamp, SSRC.
HEADER = struct.Struct("!BBHII")
AUDIO_BYTES = 100
VIDEO_BYTES = 1100
VIDEO_FPS = 15
#: Flows run this long in each round before its window opens.
ROUND_WARMUP_S = 1.0
#: After a window, echoes still on their way are waited for this long.
DRAIN_S = 0.3
#: The order of the rounds' relay counts.
ROUNDS = (1, 2, 2, 1)
RELAY_START_S = 20.0


# ------------------------------------------------------------------------------ the relay


#: One stage of the relay's work.  Each stage is compiled from this text with its own number,
#: so that ``--stages`` stages are that many distinct functions and classes: a long code path,
#: as a real media stack's, rather than one loop that stays in the CPU's caches.
STAGE_SOURCE = """
class Item{n}:
    __slots__ = ("a{n}", "b{n}", "c{n}")

    def __init__(self, a, b, c):
        self.a{n} = a
        self.b{n} = b
        self.c{n} = c


def stage{n}(sequence, size, ssrc, rounds, state):
    kept = 0
    for i in range(rounds):
        item = Item{n}(sequence + i + {n}, size ^ {n}, {{"ssrc": ssrc, "k{n}": i}})
        if item.c{n}["k{n}"] % 8 == {m}:
            kept += 1
    state[{n}] = state.get({n}, 0) + kept
"""

Stage = Callable[[int, int, int, int, dict[int, int]], None]


def make_stages(count: int) -> list[Stage]:
    """``count`` distinct stage functions (see :data:`STAGE_SOURCE`)."""
    stages: list[Stage] = []
    for n in range(count):
        namespace: dict[str, Any] = {}
        exec(compile(STAGE_SOURCE.format(n=n, m=n % 8), f"<stage {n}>", "exec"), namespace)
        stages.append(namespace[f"stage{n}"])
    return stages


class _Relay(asyncio.DatagramProtocol):
    """Parses each datagram, runs ``work`` rounds of Python work over ``stages`` distinct
    functions, and sends the datagram back."""

    def __init__(self, work: int, stages: int) -> None:
        self._stages = make_stages(stages)
        self._rounds = max(1, round(work / stages)) if work else 0
        self._transport: asyncio.DatagramTransport | None = None
        self._state: dict[int, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) < HEADER.size or self._transport is None:
            return
        _, _, sequence, _, ssrc = HEADER.unpack_from(data)
        for stage in self._stages:
            stage(sequence, len(data), ssrc, self._rounds, self._state)
        self._transport.sendto(data, addr)


async def serve(work: int, stages: int) -> None:
    """Relay on a free loopback port, printed on stdout, until stdin closes."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Relay(work, stages), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await reader.read()
    finally:
        transport.close()


class RelayProcess:
    """One ``--serve`` relay in a subprocess; ``async with`` starts it and always stops it."""

    def __init__(self, work: int, stages: int) -> None:
        self._work = work
        self._stages = stages
        self._proc: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the relay is not running")
        return self._proc.pid

    async def __aenter__(self) -> RelayProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.split",
            "--serve",
            "--work",
            str(self._work),
            "--stages",
            str(self._stages),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert self._proc.stdout is not None
            line = await asyncio.wait_for(self._proc.stdout.readline(), RELAY_START_S)
            self.port = int(line)
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def counters(self) -> tuple[float, int]:
        """CPU seconds (user + system, all threads) and voluntary context switches so far."""
        process = psutil.Process(self.pid)
        times = process.cpu_times()
        return float(times.user + times.system), int(process.num_ctx_switches().voluntary)


# ------------------------------------------------------------------------------ the flows


class Flow(asyncio.DatagramProtocol):
    """One client peer's media: audio every 20 ms and video frames of ``burst`` packets."""

    def __init__(self, ssrc: int, burst: int) -> None:
        self.ssrc = ssrc
        self.burst = burst
        self.target: tuple[str, int] | None = None
        self.sent = 0
        self.echoed = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._sequence = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.echoed += 1

    def _send(self, size: int) -> None:
        if self._transport is None or self.target is None:
            return
        self._sequence = (self._sequence + 1) & 0xFFFF
        header = HEADER.pack(
            0x80, 96, self._sequence, int(time.monotonic() * 90_000) & 0xFFFFFFFF, self.ssrc
        )
        self._transport.sendto(header + bytes(size - HEADER.size), self.target)
        self.sent += 1

    async def run(self) -> None:
        """Send until cancelled, on the audio and the video clock from a random phase."""
        loop = asyncio.get_running_loop()
        audio_at = loop.time() + random.random() * AUDIO_PACKET_S
        video_at = loop.time() + random.random() / VIDEO_FPS
        while True:
            now = loop.time()
            if now >= audio_at:
                self._send(AUDIO_BYTES)
                audio_at += AUDIO_PACKET_S
            if now >= video_at:
                for _ in range(self.burst):
                    self._send(VIDEO_BYTES)
                video_at += 1 / VIDEO_FPS
            await asyncio.sleep(max(0.0, min(audio_at, video_at) - loop.time()))


@dataclass
class Tally:
    """What the rounds of one relay count measured, summed."""

    relays: int
    cpu_s: float = 0.0
    wakeups: int = 0
    sent: int = 0
    echoed: int = 0
    window_s: float = 0.0
    cpu_by_round: list[float] = field(default_factory=list)

    @property
    def cpu_per_packet_us(self) -> float:
        return self.cpu_s / self.echoed * 1e6 if self.echoed else 0.0

    def report(self) -> dict[str, Any]:
        return {
            "relays": self.relays,
            "window_s": round(self.window_s, 3),
            "relay_cpu_s": round(self.cpu_s, 3),
            "cpu_by_round_s": [round(c, 3) for c in self.cpu_by_round],
            "packets_sent": self.sent,
            "packets_relayed": self.echoed,
            "cpu_per_packet_us": round(self.cpu_per_packet_us, 1),
            "wakeups_per_packet": round(self.wakeups / self.echoed, 3) if self.echoed else None,
        }


async def run_round(
    flows: Sequence[Flow], relays: int, seconds: float, work: int, stages: int, tally: Tally
) -> None:
    """Start ``relays`` relays, spread the flows over them, and add one window to ``tally``."""
    async with contextlib.AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(RelayProcess(work, stages)) for _ in range(relays)
        ]
        for i, flow in enumerate(flows):
            flow.target = ("127.0.0.1", started[i % relays].port)
        await asyncio.sleep(ROUND_WARMUP_S)
        before = [relay.counters() for relay in started]
        sent, echoed = sum(f.sent for f in flows), sum(f.echoed for f in flows)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        for flow in flows:
            flow.target = None
        window = time.monotonic() - t0
        await asyncio.sleep(DRAIN_S)
        after = [relay.counters() for relay in started]
    cpu = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    tally.cpu_s += cpu
    tally.cpu_by_round.append(cpu)
    tally.wakeups += sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    tally.sent += sum(f.sent for f in flows) - sent
    tally.echoed += sum(f.echoed for f in flows) - echoed
    tally.window_s += window


async def _open_flows(count: int, burst: int) -> list[tuple[asyncio.DatagramTransport, Flow]]:
    loop = asyncio.get_running_loop()
    opened: list[tuple[asyncio.DatagramTransport, Flow]] = []
    try:
        for k in range(count):
            transport, flow = await loop.create_datagram_endpoint(
                lambda k=k: Flow(0x5E70_0000 + k, burst),  # type: ignore[misc]
                local_addr=("127.0.0.1", 0),
                family=socket.AF_INET,
            )
            opened.append((transport, flow))
    except BaseException:
        for transport, _ in opened:
            transport.close()
        raise
    return opened


def _variant_report(stages: int, one: Tally, two: Tally) -> dict[str, Any]:
    efficiency = (
        round(one.cpu_per_packet_us / two.cpu_per_packet_us, 3) if two.cpu_per_packet_us else None
    )
    return {
        "stages": stages,
        "split_efficiency": efficiency,
        "cpu_per_packet_us_1": round(one.cpu_per_packet_us, 1),
        "cpu_per_packet_us_2": round(two.cpu_per_packet_us, 1),
        "phases": {str(t.relays): t.report() for t in (one, two)},
    }


async def measure(flows: int, seconds: float, work: int, stages: int, burst: int) -> dict[str, Any]:
    """Both variants' rounds (``loop``: the work in one function; ``path``: spread over
    ``stages`` functions) and their figures."""
    variants = {"loop": 1, "path": stages}
    opened = await _open_flows(flows, burst)
    tasks = [asyncio.create_task(flow.run()) for _, flow in opened]
    reports: dict[str, dict[str, Any]] = {}
    try:
        for name, count in variants.items():
            tallies = {n: Tally(n) for n in sorted(set(ROUNDS))}
            for relays in ROUNDS:
                await run_round(
                    [f for _, f in opened], relays, seconds / 2, work, count, tallies[relays]
                )
                for task in tasks:
                    if task.done():
                        task.result()  # a flow that stopped sending: raise what stopped it
            reports[name] = _variant_report(count, tallies[1], tallies[2])
            logger.info("split control, %s: %s", name, reports[name])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for transport, _ in opened:
            transport.close()
    figures: dict[str, Any] = {}
    for name, report in reports.items():
        figures[f"split_efficiency_{name}"] = report["split_efficiency"]
    for name, report in reports.items():
        for n in (1, 2):
            figures[f"cpu_per_packet_us_{name}_{n}"] = report[f"cpu_per_packet_us_{n}"]
    return {
        **figures,
        "flows": flows,
        "work": work,
        "burst": burst,
        "rounds": list(ROUNDS),
        "variants": reports,
    }


async def run(flows: int, seconds: float, work: int, stages: int, burst: int) -> dict[str, Any]:
    started = now_iso()
    machine_before = machine()
    figures = await measure(flows, seconds, work, stages, burst)
    return {
        "benchmark": "split",
        "date": started,
        "seconds": seconds,
        **figures,
        "method": METHOD,
        "machine": {**machine_before, "loadavg_end": machine()["loadavg"]},
        "versions": versions(),
    }


METHOD = (
    "a minimal uvloop UDP relay (parse a header, --work rounds of object and dict work, echo "
    "the datagram) in 1 process, then in 2 processes with half the flows each; variant loop "
    "runs the work in one function, variant path spreads it over --stages distinct functions; "
    "per variant, rounds on 1, 2, 2, 1 relays, each on fresh processes, a 1 s warm-up then "
    "--seconds/2 measured; cpu_per_packet_us_V_N = the relays' user+system CPU (psutil) / "
    "datagrams echoed back; split_efficiency_V = cpu_per_packet_us_V_1 / cpu_per_packet_us_V_2"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``--serve`` runs one relay, for the benchmark's own use)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--flows", type=int, default=8, help="client peers sending media")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per phase")
    parser.add_argument("--work", type=int, default=450, help="rounds of Python work per packet")
    parser.add_argument(
        "--stages", type=int, default=150, help="distinct functions the work is spread over"
    )
    parser.add_argument("--burst", type=int, default=4, help="packets per video frame")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--log-level", default="INFO", help="progress on stderr")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(args.work, args.stages))
        return 0
    if args.flows < 2 or args.seconds <= 0 or args.work < 0 or args.stages < 1 or args.burst < 1:
        parser.error(
            "--flows must be >= 2, --seconds > 0, --work >= 0, --stages >= 1 and --burst >= 1"
        )
    setup_logging(args.log_level)
    try:
        report = run_main(run(args.flows, args.seconds, args.work, args.stages, args.burst))
    except asyncio.CancelledError:
        logger.error("terminated; relays stopped")
        return EXIT_TERMINATED
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
