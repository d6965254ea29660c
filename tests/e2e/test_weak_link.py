"""A consultation over a poor rural link: the video adapts down and the call goes on.

The nurse's Chromium runs inside the spoke namespace of a :class:`bench.netlab.WeakLink`, the
doctor's and the server (in this test's event loop) in the root namespace, the server bound to
the link's address. The call is set up on a good link; then the link turns ``poor`` (150 kbit/s
each way, 300 ms round trip, 5 % loss).

What the design promises (``rooms/quality.py``, docs/protocol.md section 13): each sending seat's
step is chosen from the path its media crosses, its own uplink and the other seat's downlink.
Both paths cross the spoke's link here, so *both* pages must end up sending at step 2 or lower
(320x180 at most 150 kbit/s, or audio only): the nurse's page for the spoke seat, the doctor's
for the hub seat, and each must have applied it to its camera's sender (``setParameters``).
Audio is never reduced, so it must keep playing both ways.

Needs root, ``ip`` (iproute2), ``/dev/net/tun`` and Chromium; a missing one fails the test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, async_playwright

from bench.netlab import SCENARIOS, NetlabError, WeakLink, require_tools
from bench.weaklink import (
    CHROMIUM,
    VOICES,
    chromium_page,
    evaluate,
    netns_chromium,
    open_consultation,
    speech_like_wav,
    wait_for_media,
)
from server import create_app
from tests.helpers import DEMO_PASSWORD, DOCTOR, NURSE, make_settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

#: The Chromium binary; ``SETU_CHROMIUM`` overrides Debian's.
BINARY = os.environ.get("SETU_CHROMIUM", CHROMIUM)
ADAPT_WITHIN_S = 40.0
AUDIO_CHECK_S = 10.0
#: Concealed audio allowed over the check: the link loses 5 % of packets (Opus FEC repairs
#: some); far more means audio is not getting through.  bench.weaklink measures the real figure.
MAX_CONCEALED = 0.25

#: What the test needs of a consult page: the last `quality` per seat, what its camera's sender
#: applied, and its inbound audio and video counters.
CALL_JS = """
async () => {
  const call = window.setuCall;
  const pc = call && call.pc;
  const out = { ended: call ? call.ended : null, quality: call ? call.quality : null,
                state: pc ? pc.connectionState : null, url: location.pathname,
                samples: 0, concealed: 0, frames: 0, encoding: null };
  if (!pc) return out;
  (await pc.getStats()).forEach((r) => {
    if (r.type !== "inbound-rtp") return;
    if (r.kind === "audio") {
      out.samples += r.totalSamplesReceived || 0;
      out.concealed += r.concealedSamples || 0;
    } else if (r.kind === "video") {
      out.frames += r.framesDecoded || 0;
    }
  });
  const sender = pc.getSenders().find((s) => s.track && s.track.kind === "video");
  if (sender) {
    const e = (sender.getParameters().encodings || [])[0] || {};
    out.encoding = { active: e.active !== false, maxBitrate: e.maxBitrate ?? null };
  }
  return out;
}
"""


def require_chromium() -> None:
    if not (os.path.isfile(BINARY) and os.access(BINARY, os.X_OK)):
        pytest.fail(
            f"Chromium is missing: no executable at {BINARY}. Install Debian's `chromium` "
            "package or point SETU_CHROMIUM at a Chromium binary (`playwright install` is not "
            "used by this project).",
            pytrace=False,
        )


def require_link_tools() -> None:
    try:
        require_tools()
    except NetlabError as exc:
        pytest.fail(f"emulated links need root and iproute2: {exc}", pytrace=False)


def applied_low_step(call: dict[str, Any], seat: str) -> bool:
    """The page was told to send ``seat``'s video at step 2 or lower, and its sender took it."""
    step = (call.get("quality") or {}).get(seat)
    encoding = call.get("encoding")
    if not step or step["step"] < 2 or not encoding:
        return False
    if not step["video"]:
        return encoding["active"] is False
    limit = encoding["maxBitrate"]
    return limit is not None and limit <= step["max_bitrate_kbps"] * 1000


def note_into(problems: list[str], who: str) -> Callable[[PlaywrightError], None]:
    """A ``pageerror`` handler that keeps the uncaught exceptions of ``who``'s page."""

    def note(exc: PlaywrightError) -> None:
        problems.append(f"{who}: {exc}")

    return note


async def state_of(pages: dict[str, Page]) -> dict[str, dict[str, Any]]:
    return {who: await evaluate(page, CALL_JS) for who, page in pages.items()}


async def test_poor_link_adapts_video_and_keeps_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_chromium()
    require_link_tools()
    caplog.set_level(logging.INFO)  # the server's story of the call, shown if the test fails
    async with WeakLink(SCENARIOS["good"], seed=231) as link:
        settings = make_settings(
            None, data_dir=tmp_path / "data", heartbeat_s=10.0, room_grace_s=20.0
        )
        server = TestServer(create_app(settings), host=link.server_addr)
        await server.start_server()
        base = f"http://{link.server_addr}:{server.port}"
        problems: list[str] = []
        try:
            async with async_playwright() as pw, AsyncExitStack() as stack:
                wrapper = netns_chromium(tmp_path, link.spoke_netns, BINARY)
                voices = {
                    who: speech_like_wav(tmp_path / f"{who}.wav", *voice)
                    for who, voice in VOICES.items()
                }
                nurse = await stack.enter_async_context(
                    chromium_page(pw, wrapper, tmp_path / "nurse-profile", base, voices["nurse"])
                )
                doctor = await stack.enter_async_context(
                    chromium_page(pw, BINARY, tmp_path / "doctor-profile", base, voices["doctor"])
                )
                pages = {"nurse": nurse, "doctor": doctor}
                for who, page in pages.items():
                    page.on("pageerror", note_into(problems, who))
                try:
                    room = await open_consultation(
                        nurse, doctor, base, (NURSE, DOCTOR), DEMO_PASSWORD
                    )
                    await wait_for_media(pages)
                    await link.set(SCENARIOS["poor"])
                    await adapts_down(pages, link)
                    await call_goes_on(pages, room, link)
                except (AssertionError, PlaywrightError, TimeoutError) as exc:
                    raise AssertionError(f"{exc}\n--- page errors: {problems or 'none'}") from exc
        finally:
            await server.close()
    assert not problems, problems


async def adapts_down(pages: dict[str, Page], link: WeakLink) -> None:
    """Within ADAPT_WITHIN_S both senders apply step 2 or lower (each page for its own seat)."""
    deadline = time.monotonic() + ADAPT_WITHIN_S
    while True:
        calls = await state_of(pages)
        if applied_low_step(calls["nurse"], "spoke") and applied_low_step(calls["doctor"], "hub"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"both senders did not apply step >= 2 within {ADAPT_WITHIN_S:.0f}s of the poor "
                f"link: nurse {calls['nurse']}, doctor {calls['doctor']}; link {link.stats()}"
            )
        await asyncio.sleep(0.5)


async def call_goes_on(pages: dict[str, Page], room: str, link: WeakLink) -> None:
    """Over AUDIO_CHECK_S more of the poor link: both pages still in the room, connected, and
    playing audio that is mostly not concealed."""
    before = await state_of(pages)
    await asyncio.sleep(AUDIO_CHECK_S)
    after = await state_of(pages)
    for who in pages:
        b, a = before[who], after[who]
        context = f"{who}: before {b}, after {a}; link {link.stats()}"
        assert a["ended"] is False, f"the room ended; {context}"
        assert a["url"] == room, f"the page left the room; {context}"
        assert a["state"] == "connected", f"the peer connection is not connected; {context}"
        produced = a["samples"] - b["samples"]
        # The receiver produces 48 000 samples a second while its audio plays at all.
        assert produced >= 0.8 * AUDIO_CHECK_S * 48_000, f"audio stopped; {context}"
        concealed = (a["concealed"] - b["concealed"]) / produced
        assert concealed <= MAX_CONCEALED, f"{concealed:.0%} of the audio concealed; {context}"
