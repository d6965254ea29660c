"""What the benchmarks share: server processes, a signed-in protocol client, CPU accounting,
pre-encoded media and client peers that replay it without encoding and count what arrives
without decoding.

Nothing here keeps state at module level; every object belongs to one benchmark run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fractions
import json
import logging
import math
import os
import platform
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any, Self, TypeVar

import aiohttp
import av
import numpy as np
import psutil
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media import aiortc_glue
from media.frames import AUDIO_CLOCK, VIDEO_CLOCK, EncodedFrame, vp8_is_keyframe

logger = logging.getLogger("bench")

#: The repository root: ``server.py`` lives here and the server subprocesses run from here.
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("audio", "video")
#: The patient every benchmark nurse registers.
PATIENT: Mapping[str, Any] = MappingProxyType(
    {"name": "Bench Patient", "age": 40, "sex": "female", "complaint": "benchmark visit"}
)
BENCH_PASSWORD = "bench-password-1"
#: Opus packets are 20 ms long.
AUDIO_PACKET_S = 0.020
#: Exit status of a benchmark stopped by SIGTERM (128 + 15), after it cleaned up.
EXIT_TERMINATED = 143

T = TypeVar("T")


# ------------------------------------------------------------------------------ small helpers


#: A hub's service section that serves around the clock, so a run at any hour finds it open.
ALWAYS_OPEN_SERVICE = [
    "[[hubs.service.windows]]",
    'open = "00:00"',
    'close = "24:00"',
    "",
]


def redis_server_argv(
    exe: str, port: int, directory: Path, appendonly: str = "no", appendfsync: str = "everysec"
) -> list[str]:
    """The command line of a redis-server of our own: loopback only, no RDB snapshots."""
    return [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        appendonly,
        "--appendfsync",
        appendfsync,
        "--dir",
        str(directory),
        "--protected-mode",
        "yes",
        "--loglevel",
        "warning",
    ]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fraction(part: int, whole: int) -> float:
    """``part / whole``, 0.0 when nothing was expected."""
    return part / whole if whole else 0.0


def versions() -> dict[str, str]:
    """Versions of what the figures depend on: Python, the media stack and the host."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("setu", "aiortc", "av", "aiohttp", "aioice", "pylibsrtp", "psutil", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    libs: Mapping[str, Any] = getattr(av, "library_versions", {})
    for name in ("libavcodec", "libavformat"):
        if name in libs:
            out[name] = ".".join(str(part) for part in libs[name])
    return out


def machine() -> dict[str, Any]:
    """The machine the figures were taken on, and how busy it was."""
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpu_model": _cpu_model(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def now_iso() -> str:
    """The current UTC time, to the second, for reports."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def process_cpu_seconds(pid: int, *, descendants: bool = True) -> float:
    """User plus system CPU seconds of process ``pid`` and its threads, and by default of all
    its descendants (live ones, and those it has waited for)."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    total = float(times.user + times.system)
    if not descendants:
        return total
    total += float(times.children_user + times.children_system)
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            child_times = child.cpu_times()
            total += float(child_times.user + child_times.system)
    return total


def write_report(report: Mapping[str, Any], path: Path | None) -> None:
    """Print ``report`` as JSON on stdout and, when ``path`` is given, write it there too."""
    text = json.dumps(report, indent=2, sort_keys=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def gather_or_cancel(*aws: Awaitable[T]) -> list[T]:
    """Await all of ``aws`` concurrently; if one fails, cancel and await the rest, then raise."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def run_main(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, where SIGTERM cancels the run like Ctrl-C does.

    Either way every ``finally`` block runs, so the servers a benchmark started are stopped;
    a cancelled run raises :class:`asyncio.CancelledError` or :class:`KeyboardInterrupt`.
    """

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(guarded())


def setup_logging(level: str) -> None:
    """Log the benchmark's progress on stderr (stdout carries only the JSON report)."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiortc and aioice log every packet at DEBUG; their INFO is noise here.
    for noisy in ("aiortc", "aioice"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


# ------------------------------------------------------------------------------ servers


def write_directory(path: Path, consults: int) -> list[tuple[str, str]]:
    """A directory TOML with one hub, spoke, nurse and doctor per consultation.

    Each consultation gets a hub of its own so that ``call_next`` by doctor ``i`` always calls
    the patient that nurse ``i`` registered.  Returns the ``(nurse, doctor)`` usernames.
    """
    lines = [
        "# Generated by bench/common.py for a benchmark run.",
        "[[blocks]]",
        'id = "bench-block"',
        'name = "Benchmark block"',
        "",
    ]
    pairs = []
    for i in range(consults):
        nurse, doctor = f"nurse.bench-{i}", f"dr.bench-{i}"
        pairs.append((nurse, doctor))
        lines += [
            "[[hubs]]",
            f'id = "bench-hub-{i}"',
            f'name = "Benchmark hub {i}"',
            'timezone = "Asia/Kolkata"',
            "",
            *ALWAYS_OPEN_SERVICE,
            "[[spokes]]",
            f'id = "bench-spoke-{i}"',
            f'name = "Benchmark spoke {i}"',
            'block = "bench-block"',
            f'hub = "bench-hub-{i}"',
            "",
            "[[users]]",
            f'username = "{nurse}"',
            f'name = "Bench Nurse {i}"',
            'role = "nurse"',
            f'spoke = "bench-spoke-{i}"',
            "",
            "[[users]]",
            f'username = "{doctor}"',
            f'name = "Bench Doctor {i}"',
            'role = "doctor"',
            f'hub = "bench-hub-{i}"',
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return pairs


def _child_env() -> dict[str, str]:
    # A SETU_* variable in the caller's environment (a real Redis, say) must not leak into a
    # benchmark server: it runs on the embedded store with exactly the flags given.
    return {k: v for k, v in os.environ.items() if not k.startswith("SETU_")}


class ServerProcess:
    """A server in a subprocess of its own, ready once ``ready_path`` answers 200.

    Use as ``async with``: leaving the block always terminates the process (and kills it if it
    does not stop in time).  Its output goes to ``log_path``.
    """

    def __init__(
        self, name: str, argv: Sequence[str], port: int, log_path: Path, ready_path: str = "/"
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._ready_path = ready_path
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def cpu_seconds(self) -> float:
        """CPU seconds the server process (and any children) used so far."""
        return process_cpu_seconds(self.pid)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it answers HTTP."""
        self._log = self.log_path.open("wb")
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=ROOT,
            env=_child_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        logger.info("%s: started pid %d on port %d", self.name, self._proc.pid, self.port)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(
                        self.base_url + self._ready_path,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=2),
                    ) as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 15.0) -> None:
        """Terminate the process, kill it if it lingers, and wait for it (idempotent)."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    logger.warning("%s: did not stop in %.0fs; killing it", self.name, timeout)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            elif proc is not None:
                await proc.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def setu_server(
    tmp: Path, consults: int, log_level: str = "WARNING"
) -> tuple[ServerProcess, list[tuple[str, str]]]:
    """A Setu ``server.py`` process on the embedded store with one hub per consultation."""
    directory = tmp / "directory.toml"
    pairs = write_directory(directory, consults)
    port = free_port()
    argv = [
        sys.executable,
        str(ROOT / "server.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--demo-password",
        BENCH_PASSWORD,
        "--node-id",
        "bench",
        "--directory",
        str(directory),
        "--data-dir",
        str(tmp / "setu-data"),
        "--secret-key",
        "bench-secret",
        "--log-level",
        log_level,
    ]
    return ServerProcess("setu", argv, port, tmp / "setu.log", ready_path="/login"), pairs


#: Headless Chromium as the benchmarks and browser tests run it: our own headless flag (the
#: Debian wrapper's are not used), fake camera and microphone, no background traffic, real
#: host candidates instead of mDNS names.
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
)


# ------------------------------------------------------------------------------ signalling


class SignalClient:
    """A signed-in Setu user on the websocket protocol, as a browser page would be."""

    def __init__(self, base_url: str, username: str) -> None:
        self.base_url = base_url
        self.username = username
        # Each user has a cookie jar of their own, as each browser does.
        self._http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 1
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def connect(self, password: str = BENCH_PASSWORD) -> dict[str, Any]:
        """Sign in (``POST /login``), open ``/ws`` and return the ``welcome`` message."""
        async with self._http.post(
            self.base_url + "/login",
            data={"username": self.username, "password": password},
            allow_redirects=False,
        ) as resp:
            if resp.status != 303:
                raise RuntimeError(f"{self.username}: login answered {resp.status}")
        self._ws = await self._http.ws_connect(
            self.base_url + "/ws", headers={"Origin": self.base_url}, heartbeat=None
        )
        self._reader = asyncio.get_running_loop().create_task(
            self._read(self._ws), name=f"ws reader {self.username}"
        )
        return await self.expect("welcome")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.inbox.put_nowait(json.loads(msg.data))
        self.inbox.put_nowait({"type": "_closed", "code": ws.close_code})

    async def send(self, type_: str, **fields: Any) -> int:
        """Send one protocol message; returns its request id."""
        if self._ws is None:
            raise RuntimeError(f"{self.username}: not connected")
        rid = self._next_id
        self._next_id += 1
        await self._ws.send_str(json.dumps({"v": 1, "type": type_, "id": rid, **fields}))
        return rid

    async def expect(
        self,
        type_: str,
        timeout: float = 20.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The next message of ``type_`` (others are skipped); raises on an error message."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if msg["type"] == type_ and (where is None or where(msg)):
                    return msg
                if msg["type"] in ("error", "_closed"):
                    raise RuntimeError(f"{self.username}: {msg} while waiting for {type_}")

    async def request(
        self, type_: str, reply: str, timeout: float = 20.0, **fields: Any
    ) -> dict[str, Any]:
        """Send a message and wait for the reply that answers it."""
        rid = await self.send(type_, **fields)
        return await self.expect(reply, timeout, where=lambda m: m.get("re") == rid)

    async def close(self) -> None:
        """Close the websocket and the HTTP session (idempotent)."""
        try:
            if self._ws is not None:
                await self._ws.close()
        finally:
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
                self._reader = None
            await self._http.close()


# ------------------------------------------------------------------------------ media


@dataclass(frozen=True)
class EncodedMedia:
    """Client media encoded once, replayed in a loop by every client peer."""

    width: int
    height: int
    fps: int
    video: tuple[bytes, ...]
    keyframes: tuple[bool, ...]
    audio: tuple[bytes, ...]
    keyframe_interval_s: float

    @property
    def video_kbps(self) -> float:
        """Mean VP8 bitrate of the loop."""
        return sum(map(len, self.video)) * 8 / (len(self.video) / self.fps) / 1000

    @property
    def audio_kbps(self) -> float:
        """Mean Opus bitrate of the loop."""
        return sum(map(len, self.audio)) * 8 / (len(self.audio) * AUDIO_PACKET_S) / 1000

    def describe(self) -> dict[str, Any]:
        """The media's parameters, for reports."""
        return {
            "video": f"VP8 {self.width}x{self.height} {self.fps} fps",
            "video_kbps": round(self.video_kbps, 1),
            "keyframe_interval_s": self.keyframe_interval_s,
            "video_loop_frames": len(self.video),
            "audio": "Opus 48 kHz mono, 20 ms packets",
            "audio_kbps": round(self.audio_kbps, 1),
            "audio_loop_packets": len(self.audio),
        }


def _synthetic_picture(
    n: int,
    width: int,
    height: int,
    texture: np.ndarray[Any, np.dtype[np.uint8]],
    ramp: np.ndarray[Any, np.dtype[np.int64]],
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Frame ``n`` of a panning textured background with a moving block: real work for VP8."""
    offset = (n * 3) % width
    img = texture[:height, offset : offset + width] // 2
    img = img + (((ramp + n * 5) % 256) // 2).astype(np.uint8)[:, :, None]
    cx = int(width / 2 + width * 0.3 * math.sin(n / 10))
    cy = int(height / 2 + height * 0.28 * math.cos(n / 7))
    size = max(8, height // 9)
    img[max(0, cy - size) : cy + size, max(0, cx - size) : cx + size] = (255, 200, 50)
    return np.ascontiguousarray(img, dtype=np.uint8)


def encode_media(
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    loop_s: float = 6.0,
    video_bitrate: int = 500_000,
    keyframe_interval_s: float = 2.0,
    audio_bitrate: int = 32_000,
) -> EncodedMedia:
    """Encode a loop of synthetic video (libvpx, realtime CBR) and audio (libopus, 20 ms).

    Keyframes are forced every ``keyframe_interval_s`` and the loop starts on one, so the
    replayed stream stays decodable across the wrap.
    """
    frames = round(loop_s * fps)
    kf_every = max(1, round(keyframe_interval_s * fps))
    if frames % kf_every:
        frames += kf_every - frames % kf_every
    codec: Any = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.bit_rate = video_bitrate
    codec.gop_size = 10 * frames  # keyframes are placed by hand below
    rate = str(video_bitrate)
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "auto-alt-ref": "0",
        "minrate": rate,
        "maxrate": rate,
        "bufsize": rate,
        "undershoot-pct": "100",
        "overshoot-pct": "15",
    }
    rng = np.random.default_rng(20240601)
    texture = rng.integers(0, 256, (height // 8 + 1, 2 * width // 8 + 1, 3), dtype=np.uint8)
    texture = texture.repeat(8, axis=0).repeat(8, axis=1)
    ramp = np.arange(width, dtype=np.int64)[None, :].repeat(height, axis=0)
    video: list[bytes] = []
    for n in range(frames):
        picture = _synthetic_picture(n, width, height, texture, ramp)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = n
        frame.time_base = fractions.Fraction(1, fps)
        if n % kf_every == 0:
            frame.pict_type = av.video.frame.PictureType.I
        video.extend(bytes(p) for p in codec.encode(frame))
    video.extend(bytes(p) for p in codec.encode(None))
    if len(video) != frames:
        raise RuntimeError(f"libvpx gave {len(video)} packets for {frames} frames")

    audio_codec: Any = av.CodecContext.create("libopus", "w")
    audio_codec.sample_rate = AUDIO_CLOCK
    audio_codec.format = "s16"
    audio_codec.layout = "mono"
    audio_codec.bit_rate = audio_bitrate
    audio_codec.options = {"application": "voip", "frame_duration": "20"}
    samples_per_packet = round(AUDIO_CLOCK * AUDIO_PACKET_S)
    t = np.arange(round(loop_s * AUDIO_CLOCK)) / AUDIO_CLOCK
    # A voiced, syllable-rate modulated tone with a little noise: steady work for Opus.
    voice = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.1 * np.sin(2 * np.pi * 360 * t)
    signal = voice * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)
    pcm = (signal * 32767).astype(np.int16)
    audio: list[bytes] = []
    for start in range(0, pcm.size - samples_per_packet + 1, samples_per_packet):
        chunk = pcm[None, start : start + samples_per_packet]
        aframe = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        aframe.sample_rate = AUDIO_CLOCK
        aframe.pts = start
        audio.extend(bytes(p) for p in audio_codec.encode(aframe))
    audio.extend(bytes(p) for p in audio_codec.encode(None))
    return EncodedMedia(
        width=width,
        height=height,
        fps=fps,
        video=tuple(video),
        keyframes=tuple(vp8_is_keyframe(v) for v in video),
        audio=tuple(audio),
        keyframe_interval_s=kf_every / fps,
    )


class Gate:
    """Lets every replaying track of a run pause and resume together."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        """Whether the tracks may send."""
        return self._open.is_set()

    def pause(self) -> None:
        """Stop sending after the frame each track is about to send."""
        self._open.clear()

    def resume(self) -> None:
        """Send again, on a fresh schedule."""
        self._open.set()

    async def wait_open(self) -> None:
        """Return once the gate is open."""
        await self._open.wait()


class ReplayTrack(MediaStreamTrack):
    """Sends pre-encoded frames at their real pace, looping, with continuing timestamps.

    aiortc's sender packs anything that is not a decoded frame without encoding it, so this
    costs the client almost nothing.  ``sent`` counts the frames handed to the sender.  Like a
    browser, a video track answers a keyframe request (PLI/FIR) with a keyframe: it jumps to
    the next one in the loop.

    Each (re)start waits a random part of a frame period first.  Browsers' clocks are
    independent; tracks started together in one process would otherwise send on the same
    instants, and a server would read the packets of all its rooms in one wake-up, an economy
    that real clients do not give it (and that favours a server holding many rooms).
    """

    def __init__(self, kind: str, media: EncodedMedia, gate: Gate) -> None:
        super().__init__()
        self.kind = kind
        self._gate = gate
        if kind == "video":
            self._frames, self._keyframes = media.video, media.keyframes
            self._period = 1 / media.fps
            self._step, self._time_base = (
                VIDEO_CLOCK // media.fps,
                fractions.Fraction(1, VIDEO_CLOCK),
            )
        else:
            self._frames, self._keyframes = media.audio, tuple(True for _ in media.audio)
            self._period = AUDIO_PACKET_S
            self._step = round(AUDIO_CLOCK * AUDIO_PACKET_S)
            self._time_base = fractions.Fraction(1, AUDIO_CLOCK)
        self._n = 0
        self._index = 0
        self._next_at: float | None = None
        self._keyframe_wanted = False
        self.sent = 0
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        """Make the next video frame a keyframe (the receiver lost data or is starting)."""
        self.keyframe_requests += 1
        self._keyframe_wanted = self.kind == "video"

    # aiortc declares Frame | Packet; its sender packs any object with bytes(), pts, time_base.
    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        """The next frame, when it is due."""
        loop = asyncio.get_running_loop()
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if not self._gate.is_open:
                await self._gate.wait_open()
                self._next_at = None
            now = loop.time()
            if self._next_at is None or now - self._next_at > 5 * self._period:
                # A fresh start, or too far behind to catch up in a burst.
                self._next_at = now + random.uniform(0, self._period)
            delay = self._next_at - now
            if delay > 0:
                await asyncio.sleep(delay)
            if self._gate.is_open and self.readyState == "live":
                break
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            while not self._keyframes[self._index]:
                self._index = (self._index + 1) % len(self._frames)
        index = self._index
        self._index = (index + 1) % len(self._frames)
        frame = EncodedFrame(
            data=self._frames[index],
            pts=self._n * self._step,
            time_base=self._time_base,
            is_keyframe=self._keyframes[index],
            arrival=loop.time(),
        )
        self._n += 1
        self.sent += 1
        self._next_at += self._period
        return frame


#: Asked of every client UDP socket; Linux grants at most ``net.core.rmem_max``.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024


def enlarge_receive_buffers(pc: RTCPeerConnection, size: int = RECEIVE_BUFFER_BYTES) -> int:
    """Ask for ``size``-byte receive buffers on the UDP sockets ``pc`` has gathered.

    The benchmark's clients share one process; on a busy machine a stall there must not drop
    packets and be blamed on the relay.  Call after ``setLocalDescription`` (the sockets exist
    once candidates are gathered).  Returns how many sockets were changed.  Reaches through
    aiortc's and aioice's private attributes, which only a benchmark may do.
    """
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        dtls: Any = transceiver.sender.transport
        if dtls is None:
            continue
        connection: Any = dtls.transport.iceGatherer._connection
        for protocol in connection._protocols:
            sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
            if sock is None or sock.fileno() in seen:
                continue
            seen.add(sock.fileno())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return len(seen)


def no_stun() -> RTCConfiguration:
    """An explicit empty ICE server list: aiortc's default is a public STUN server."""
    return RTCConfiguration(iceServers=[])


def prefer_vp8_opus(transceiver: RTCRtpTransceiver) -> None:
    """Offer only VP8 (with RTX) or Opus, the codecs a pass-through relay can forward."""
    kind = transceiver.kind
    wanted = "video/vp8" if kind == "video" else "audio/opus"
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in codecs if c.mimeType.lower() == wanted]
    if kind == "video":
        chosen += [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    transceiver.setCodecPreferences(chosen)


_REMB_ATTR = "_RTCRtpReceiver__remote_bitrate_estimator"


def silence_remb(receiver: RTCRtpReceiver) -> None:
    """Stop an aiortc receiver from sending REMB bandwidth estimates back to the sender.

    aiortc's sender raises its encoder's target bitrate on REMB (up to 1.5 Mbit/s on loopback),
    so a decoding relay would re-encode at several times the source's bitrate; without REMB it
    keeps aiortc's default of 500 kbit/s, about the rate of the replayed source.
    """
    if not hasattr(receiver, _REMB_ATTR):
        raise RuntimeError(f"aiortc changed: RTCRtpReceiver has no {_REMB_ATTR}")
    setattr(receiver, _REMB_ATTR, None)


class ReplayPeer:
    """A browser stand-in that replays pre-encoded media and counts, undecoded, what arrives.

    Received tracks are tapped the way Setu's server taps them (``media.aiortc_glue``): the
    receive thread hands over depayloaded frames instead of decoding them.
    """

    def __init__(self, label: str, media: EncodedMedia, gate: Gate, *, remb: bool = False) -> None:
        aiortc_glue.install()
        self.label = label
        self._remb = remb
        self.pc = RTCPeerConnection(no_stun())
        self.tracks = {kind: ReplayTrack(kind, media, gate) for kind in KINDS}
        for kind in KINDS:
            transceiver = self.pc.addTransceiver(self.tracks[kind], direction="sendrecv")
            prefer_vp8_opus(transceiver)
            aiortc_glue.on_keyframe_request(transceiver.sender, self.tracks[kind].request_keyframe)
        self.received = dict.fromkeys(KINDS, 0)
        self.received_bytes = dict.fromkeys(KINDS, 0)
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        kind = str(track.kind)
        if not self._remb:
            receiver = next(
                t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track
            )
            silence_remb(receiver)
        aiortc_glue.tap_track(
            track,
            aiortc_glue.FrameTap(
                asyncio.get_running_loop(),
                on_frame=lambda frame: self._count(kind, len(frame.data)),
                on_end=lambda: None,
            ),
        )

    def _count(self, kind: str, size: int) -> None:
        self.received[kind] += 1
        self.received_bytes[kind] += size

    def sent(self, kind: str) -> int:
        """Frames of ``kind`` this peer has sent."""
        return self.tracks[kind].sent

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


@dataclass(frozen=True)
class Counts:
    """Frames sent and received, summed over a set of client peers at one moment."""

    video_sent: int
    video_received: int
    audio_sent: int
    audio_received: int
    video_bytes_received: int
    audio_bytes_received: int
    #: Keyframe requests (PLI/FIR) the relay sent to the clients.
    keyframe_requests: int

    @classmethod
    def of(cls, peers: Sequence[ReplayPeer]) -> Counts:
        """The current totals of ``peers``."""
        return cls(
            video_sent=sum(p.sent("video") for p in peers),
            video_received=sum(p.received["video"] for p in peers),
            audio_sent=sum(p.sent("audio") for p in peers),
            audio_received=sum(p.received["audio"] for p in peers),
            video_bytes_received=sum(p.received_bytes["video"] for p in peers),
            audio_bytes_received=sum(p.received_bytes["audio"] for p in peers),
            keyframe_requests=sum(p.tracks["video"].keyframe_requests for p in peers),
        )

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.video_sent - other.video_sent,
            self.video_received - other.video_received,
            self.audio_sent - other.audio_sent,
            self.audio_received - other.audio_received,
            self.video_bytes_received - other.video_bytes_received,
            self.audio_bytes_received - other.audio_bytes_received,
            self.keyframe_requests - other.keyframe_requests,
        )


async def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; :class:`TimeoutError` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        await asyncio.sleep(interval)
