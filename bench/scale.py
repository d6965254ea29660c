"""Scaling out: CPU per consultation and join time on one node, then on two.

    python -m bench.scale --consults 4 --seconds 20 --json bench-results/scale.json

The same consultations run twice in one run, each time on fresh processes: a ``redis-server``
of the benchmark's own and Setu ``server.py`` nodes that share it (``--redis-url``), the data
directory and the directory file, each with its own ``--port`` and ``--node-id``:

* **1**: one node; both websockets of every consultation go to it;
* **2**: two nodes; consultation *i*'s nurse signs in on one node and its doctor on the other,
  alternating between consultations, and the doctor's ``call_next`` places the room on the
  least-loaded node.  The media of both peers flows to the room's node.

The phases differ only in the number of nodes: both use the real Redis.  Each consultation is
opened over the real protocol (sign in, ``register_patient``, ``call_next``, ``join``,
``offer``) by two of ``bench.relay``'s client peers, which replay pre-encoded 640x360 VP8 and
Opus both ways and count what arrives without decoding.  The consultations are opened one after
the other; each one's **join time** runs from the doctor's ``call_next`` to the later of the two
peers' first received video frame, as ``bench.join`` defines it (there the frames are decoded).

Then ``bench.relay``'s measurement runs unchanged: warm-up, pause, ``--seconds`` of media, pause,
until the last frame is delivered.  **CPU** is the sum over the nodes (psutil, user + system,
threads and children) from the clients resuming to the last frame delivered;
``cpu_per_consult_N`` = that CPU / (consultations x window seconds) and ``scaling_efficiency``
= ``cpu_per_consult_1 / cpu_per_consult_2``.  Redis's CPU over the same span is reported apart
(``redis_cpu_s_N``) and is in neither.  All processes share the machine's cores, the clients
too, so this measures what scaling out costs, not how much more two nodes carry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp

from bench.common import (
    EXIT_TERMINATED,
    PATIENT,
    EncodedMedia,
    Gate,
    ReplayPeer,
    ServerProcess,
    SignalClient,
    encode_media,
    free_port,
    gather_or_cancel,
    machine,
    now_iso,
    percentile,
    process_cpu_seconds,
    run_main,
    setu_server,
    setup_logging,
    versions,
    wait_until,
    write_report,
)
from bench.queue import RedisServerProcess
from bench.relay import SETTLE_LIMIT_S, SETUP_TIMEOUT_S, Consult, PhaseResult, measure
from core.nodes import INDEX, node_key
from core.store import UNAVAILABLE, open_store

logger = logging.getLogger("bench.scale")

NODE_COUNTS = (1, 2)
#: Every node must be in the registry within this long of answering HTTP.
REGISTER_TIMEOUT_S = 15.0
#: How often a client peer is checked for its first video frame: the join time's resolution.
FIRST_FRAME_POLL_S = 0.005
#: Each node's start, at most (``ServerProcess.start``'s own limit).
NODE_START_S = 60.0

#: The acceptance targets of ``--consults 4 --seconds 20`` (see ``docs/performance.md``).
TARGET_EFFICIENCY = 0.9
TARGET_JOIN_SLOWER_MS = 100.0
TARGET_DELIVERED = 0.98


class PhaseFailed(Exception):
    """A phase could not run: a node did not start or register, or a consultation failed."""

    def __init__(self, nodes: int, cause: BaseException) -> None:
        super().__init__(f"the {nodes}-node phase could not run: {type(cause).__name__}: {cause}")
        self.nodes = nodes


# ------------------------------------------------------------------------------ the nodes


def node_process(
    tmp: Path, consults: int, redis_url: str, node_id: str
) -> tuple[ServerProcess, list[tuple[str, str]]]:
    """A node: ``setu_server``'s command line on the shared Redis, with its own id and port.

    Flags given twice take their last value, so ``--node-id`` and ``--port`` replace the
    defaults.  Every node of a phase gets the same directory file and data directory in ``tmp``.
    A node stops at once on SIGTERM (``--drain-timeout 0``), even if a failed consultation left
    a room behind.
    """
    base, pairs = setu_server(tmp, consults)
    port = free_port()
    extra = ["--redis-url", redis_url, "--node-id", node_id, "--port", str(port)]
    argv = [*base.argv, *extra, "--drain-timeout", "0"]
    return ServerProcess(node_id, argv, port, tmp / f"{node_id}.log", ready_path="/login"), pairs


async def wait_registered(redis_url: str, node_ids: Sequence[str]) -> None:
    """Return once every node in ``node_ids`` has a live record in the node registry."""
    store = open_store(redis_url)
    try:
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while True:
            with contextlib.suppress(*UNAVAILABLE):
                listed = set(cast(list[str], await store.zrange(INDEX, 0, -1)))
                live = {n for n in node_ids if n in listed and await store.exists(node_key(n))}
                if live == set(node_ids):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nodes {sorted(node_ids)} not all registered in {REGISTER_TIMEOUT_S:g}s"
                )
            await asyncio.sleep(0.1)
    finally:
        await store.aclose()


async def live_rooms(http: aiohttp.ClientSession, node: ServerProcess) -> int:
    """The rooms ``node`` holds now, from its ``/metrics`` (loopback, signed out)."""
    async with http.get(node.base_url + "/metrics") as resp:
        resp.raise_for_status()
        text = await resp.text()
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "setu_live_rooms":
            return round(float(value))
    raise RuntimeError(f"{node.name}: /metrics has no setu_live_rooms")


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds of each node and of Redis at one moment."""

    nodes: tuple[float, ...]
    redis: float

    @property
    def total(self) -> float:
        """The nodes' CPU seconds (Redis's are not in it)."""
        return sum(self.nodes)


class Cluster:
    """A phase's nodes read as one server: what ``bench.relay.measure`` reads of its server.

    Every :meth:`cpu_seconds` call also reads Redis and is kept, so that the span ``measure``
    charged can be split by process afterwards (:meth:`span`).
    """

    def __init__(self, name: str, nodes: Sequence[ServerProcess], redis_pid: int) -> None:
        self.name = name
        self.nodes = list(nodes)
        self._redis_pid = redis_pid
        self._readings: list[CpuReading] = []

    def read(self) -> CpuReading:
        """Every process's CPU seconds now."""
        return CpuReading(
            nodes=tuple(node.cpu_seconds() for node in self.nodes),
            redis=process_cpu_seconds(self._redis_pid),
        )

    def cpu_seconds(self) -> float:
        """The nodes' CPU seconds so far, summed."""
        reading = self.read()
        self._readings.append(reading)
        return reading.total

    def span(self, cpu_s: float) -> tuple[CpuReading, CpuReading]:
        """The two readings whose totals ``measure`` subtracted to charge ``cpu_s``.

        The latest such pair: the same floats give exactly the same difference.  Readings with
        equal totals are moments at which no node used CPU, so the choice among them changes
        only Redis's figure, by what it used while nothing else ran.
        """
        for end in reversed(self._readings):
            for start in self._readings:
                if end.total - start.total == cpu_s:
                    return start, end
        raise RuntimeError(f"{self.name}: no two CPU readings differ by {cpu_s}")


# ------------------------------------------------------------------------------ consultations


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def _join_side(
    who: SignalClient, peer: ReplayPeer, room_id: str, t0: float, side: str
) -> tuple[float, dict[str, float]]:
    """Join, negotiate and wait for the first video frame; its time and the side's marks."""
    marks: dict[str, float] = {}
    await who.request("join", "joined", room_id=room_id)
    marks[f"{side}_joined_ms"] = _ms(time.monotonic() - t0)
    answer = await who.request("offer", "answer", sdp=await peer.offer())
    marks[f"{side}_answer_ms"] = _ms(time.monotonic() - t0)
    await peer.accept(answer["sdp"])
    await wait_until(
        lambda: peer.received["video"] > 0,
        SETUP_TIMEOUT_S,
        f"{peer.label}: no video",
        interval=FIRST_FRAME_POLL_S,
    )
    first = time.monotonic()
    marks[f"{side}_first_video_ms"] = _ms(first - t0)
    return first, marks


async def open_timed_consult(
    nurse_node: ServerProcess,
    doctor_node: ServerProcess,
    pair: tuple[str, str],
    media: EncodedMedia,
    gate: Gate,
    label: str,
) -> tuple[Consult, dict[str, float]]:
    """Open one consultation over the real protocol, the nurse and the doctor each on their
    node, and time it from ``call_next`` to video on both sides (``join_ms``)."""
    consult = Consult()
    try:
        nurse = SignalClient(nurse_node.base_url, pair[0])
        doctor = SignalClient(doctor_node.base_url, pair[1])
        consult.users += [nurse, doctor]
        await gather_or_cancel(nurse.connect(), doctor.connect())
        await nurse.request("register_patient", "token_issued", patient=dict(PATIENT))
        spoke = ReplayPeer(f"{label}-spoke", media, gate)
        hub = ReplayPeer(f"{label}-hub", media, gate)
        consult.peers += [spoke, hub]
        t0 = time.monotonic()
        opened = await doctor.request("call_next", "room_opened")
        marks = {"room_opened_ms": _ms(time.monotonic() - t0)}
        room_id = opened["room_id"]
        sides = await gather_or_cancel(
            _join_side(nurse, spoke, room_id, t0, "nurse"),
            _join_side(doctor, hub, room_id, t0, "doctor"),
        )
        for _, side_marks in sides:
            marks.update(side_marks)
        marks["join_ms"] = _ms(max(first for first, _ in sides) - t0)
    except BaseException:
        await consult.close()
        raise
    return consult, marks


# ------------------------------------------------------------------------------ one phase


@dataclass(frozen=True)
class Phase:
    """What one phase measured."""

    nodes: int
    result: PhaseResult
    node_ids: tuple[str, ...]
    start: CpuReading
    end: CpuReading
    rooms: tuple[int, ...]
    joins: tuple[dict[str, float], ...]

    @property
    def join_p50_ms(self) -> float:
        return round(percentile([j["join_ms"] for j in self.joins], 50), 1)

    @property
    def redis_cpu_s(self) -> float:
        return self.end.redis - self.start.redis

    def report(self) -> dict[str, Any]:
        """The phase's raw figures."""
        samples = [j["join_ms"] for j in self.joins]
        return {
            "nodes": self.nodes,
            **self.result.report(),
            "node_cpu_s": {
                node: round(b - a, 3)
                for node, a, b in zip(self.node_ids, self.start.nodes, self.end.nodes, strict=True)
            },
            "redis_cpu_s": round(self.redis_cpu_s, 3),
            "rooms_per_node": dict(zip(self.node_ids, self.rooms, strict=True)),
            "join_p50_ms": self.join_p50_ms,
            "join_min_ms": min(samples),
            "join_max_ms": max(samples),
            "join_samples_ms": samples,
            "joins_detail": list(self.joins),
        }


async def run_phase(
    tmp: Path, nodes: int, consults: int, media: EncodedMedia, warmup_s: float, seconds: float
) -> Phase:
    """Start Redis and ``nodes`` nodes, open the consultations, measure, hang up, stop them."""
    name = f"{nodes}-node"
    await asyncio.to_thread(tmp.mkdir)
    node_ids = tuple(f"bench-{k}" for k in range(nodes))
    async with RedisServerProcess(tmp) as redis, contextlib.AsyncExitStack() as stack:
        servers: list[ServerProcess] = []
        pairs: list[tuple[str, str]] = []
        for node_id in node_ids:
            server, pairs = node_process(tmp, consults, redis.url, node_id)
            servers.append(await stack.enter_async_context(server))
        await wait_registered(redis.url, node_ids)
        logger.info("%s: nodes %s registered", name, ", ".join(node_ids))
        gate = Gate()
        opened: list[Consult] = []
        joins: list[dict[str, float]] = []
        try:
            for i, pair in enumerate(pairs):
                # The nurse on one node, the doctor on the next: with two nodes, always apart,
                # and each node hosts nurses and doctors alike.
                nurse_node, doctor_node = servers[i % nodes], servers[(i + 1) % nodes]
                consult, marks = await open_timed_consult(
                    nurse_node, doctor_node, pair, media, gate, f"{name}{i}"
                )
                opened.append(consult)
                joins.append(marks)
                logger.info(
                    "%s: consultation %d (nurse on %s, doctor on %s) joined: %s",
                    name,
                    i,
                    nurse_node.name,
                    doctor_node.name,
                    marks,
                )
            async with aiohttp.ClientSession() as http:
                rooms = tuple([await live_rooms(http, s) for s in servers])
            logger.info("%s: rooms per node %s", name, dict(zip(node_ids, rooms, strict=True)))
            cluster = Cluster(name, servers, redis.pid)
            # measure() reads only its server's name and cpu_seconds(), which a Cluster has.
            result = await measure(name, cluster, opened, gate, warmup_s, seconds)  # type: ignore[arg-type]
            start, end = cluster.span(result.cpu_s)
        except Exception:
            for server in servers:
                logger.error("%s: its last log lines:\n%s", server.name, server.log_tail())
            raise
        finally:
            await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
    return Phase(nodes, result, node_ids, start, end, rooms, tuple(joins))


# ------------------------------------------------------------------------------ the run


async def run(consults: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """Both phases, one after the other, and the report."""
    started = now_iso()
    machine_before = machine()
    media = encode_media()
    logger.info("media encoded once: %s", media.describe())
    phases: dict[int, Phase] = {}
    with tempfile.TemporaryDirectory(prefix="setu-bench-") as tmpdir:
        for nodes in NODE_COUNTS:
            budget = (
                nodes * NODE_START_S
                + REGISTER_TIMEOUT_S
                + (consults + 1) * SETUP_TIMEOUT_S
                + warmup_s
                + seconds
                + 2 * SETTLE_LIMIT_S
                + 60
            )
            try:
                async with asyncio.timeout(budget):
                    phases[nodes] = await run_phase(
                        Path(tmpdir) / f"nodes-{nodes}", nodes, consults, media, warmup_s, seconds
                    )
            except Exception as exc:
                raise PhaseFailed(nodes, exc) from exc
    one, two = phases[1], phases[2]
    cpu_1, cpu_2 = one.result.cpu_per_consult, two.result.cpu_per_consult
    efficiency = round(cpu_1 / cpu_2, 3) if cpu_2 > 0 else None
    figures: dict[str, Any] = {
        "cpu_per_consult_1": round(cpu_1, 5),
        "cpu_per_consult_2": round(cpu_2, 5),
        "scaling_efficiency": efficiency,
        "join_p50_ms_1": one.join_p50_ms,
        "join_p50_ms_2": two.join_p50_ms,
    }
    for phase in (one, two):
        n = phase.nodes
        figures[f"delivered_video_{n}"] = round(phase.result.video_delivered, 4)
        figures[f"delivered_audio_{n}"] = round(phase.result.audio_delivered, 4)
    for phase in (one, two):
        figures[f"redis_cpu_s_{phase.nodes}"] = round(phase.redis_cpu_s, 3)
    delivered = [v for k, v in figures.items() if k.startswith("delivered_")]
    targets_met = {
        "scaling_efficiency": efficiency is not None and efficiency >= TARGET_EFFICIENCY,
        "join_p50_ms_2": two.join_p50_ms <= one.join_p50_ms + TARGET_JOIN_SLOWER_MS,
        "delivered": min(delivered) >= TARGET_DELIVERED,
    }
    return {
        "benchmark": "scale",
        "date": started,
        "consults": consults,
        "seconds": seconds,
        "warmup_seconds": warmup_s,
        **figures,
        "targets": {
            "scaling_efficiency": f">= {TARGET_EFFICIENCY}",
            "join_p50_ms_2": f"<= join_p50_ms_1 + {TARGET_JOIN_SLOWER_MS:g}",
            "delivered": f"every delivered_* >= {TARGET_DELIVERED}",
        },
        "targets_met": targets_met,
        "phases": {str(p.nodes): p.report() for p in (one, two)},
        "media": media.describe(),
        "method": (
            "each phase on fresh processes: a redis-server and 1 or 2 server.py nodes sharing "
            "it; with 2 nodes consultation i's nurse signs in on node i mod 2 and its doctor on "
            "the other; CPU = user+system seconds of all nodes (psutil, threads and children) "
            "from the clients resuming to the last frame delivered after they pause, Redis "
            "apart (redis_cpu_s_N) and not in it; cpu_per_consult_N = CPU / (consults x window "
            "seconds); scaling_efficiency = cpu_per_consult_1 / cpu_per_consult_2; join = "
            "call_next sent to the later of the two peers' first received video frame, "
            "consultations opened one after the other, p50 interpolated between closest "
            "ranks; delivered = frames received / frames the other side sent in the window, "
            "all directions"
        ),
        "machine": {**machine_before, "loadavg_end": machine()["loadavg"]},
        "versions": versions(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--consults", type=int, default=4, help="parallel consultations")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of flowing media before the window"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--log-level", default="INFO", help="progress on stderr")
    args = parser.parse_args(argv)
    if args.consults < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--consults must be >= 1, --seconds > 0 and --warmup >= 0")
    setup_logging(args.log_level)
    try:
        report = run_main(run(args.consults, args.seconds, args.warmup))
    except asyncio.CancelledError:
        logger.error("terminated; servers stopped")
        return EXIT_TERMINATED
    except PhaseFailed as exc:
        logger.error("%s", exc)
        return 1
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
