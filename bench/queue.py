"""Waiting-room throughput: ``issue`` and ``call_next`` on a real Redis, through the real API.

    python -m bench.queue --seconds 10 --json bench-results/queue.json

Every call goes through :class:`rooms.waiting_room.WaitingRoom`, so Redis runs the very Lua
scripts the server runs (``rooms/scripts/issue.lua``, ``call_next.lua``) and each call also reads
the token back (``HGETALL``), as the server does.  Without ``--redis-url`` the benchmark starts
its own ``redis-server`` on a free loopback port, with persistence off, and stops it at the end.

The benchmark writes a directory with ``--hubs`` hubs, each with two spokes (one nurse each) and
its doctors, so the load spreads over several hubs as in a real deployment, and opens each hub's
service window (``WaitingRoom.open_window``, as the server's keeper does).  The load comes from
``--processes`` client processes (one asyncio event loop on uvloop each, as ``server.py`` runs),
which together keep ``--concurrency`` calls in flight: one coroutine per nurse or doctor, each
awaiting its call and then making the next at once (a closed loop, no think time).

1. **issue**: the nurses issue tokens for ``--seconds / 2``.
2. **call_next**: the doctors, spread round-robin over the hubs, call the head of their hub's
   queue until it is empty (every token issued is called) or ``--seconds / 2`` pass.

Latency is measured around each awaited call in the client, so it includes the time a call
waits for its event loop (client-side queueing) as well as Redis.  Throughput is successful
calls over the phase's wall time, from the common start to the last call's completion.

Correctness: ``duplicates`` counts tokens that ``call_next`` returned more than once, and
``lost`` counts tokens whose ``issue`` returned but that were neither called nor still waiting in
their hub's queue nor held for its next window (:meth:`WaitingRoom.snapshot`) at the end.  Both
must be 0.

CPU: user + system seconds (psutil) of ``redis-server`` and of the client processes in each
phase, and Redis's own per-command counters (``INFO commandstats``), say where the time goes.
The machine's busy CPU seconds over each phase, less ours, show how much other work took.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit

import psutil
import uvloop

from bench.common import (
    ALWAYS_OPEN_SERVICE,
    EXIT_TERMINATED,
    PATIENT,
    free_port,
    machine,
    now_iso,
    percentile,
    process_cpu_seconds,
    redis_server_argv,
    run_main,
    setup_logging,
    write_report,
)
from core.directory import Directory
from core.domain import HubId, Sex, SpokeId, TokenState, UserId
from core.store import UNAVAILABLE, Redis, StoreUnavailable, open_store
from rooms.waiting_room import Patient, QueueEmpty, WaitingRoom, WaitingRoomError

logger = logging.getLogger("bench.queue")

#: The acceptance targets of ``--seconds 10`` (see ``docs/performance.md``).
TARGET_CALL_NEXT_OPS_PER_S = 5000.0
TARGET_CALL_NEXT_P99_MS = 5.0
#: Spokes (each with one nurse) per benchmark hub.
SPOKES_PER_HUB = 2
#: How long client processes and redis-server may take to start.
STARTUP_TIMEOUT_S = 60.0
#: How long a phase may overrun its deadline (the last calls in flight, sending the results).
PHASE_GRACE_S = 60.0
#: The clients start a phase together this long after they are told to.
START_DELAY_S = 0.25
#: A client stops issuing after this many failed calls in a phase (the store is down).
MAX_ERRORS = 1000
#: Slices in which a pipe is polled, and how long a client waits for its next order at most.
PIPE_POLL_S = 0.5
IDLE_LIMIT_S = 600.0

PhaseName = Literal["issue", "call_next"]


# ------------------------------------------------------------------------------ messages
# Client processes exchange plain dicts and tuples with the parent (picklable by any module).


class WorkerSpec(TypedDict):
    """What one client process does: its nurses, its doctors and where the store is."""

    index: int
    redis_url: str
    directory: str
    #: ``(spoke, nurse)`` per issuing coroutine.
    nurses: list[tuple[str, str]]
    #: ``(hub, doctor)`` per calling coroutine.
    doctors: list[tuple[str, str]]


class PhaseResult(TypedDict):
    """What one client process did in one phase."""

    phase: str
    #: Token ids, one per successful call, in completion order.
    tokens: list[str]
    latencies_ms: list[float]
    #: Wall-clock time (``time.time()``) when the last successful call completed, 0 if none.
    last_done_wall: float
    errors: dict[str, int]
    #: ``call_next``: calls that found their hub's queue empty (each ends its doctor's loop).
    empty: int
    #: ``call_next``: returned tokens not in state ``called`` for the calling doctor.
    wrong_state: int
    #: ``issue``: tokens held for a later window (the hub's window was full) instead of queued.
    held: int


# ------------------------------------------------------------------------------ directory


@dataclass(frozen=True)
class Layout:
    """The benchmark's hubs, spokes, nurses and doctors."""

    hubs: tuple[str, ...]
    #: ``(spoke, nurse)`` pairs, round-robin over the hubs.
    nurses: tuple[tuple[str, str], ...]
    #: ``(hub, doctor)`` pairs, round-robin over the hubs.
    doctors: tuple[tuple[str, str], ...]


def write_queue_directory(path: Path, run_id: str, hubs: int, doctors: int) -> Layout:
    """A directory TOML with ``hubs`` hubs, each with its spokes, nurses and doctors.

    Every hub serves all day, every day, up to the largest capacity a window may have.  Ids
    carry ``run_id`` so that a run on a shared Redis never touches another run's keys.
    """
    lines = [
        "# Generated by bench/queue.py for a benchmark run.",
        "[[blocks]]",
        'id = "qb-block"',
        'name = "Queue benchmark block"',
        "",
    ]
    hub_ids = tuple(f"qb-{run_id}-{h}" for h in range(hubs))
    nurses: list[tuple[str, str]] = []
    for h, hub in enumerate(hub_ids):
        lines += [
            "[[hubs]]",
            f'id = "{hub}"',
            f'name = "Queue benchmark hub {h}"',
            'timezone = "Asia/Kolkata"',
            "",
            "[hubs.service]",
            "capacity = 10000",
            "consultation_minutes = 15",
            'at_closing = "carry_over"',
            "",
            *ALWAYS_OPEN_SERVICE,
        ]
        for s in range(SPOKES_PER_HUB):
            spoke, nurse = f"{hub}-s{s}", f"nurse.{hub}-s{s}"
            nurses.append((spoke, nurse))
            lines += [
                "[[spokes]]",
                f'id = "{spoke}"',
                f'name = "Queue benchmark spoke {h}/{s}"',
                'block = "qb-block"',
                f'hub = "{hub}"',
                "",
                "[[users]]",
                f'username = "{nurse}"',
                f'name = "Bench Nurse {h}/{s}"',
                'role = "nurse"',
                f'spoke = "{spoke}"',
                "",
            ]
    doctor_pairs: list[tuple[str, str]] = []
    for d in range(doctors):
        hub = hub_ids[d % hubs]
        doctor = f"dr.{hub}-{d // hubs}"
        doctor_pairs.append((hub, doctor))
        lines += [
            "[[users]]",
            f'username = "{doctor}"',
            f'name = "Bench Doctor {d}"',
            'role = "doctor"',
            f'hub = "{hub}"',
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    Directory.load(path)  # fail here, not in every client, if the file is wrong
    # Interleaved (first spoke of every hub, then the second...) so that the first nurses taken
    # cover every hub.
    interleaved = tuple(
        nurses[h * SPOKES_PER_HUB + s] for s in range(SPOKES_PER_HUB) for h in range(hubs)
    )
    return Layout(hub_ids, interleaved, tuple(doctor_pairs))


def split(items: Sequence[tuple[str, str]], count: int, parts: int) -> list[list[tuple[str, str]]]:
    """``count`` items taken round-robin from ``items``, dealt round-robin into ``parts``."""
    out: list[list[tuple[str, str]]] = [[] for _ in range(parts)]
    for i in range(count):
        out[i % parts].append(items[i % len(items)])
    return out


# ------------------------------------------------------------------------------ client processes


def worker_main(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    """Entry point of a client process: serve the parent's phase orders until told to stop."""
    # Per-call INFO logs of the waiting room would measure stderr, not the queue.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(conn, spec))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # the parent stopped the run; it reports that
    finally:
        conn.close()


async def _serve(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    store = open_store(spec["redis_url"])
    try:
        room = WaitingRoom(store, Directory.load(Path(spec["directory"])))
        # Open every connection the coroutines will use before any phase starts.
        width = max(len(spec["nurses"]), len(spec["doctors"]), 1)
        await asyncio.gather(*(store.ping() for _ in range(width)))
        conn.send(("ready", os.getpid()))
        while True:
            await wait_message(conn, IDLE_LIMIT_S)
            order = conn.recv()
            if order[0] == "stop":
                return
            phase, start_wall, end_wall = order
            if phase == "issue":
                result = await _issue_phase(room, spec, start_wall, end_wall)
            else:
                result = await _call_phase(room, spec, start_wall, end_wall)
            conn.send(("result", result))
    finally:
        await store.aclose()


async def wait_message(conn: multiprocessing.connection.Connection, timeout: float) -> None:
    """Wait until ``conn`` has a message (or its other end closed); raise on ``timeout``.

    The pipe is polled from a thread in short slices, so the wait can be cancelled.  It is not
    watched with ``loop.add_reader``: uvloop would make it non-blocking, and then a large
    ``send`` fails with ``EAGAIN``.
    """
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(conn.poll, min(PIPE_POLL_S, timeout)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no message within {timeout:.0f}s")


def _empty_result(phase: str) -> PhaseResult:
    return {
        "phase": phase,
        "tokens": [],
        "latencies_ms": [],
        "last_done_wall": 0.0,
        "errors": {},
        "empty": 0,
        "wrong_state": 0,
        "held": 0,
    }


async def _wait_until(wall: float) -> float:
    """Sleep until wall-clock time ``wall``; returns the monotonic time that corresponds to it."""
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    return time.monotonic() + (wall - time.time())


async def _issue_phase(
    room: WaitingRoom, spec: WorkerSpec, start_wall: float, end_wall: float
) -> PhaseResult:
    result = _empty_result("issue")
    errors: collections.Counter[str] = collections.Counter()
    patient = Patient(
        name=str(PATIENT["name"]),
        age=int(PATIENT["age"]),
        sex=Sex(PATIENT["sex"]),
        complaint=str(PATIENT["complaint"]),
    )

    async def nurse(spoke: SpokeId, nurse_id: UserId, deadline: float) -> None:
        while time.monotonic() < deadline and errors.total() < MAX_ERRORS:
            t0 = time.perf_counter()
            try:
                token = await room.issue(spoke, nurse_id, patient)
            except (StoreUnavailable, WaitingRoomError) as exc:
                errors[type(exc).__name__] += 1
                continue
            result["latencies_ms"].append((time.perf_counter() - t0) * 1000)
            result["tokens"].append(token.id)
            result["last_done_wall"] = time.time()
            if token.state is not TokenState.WAITING:
                result["held"] += 1

    start = await _wait_until(start_wall)
    deadline = start + (end_wall - start_wall)
    await asyncio.gather(
        *(nurse(SpokeId(spoke), UserId(n), deadline) for spoke, n in spec["nurses"])
    )
    result["errors"] = dict(errors)
    return result


async def _call_phase(
    room: WaitingRoom, spec: WorkerSpec, start_wall: float, end_wall: float
) -> PhaseResult:
    result = _empty_result("call_next")
    errors: collections.Counter[str] = collections.Counter()
    node = f"bench-node-{spec['index']}"

    async def doctor(hub: HubId, doctor_id: UserId, deadline: float) -> None:
        while time.monotonic() < deadline and errors.total() < MAX_ERRORS:
            t0 = time.perf_counter()
            try:
                token = await room.call_next(hub, doctor_id, node)
            except QueueEmpty:
                result["empty"] += 1
                return
            except (StoreUnavailable, WaitingRoomError) as exc:
                errors[type(exc).__name__] += 1
                continue
            result["latencies_ms"].append((time.perf_counter() - t0) * 1000)
            result["tokens"].append(token.id)
            result["last_done_wall"] = time.time()
            if token.state is not TokenState.CALLED or token.doctor != doctor_id:
                result["wrong_state"] += 1

    start = await _wait_until(start_wall)
    deadline = start + (end_wall - start_wall)
    await asyncio.gather(*(doctor(HubId(h), UserId(d), deadline) for h, d in spec["doctors"]))
    result["errors"] = dict(errors)
    return result


class Clients:
    """The client processes of one run, each with its pipe.  Stopped by :meth:`stop`."""

    def __init__(self, specs: Sequence[WorkerSpec]) -> None:
        self._specs = list(specs)
        self._procs: list[BaseProcess] = []
        self._conns: list[multiprocessing.connection.Connection] = []
        self.pids: list[int] = []

    async def start(self) -> None:
        """Start every client process and wait until each has connected to the store."""
        ctx = multiprocessing.get_context("spawn")
        for spec in self._specs:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(child_end, spec),
                name=f"bench-queue-client-{spec['index']}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self._procs.append(proc)
            self._conns.append(parent_end)
        for conn in self._conns:
            kind, pid = await self._receive(conn, STARTUP_TIMEOUT_S)
            if kind != "ready":  # pragma: no cover - protocol error
                raise RuntimeError(f"client process said {kind!r} instead of 'ready'")
            self.pids.append(int(pid))
        logger.info("%d client processes ready: pids %s", len(self.pids), self.pids)

    async def _receive(self, conn: multiprocessing.connection.Connection, timeout: float) -> Any:
        try:
            await wait_message(conn, timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer from a client process within {timeout:.0f}s") from None
        try:
            return conn.recv()
        except EOFError:
            codes = [p.exitcode for p in self._procs]
            raise RuntimeError(f"a client process exited early (exit codes {codes})") from None

    async def run_phase(self, phase: PhaseName, seconds: float) -> tuple[float, list[PhaseResult]]:
        """Run one phase in every client at once; returns its start (wall clock) and results."""
        start_wall = time.time() + START_DELAY_S
        for conn in self._conns:
            conn.send((phase, start_wall, start_wall + seconds))
        results: list[PhaseResult] = []
        for conn in self._conns:
            timeout = START_DELAY_S + seconds + PHASE_GRACE_S
            kind, result = await self._receive(conn, timeout)
            if kind != "result":  # pragma: no cover - protocol error
                raise RuntimeError(f"client process said {kind!r} instead of 'result'")
            results.append(result)
        return start_wall, results

    def cpu_seconds(self) -> float:
        """CPU seconds the client processes used so far."""
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process_cpu_seconds(pid, descendants=False)
        return total

    async def stop(self, timeout: float = 10.0) -> None:
        """Tell every client to stop; terminate (then kill) any that does not (idempotent)."""
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            await asyncio.to_thread(proc.join, max(deadline - time.monotonic(), 0.0))
            if proc.is_alive():
                logger.warning("client %s did not stop; terminating it", proc.pid)
                proc.terminate()
                proc.join(5)
            if proc.is_alive():  # pragma: no cover - a wedged client
                proc.kill()
                proc.join(5)
            proc.close()
        for conn in self._conns:
            conn.close()
        self._procs.clear()
        self._conns.clear()


# ------------------------------------------------------------------------------ redis-server


class RedisServerProcess:
    """A ``redis-server`` of our own on a free loopback port, persistence off.

    Use as ``async with``: leaving the block always stops it (SIGTERM, then SIGKILL).
    """

    def __init__(self, directory: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it")
        self.exe = exe
        self.directory = directory
        self.port = free_port()
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The server's URL on loopback."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._proc is None:
            raise RuntimeError("redis-server is not running")
        return self._proc.pid

    async def __aenter__(self) -> RedisServerProcess:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the server and wait until it answers PING."""
        argv = redis_server_argv(self.exe, self.port, self.directory)
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        logger.info("redis-server: started pid %d on port %d", self._proc.pid, self.port)
        client = open_store(self.url)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
                try:
                    await client.ping()
                    return
                except UNAVAILABLE:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server, kill it if it lingers, and wait for it (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                logger.warning("redis-server did not stop in %.0fs; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        else:
            await proc.wait()
        logger.info("redis-server stopped")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or "localhost"
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _server_pid(store: Redis, url: str) -> int | None:
    """The PID of a local redis-server, for its CPU time; ``None`` if it is not on this host."""
    if not _is_loopback(url):
        return None
    info: dict[str, Any] = await store.info("server")
    pid = int(info.get("process_id", 0))
    try:
        proc = psutil.Process(pid)
        proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None
    return pid if "redis" in proc.name() else None


async def _commandstats(store: Redis) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` as ``command: (calls, usec)``; commands in scripts count too."""
    info: dict[str, Any] = await store.info("commandstats")
    out: dict[str, tuple[int, int]] = {}
    for key, value in info.items():
        if key.startswith("cmdstat_") and isinstance(value, Mapping):
            out[key.removeprefix("cmdstat_")] = (int(value["calls"]), int(value["usec"]))
    return out


def _commandstats_delta(
    before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for command, (calls, usec) in sorted(after.items()):
        calls0, usec0 = before.get(command, (0, 0))
        if calls > calls0:
            out[command] = {
                "calls": calls - calls0,
                "usec": usec - usec0,
                "usec_per_call": round((usec - usec0) / (calls - calls0), 2),
            }
    return out


async def open_windows(room: WaitingRoom, hubs: Sequence[str]) -> None:
    """Open each hub's current service window, as the server's service keeper does.

    In the minute a day that the benchmark hubs are closed (23:59 local) the next window opens
    early instead.  Without an open window ``issue`` holds tokens instead of queueing them.
    """
    now = room.now()
    for hub in hubs:
        calendar = room.calendar(HubId(hub))
        window = calendar.window_at(now) or calendar.next_opening(now)
        if window is None:  # pragma: no cover - the generated directory always has windows
            raise RuntimeError(f"hub {hub} has no service window")
        await room.open_window(HubId(hub), window)
        if await room.open_window_key(HubId(hub)) is None:
            raise RuntimeError(f"could not open a service window at hub {hub}")


async def _delete_run_keys(store: Redis, hubs: Sequence[str]) -> int:
    """Delete every key of this run's hubs (on a Redis the benchmark did not start)."""
    deleted = 0
    for hub in hubs:
        batch: list[str] = []
        async for key in store.scan_iter(match=f"wr:{{{hub}}}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(await store.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(await store.unlink(*batch))
    return deleted


# ------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class Phase:
    """One phase's merged results and costs."""

    name: str
    start_wall: float
    results: tuple[PhaseResult, ...]
    redis_cpu_s: float | None
    client_cpu_s: float
    commandstats: dict[str, dict[str, float]]
    #: The machine over the phase (its start delay included): wall time, CPU seconds busy on
    #: all cores, and the part of those that neither redis-server nor this benchmark used.
    wall_s: float
    machine_busy_cpu_s: float
    other_processes_cpu_s: float | None

    @property
    def count(self) -> int:
        """Successful calls."""
        return sum(len(r["tokens"]) for r in self.results)

    @property
    def window_s(self) -> float:
        """From the common start to the last successful call's completion."""
        last = max((r["last_done_wall"] for r in self.results), default=0.0)
        return max(last - self.start_wall, 0.0)

    @property
    def latencies_ms(self) -> list[float]:
        """Every successful call's latency."""
        return [x for r in self.results for x in r["latencies_ms"]]

    @property
    def errors(self) -> dict[str, int]:
        """Failed calls by exception type."""
        total: collections.Counter[str] = collections.Counter()
        for r in self.results:
            total.update(r["errors"])
        return dict(total)

    @property
    def cpu_us_per_call(self) -> float | None:
        """Client plus redis-server CPU microseconds per successful call."""
        if self.redis_cpu_s is None or not self.count:
            return None
        return (self.client_cpu_s + self.redis_cpu_s) / self.count * 1e6

    def figures(self, prefix: str) -> dict[str, Any]:
        """Throughput and latency percentiles, keyed ``<prefix>_...``."""
        lat = self.latencies_ms
        window = self.window_s
        return {
            f"{prefix}_ops_per_s": round(self.count / window, 1) if window > 0 else 0.0,
            f"{prefix}_p50_ms": round(percentile(lat, 50), 3) if lat else None,
            f"{prefix}_p99_ms": round(percentile(lat, 99), 3) if lat else None,
        }

    def detail(self) -> dict[str, Any]:
        """The phase's raw counts and costs."""
        lat = self.latencies_ms
        count = self.count
        return {
            "calls": count,
            "window_s": round(self.window_s, 3),
            "errors": self.errors,
            "latency_ms": (
                {
                    "min": round(min(lat), 3),
                    "p50": round(percentile(lat, 50), 3),
                    "p90": round(percentile(lat, 90), 3),
                    "p99": round(percentile(lat, 99), 3),
                    "p999": round(percentile(lat, 99.9), 3),
                    "max": round(max(lat), 3),
                }
                if lat
                else None
            ),
            "redis_server_cpu_s": _round(self.redis_cpu_s, 3),
            "redis_server_cpu_us_per_call": (
                round(self.redis_cpu_s / count * 1e6, 1)
                if self.redis_cpu_s is not None and count
                else None
            ),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "client_cpu_us_per_call": round(self.client_cpu_s / count * 1e6, 1) if count else None,
            "cpu_us_per_call": _round(self.cpu_us_per_call, 1),
            # What this code could do with every core to itself and nothing else running.
            "cpu_bound_ops_per_s_estimate": (
                round((os.cpu_count() or 1) * 1e6 / self.cpu_us_per_call)
                if self.cpu_us_per_call
                else None
            ),
            "machine": {
                "wall_s": round(self.wall_s, 3),
                "cpu_capacity_s": round(self.wall_s * (os.cpu_count() or 1), 3),
                "busy_cpu_s": round(self.machine_busy_cpu_s, 3),
                "other_processes_cpu_s": _round(self.other_processes_cpu_s, 3),
            },
            "redis_commandstats": self.commandstats,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


async def _measure(
    phase: PhaseName,
    seconds: float,
    clients: Clients,
    store: Redis,
    redis_pid: int | None,
) -> Phase:
    stats_before = await _commandstats(store)
    redis_before = process_cpu_seconds(redis_pid, descendants=False) if redis_pid else None
    client_before = clients.cpu_seconds()
    own_before = process_cpu_seconds(os.getpid(), descendants=False)
    busy_before, wall_before = _busy_cpu_seconds(), time.monotonic()
    start_wall, results = await clients.run_phase(phase, seconds)
    busy, wall = _busy_cpu_seconds() - busy_before, time.monotonic() - wall_before
    own_cpu = process_cpu_seconds(os.getpid(), descendants=False) - own_before
    client_cpu = clients.cpu_seconds() - client_before
    redis_cpu = (
        process_cpu_seconds(redis_pid, descendants=False) - redis_before
        if redis_pid and redis_before is not None
        else None
    )
    stats = _commandstats_delta(stats_before, await _commandstats(store))
    other = max(busy - client_cpu - own_cpu - redis_cpu, 0.0) if redis_cpu is not None else None
    return Phase(
        name=phase,
        start_wall=start_wall,
        results=tuple(results),
        redis_cpu_s=redis_cpu,
        client_cpu_s=client_cpu,
        commandstats=stats,
        wall_s=wall,
        machine_busy_cpu_s=busy,
        other_processes_cpu_s=other,
    )


def _busy_cpu_seconds() -> float:
    """CPU seconds all cores of the machine have spent running anything (guests are already
    counted in user and nice time)."""
    times = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in fields))


async def _verify(
    room: WaitingRoom, hubs: Sequence[str], issued: Phase, called: Phase
) -> dict[str, Any]:
    """Duplicates, lost tokens and the queues at the end, from the clients and the store."""
    acknowledged = [t for r in issued.results for t in r["tokens"]]
    returned = collections.Counter(t for r in called.results for t in r["tokens"])
    waiting: set[str] = set()
    held: set[str] = set()
    today = 0
    for hub in hubs:
        snap = await room.snapshot(HubId(hub))
        waiting.update(t.id for t in snap.waiting)
        held.update(t.id for t in snap.held)
        today += len(snap.today)
    ack_set = set(acknowledged)
    lost = ack_set - set(returned) - waiting - held
    return {
        "duplicates": sum(1 for n in returned.values() if n > 1),
        "lost": len(lost),
        "lost_examples": sorted(lost)[:10],
        "tokens_issued_acknowledged": len(acknowledged),
        "tokens_issued_twice": len(acknowledged) - len(ack_set),
        "tokens_called": sum(returned.values()),
        "tokens_still_waiting": len(waiting),
        "tokens_held_for_next_window": len(held),
        "tokens_issued_held": sum(r["held"] for r in issued.results),
        "tokens_called_not_acknowledged": len(set(returned) - ack_set),
        "tokens_today_in_store": today,
        "wrong_state": sum(r["wrong_state"] for r in called.results),
    }


async def run(
    seconds: float,
    hubs: int,
    concurrency: int,
    processes: int,
    redis_url: str | None,
) -> dict[str, Any]:
    """Both phases against our own redis-server (or ``redis_url``), checks, and the report."""
    started = now_iso()
    machine_before = machine()
    run_id = secrets.token_hex(3)
    half = seconds / 2
    with tempfile.TemporaryDirectory(prefix="setu-bench-queue-") as tmpdir:
        tmp = Path(tmpdir)
        layout = write_queue_directory(tmp / "directory.toml", run_id, hubs, concurrency)
        async with contextlib.AsyncExitStack() as stack:
            own: RedisServerProcess | None = None
            if redis_url is None:
                own = await stack.enter_async_context(RedisServerProcess(tmp))
                url = own.url
            else:
                url = redis_url
            store = open_store(url)
            stack.push_async_callback(store.aclose)
            redis_pid = own.pid if own is not None else await _server_pid(store, url)
            server_info: dict[str, Any] = await store.info("server")
            if own is None:
                stack.push_async_callback(_cleanup, store, layout.hubs)
            # Load the scripts once, as a long-running server has them already.
            for script in sorted((Path(__file__).parents[1] / "rooms" / "scripts").glob("*.lua")):
                await store.script_load(script.read_text(encoding="utf-8"))
            room = WaitingRoom(store, Directory.load(tmp / "directory.toml"))
            await open_windows(room, layout.hubs)

            nurses = split(layout.nurses, concurrency, processes)
            doctors = split(layout.doctors, concurrency, processes)
            specs: list[WorkerSpec] = [
                {
                    "index": i,
                    "redis_url": url,
                    "directory": str(tmp / "directory.toml"),
                    "nurses": nurses[i],
                    "doctors": doctors[i],
                }
                for i in range(processes)
            ]
            clients = Clients(specs)
            stack.push_async_callback(clients.stop)
            await clients.start()

            logger.info("issue: %d nurses over %d hubs for %.1fs", concurrency, hubs, half)
            issued = await _measure("issue", half, clients, store, redis_pid)
            logger.info("issue: %d tokens in %.2fs", issued.count, issued.window_s)
            logger.info(
                "call_next: %d doctors until the queues are empty or %.1fs", concurrency, half
            )
            called = await _measure("call_next", half, clients, store, redis_pid)
            logger.info("call_next: %d tokens in %.2fs", called.count, called.window_s)
            checks = await _verify(room, layout.hubs, issued, called)
            if checks["tokens_issued_held"]:
                logger.warning(
                    "%d tokens were held for a later window (a hub's window was full): "
                    "give more --hubs for longer runs",
                    checks["tokens_issued_held"],
                )
            redis_version = str(server_info.get("redis_version", "unknown"))

    issue_figures = issued.figures("issue")
    call_figures = called.figures("call_next")
    redis_cpu = (
        issued.redis_cpu_s + called.redis_cpu_s
        if issued.redis_cpu_s is not None and called.redis_cpu_s is not None
        else None
    )
    targets = {
        "call_next_ops_per_s": [TARGET_CALL_NEXT_OPS_PER_S, ">="],
        "call_next_p99_ms": [TARGET_CALL_NEXT_P99_MS, "<="],
        "duplicates": [0, "=="],
        "lost": [0, "=="],
    }
    met = {
        "call_next_ops_per_s": call_figures["call_next_ops_per_s"] >= TARGET_CALL_NEXT_OPS_PER_S,
        "call_next_p99_ms": (
            call_figures["call_next_p99_ms"] is not None
            and call_figures["call_next_p99_ms"] <= TARGET_CALL_NEXT_P99_MS
        ),
        "duplicates": checks["duplicates"] == 0,
        "lost": checks["lost"] == 0,
    }
    return {
        "benchmark": "queue",
        "date": started,
        "seconds": seconds,
        "hubs": hubs,
        "concurrency": concurrency,
        **issue_figures,
        **call_figures,
        "duplicates": checks["duplicates"],
        "lost": checks["lost"],
        "redis_server_cpu_s": _round(redis_cpu, 3),
        "call_next_exhausted_queues": checks["tokens_still_waiting"] == 0,
        "targets": targets,
        "targets_met": met,
        "clients": {
            "processes": processes,
            "concurrency": concurrency,
            "coroutines_per_process": [len(s["doctors"]) for s in specs],
            "event_loop": "uvloop",
            "redis_client": "redis.asyncio (one connection per in-flight call)",
            "api": "rooms.waiting_room.WaitingRoom (issue, call_next, snapshot)",
            "model": "closed loop: each coroutine awaits its call, then makes the next at once",
            "nurses": len({n for _, n in layout.nurses}),
            "doctors": len(layout.doctors),
            "hubs": list(layout.hubs),
        },
        "redis": {
            "started_by_benchmark": redis_url is None,
            "url": url if redis_url is None else "(given)",
            "version": redis_version,
            "persistence": "off" if redis_url is None else "as configured",
            "cpu_measured": redis_pid is not None,
        },
        "issue": issued.detail(),
        "call_next": called.detail(),
        "checks": checks,
        "method": (
            "latency = time around each awaited WaitingRoom call in its client (Redis, network "
            "and client-side queueing); ops/s = successful calls / (last completion - common "
            "start); CPU = user+system seconds (psutil) of redis-server and of the client "
            "processes over the phase; duplicates = tokens call_next returned more than once; "
            "lost = acknowledged issued tokens neither called nor waiting (nor held for a later "
            "window) at the end"
        ),
        "machine": {**machine_before, "loadavg_end": machine()["loadavg"]},
        "versions": _versions(redis_version),
    }


async def _cleanup(store: Redis, hubs: Sequence[str]) -> None:
    deleted = await _delete_run_keys(store, hubs)
    logger.info("deleted %d keys of this run from the given Redis", deleted)


def _versions(redis_version: str) -> dict[str, str]:
    out = {"python": sys.version.split()[0], "redis-server": redis_version}
    for dist in ("setu", "redis", "uvloop", "psutil"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.queue",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="total time; each phase gets half"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--redis-url",
        help="a Redis to use (default: start redis-server on a free loopback port); "
        "this run's keys are deleted from it at the end",
    )
    parser.add_argument("--hubs", type=int, default=4, help="hubs the load is spread over")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="calls in flight at once over all client processes (nurses, then doctors)",
    )
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--log-level", default="INFO", help="progress on stderr")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.hubs < 1 or args.processes < 1:
        parser.error("--seconds must be > 0, --hubs and --processes >= 1")
    if args.concurrency < max(args.hubs, args.processes):
        parser.error("--concurrency must be at least --hubs and --processes")
    setup_logging(args.log_level)
    try:
        report = run_main(
            run(args.seconds, args.hubs, args.concurrency, args.processes, args.redis_url)
        )
    except asyncio.CancelledError:
        logger.error("terminated; redis-server and clients stopped")
        return EXIT_TERMINATED
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
