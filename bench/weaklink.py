"""Weak links: a real consultation in two Chromiums, the nurse's behind an emulated rural link.

    python -m bench.weaklink --scenario all --json bench-results/weaklink.json

Each run builds a :class:`bench.netlab.WeakLink`, starts ``server.py`` (embedded store, a data
directory of its own) bound to the link's server address, and drives two headless Chromiums
through the real pages: the nurse's Chromium runs *inside* the spoke namespace (behind the link),
the doctor's in the root namespace beside the server. Both load ``http://<server_addr>:<port>/``,
sign in, the nurse registers a patient, the doctor calls her, both open the consult page with
Chromium's fake camera and microphone. The link is ``good`` (2 Mbit/s, 40 ms) while the call is
set up and for ``--warmup`` seconds of media; then the measurement window of ``--seconds``
starts, with the scenario's impairment applied from its first moment:

* ``rural``, ``poor``, ``edge``: :data:`bench.netlab.SCENARIOS` for the whole window;
* ``outage``: good, then 100 % loss both ways from +10 s for 10 s, then good again;
* ``single-loss``: good; at +5 s one video packet from the spoke, and its retransmissions, are
  dropped (``WeakLink.drop_next("video")``).

Every scenario runs with ``--link-tuning on`` and ``off`` (a fresh link, server and browsers
each time). A sampler inside each page reads ``window.setuCall.pc.getStats()`` every
``POLL_MS``; the nurse's page measures hub -> spoke, the doctor's spoke -> hub:

* ``audio_continuity``: 1 - concealedSamples / totalSamplesReceived of the inbound audio over the
  window. A stretch in which the receiver produced no samples at all (no peer connection, between
  an old and a new one) counts as concealed: the denominator is at least the window's length in
  48 kHz samples.
* ``max_audio_gap_ms``: the longest stretch without non-concealed audio. Between two polls,
  played = delta(totalSamplesReceived - concealedSamples). A run of polls with nothing played is
  silent for its whole span; the concealed samples of the polls on either side are added (they
  may border the run), so this is an upper estimate; ``max_audio_gap_lower_ms`` is the span
  alone. Without a silent poll the bound is the concealment of two neighbouring polls.
* ``video_fps``: framesDecoded per second of the window; ``max_video_freeze_ms``: the longest
  time between two polls that saw framesDecoded grow (the window's edges count as ends of a
  freeze), good to one poll interval; Chrome's own ``freezeCount``/``totalFreezesDuration`` too.
  A pause by design (ladder step 4) counts as a freeze here.
* ``call_survived``: neither page saw the room end, both peer connections are ``connected`` at
  the end, and both pages are still at the room's URL.
* ``time_to_audio_only_s``: from the start of the impairment to the sending page's video pausing:
  the arrival, in that page, of a ``quality`` step without video for its own seat, or the first
  poll in which its camera's encoding is inactive (the page's own brake), whichever is first
  (``receiver_video_stop_s``: to the last frame before the first 2 s freeze during which audio
  kept playing, seen by the receiver).
* ``time_to_video_resume_s`` (outage): from the link's return to the first poll that saw a newly
  decoded frame *and* new non-concealed audio, per direction; the figure is the later direction.

The report (JSON on stdout and in ``--json``) has both runs of every scenario side by side, the
verdicts of the "on" run against its targets (see :data:`TARGETS`), the ``quality`` steps and
``network`` messages the pages received, the link stage's counters (drops by cause) and the
server's adaptation log lines. Missed targets are reported, not errors; the exit status is
non-zero only when a run could not be carried out. Needs root, ``ip`` and Debian's Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from bench.common import (
    BENCH_PASSWORD,
    CHROMIUM_ARGS,
    EXIT_TERMINATED,
    PATIENT,
    ROOT,
    ServerProcess,
    free_port,
    machine,
    now_iso,
    run_main,
    setup_logging,
    versions,
    write_directory,
    write_report,
)
from bench.netlab import SCENARIOS as LINKS
from bench.netlab import LinkSpec, WeakLink

logger = logging.getLogger("bench.weaklink")

#: Debian's Chromium binary (``/usr/bin/chromium`` is a shell wrapper adding flags of its own).
CHROMIUM = "/usr/lib/chromium/chromium"
#: How often the pages' sampler reads getStats().
POLL_MS = 100
#: Opus decodes at 48 kHz in Chrome's NetEq: totalSamplesReceived counts at this rate.
AUDIO_RATE = 48_000
#: The link while the call is set up and warms up, and around an outage or a single loss.
GOOD = LINKS["good"]
WINDOW_S = 40.0
WARMUP_S = 5.0
SEED = 231
OUTAGE_AT_S = 10.0
OUTAGE_S = 10.0
DROP_AT_S = 5.0
#: A freeze at least this long, with audio playing, is the receiver's sign of a video pause.
PAUSE_FREEZE_MS = 2000.0
#: Bounds of each step of a run, so that nothing waits forever.
STEP_MS = 30_000
MEDIA_TIMEOUT_S = 60.0
EVALUATE_TIMEOUT_S = 20.0
DIRECTIONS = {"spoke_to_hub": ("doctor", "spoke"), "hub_to_spoke": ("nurse", "hub")}
"""Direction -> (the page that receives it, the seat that sends it)."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What the link does during the window."""

    name: str
    link: LinkSpec
    description: str
    outage_at_s: float | None = None
    outage_s: float = 0.0
    drop_video_at_s: float | None = None


SCENARIOS: Mapping[str, Scenario] = {
    "rural": Scenario("rural", LINKS["rural"], "300 kbit/s, 150 ms RTT, 2 % loss"),
    "poor": Scenario("poor", LINKS["poor"], "150 kbit/s, 300 ms RTT, 5 % loss"),
    "edge": Scenario("edge", LINKS["edge"], "60 kbit/s, 400 ms RTT, 3 % loss"),
    "outage": Scenario(
        "outage",
        GOOD,
        f"good, 100 % loss from +{OUTAGE_AT_S:g} s for {OUTAGE_S:g} s, good again",
        outage_at_s=OUTAGE_AT_S,
        outage_s=OUTAGE_S,
    ),
    "single-loss": Scenario(
        "single-loss",
        GOOD,
        f"good; one spoke video packet (and its resends) dropped at +{DROP_AT_S:g} s",
        drop_video_at_s=DROP_AT_S,
    ),
}

#: Acceptance targets of the tuned ("on") run, per scenario: (figure, comparison, value).
TARGETS: Mapping[str, tuple[tuple[str, str, float | bool], ...]] = {
    "rural": (
        ("call_survived", "==", True),
        ("audio_continuity", ">=", 0.95),
        ("max_audio_gap_ms", "<=", 500),
        ("video_fps", ">=", 5),
    ),
    "poor": (
        ("call_survived", "==", True),
        ("audio_continuity", ">=", 0.95),
        ("max_audio_gap_ms", "<=", 500),
        ("video_fps", ">=", 5),
    ),
    "edge": (
        ("call_survived", "==", True),
        ("audio_continuity", ">=", 0.9),
        ("time_to_audio_only_s", "<=", 5),
    ),
    "outage": (("time_to_video_resume_s", "<=", 10),),
    "single-loss": (("max_video_freeze_ms", "<=", 1000),),
}
#: Which directions a target is judged on: single-loss damages only the spoke's video.
JUDGED_DIRECTIONS: Mapping[str, tuple[str, ...]] = {
    "single-loss": ("spoke_to_hub",),
}


class BenchError(RuntimeError):
    """A run could not be carried out (not a missed target)."""


# ------------------------------------------------------------------------------ in the pages

#: Installed once in each consult page: every ``pollMs`` a compact sample of getStats(), the
#: applied video encoding and any new ``network`` message, kept in ``window.__weaklink``.
SAMPLER_JS = """
(pollMs) => {
  if (window.__weaklink) return true;
  const ids = new WeakMap();
  let nextId = 1;
  const idOf = (pc) => { if (!ids.has(pc)) ids.set(pc, nextId++); return ids.get(pc); };
  const state = { samples: [], networks: [], errors: 0, busy: false };
  window.__weaklink = state;
  let lastNetwork = null;
  const pick = (r, names) => {
    const out = {};
    for (const n of names) if (r[n] !== undefined) out[n] = r[n];
    return out;
  };
  const AUDIO_IN = ["totalSamplesReceived", "concealedSamples", "silentConcealedSamples",
    "concealmentEvents", "interruptionCount", "totalInterruptionDuration", "packetsReceived",
    "packetsLost", "jitterBufferDelay", "jitterBufferEmittedCount", "fecPacketsReceived",
    "insertedSamplesForDeceleration", "removedSamplesForAcceleration", "jitter"];
  const VIDEO_IN = ["framesDecoded", "framesReceived", "framesDropped", "keyFramesDecoded",
    "freezeCount", "totalFreezesDuration", "pauseCount", "totalPausesDuration", "frameWidth",
    "frameHeight", "packetsReceived", "packetsLost", "nackCount", "pliCount", "firCount",
    "jitterBufferDelay", "jitterBufferEmittedCount", "bytesReceived"];
  const VIDEO_OUT = ["framesEncoded", "framesSent", "frameWidth", "frameHeight", "targetBitrate",
    "bytesSent", "qualityLimitationReason", "retransmittedPacketsSent", "nackCount", "pliCount",
    "keyFramesEncoded"];
  async function tick() {
    if (state.busy) return;
    state.busy = true;
    try {
      const call = window.setuCall;
      const before = Date.now();
      const s = { t: before, pc: null, st: null, ended: call ? call.ended : null,
                  url: location.pathname };
      const net = call && call.network;
      if (net && net.at !== lastNetwork) {
        lastNetwork = net.at;
        if (state.networks.length < 2000) state.networks.push(net);
      }
      const pc = call && call.pc;
      if (pc) {
        s.pc = idOf(pc);
        s.st = pc.connectionState;
        const report = await pc.getStats();
        let audio = null, video = null;
        report.forEach((r) => {
          if (r.type === "inbound-rtp" && r.kind === "audio") {
            if (!audio || (r.packetsReceived || 0) > (audio.packetsReceived || 0)) audio = r;
          } else if (r.type === "inbound-rtp" && r.kind === "video") {
            if (!video || (r.packetsReceived || 0) > (video.packetsReceived || 0)) video = r;
          } else if (r.type === "outbound-rtp" && r.kind === "video") {
            s.o = pick(r, VIDEO_OUT);
          } else if (r.type === "remote-inbound-rtp") {
            // What the server's receiver reports tell this page of its own streams.
            s[r.kind === "video" ? "ri" : "ria"] = pick(r, ["fractionLost", "roundTripTime",
              "packetsLost"]);
          } else if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
            s.cp = pick(r, ["currentRoundTripTime", "availableOutgoingBitrate"]);
          }
        });
        if (audio) s.a = pick(audio, AUDIO_IN);
        if (video) s.v = pick(video, VIDEO_IN);
        const sender = pc.getSenders().find((x) => x.track && x.track.kind === "video");
        if (sender) {
          const e = (sender.getParameters().encodings || [])[0] || {};
          s.enc = { active: e.active !== false, maxBitrate: e.maxBitrate ?? null,
                    scale: e.scaleResolutionDownBy ?? null, maxFps: e.maxFramerate ?? null };
        }
        s.t = Math.round((before + Date.now()) / 2);
      }
      state.samples.push(s);
      if (state.samples.length > 20000) state.samples.shift();
    } catch (e) {
      state.errors += 1;
    } finally {
      state.busy = false;
    }
  }
  state.timer = setInterval(tick, pollMs);
  return true;
}
"""

#: Whether the page's call is up: decoded video and played audio on a connected peer.
MEDIA_JS = """
async () => {
  const call = window.setuCall;
  const pc = call && call.pc;
  if (!pc) return null;
  const out = { state: pc.connectionState, frames: 0, samples: 0 };
  (await pc.getStats()).forEach((r) => {
    if (r.type !== "inbound-rtp") return;
    if (r.kind === "video") out.frames += r.framesDecoded || 0;
    else if (r.kind === "audio") out.samples += r.totalSamplesReceived || 0;
  });
  return out;
}
"""

COLLECT_JS = """
() => {
  const w = window.__weaklink, call = window.setuCall;
  return { samples: w ? w.samples : [], networks: w ? w.networks : [],
           errors: w ? w.errors : null, steps: call ? call.steps : [],
           seat: call ? call.seat : null, ended: call ? call.ended : null,
           state: call && call.pc ? call.pc.connectionState : null, url: location.pathname };
}
"""


#: The two voices: fundamental and syllable rate (Hz). They must differ: played on one machine,
#: the far end's echo canceller removes from its microphone anything that matches what it
#: plays out, and an identical voice on both sides is cancelled to silence (then Opus DTX).
VOICES = {"nurse": (210.0, 3.1), "doctor": (120.0, 4.3)}


def speech_like_wav(
    path: Path, pitch_hz: float = 150.0, syllable_hz: float = 3.7, seconds: float = 6.0
) -> Path:
    """A loop for Chromium's fake microphone (``--use-file-for-fake-audio-capture``): a voiced
    harmonic series on ``pitch_hz``, its loudness swinging at syllable rate but never silent,
    and a little noise. Chromium's own fake microphone beeps; between beeps Opus may fall back
    to DTX, and a packet lost in silence costs nothing audible. Here every 20 ms packet carries
    sound, so every packet lost or late shows as concealment, as it would in a conversation."""
    rng = random.Random(f"{SEED}-{pitch_hz}")
    rate = AUDIO_RATE
    frames = bytearray()
    for n in range(int(seconds * rate)):
        t = n / rate
        swing = abs(math.sin(math.pi * syllable_hz * t)) * (0.6 + 0.4 * math.sin(0.9 * t))
        envelope = 0.35 + 0.65 * swing
        voiced = sum(math.sin(2 * math.pi * pitch_hz * k * t) / k for k in range(1, 8))
        value = 0.18 * envelope * voiced + 0.01 * rng.uniform(-1, 1)
        frames += int(max(-1.0, min(1.0, value)) * 32767).to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


def netns_chromium(directory: Path, netns: str, chromium: str = CHROMIUM) -> Path:
    """An executable that runs ``chromium`` inside network namespace ``netns``, for Playwright's
    ``executable_path``: Playwright's pipe (file descriptors 3 and 4) passes through ``exec``."""
    ip = shutil.which("ip")
    if ip is None:
        raise BenchError("`ip` (iproute2) is missing")
    path = directory / f"chromium-in-{netns}"
    path.write_text(f'#!/bin/sh\nexec {ip} netns exec {netns} {chromium} "$@"\n')
    path.chmod(0o755)
    return path


@contextlib.asynccontextmanager
async def chromium_page(
    pw: Playwright,
    executable: str | Path,
    profile: Path,
    origin: str,
    audio_file: Path | None = None,
) -> AsyncIterator[Page]:
    """A headless Chromium on a fresh profile, with the fake camera and microphone (playing
    ``audio_file`` if given); its only page. ``origin`` (plain HTTP on a link address) is
    treated as secure so that the page may use the camera."""
    args = [*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={origin}"]
    if audio_file is not None:
        args.append(f"--use-file-for-fake-audio-capture={audio_file}")
    context: BrowserContext = await pw.chromium.launch_persistent_context(
        user_data_dir=str(profile),
        executable_path=str(executable),
        headless=False,  # --headless=new is in the args, so the flags are ours
        args=args,
        viewport={"width": 1000, "height": 760},
        locale="en-GB",
    )
    try:
        page = context.pages[0] if context.pages else await context.new_page()
        page.set_default_timeout(STEP_MS)
        yield page
    finally:
        await context.close()


async def sign_in(page: Page, base: str, home: str, username: str, password: str) -> None:
    """Sign in through the login form the way a user does; back on ``home`` afterwards."""
    await page.goto(base + home)
    await page.wait_for_url(re.compile(r"/login\?next="))
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("form[action='/login'] button[type=submit]")
    await page.wait_for_url(base + home)


async def open_consultation(
    nurse: Page, doctor: Page, base: str, users: tuple[str, str], password: str
) -> str:
    """Sign both in, register a patient, call her and open the consult page on both sides;
    returns the room's path (``/consult/<room id>``)."""
    nurse_user, doctor_user = users
    await asyncio.gather(
        sign_in(nurse, base, "/spoke", nurse_user, password),
        sign_in(doctor, base, "/hub", doctor_user, password),
    )
    await nurse.fill("#register input[name=name]", str(PATIENT["name"]))
    await nurse.fill("#register input[name=age]", str(PATIENT["age"]))
    await nurse.select_option("#register select[name=sex]", str(PATIENT["sex"]))
    await nurse.fill("#register textarea[name=complaint]", str(PATIENT["complaint"]))
    await nurse.click("#register button[type=submit]")
    await doctor.wait_for_selector("#call-next:enabled")
    await doctor.click("#call-next")
    await doctor.wait_for_url(re.compile(r"/consult/[a-z0-9-]+\.[A-Za-z0-9_-]+$"))
    room_path = doctor.url.removeprefix(base)
    join = nurse.locator(f"[data-testid=join][href='{room_path}']")
    await join.click()
    await nurse.wait_for_url(base + room_path)
    return room_path


async def hang_up(doctor: Page, nurse: Page) -> None:
    """End the consultation from the doctor's page, as a doctor would; best effort. A room left
    live would hold the server's shutdown for its grace period."""
    with contextlib.suppress(PlaywrightError, TimeoutError):
        await doctor.click("#hangup", timeout=5000)
        await nurse.wait_for_selector("#ended", state="visible", timeout=10_000)


async def evaluate(page: Page, script: str, arg: Any = None) -> Any:
    """``page.evaluate`` with a bound on its time (a page stuck in a script must not hang us)."""
    async with asyncio.timeout(EVALUATE_TIMEOUT_S):
        return await page.evaluate(script, arg)


async def wait_for_media(pages: Mapping[str, Page], timeout: float = MEDIA_TIMEOUT_S) -> None:
    """Until every page decodes video and plays audio on a connected peer connection."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while True:
        for who, page in pages.items():
            last[who] = await evaluate(page, MEDIA_JS)
        if all(
            s and s["state"] == "connected" and s["frames"] > 15 and s["samples"] > 0
            for s in last.values()
        ):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"media did not flow both ways within {timeout:.0f}s: {last}")
        await asyncio.sleep(0.25)


# ------------------------------------------------------------------------------ analysis


def _num(sample: Mapping[str, Any], group: str, name: str) -> float:
    values = sample.get(group) or {}
    value = values.get(name)
    return float(value) if isinstance(value, (int, float)) else 0.0


def _delta(prev: Mapping[str, Any], cur: Mapping[str, Any], group: str, name: str) -> float:
    """Growth of a cumulative counter between two samples. A new peer connection starts its
    counters at zero, so across a change the new one's value is the growth."""
    if cur.get("pc") is None:
        return 0.0
    now = _num(cur, group, name)
    if prev.get("pc") != cur.get("pc"):
        return now
    return max(0.0, now - _num(prev, group, name))


def window_samples(
    samples: Sequence[Mapping[str, Any]], start_ms: float, end_ms: float
) -> list[Mapping[str, Any]]:
    """The samples of ``[start_ms, end_ms]``, preceded by the last one before it (the baseline
    the first interval is counted from)."""
    before = [s for s in samples if s["t"] <= start_ms]
    inside = [s for s in samples if start_ms < s["t"] <= end_ms]
    return before[-1:] + inside


@dataclasses.dataclass(frozen=True)
class Interval:
    """What happened between two consecutive samples of one page."""

    start: float
    end: float
    played: float  # audio samples played that were not concealed
    concealed: float
    received: float  # totalSamplesReceived growth: everything the receiver produced
    frames: float  # video frames decoded

    @property
    def ms(self) -> float:
        return self.end - self.start


def intervals(samples: Sequence[Mapping[str, Any]]) -> list[Interval]:
    out = []
    for prev, cur in itertools.pairwise(samples):
        received = _delta(prev, cur, "a", "totalSamplesReceived")
        concealed = min(received, _delta(prev, cur, "a", "concealedSamples"))
        out.append(
            Interval(
                start=prev["t"],
                end=cur["t"],
                played=received - concealed,
                concealed=concealed,
                received=received,
                frames=_delta(prev, cur, "v", "framesDecoded"),
            )
        )
    return out


#: Less than half of one 10 ms block of output: nothing played.
_SILENT_SAMPLES = AUDIO_RATE * 0.005


def audio_gap_ms(spans: Sequence[Interval]) -> tuple[float, float]:
    """(upper estimate, lower bound) of the longest stretch without non-concealed audio."""
    upper = lower = 0.0
    conceal_ms = [min(i.ms, i.concealed * 1000 / AUDIO_RATE) for i in spans]
    # Concealment of two neighbouring polls may be one stretch across their boundary.
    for k in range(len(spans)):
        pair = conceal_ms[k] + (conceal_ms[k + 1] if k + 1 < len(spans) else 0.0)
        upper = max(upper, pair)
        lower = max(lower, conceal_ms[k])
    k = 0
    while k < len(spans):
        if spans[k].played >= _SILENT_SAMPLES:
            k += 1
            continue
        first = k
        while k < len(spans) and spans[k].played < _SILENT_SAMPLES:
            k += 1
        span = spans[k - 1].end - spans[first].start
        edges = (conceal_ms[first - 1] if first > 0 else 0.0) + (
            conceal_ms[k] if k < len(spans) else 0.0
        )
        lower = max(lower, span)
        upper = max(upper, span + edges)
    return upper, lower


def video_freezes(spans: Sequence[Interval], start_ms: float, end_ms: float) -> list[float]:
    """Times between polls that saw new decoded frames; the window's edges count as ends."""
    marks = [start_ms, *(i.end for i in spans if i.frames > 0), end_ms]
    return [b - a for a, b in itertools.pairwise(marks)]


def first_freeze_with_audio(spans: Sequence[Interval], start_ms: float) -> float | None:
    """When the last frame before the first long freeze (``PAUSE_FREEZE_MS``, audio playing in
    most of it) was decoded, as ms after ``start_ms``: the receiver's view of a video pause."""
    last_frame = start_ms
    k = 0
    while k < len(spans):
        if spans[k].frames > 0:
            last_frame = spans[k].end
            k += 1
            continue
        run = []
        while k < len(spans) and spans[k].frames == 0:
            run.append(spans[k])
            k += 1
        length = run[-1].end - last_frame
        with_audio = sum(1 for i in run if i.played >= _SILENT_SAMPLES) >= len(run) / 2
        if length >= PAUSE_FREEZE_MS and with_audio:
            return last_frame - start_ms
    return None


def _counter_growth(samples: Sequence[Mapping[str, Any]], group: str, name: str) -> float:
    return sum(_delta(p, c, group, name) for p, c in itertools.pairwise(samples))


def direction_metrics(
    receiver: Sequence[Mapping[str, Any]],
    sender: Sequence[Mapping[str, Any]],
    sender_steps: Sequence[Mapping[str, Any]],
    sender_seat: str,
    start_ms: float,
    end_ms: float,
    link_back_ms: float | None = None,
    drop_ms: float | None = None,
) -> dict[str, Any]:
    """The figures of one direction over the window, from the receiving page's samples (and the
    sending page's, for what it sent and the steps it was told)."""
    rx = window_samples(receiver, start_ms, end_ms)
    tx = window_samples(sender, start_ms, end_ms)
    if len(rx) < 2:
        raise BenchError("the receiving page has no samples in the window")
    spans = intervals(rx)
    seconds = (rx[-1]["t"] - rx[0]["t"]) / 1000
    received = sum(i.received for i in spans)
    concealed = sum(i.concealed for i in spans)
    played = sum(i.played for i in spans)
    expected = max(received, seconds * AUDIO_RATE)
    gap_upper, gap_lower = audio_gap_ms(spans)
    frames = sum(i.frames for i in spans)
    freezes = video_freezes(spans, rx[0]["t"], rx[-1]["t"])
    widths = [int(_num(s, "v", "frameWidth")) for s in rx if s.get("v")]
    lost = _counter_growth(rx, "v", "packetsLost")
    got = _counter_growth(rx, "v", "packetsReceived")
    audio_lost = _counter_growth(rx, "a", "packetsLost")
    audio_got = _counter_growth(rx, "a", "packetsReceived")
    paused = [s for s in tx if s.get("enc") and not s["enc"]["active"]]
    pauses = [(s["t"] - start_ms) / 1000 for s in paused if s["t"] >= start_ms][:1]
    pauses += [
        (q["at"] - start_ms) / 1000
        for q in sender_steps
        if q.get("seat") == sender_seat and not q.get("video") and q["at"] >= start_ms
    ][:1]
    audio_only_at = min(pauses, default=None)
    stop = first_freeze_with_audio(spans, rx[0]["t"])
    out: dict[str, Any] = {
        "audio_continuity": round(played / expected, 4) if expected else 0.0,
        "audio_concealed_of_received": round(concealed / received, 4) if received else None,
        "audio_silent_concealed_s": round(
            _counter_growth(rx, "a", "silentConcealedSamples") / AUDIO_RATE, 2
        ),
        "max_audio_gap_ms": round(gap_upper),
        "max_audio_gap_lower_ms": round(gap_lower),
        "audio_packets_per_s": round(audio_got / seconds, 1) if seconds else None,
        "audio_packet_loss": round(audio_lost / (audio_lost + audio_got), 4)
        if audio_lost + audio_got
        else None,
        "chrome_audio_interruptions": int(_counter_growth(rx, "a", "interruptionCount")),
        "chrome_audio_interruption_ms": round(
            _counter_growth(rx, "a", "totalInterruptionDuration") * 1000
        ),
        "video_fps": round(frames / seconds, 2) if seconds else 0.0,
        "video_frames_decoded": int(frames),
        "max_video_freeze_ms": round(max(freezes)),
        "chrome_freeze_count": int(_counter_growth(rx, "v", "freezeCount")),
        "chrome_freezes_ms": round(_counter_growth(rx, "v", "totalFreezesDuration") * 1000),
        "chrome_pause_count": int(_counter_growth(rx, "v", "pauseCount")),
        "video_packet_loss": round(lost / (lost + got), 4) if lost + got else None,
        "keyframes_decoded": int(_counter_growth(rx, "v", "keyFramesDecoded")),
        "plis_sent": int(_counter_growth(rx, "v", "pliCount")),
        "nacks_sent": int(_counter_growth(rx, "v", "nackCount")),
        "frame_width_median": int(statistics.median(widths)) if widths else None,
        "sender_paused_s": round(len(paused) * POLL_MS / 1000, 1),
        "time_to_audio_only_s": None if audio_only_at is None else round(audio_only_at, 2),
        "receiver_video_stop_s": None if stop is None else round(stop / 1000, 2),
        "poll_ms": POLL_MS,
    }
    if drop_ms is not None:
        # The freeze the one lost packet caused, told apart from any later pause by the ladder:
        # the longest gap between decoded frames that ends after the drop was armed and began
        # within the two seconds after it (the packet goes with the next video frame).
        marks = [rx[0]["t"], *(i.end for i in spans if i.frames > 0), rx[-1]["t"]]
        around = [b - a for a, b in itertools.pairwise(marks) if b > drop_ms and a < drop_ms + 2000]
        out["freeze_after_drop_ms"] = round(max(around)) if around else None
    if link_back_ms is not None:
        after = [i for i in spans if i.end > link_back_ms]
        video_at = next((i.end for i in after if i.frames > 0), None)
        audio_at = next((i.end for i in after if i.played >= _SILENT_SAMPLES), None)
        out["video_resumed_s"] = (
            None if video_at is None else round((video_at - link_back_ms) / 1000, 2)
        )
        out["audio_resumed_s"] = (
            None if audio_at is None else round((audio_at - link_back_ms) / 1000, 2)
        )
        both = None if video_at is None or audio_at is None else max(video_at, audio_at)
        out["time_to_video_resume_s"] = (
            None if both is None else round((both - link_back_ms) / 1000, 2)
        )
        # Did it last? A relapse after the first frame (a renegotiation, a step to audio only)
        # shows here.
        rest = [i for i in spans if both is not None and i.start >= both]
        rest_s = (rx[-1]["t"] - link_back_ms) / 1000
        out["video_fps_after_return"] = (
            round(sum(i.frames for i in after) / rest_s, 2) if rest_s > 0 else None
        )
        out["max_audio_gap_after_resume_ms"] = round(audio_gap_ms(rest)[0]) if rest else None
        out["max_video_freeze_after_resume_ms"] = (
            round(max(video_freezes(rest, rest[0].start, rest[-1].end))) if rest else None
        )
    return out


def timeline(
    receiver: Sequence[Mapping[str, Any]],
    sender: Sequence[Mapping[str, Any]],
    start_ms: float,
    end_ms: float,
) -> list[dict[str, Any]]:
    """Second by second: what the receiver decoded and played, what the sender was sending."""
    out = []
    second = 0
    while start_ms + (second + 1) * 1000 <= end_ms + 1:
        lo, hi = start_ms + second * 1000, start_ms + (second + 1) * 1000
        rx = window_samples(receiver, lo, hi)
        tx = window_samples(sender, lo, hi)
        spans = intervals(rx)
        received = sum(i.received for i in spans)
        row: dict[str, Any] = {
            "t": second,
            "fps": round(sum(i.frames for i in spans), 1),
            "audio_played": round(sum(i.played for i in spans) / max(received, AUDIO_RATE), 2),
            "width": int(_num(rx[-1], "v", "frameWidth")) if rx else 0,
        }
        if len(tx) >= 2:
            sent = _delta(tx[0], tx[-1], "o", "bytesSent")
            row["sent_kbps"] = round(sent * 8 / max(1.0, tx[-1]["t"] - tx[0]["t"]))
            enc = tx[-1].get("enc") or {}
            row["enc_active"] = enc.get("active")
            row["enc_max_kbps"] = (
                None if enc.get("maxBitrate") is None else round(enc["maxBitrate"] / 1000)
            )
            cp = tx[-1].get("cp") or {}
            if cp.get("availableOutgoingBitrate") is not None:
                row["bwe_kbps"] = round(cp["availableOutgoingBitrate"] / 1000)
            if cp.get("currentRoundTripTime") is not None:
                row["rtt_ms"] = round(cp["currentRoundTripTime"] * 1000)
        out.append(row)
        second += 1
    return out


def call_survived(pages: Mapping[str, Mapping[str, Any]], room_path: str) -> bool:
    """Nobody saw the room end, both peer connections are connected, both pages are in the room."""
    return all(
        p["ended"] is False and p["state"] == "connected" and p["url"] == room_path
        for p in pages.values()
    )


def verdicts(scenario: str, run: Mapping[str, Any]) -> dict[str, Any]:
    """Each target of ``scenario`` against ``run``: the value per direction and whether it holds."""
    out: dict[str, Any] = {}
    judged = JUDGED_DIRECTIONS.get(scenario, tuple(DIRECTIONS))
    for figure, op, target in TARGETS[scenario]:
        if figure == "call_survived":
            values: dict[str, Any] = {"both": run["call_survived"]}
        else:
            values = {d: run[d].get(figure) for d in judged}
        met = all(_holds(v, op, target) for v in values.values())
        out[figure] = {"target": f"{op} {target}", "values": values, "met": met}
    return out


def _holds(value: Any, op: str, target: float | bool) -> bool:
    if value is None:
        return False
    if op == "==":
        return bool(value == target)
    if op == ">=":
        return bool(value >= target)
    return bool(value <= target)


def stage_counters(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The link stage's counters over the window, per direction."""
    out: dict[str, Any] = {}
    for direction in ("to_server", "to_spoke"):
        b, a = before.get(direction, {}), after.get(direction, {})
        counts = {
            k: a[k] - b.get(k, 0)
            for k in (
                "packets_in",
                "packets_out",
                "bytes_in",
                "bytes_out",
                "dropped_loss",
                "dropped_queue",
                "dropped_outage",
                "dropped_targeted",
            )
            if k in a
        }
        counts["max_backlog_ms"] = a.get("max_backlog_ms")
        out[direction] = counts
    out["targeted_drops"] = after.get("targeted_drops", [])
    out["lateness_ms"] = after.get("lateness_ms")
    return out


# ------------------------------------------------------------------------------ one run


#: Server log lines worth keeping in the report: adaptation steps and the peers' lives.
_LOG_KEEP = re.compile(
    r"rooms\.quality|media\.peer|media\.watchdog|signaling\.session|rooms\.registry|WARNING|ERROR"
)


def weak_server(tmp: Path, host: str, tuning: bool) -> tuple[ServerProcess, tuple[str, str]]:
    """``server.py`` on the embedded store, bound to ``host``, with link tuning on or off."""
    directory = tmp / "directory.toml"
    nurse, doctor = write_directory(directory, 1)[0]
    port = free_port()
    argv = [
        sys.executable,
        str(ROOT / "server.py"),
        *("--host", host, "--port", str(port)),
        *("--demo-password", BENCH_PASSWORD, "--secret-key", "bench-secret"),
        *("--node-id", "bench", "--directory", str(directory)),
        *("--data-dir", str(tmp / "setu-data"), "--log-level", "INFO"),
        *("--link-tuning", "on" if tuning else "off", "--recording", "off"),
    ]
    server = ServerProcess("setu", argv, port, tmp / "setu.log", ready_path="/login")
    server.base_url = f"http://{host}:{port}"
    return server, (nurse, doctor)


async def run_once(
    scenario: Scenario,
    tuning: bool,
    *,
    window_s: float,
    warmup_s: float,
    chromium: str,
    seed: int,
    raw_dir: Path | None,
) -> dict[str, Any]:
    """One scenario with tuning on or off, on a fresh link, server and pair of browsers."""
    label = f"{scenario.name}/{'on' if tuning else 'off'}"
    with tempfile.TemporaryDirectory(prefix="setu-weaklink-") as tmpdir:
        tmp = Path(tmpdir)
        async with WeakLink(GOOD, seed=seed) as link, contextlib.AsyncExitStack() as stack:
            server, users = weak_server(tmp, link.server_addr, tuning)
            await stack.enter_async_context(server)
            base = server.base_url
            pw = await stack.enter_async_context(async_playwright())
            wrapper = netns_chromium(tmp, link.spoke_netns, chromium)
            voices = {
                who: await asyncio.to_thread(speech_like_wav, tmp / f"{who}.wav", *voice)
                for who, voice in VOICES.items()
            }
            nurse = await stack.enter_async_context(
                chromium_page(pw, wrapper, tmp / "nurse-profile", base, voices["nurse"])
            )
            doctor = await stack.enter_async_context(
                chromium_page(pw, chromium, tmp / "doctor-profile", base, voices["doctor"])
            )
            pages = {"nurse": nurse, "doctor": doctor}
            room_path = await open_consultation(nurse, doctor, base, users, BENCH_PASSWORD)
            logger.info("%s: in %s, waiting for media", label, room_path)
            await wait_for_media(pages)
            for page in pages.values():
                await evaluate(page, SAMPLER_JS, POLL_MS)
            await asyncio.sleep(warmup_s)

            before = await link.fetch_stats()
            load_start = machine()["loadavg"]
            start_ms = time.time() * 1000
            await link.set(scenario.link)
            logger.info("%s: window of %.0fs starts (%s)", label, window_s, scenario.description)
            events = await _scenario_events(scenario, link, start_ms)
            await asyncio.sleep(max(0.0, start_ms / 1000 + window_s - time.time()))
            end_ms = time.time() * 1000
            load_end = machine()["loadavg"]
            after = await link.fetch_stats()
            collected = {who: await evaluate(page, COLLECT_JS) for who, page in pages.items()}
            await hang_up(doctor, nurse)
        server_log = await asyncio.to_thread((tmp / "setu.log").read_text, errors="replace")
    log_lines = [line for line in server_log.splitlines() if _LOG_KEEP.search(line)]
    if raw_dir is not None:
        raw = {"start_ms": start_ms, "end_ms": end_ms, **events, **collected}
        await asyncio.to_thread(_save_raw, raw_dir, label.replace("/", "-"), raw, server_log)
    run = summarize(
        scenario,
        tuning,
        collected,
        room_path=room_path,
        start_ms=start_ms,
        end_ms=end_ms,
        link_back_ms=events.get("link_back_ms"),
        drop_ms=events.get("drop_armed_ms"),
        stage=stage_counters(before, after),
        log_lines=log_lines,
    )
    # Two browsers and the server share the machine: a busy one starves them (not the link,
    # whose stage runs at real-time priority: its lateness is in run["link"]).
    run["loadavg"] = {"window_start": load_start, "window_end": load_end}
    return run


def _save_raw(directory: Path, stem: str, raw: Mapping[str, Any], server_log: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.json").write_text(json.dumps(raw))
    (directory / f"{stem}-server.log").write_text(server_log)


async def _scenario_events(scenario: Scenario, link: WeakLink, start_ms: float) -> dict[str, float]:
    """Play the scenario's timed events; returns when they happened (epoch ms):
    ``drop_armed_ms`` (single loss), ``link_back_ms`` (the end of an outage)."""
    events: dict[str, float] = {}

    async def at(offset_s: float) -> None:
        await asyncio.sleep(max(0.0, start_ms / 1000 + offset_s - time.time()))

    if scenario.drop_video_at_s is not None:
        await at(scenario.drop_video_at_s)
        events["drop_armed_ms"] = time.time() * 1000
        await link.drop_next("video")
        logger.info("%s: one spoke video packet will be dropped", scenario.name)
    if scenario.outage_at_s is not None:
        await at(scenario.outage_at_s)
        await link.outage(True)
        await at(scenario.outage_at_s + scenario.outage_s)
        # Taken before the stage hears it: resume times err long, by a millisecond or so.
        events["link_back_ms"] = time.time() * 1000
        await link.outage(False)
    return events


def summarize(
    scenario: Scenario,
    tuning: bool,
    collected: Mapping[str, Mapping[str, Any]],
    *,
    room_path: str,
    start_ms: float,
    end_ms: float,
    link_back_ms: float | None,
    drop_ms: float | None,
    stage: Mapping[str, Any],
    log_lines: Sequence[str],
) -> dict[str, Any]:
    """A run's report from what the pages and the link collected."""
    run: dict[str, Any] = {"tuning": "on" if tuning else "off"}
    run["call_survived"] = call_survived(collected, room_path)
    for direction, (receiver, sender_seat) in DIRECTIONS.items():
        sender = "nurse" if receiver == "doctor" else "doctor"
        run[direction] = direction_metrics(
            collected[receiver]["samples"],
            collected[sender]["samples"],
            collected[sender]["steps"],
            sender_seat,
            start_ms,
            end_ms,
            link_back_ms,
            drop_ms,
        )
        # The step reaches the two pages over their own websockets: the sender's may cross the
        # weak link behind the very media it is meant to relieve. The first arrival anywhere
        # bounds when the server decided.
        paused = [
            (q["at"] - start_ms) / 1000
            for page in collected.values()
            for q in page["steps"]
            if q.get("seat") == sender_seat and not q.get("video") and q["at"] >= start_ms
        ]
        run[direction]["audio_only_first_seen_s"] = round(min(paused), 2) if paused else None
    if link_back_ms is not None:
        resumes = [run[d].get("time_to_video_resume_s") for d in DIRECTIONS]
        run["time_to_video_resume_s"] = (
            None if any(r is None for r in resumes) else max(r for r in resumes if r is not None)
        )
    pages: dict[str, Any] = {}
    for who, page in collected.items():
        inside = window_samples(page["samples"], start_ms, end_ms)
        pages[who] = {
            "seat": page["seat"],
            "ended": page["ended"],
            "connection": page["state"],
            "same_room_url": page["url"] == room_path,
            "peer_connections_in_window": len({s["pc"] for s in inside if s.get("pc")}),
            "sampler_errors": page["errors"],
            "quality_steps": [
                {
                    "t_s": round((q["at"] - start_ms) / 1000, 2),
                    "seat": q["seat"],
                    "step": q["step"],
                    "video": q["video"],
                    "reason": q["reason"],
                }
                for q in page["steps"]
            ],
        }
    pages["nurse"]["network"] = [
        {"t_s": round((n["at"] - start_ms) / 1000, 1), "spoke": n["spoke"], "hub": n["hub"]}
        for n in collected["nurse"]["networks"]
        if start_ms - 2000 <= n["at"] <= end_ms
    ]
    run["pages"] = pages
    run["timeline"] = {
        direction: timeline(
            collected[receiver]["samples"],
            collected["nurse" if receiver == "doctor" else "doctor"]["samples"],
            start_ms,
            end_ms,
        )
        for direction, (receiver, _) in DIRECTIONS.items()
    }
    run["link"] = dict(stage)
    run["window_s"] = round((end_ms - start_ms) / 1000, 2)
    run["server_log"] = list(log_lines[-150:])
    return run


# ------------------------------------------------------------------------------ the benchmark


async def run_bench(
    names: Sequence[str],
    tunings: Sequence[bool],
    *,
    window_s: float,
    warmup_s: float,
    chromium: str,
    seed: int,
    raw_dir: Path | None,
) -> tuple[dict[str, Any], bool]:
    """Every scenario in ``names`` with each tuning; returns the report and whether every run
    could be carried out."""
    started = now_iso()
    machine_before = machine()
    code = code_fingerprint()
    scenarios: dict[str, Any] = {}
    ok = True
    for name in names:
        scenario = SCENARIOS[name]
        runs: dict[str, Any] = {}
        for tuning in tunings:
            key = "on" if tuning else "off"
            try:
                async with asyncio.timeout(window_s + warmup_s + 180):
                    runs[key] = await run_once(
                        scenario,
                        tuning,
                        window_s=window_s,
                        warmup_s=warmup_s,
                        chromium=chromium,
                        seed=seed,
                        raw_dir=raw_dir,
                    )
            except (BenchError, PlaywrightError, TimeoutError, OSError, RuntimeError) as exc:
                # NetlabError and a server that would not start are RuntimeErrors.
                logger.exception("%s/%s: the run failed", name, key)
                runs[key] = {"tuning": key, "error": f"{type(exc).__name__}: {exc}"}
                ok = False
                continue
            runs[key]["verdicts"] = verdicts(name, runs[key])
            logger.info("%s/%s:\n%s", name, key, summary_lines(name, runs[key]))
        entry: dict[str, Any] = {
            "link": dataclasses.asdict(scenario.link),
            "description": scenario.description,
            "runs": runs,
        }
        on = runs.get("on")
        if on is not None and "verdicts" in on:
            entry["targets_met"] = {k: v["met"] for k, v in on["verdicts"].items()}
        scenarios[name] = entry
    report = {
        "benchmark": "weaklink",
        "date": started,
        "window_s": window_s,
        "warmup_s": warmup_s,
        "poll_ms": POLL_MS,
        "seed": seed,
        "scenarios": scenarios,
        "targets": {k: [f"{f} {op} {v}" for f, op, v in t] for k, t in TARGETS.items()},
        "method": (
            "spoke (nurse) Chromium inside the WeakLink's spoke namespace, doctor's Chromium and "
            "server.py in the root namespace; getStats() sampled in each page every "
            f"{POLL_MS} ms over the window; see the module docstring of bench/weaklink.py"
        ),
        "machine": {**machine_before, "loadavg_end": machine()["loadavg"]},
        "versions": {**versions(), "chromium": await _chromium_version(chromium)},
        "code": code,
    }
    return report, ok


#: The code whose behaviour the figures describe; the report fingerprints it, since the tree
#: changes while people work on it.
FINGERPRINTED = (
    "server.py",
    "media/*.py",
    "rooms/quality.py",
    "rooms/registry.py",
    "signaling/session.py",
    "web/static/consult.js",
    "web/static/signal.js",
)


def code_fingerprint() -> dict[str, str]:
    """sha256 (first 12 hex digits) of each file in :data:`FINGERPRINTED`."""
    out = {}
    for pattern in FINGERPRINTED:
        for path in sorted(ROOT.glob(pattern)):
            out[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return out


async def _chromium_version(chromium: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            chromium, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        async with asyncio.timeout(20):
            out, _ = await proc.communicate()
    except (OSError, TimeoutError):
        return "unknown"
    return out.decode(errors="replace").strip()


def summary_lines(name: str, run: Mapping[str, Any]) -> str:
    """A readable summary of one run."""
    if "error" in run:
        return f"  error: {run['error']}"
    lines = [f"  call survived: {run['call_survived']}"]
    for direction in DIRECTIONS:
        d = run[direction]
        extra = ""
        if d.get("time_to_audio_only_s") is not None:
            extra += f", audio only after {d['time_to_audio_only_s']}s"
        if "time_to_video_resume_s" in d:
            extra += f", resumed after {d['time_to_video_resume_s']}s"
            extra += f" (then gaps up to {d['max_audio_gap_after_resume_ms']} ms audio"
            extra += f", {d['max_video_freeze_after_resume_ms']} ms video)"
        if d.get("freeze_after_drop_ms") is not None:
            extra += f", freeze after the drop {d['freeze_after_drop_ms']} ms"
        lines.append(
            f"  {direction}: audio {d['audio_continuity']:.3f} (gap {d['max_audio_gap_ms']} ms), "
            f"video {d['video_fps']} fps (freeze {d['max_video_freeze_ms']} ms, width "
            f"{d['frame_width_median']}){extra}"
        )
    for figure, v in run.get("verdicts", {}).items():
        met = "met" if v["met"] else "MISSED"
        lines.append(f"  {figure} {v['target']}: {v['values']} -> {met}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.weaklink",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument(
        "--tuning", choices=["both", "on", "off"], default="both", help="server --link-tuning"
    )
    parser.add_argument("--seconds", type=float, default=WINDOW_S, help="measurement window")
    parser.add_argument(
        "--warmup", type=float, default=WARMUP_S, help="seconds of media on a good link first"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="the link's loss and jitter seed")
    parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium binary")
    parser.add_argument("--raw", type=Path, help="also write each page's raw samples here")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--log-level", default="INFO", help="progress on stderr")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    tunings = {"both": [True, False], "on": [True], "off": [False]}[args.tuning]
    shortest = max(
        [OUTAGE_AT_S + OUTAGE_S + 5 if SCENARIOS[n].outage_at_s is not None else 0 for n in names]
        + [DROP_AT_S + 2 if SCENARIOS[n].drop_video_at_s is not None else 2 for n in names]
    )
    if args.seconds < shortest or args.warmup < 0:
        parser.error(f"--seconds must be at least {shortest:g} here and --warmup >= 0")
    setup_logging(args.log_level)
    try:
        report, ok = run_main(
            run_bench(
                names,
                tunings,
                window_s=args.seconds,
                warmup_s=args.warmup,
                chromium=args.chromium,
                seed=args.seed,
                raw_dir=args.raw,
            )
        )
    except asyncio.CancelledError:
        logger.error("terminated; links, servers and browsers stopped")
        return EXIT_TERMINATED
    write_report(report, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
