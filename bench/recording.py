"""What recording costs the server, and how well the recorded files keep time.

    python -m bench.recording --consults 4 --seconds 20 --json bench-results/recording.json

One Setu ``server.py`` (embedded store) serves ``--consults`` consultations, each set up through
the real protocol as ``bench.relay`` sets them up (sign-in, ``register_patient``, ``call_next``,
``join``, ``offer``).  Consultation 0 is the *probe*: its two client peers encode, live, video
that shows the wall clock as a barcode and audio that beeps on every wall-clock second
(``bench.clock_pattern``), so that its recording can be measured.  The others replay
pre-encoded 640x360 VP8 and Opus, as ``bench.relay``'s clients do.  Every consultation takes
part in every phase, so the phases differ only in recording:

* **A1**: nobody has consented; ``--seconds`` of relaying, not recording;
* **B**: on every consultation the nurse sends ``record_consent`` (the patient, verbally) and the
  doctor ``confirm_consent``; once both sides see ``recording``, ``--seconds`` of recording;
  then the nurse sends ``withdraw_consent``, whose reply comes once the files are closed;
* **A2**: ``--seconds`` of relaying, not recording, again.

Media flows without pause from before A1 to after A2.  Each window starts ``SETTLE_S`` after the
step before it, and the server's CPU (user + system of its process and threads, psutil) is read
at its start and end, so the three windows are equal in length and the one-off work of starting
and stopping the recordings falls outside them (it is reported on its own, as ``transitions``).
Then:

* ``recording_cpu_overhead_per_consult`` = (CPU_B - mean(CPU_A1, CPU_A2)) / (consults x window
  seconds): the server CPU seconds that recording adds per consultation per second.  Taking the
  mean of the windows before and after cancels a steady drift of the machine's load.
* ``av_offset_ms``: the worst of the probe's two files' A/V offsets and of the offset between
  its two files' pictures, in ms;
* ``duration_error_s``: the worst difference between a probe file's duration and the span of the
  recording in the manifest (``recording.started_at`` to ``stopped_at``).

To show where the CPU goes, each window also splits the server's CPU by thread (its event loop,
the threads started since before A1, which are recording's, and the others) and counts the
server's context switches; ``overhead_by_server_thread`` is the overhead split the same way.
``recorded`` compares the packets in every file with the frames sent while recording.

The report is JSON on stdout (and in ``--json``); missed targets are reported, not errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import av
import psutil
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from bench.clock_pattern import BeepAudioTrack, ClockPatternVideoTrack, FileTiming, measure_file
from bench.common import (
    EXIT_TERMINATED,
    KINDS,
    PATIENT,
    Gate,
    ServerProcess,
    SignalClient,
    encode_media,
    enlarge_receive_buffers,
    fraction,
    gather_or_cancel,
    machine,
    no_stun,
    now_iso,
    prefer_vp8_opus,
    process_cpu_seconds,
    run_main,
    setu_server,
    setup_logging,
    silence_remb,
    versions,
    wait_until,
    write_report,
)
from bench.relay import (
    FLOWING_AUDIO,
    FLOWING_VIDEO,
    SETUP_TIMEOUT_S,
    Consult,
    open_setu_consult,
)
from media import aiortc_glue

logger = logging.getLogger("bench.recording")

#: The probe's picture: the size and rate of the replayed media.
PROBE_WIDTH, PROBE_HEIGHT, PROBE_FPS = 640, 360, 15
#: Pause between a consent step and the next window, so that one-off work stays outside it.
SETTLE_S = 1.0
#: The manifests are written after the hang-up; this long at most.
MANIFEST_TIMEOUT_S = 30.0
PHASES = ("A1", "B", "A2")
#: A direction that delivered less than this in a window is listed in the report, after
#: allowing for frames in flight at the window's edges.
SHORT_BELOW = 0.98
EDGE_FRAMES = 2

#: The acceptance targets of ``--consults 4 --seconds 20`` (see ``docs/performance.md``).
TARGET_OVERHEAD_PER_CONSULT = 0.01
TARGET_AV_OFFSET_MS = 100.0
TARGET_DURATION_ERROR_S = 1.0


# ------------------------------------------------------------------------------ the probe


class _CountedClockTrack(ClockPatternVideoTrack):
    """The clock pattern, counting the frames handed to the encoder."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        super().__init__(width, height, fps)
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        self.sent += 1
        return frame


class _CountedBeepTrack(BeepAudioTrack):
    """The beeps, counting the 20 ms frames handed to the encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        self.sent += 1
        return frame


class ClientPeer(Protocol):
    """What the benchmark counts of a client peer, replaying or probing."""

    label: str
    pc: RTCPeerConnection
    received: dict[str, int]

    def sent(self, kind: str) -> int: ...


class ProbePeer:
    """A browser stand-in that encodes the clock pattern and the beeps live (aiortc's VP8 and
    Opus encoders, which answer keyframe requests themselves) and counts, undecoded, what
    arrives, as :class:`bench.common.ReplayPeer` does.  Like it, it sends no REMB."""

    def __init__(self, label: str) -> None:
        aiortc_glue.install()
        self.label = label
        self.pc = RTCPeerConnection(no_stun())
        self._video = _CountedClockTrack(PROBE_WIDTH, PROBE_HEIGHT, PROBE_FPS)
        self._audio = _CountedBeepTrack()
        for track in (self._audio, self._video):
            prefer_vp8_opus(self.pc.addTransceiver(track, direction="sendrecv"))
        self.received = dict.fromkeys(KINDS, 0)
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        kind = str(track.kind)
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        silence_remb(receiver)
        aiortc_glue.tap_track(
            track,
            aiortc_glue.FrameTap(
                asyncio.get_running_loop(),
                on_frame=lambda _frame: self._count(kind),
                on_end=lambda: None,
            ),
        )

    def _count(self, kind: str) -> None:
        self.received[kind] += 1

    def sent(self, kind: str) -> int:
        """Frames of ``kind`` handed to this peer's encoder."""
        return self._video.sent if kind == "video" else self._audio.sent

    async def offer(self) -> str:
        """Create the offer (ICE gathered) and return its SDP."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        enlarge_receive_buffers(self.pc)
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer_sdp: str) -> None:
        """Apply the server's answer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def close(self) -> None:
        """Close the peer connection (stops the tracks)."""
        await self.pc.close()


# ------------------------------------------------------------------------------ consultations


@dataclasses.dataclass
class Consultations:
    """The run's consultations.  ``consults[i]`` holds consultation i's nurse and doctor (and,
    for the replaying ones, their peers); ``pairs[i]`` its spoke and hub peers.  Consultation 0
    is the probe, whose peers live in ``probe``."""

    consults: list[Consult] = dataclasses.field(default_factory=list)
    pairs: list[tuple[ClientPeer, ClientPeer]] = dataclasses.field(default_factory=list)
    probe: list[ProbePeer] = dataclasses.field(default_factory=list)
    probe_room: str = ""

    def directions(self) -> list[tuple[str, ClientPeer, ClientPeer]]:
        """Every (kind, sender, receiver) of every consultation."""
        return [
            (kind, tx, rx)
            for spoke, hub in self.pairs
            for kind in KINDS
            for tx, rx in ((spoke, hub), (hub, spoke))
        ]

    def peers(self) -> list[ClientPeer]:
        return [peer for pair in self.pairs for peer in pair]

    def describe(self) -> str:
        """Each peer's connection state and frames received, for error messages."""
        return "; ".join(
            f"{p.label}: {p.pc.connectionState}, received {p.received}" for p in self.peers()
        )

    async def close(self) -> None:
        """Hang up every consultation (their manifests are then written), close every peer
        connection and socket, whatever fails."""
        try:
            await asyncio.gather(*(c.close() for c in self.consults), return_exceptions=True)
        finally:
            for peer in self.probe:
                with contextlib.suppress(Exception):
                    await peer.close()


async def open_probe_consult(
    base_url: str, nurse_name: str, doctor_name: str, into: Consultations
) -> None:
    """``bench.relay.open_setu_consult``'s flow, with probe peers; fills ``into`` as it goes so
    that :meth:`Consultations.close` releases whatever was opened."""
    consult = Consult()
    into.consults.append(consult)
    nurse, doctor = SignalClient(base_url, nurse_name), SignalClient(base_url, doctor_name)
    consult.users += [nurse, doctor]
    await gather_or_cancel(nurse.connect(), doctor.connect())
    await nurse.request("register_patient", "token_issued", patient=dict(PATIENT))
    opened = await doctor.request("call_next", "room_opened")
    into.probe_room = str(opened["room_id"])
    await gather_or_cancel(
        nurse.request("join", "joined", room_id=into.probe_room),
        doctor.request("join", "joined", room_id=into.probe_room),
    )
    into.probe += [ProbePeer("probe-spoke"), ProbePeer("probe-hub")]
    spoke, hub = into.probe
    offers = await gather_or_cancel(spoke.offer(), hub.offer())
    answers = await gather_or_cancel(
        nurse.request("offer", "answer", sdp=offers[0]),
        doctor.request("offer", "answer", sdp=offers[1]),
    )
    await spoke.accept(answers[0]["sdp"])
    await hub.accept(answers[1]["sdp"])
    into.pairs.append((spoke, hub))


# ------------------------------------------------------------------------------ measuring


@dataclasses.dataclass(frozen=True)
class Mark:
    """The counters at one moment."""

    at: float
    server_cpu_s: float
    client_cpu_s: float
    machine_busy_cpu_s: float
    #: ``(sent, received)`` of each of :meth:`Consultations.directions`.
    flows: tuple[tuple[int, int], ...]
    #: CPU seconds of each live thread of the server, by thread id.
    server_threads: dict[int, float]
    #: Context switches of the server's live threads so far (Linux; 0 elsewhere).
    server_switches: int

    @classmethod
    def take(cls, server: ServerProcess, run: Consultations) -> Mark:
        return cls(
            at=time.monotonic(),
            server_cpu_s=server.cpu_seconds(),
            server_threads=_thread_cpu_seconds(server.pid),
            server_switches=_context_switches(server.pid),
            client_cpu_s=process_cpu_seconds(os.getpid(), descendants=False),
            machine_busy_cpu_s=_busy_cpu_seconds(),
            flows=tuple((tx.sent(kind), rx.received[kind]) for kind, tx, rx in run.directions()),
        )


def _thread_cpu_seconds(pid: int) -> dict[int, float]:
    with contextlib.suppress(psutil.Error):
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    return {}


def _context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every live thread of ``pid``: each time
    one thread hands work to another that sleeps, both switch."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError, ValueError):
            for line in status.read_text(encoding="ascii").splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def _busy_cpu_seconds() -> float:
    """CPU seconds all cores of the machine have spent running anything."""
    times = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in fields))


@dataclasses.dataclass(frozen=True)
class Interval:
    """What happened between two marks: a window, or a consent step."""

    name: str
    consults: int
    kinds: tuple[str, ...]
    #: ``sender->receiver`` of each direction, in the order of ``kinds``.
    labels: tuple[str, ...]
    start: Mark
    end: Mark
    server_pid: int
    #: The server's threads before the first window: the event loop, aiortc's per-peer
    #: threads.  Recording adds one writer thread per consultation (and may start executor
    #: threads for its file work).
    old_threads: frozenset[int]

    @property
    def seconds(self) -> float:
        return self.end.at - self.start.at

    @property
    def server_cpu_s(self) -> float:
        return self.end.server_cpu_s - self.start.server_cpu_s

    @property
    def cpu_per_consult(self) -> float:
        """Server CPU seconds per consultation per second."""
        return self.per_consult(self.server_cpu_s)

    def _flows(self, kind: str) -> list[tuple[int, int]]:
        return [
            (s1 - s0, r1 - r0)
            for k, (s0, r0), (s1, r1) in zip(
                self.kinds, self.start.flows, self.end.flows, strict=True
            )
            if k == kind
        ]

    def sent(self, kind: str) -> int:
        return sum(sent for sent, _ in self._flows(kind))

    def delivered(self, kind: str) -> float:
        """Frames received over frames sent in the interval, over all directions."""
        flows = self._flows(kind)
        return fraction(sum(got for _, got in flows), sum(sent for sent, _ in flows))

    def worst_direction(self, kind: str) -> float:
        return min((fraction(got, sent) for sent, got in self._flows(kind)), default=0.0)

    def server_threads(self) -> dict[str, float]:
        """The server's CPU seconds by thread: ``event_loop``; ``new_threads``, those started
        since before the first window (recording's writers and executor threads); and
        ``other_threads`` (aiortc's, and threads that ended meanwhile)."""
        start, end = self.start.server_threads, self.end.server_threads
        loop = end.get(self.server_pid, 0.0) - start.get(self.server_pid, 0.0)
        new = sum(
            (cpu - start.get(tid, 0.0) for tid, cpu in end.items() if tid not in self.old_threads),
            0.0,
        )
        return {
            "event_loop": loop,
            "new_threads": new,
            "other_threads": self.server_cpu_s - loop - new,
        }

    def per_consult(self, cpu_s: float) -> float:
        """``cpu_s`` as CPU seconds per consultation per second of the interval."""
        return cpu_s / (self.consults * self.seconds)

    def report(self) -> dict[str, Any]:
        client = self.end.client_cpu_s - self.start.client_cpu_s
        busy = self.end.machine_busy_cpu_s - self.start.machine_busy_cpu_s
        out: dict[str, Any] = {
            "seconds": round(self.seconds, 3),
            "server_cpu_s": round(self.server_cpu_s, 3),
            "server_cpu_per_consult": round(self.cpu_per_consult, 5),
            "server_cpu_percent_of_one_core": round(100 * self.server_cpu_s / self.seconds, 1),
            "client_cpu_s": round(client, 3),
            "other_processes_cpu_s": round(max(busy - self.server_cpu_s - client, 0.0), 3),
            **{f"server_{k}_cpu_s": round(v, 3) for k, v in self.server_threads().items()},
            "server_context_switches_per_s": round(
                (self.end.server_switches - self.start.server_switches) / self.seconds
            ),
        }
        for kind in KINDS:
            flows = self._flows(kind)
            out[f"{kind}_sent"] = sum(sent for sent, _ in flows)
            out[f"{kind}_received"] = sum(got for _, got in flows)
            out[f"{kind}_frames_delivered"] = round(self.delivered(kind), 4)
            out[f"worst_direction_{kind}_delivered"] = round(self.worst_direction(kind), 4)
        # Directions that lost more than the frames in flight at the window's edges.
        out["directions_short"] = {
            f"{label} {kind}": round(fraction(r1 - r0, s1 - s0), 4)
            for kind, label, (s0, r0), (s1, r1) in zip(
                self.kinds, self.labels, self.start.flows, self.end.flows, strict=True
            )
            if fraction(r1 - r0 + EDGE_FRAMES, s1 - s0) < SHORT_BELOW
        }
        return out


class Meter:
    """Reads the counters of one server and one run's consultations."""

    def __init__(self, server: ServerProcess, run: Consultations) -> None:
        self._server = server
        self._run = run
        self._kinds = tuple(kind for kind, _, _ in run.directions())
        self._labels = tuple(f"{tx.label}->{rx.label}" for _, tx, rx in run.directions())
        self._old_threads = frozenset(_thread_cpu_seconds(server.pid))

    def mark(self) -> Mark:
        """The counters now."""
        return Mark.take(self._server, self._run)

    def interval(self, name: str, start: Mark, end: Mark) -> Interval:
        """What happened between two marks."""
        return Interval(
            name=name,
            consults=len(self._run.pairs),
            kinds=self._kinds,
            labels=self._labels,
            start=start,
            end=end,
            server_pid=self._server.pid,
            old_threads=self._old_threads,
        )

    async def window(self, name: str, seconds: float) -> Interval:
        """``seconds`` of media as it flows; the counters are read at both ends."""
        start = self.mark()
        await asyncio.sleep(seconds)
        result = self.interval(name, start, self.mark())
        logger.info("%s: %s", name, result.report())
        return result


async def start_recording(consults: Sequence[Consult]) -> list[float]:
    """Consent on every consultation at once: the nurse records it, the doctor confirms it.

    Returns when both sides of every consultation see ``recording``, with the wall-clock moment
    each doctor's confirmation was answered.
    """

    async def one(consult: Consult) -> float:
        nurse, doctor = consult.users
        await nurse.request("record_consent", "consent", given_by="patient", method="verbal")
        confirmed_at = 0.0

        async def confirm() -> dict[str, Any]:
            nonlocal confirmed_at
            reply = await doctor.request("confirm_consent", "consent")
            confirmed_at = time.time()
            return reply

        reply, pushed = await gather_or_cancel(
            confirm(), nurse.expect("consent", where=lambda m: m.get("state") == "confirmed")
        )
        for msg in (reply, pushed):
            if msg.get("recording") != "recording":
                raise RuntimeError(f"consent confirmed but recording is {msg.get('recording')}")
        return confirmed_at

    return await gather_or_cancel(*(one(c) for c in consults))


async def stop_recording(consults: Sequence[Consult]) -> list[float]:
    """The nurse withdraws the consent on every consultation at once.

    The server answers once the files are closed.  Returns the wall-clock moment each
    withdrawal was sent.
    """

    async def one(consult: Consult) -> float:
        nurse, doctor = consult.users
        sent_at = time.time()
        reply, pushed = await gather_or_cancel(
            nurse.request("withdraw_consent", "consent"),
            doctor.expect("consent", where=lambda m: m.get("state") == "withdrawn"),
        )
        for msg in (reply, pushed):
            if msg.get("recording") != "stopped":
                raise RuntimeError(f"consent withdrawn but recording is {msg.get('recording')}")
        return sent_at

    return await gather_or_cancel(*(one(c) for c in consults))


# ------------------------------------------------------------------------------ the files


async def wait_for_manifests(data_dir: Path, consults: int) -> list[Path]:
    """Each consultation's folder, once its manifest is written (after the hang-up).

    Consultation i is the only one of hub ``bench-hub-i``, and a room id starts with its hub.
    """

    def found() -> list[Path]:
        return [
            path.parent
            for i in range(consults)
            for path in data_dir.glob(f"consultations/*/bench-hub-{i}.*/manifest.json")
        ]

    await wait_until(
        lambda: len(found()) == consults, MANIFEST_TIMEOUT_S, "the manifests were not written"
    )
    return found()


def _seconds_between(start_iso: str, end_iso: str) -> float:
    start = datetime.datetime.fromisoformat(start_iso)
    return (datetime.datetime.fromisoformat(end_iso) - start).total_seconds()


def count_packets(path: Path) -> dict[str, int]:
    """Packets of each kind in a recorded file, demuxed, not decoded."""
    counts = dict.fromkeys(KINDS, 0)
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size and packet.stream.type in counts:
                counts[packet.stream.type] += 1
    return counts


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def _latency_at_edges(timing: FileTiming, t0: float) -> dict[str, float | None]:
    """Capture-to-file latency of the video over the first and the last tenth of the frames
    read, in ms (median of each)."""
    latencies = [at - ms / 1000 + t0 for at, ms in timing.stamps]
    if not latencies:
        return {
            "capture_to_file_video_ms_first_tenth": None,
            "capture_to_file_video_ms_last_tenth": None,
        }
    tenth = max(1, len(latencies) // 10)
    return {
        "capture_to_file_video_ms_first_tenth": _ms(statistics.median(latencies[:tenth])),
        "capture_to_file_video_ms_last_tenth": _ms(statistics.median(latencies[-tenth:])),
    }


def analyse_probe(
    folder: Path, confirmed_at: float, withdrawn_at: float
) -> tuple[dict[str, Any], float | None, float | None]:
    """Measure the probe's two files; returns the details, ``av_offset_ms`` and
    ``duration_error_s`` (``None`` when a file could not be read)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    recording = manifest["recording"]
    span = _seconds_between(recording["started_at"], recording["stopped_at"])
    client_span = withdrawn_at - confirmed_at
    t0 = datetime.datetime.fromisoformat(recording["t0"]).timestamp()
    listed = {f["name"]: f for f in manifest["files"]}
    timings: dict[str, FileTiming] = {}
    files: dict[str, Any] = {}
    for seat in ("spoke", "hub"):
        name = f"{seat}-1.webm"
        if name not in listed or not (folder / name).is_file():
            files[seat] = {"file": name, "error": "not recorded"}
            continue
        timing = timings[seat] = measure_file(folder / name)
        files[seat] = {
            "file": name,
            "duration_s": round(timing.duration_s, 3),
            "duration_error_s": round(abs(timing.duration_s - span), 3),
            "duration_error_vs_client_s": round(abs(timing.duration_s - client_span), 3),
            "av_offset_ms": _ms(timing.av_offset_s),
            # File time minus wall-clock capture time, with the file's time 0 at t0: how long
            # media took from the probe's clock to its place in the file.
            "capture_to_file_video_ms": _ms(
                None if timing.video_offset_s is None else timing.video_offset_s + t0
            ),
            "capture_to_file_audio_ms": _ms(
                None if timing.audio_offset_s is None else timing.audio_offset_s + t0
            ),
            # The same at the start and at the end of the file: a difference means the file's
            # timeline drifted or jumped against the wall clock.
            **_latency_at_edges(timing, t0),
            "video_frames_decoded": timing.video_frames,
            "video_frames_read": len(timing.stamps),
            "beeps": len(timing.onsets),
            "manifest_first_s": listed[name]["first_s"],
            "manifest_last_s": listed[name]["last_s"],
            "manifest_gaps": len(listed[name]["gaps"]),
        }
    offsets: list[float | None] = [timings[s].av_offset_s if s in timings else None for s in files]
    spoke, hub = (timings[s].video_offset_s if s in timings else None for s in ("spoke", "hub"))
    between = None if spoke is None or hub is None else spoke - hub
    offsets.append(between)
    av_offset_ms = None if None in offsets else max(abs(o) * 1000 for o in offsets if o is not None)
    errors = [f.get("duration_error_s") for f in files.values()]
    duration_error = None if None in errors else max(e for e in errors if e is not None)
    detail = {
        "room_id": manifest["consultation"],
        "media": f"live VP8 {PROBE_WIDTH}x{PROBE_HEIGHT} {PROBE_FPS} fps + Opus (aiortc encoders)",
        "recording_span_s": round(span, 3),
        "recording_span_client_s": round(client_span, 3),
        "video_offset_spoke_minus_hub_ms": _ms(between),
        "files": files,
    }
    return detail, (None if av_offset_ms is None else round(av_offset_ms, 1)), duration_error


def count_recorded(folders: Sequence[Path]) -> dict[str, Any]:
    """Packets in every recorded file of every consultation, and the manifests' gaps."""
    totals = dict.fromkeys(KINDS, 0)
    files = gaps = 0
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        for listed in manifest["files"]:
            files += 1
            gaps += len(listed["gaps"])
            for kind, count in count_packets(folder / listed["name"]).items():
                totals[kind] += count
    return {"files": files, "gaps": gaps, **{f"{k}_frames": n for k, n in totals.items()}}


# ------------------------------------------------------------------------------ the run


def _ice_pair(pc: RTCPeerConnection) -> str | None:
    """``local -> remote`` address of the ICE candidate pair a client peer uses.

    Every host address takes part in ICE, so a pair may run over an interface that goes away
    during the run (and the connection with it); this names it.  Reaches into aiortc's and
    aioice's private attributes, which only a benchmark may do.
    """
    for transceiver in pc.getTransceivers():
        dtls: Any = transceiver.sender.transport
        if dtls is None:
            continue
        pair: Any = dtls.transport.iceGatherer._connection._nominated.get(1)
        if pair is not None:
            return f"{pair.local_candidate.host} -> {pair.remote_candidate.host}"
    return None


def _log_size(server: ServerProcess) -> int:
    return server.log_path.stat().st_size


def _server_log_problems(server: ServerProcess, offset: int) -> list[str]:
    """The first warnings and errors the server logged after ``offset`` bytes of its log."""
    with server.log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line][:20]


def _data_dir(server: ServerProcess) -> Path:
    return Path(server.argv[server.argv.index("--data-dir") + 1])


@dataclasses.dataclass(frozen=True)
class Measured:
    """The three windows, the two consent steps, and the probe's moments as its client saw
    them (wall clock)."""

    windows: tuple[Interval, Interval, Interval]
    start: Interval
    stop: Interval
    #: From every consultation recording to the first withdrawal sent.
    recording: Interval
    probe_confirmed_at: float
    probe_withdrawn_at: float
    #: Each client peer's ICE pair once media flowed, and its state after the last window.
    peers: dict[str, dict[str, str | None]]


async def _measure_phases(
    server: ServerProcess, run: Consultations, warmup_s: float, seconds: float
) -> Measured:
    """The three windows and the two consent steps between them."""
    try:
        await wait_until(
            lambda: all(
                p.received["video"] >= FLOWING_VIDEO and p.received["audio"] >= FLOWING_AUDIO
                for p in run.peers()
            ),
            SETUP_TIMEOUT_S,
            "media did not reach every client",
        )
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {run.describe()}") from None
    pairs = {p.label: _ice_pair(p.pc) for p in run.peers()}
    logger.info("media flows to all %d clients; warming up %.1fs", len(run.peers()), warmup_s)
    await asyncio.sleep(warmup_s)
    meter = Meter(server, run)
    a1 = await meter.window("A1", seconds)

    before_start = meter.mark()
    confirmed = await start_recording(run.consults)
    recording = meter.mark()
    logger.info("recording on all %d consultations", len(run.consults))
    await asyncio.sleep(SETTLE_S)
    b = await meter.window("B", seconds)

    before_stop = meter.mark()
    withdrawn = await stop_recording(run.consults)
    stopped = meter.mark()
    logger.info("recordings stopped and closed")
    await asyncio.sleep(SETTLE_S)
    a2 = await meter.window("A2", seconds)
    return Measured(
        windows=(a1, b, a2),
        start=meter.interval("start", before_start, recording),
        stop=meter.interval("stop", before_stop, stopped),
        recording=meter.interval("recording", recording, before_stop),
        probe_confirmed_at=confirmed[0],
        probe_withdrawn_at=withdrawn[0],
        peers={
            p.label: {"state": str(p.pc.connectionState), "ice_pair": pairs[p.label]}
            for p in run.peers()
        },
    )


async def run_bench(consults: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """Start the server, open the consultations, measure, hang up, read the files."""
    started = now_iso()
    machine_before = machine()
    media = encode_media()
    logger.info("media encoded once: %s", media.describe())
    budget = 2 * SETUP_TIMEOUT_S + warmup_s + 3 * (seconds + SETTLE_S) + 2 * MANIFEST_TIMEOUT_S
    with tempfile.TemporaryDirectory(prefix="setu-bench-") as tmpdir:
        server, pairs = setu_server(Path(tmpdir), consults)
        gate = Gate()  # the replaying tracks' pause switch; never paused here
        run = Consultations()
        async with asyncio.timeout(budget), server:
            try:
                nurse, doctor = pairs[0]
                await open_probe_consult(server.base_url, nurse, doctor, run)
                for i, (nurse, doctor) in enumerate(pairs[1:], start=1):
                    consult = await open_setu_consult(
                        server.base_url, nurse, doctor, media, gate, i
                    )
                    run.consults.append(consult)
                    spoke, hub = consult.peers
                    run.pairs.append((spoke, hub))
                logger.info("%d consultations negotiated", len(run.consults))
                log_offset = await asyncio.to_thread(_log_size, server)
                measured = await _measure_phases(server, run, warmup_s, seconds)
            except Exception:
                logger.error("the server's last log lines:\n%s", server.log_tail())
                raise
            finally:
                await run.close()
            folders = await wait_for_manifests(_data_dir(server), consults)
            problems = await asyncio.to_thread(_server_log_problems, server, log_offset)
        probe_folder = next(f for f in folders if f.name == run.probe_room)
        probe, av_offset_ms, duration_error = await asyncio.to_thread(
            analyse_probe,
            probe_folder,
            measured.probe_confirmed_at,
            measured.probe_withdrawn_at,
        )
        recorded = await asyncio.to_thread(count_recorded, folders)

    a1, b, a2 = measured.windows
    baseline = statistics.mean([a1.cpu_per_consult, a2.cpu_per_consult])
    overhead = b.cpu_per_consult - baseline
    # The same difference, by thread of the server: where recording's CPU goes.
    threads = {name: w.server_threads() for name, w in zip(PHASES, (a1, b, a2), strict=True)}
    breakdown = {
        part: round(
            b.per_consult(threads["B"][part])
            - statistics.mean(
                [a1.per_consult(threads["A1"][part]), a2.per_consult(threads["A2"][part])]
            ),
            5,
        )
        for part in threads["B"]
    }
    while_recording = measured.recording
    for kind in KINDS:
        recorded[f"{kind}_sent_while_recording"] = while_recording.sent(kind)
        recorded[f"{kind}_fraction"] = round(
            fraction(recorded[f"{kind}_frames"], while_recording.sent(kind)), 4
        )
    targets: dict[str, list[Any]] = {
        "recording_cpu_overhead_per_consult": [TARGET_OVERHEAD_PER_CONSULT, "<="],
        "av_offset_ms": [TARGET_AV_OFFSET_MS, "<="],
        "duration_error_s": [TARGET_DURATION_ERROR_S, "<="],
    }
    met = {
        "recording_cpu_overhead_per_consult": overhead <= TARGET_OVERHEAD_PER_CONSULT,
        "av_offset_ms": av_offset_ms is not None and av_offset_ms <= TARGET_AV_OFFSET_MS,
        "duration_error_s": duration_error is not None
        and duration_error <= TARGET_DURATION_ERROR_S,
    }
    windows = dict(zip(PHASES, (a1, b, a2), strict=True))
    reports = {n: w.report() for n, w in windows.items()}
    # Figures of a run in which some media stopped flowing are not comparable to others.
    complete = recorded["files"] == 2 * consults and not any(
        r["directions_short"] for r in reports.values()
    )
    if not complete:
        logger.warning(
            "media did not flow in full, the figures are not comparable: short %s; peers %s",
            {n: r["directions_short"] for n, r in reports.items() if r["directions_short"]},
            measured.peers,
        )
    return {
        "benchmark": "recording",
        "date": started,
        "consults": consults,
        "seconds": seconds,
        "warmup_seconds": warmup_s,
        "recording_cpu_overhead_per_consult": round(overhead, 5),
        "av_offset_ms": av_offset_ms,
        "duration_error_s": duration_error,
        "overhead_by_server_thread": breakdown,
        "cpu_per_consult": {n: round(w.cpu_per_consult, 5) for n, w in windows.items()},
        "cpu_ratio_recording": round(b.cpu_per_consult / baseline, 3) if baseline > 0 else None,
        "baseline_drift_per_consult": round(a2.cpu_per_consult - a1.cpu_per_consult, 5),
        "video_frames_delivered": {n: round(w.delivered("video"), 4) for n, w in windows.items()},
        "audio_frames_delivered": {n: round(w.delivered("audio"), 4) for n, w in windows.items()},
        "media_complete": complete,
        "targets": targets,
        "targets_met": met,
        "phases": reports,
        "transitions": {
            name: {
                "seconds": round(step.seconds, 3),
                "server_cpu_s": round(step.server_cpu_s, 3),
            }
            for name, step in (("start", measured.start), ("stop", measured.stop))
        },
        "probe": probe,
        "recorded": recorded,
        "client_peers": measured.peers,
        "server_log_warnings": problems,
        "media": media.describe(),
        "method": (
            "media flows throughout; windows A1 (no consent), B (every consultation recording) "
            "and A2 (consent withdrawn, files closed) are equal, each starting "
            f"{SETTLE_S:g}s after the step before it; server CPU = user+system seconds of the "
            "server process and its threads (psutil) over each window; overhead = "
            "cpu_per_consult_B - mean(cpu_per_consult_A1, cpu_per_consult_A2), where "
            "cpu_per_consult = CPU / (consults x window seconds); delivered = frames received / "
            "frames the other side sent in the window, all directions; av_offset_ms = worst "
            "of each probe file's |video - audio offset| and |spoke - hub video offset|; "
            "duration_error_s = worst |probe file duration (last - first packet) - the "
            "manifest's recording span (started_at to stopped_at)|"
        ),
        "machine": {**machine_before, "loadavg_end": machine()["loadavg"]},
        "versions": versions(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.recording",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--consults", type=int, default=4, help="consultations, probe included")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of flowing media before the first window"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--log-level", default="INFO", help="progress on stderr")
    args = parser.parse_args(argv)
    if args.consults < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--consults must be >= 1, --seconds > 0 and --warmup >= 0")
    setup_logging(args.log_level)
    try:
        report = run_main(run_bench(args.consults, args.seconds, args.warmup))
    except asyncio.CancelledError:
        logger.error("terminated; server stopped")
        return EXIT_TERMINATED
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
