"""A whole consultation in two headless Chromiums: a nurse and a doctor, through the pages.

The server runs in the test's event loop, on a real Redis and on the embedded store; each user
has a browser of their own (a persistent context on a fresh user-data directory) with
Chromium's fake camera and microphone.
Media goes browser -> server relay -> browser; ``RTCPeerConnection.getStats()`` on each page
proves it was decoded.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
import time
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    async_playwright,
    expect,
)
from playwright.async_api import Error as PlaywrightError

from bench.common import CHROMIUM_ARGS as BENCH_CHROMIUM_ARGS
from core.directory import DEMO_DIRECTORY
from server import create_app
from tests.helpers import DEMO_PASSWORD, DOCTOR, NURSE, PATIENT, make_settings

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

#: The Chromium to drive; ``SETU_CHROMIUM`` overrides Debian's.
CHROMIUM = os.environ.get("SETU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = list(BENCH_CHROMIUM_ARGS)
#: Playwright's wait for any one step; the machine may be busy.
STEP_MS = 20_000

#: What each side has decoded of the other's media, read from getStats().
INBOUND_STATS_JS = """
async () => {
  const call = window.setuCall;
  const pc = call && call.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  const out = { video: 0, audio: 0, state: pc.connectionState, width: 0 };
  report.forEach((r) => {
    if (r.type !== "inbound-rtp") return;
    if (r.kind === "video") {
      out.video += r.framesDecoded || 0;
      out.width = Math.max(out.width, r.frameWidth || 0);
    } else if (r.kind === "audio") {
      out.audio += r.packetsReceived || 0;
    }
  });
  const remote = document.getElementById("remote");
  out.playing = remote.videoWidth > 0 && !remote.paused;
  return out;
}
"""


class Browser:
    """One user's Chromium: a persistent context, its page and what the page complained of."""

    def __init__(self, who: str, context: BrowserContext, page: Page) -> None:
        self.who = who
        self.context = context
        self.page = page
        self.problems: list[str] = []
        page.set_default_timeout(STEP_MS)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            self.problems.append(f"console.{msg.type}: {msg.text} ({msg.location.get('url')})")

    def report(self) -> str:
        problems = "; ".join(self.problems) or "(nothing)"
        return f"{self.who}'s page at {self.page.url}; its console: {problems}"


def require_chromium() -> str:
    """Chromium's path; the test fails (not skips) without it."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium is missing: no executable at {CHROMIUM}. Install Debian's `chromium` "
            "package or point SETU_CHROMIUM at a Chromium binary (`playwright install` is not "
            "used by this project).",
            pytrace=False,
        )
    return CHROMIUM


@asynccontextmanager
async def browser_for(pw: Playwright, who: str, user_data_dir: Path) -> AsyncIterator[Browser]:
    try:
        context = await pw.chromium.launch_persistent_context(
            user_data_dir=str(user_data_dir),
            executable_path=require_chromium(),
            headless=False,  # the real flag is --headless=new in args, so the flags are ours
            args=CHROMIUM_ARGS,
            viewport={"width": 1000, "height": 760},
            locale="en-GB",
        )
    except Exception as exc:
        pytest.fail(f"Chromium at {CHROMIUM} did not start: {exc}", pytrace=False)
    try:
        page = context.pages[0] if context.pages else await context.new_page()
        yield Browser(who, context, page)
    finally:
        await context.close()


async def poll(
    what: str,
    probe: Callable[[], Awaitable[Any]],
    done: Callable[[Any], bool],
    timeout: float,
    describe: Callable[[], str],
) -> Any:
    """Calls ``probe`` until ``done`` says yes; fails with the last value and ``describe()``."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s; last {value!r}; {describe()}")
        await asyncio.sleep(0.25)


async def sign_in(browser: Browser, base: str, home: str, username: str) -> None:
    page = browser.page
    await page.goto(base + home)
    # Not signed in: the page sends us to the login form, which brings us back afterwards.
    await page.wait_for_url(re.compile(r"/login\?next="))
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", DEMO_PASSWORD)
    await page.click("form[action='/login'] button[type=submit]")
    await page.wait_for_url(base + home)
    name = await page.text_content("[data-testid=user-name]")
    assert name, f"no user shown after sign-in; {browser.report()}"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the screenshots of the consult pages go (``SETU_E2E_SHOTS`` to keep them)."""
    directory = Path(os.environ.get("SETU_E2E_SHOTS", tmp_path / "shots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def test_consultation_in_two_browsers(
    store_url: str | None, tmp_path: Path, shots: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs on a real Redis, and on the embedded store that `make run` uses by default."""
    require_chromium()
    caplog.set_level(logging.INFO)  # the server's story of the call, shown if the test fails
    expect.set_options(timeout=STEP_MS)
    # The production timings, so that a hiccup of a busy machine is a reconnect, not an ended call.
    settings = make_settings(
        store_url, data_dir=tmp_path / "data", heartbeat_s=10.0, room_grace_s=20.0
    )
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with async_playwright() as pw, AsyncExitStack() as stack:
            nurse = await stack.enter_async_context(
                browser_for(pw, "nurse", tmp_path / "nurse-profile")
            )
            doctor = await stack.enter_async_context(
                browser_for(pw, "doctor", tmp_path / "doctor-profile")
            )
            try:
                await language_switch(nurse, base)
                await consultation(nurse, doctor, base, shots)
            except (AssertionError, PlaywrightError) as exc:
                # Whatever failed, say what both pages were showing and complaining of.
                raise AssertionError(f"{exc}\n--- {nurse.report()}\n--- {doctor.report()}") from exc
            for browser in (nurse, doctor):
                errors = [p for p in browser.problems if "error" in p]
                assert not errors, browser.report()
    finally:
        await server.close()


async def language_switch(browser: Browser, base: str) -> None:
    """The login page speaks Hindi after the switch, and English again after switching back."""
    page = browser.page
    await page.goto(base + "/login")
    await expect(page.locator("h1")).to_have_text("Sign in")
    await page.click("[data-testid=lang-switch]")
    await expect(page.locator("h1")).to_have_text("साइन इन करें")
    await expect(page.locator("html")).to_have_attribute("lang", "hi")
    await expect(page.locator("label").first).to_contain_text("उपयोगकर्ता नाम")
    await expect(page.locator("button[type=submit]")).to_have_text("साइन इन")
    await expect(page.locator("[data-testid=lang-switch]")).to_have_text("English")
    await page.click("[data-testid=lang-switch]")
    await expect(page.locator("h1")).to_have_text("Sign in")
    await expect(page.locator("html")).to_have_attribute("lang", "en")


async def consultation(
    nurse: Browser,
    doctor: Browser,
    base: str,
    shots: Path,
    open_window: Callable[[], Awaitable[None]] | None = None,
    record_s: float = 0,
) -> None:
    """The whole flow; with ``open_window``, the token is issued while the hub is closed and
    ``open_window`` moves the server's clock to the opening; with ``record_s``, the patient
    consents and the consultation is recorded for that long before the hang-up."""
    npage, dpage = nurse.page, doctor.page
    await asyncio.gather(
        sign_in(nurse, base, "/spoke", NURSE), sign_in(doctor, base, "/hub", DOCTOR)
    )
    # Both dashboards are live: their sockets delivered the first queue.
    await expect(dpage.locator("#waiting-count")).to_have_text("0 waiting")
    await expect(dpage.locator("#call-next")).to_be_disabled()
    await expect(npage.locator("#tokens li")).to_have_text(["No tokens yet today."])
    await dpage.evaluate("window.__sameDocument = true")

    # The nurse registers a patient with the form.
    await npage.fill("#register input[name=name]", PATIENT["name"])
    await npage.fill("#register input[name=age]", str(PATIENT["age"]))
    await npage.select_option("#register select[name=sex]", PATIENT["sex"])
    await npage.fill("#register textarea[name=complaint]", PATIENT["complaint"])
    if open_window is not None:
        await expect(npage.locator("[data-testid=service]")).to_contain_text("Service is closed")
    await npage.click("#register button[type=submit]")
    await expect(npage.locator("#issued")).to_have_text(f"Token 1 issued for {PATIENT['name']}.")
    if open_window is not None:
        status = npage.locator("[data-testid=token-status]")
        await expect(status).to_have_text("Scheduled for the next service window")
        await expect(dpage.locator("#held")).to_have_text("1 held for the next window")
        await expect(dpage.locator("#call-next")).to_be_disabled()
        await open_window()
        # The server's keeper opens the window; both pages learn it by push.
        await expect(npage.locator("[data-testid=service]")).to_contain_text("Service open until")
    await expect(npage.locator("[data-testid=token-status]")).to_have_text("Position 1 in queue")

    # The doctor's dashboard shows it without a reload: pushed over the websocket.
    row = dpage.locator("#queue tr")
    await expect(row).to_have_count(1)
    await expect(row.locator("td").nth(1)).to_have_text(PATIENT["name"])
    await expect(dpage.locator("#waiting-count")).to_have_text("1 waiting")
    assert await dpage.evaluate("window.__sameDocument === true"), "the hub page reloaded"

    await dpage.get_by_role("button", name="Call next patient").click()
    await dpage.wait_for_url(re.compile(r"/consult/[a-z0-9-]+\.[A-Za-z0-9_-]+$"))
    room_path = dpage.url.removeprefix(base)

    join = npage.locator("[data-testid=join]")
    await expect(join).to_have_text("Join consultation")
    await expect(join).to_have_attribute("href", room_path)
    await join.click()
    await npage.wait_for_url(base + room_path)

    # Each page decodes the other's camera and microphone, relayed by the server.
    async def media(browser: Browser) -> dict[str, Any]:
        return await poll(
            f"{browser.who} did not decode 30 video frames and some audio",
            lambda: browser.page.evaluate(INBOUND_STATS_JS),
            lambda s: bool(s) and s["video"] > 30 and s["audio"] > 0 and s["playing"],
            timeout=40,
            describe=browser.report,
        )

    received = await asyncio.gather(media(nurse), media(doctor))
    for browser, stats in zip((nurse, doctor), received, strict=True):
        assert stats["state"] == "connected", f"{browser.who}: {stats}"
        assert stats["width"] > 0, f"{browser.who}: {stats}"
        await expect(browser.page.locator("#conn")).to_have_text("Connected")
        await expect(browser.page.locator("#ended")).to_be_hidden()
    await expect(npage.locator("#with")).to_have_text(
        "With Dr. Anil Sharma, Sadar Hospital, Bhabua"
    )
    await expect(dpage.locator("#with")).to_have_text("With Sunita Devi, HWC Akhlaspur")
    await expect(dpage.locator("#patient")).to_contain_text(PATIENT["name"])
    if record_s:
        await record_with_consent(npage, dpage, record_s)
    await npage.screenshot(path=str(shots / "nurse-consult.png"))
    await dpage.screenshot(path=str(shots / "doctor-consult.png"))

    # One side ends it; both see the ended panel.
    await dpage.get_by_role("button", name="End consultation").click()
    for page in (dpage, npage):
        await expect(page.locator("#ended")).to_be_visible()
        await expect(page.locator("#conn")).to_have_text("The consultation has ended.")
        await expect(page.locator(".videos")).to_be_hidden()
        await expect(page.locator(".controls")).to_be_hidden()
    await npage.screenshot(path=str(shots / "nurse-ended.png"))
    # The nurse's console shows the token completed.
    await npage.goto(base + "/spoke")
    await expect(npage.locator("[data-testid=token-status]")).to_have_text("Completed")


async def record_with_consent(npage: Page, dpage: Page, seconds: float) -> None:
    """The nurse records the patient's consent, the doctor confirms it; both see it recorded."""
    for page in (npage, dpage):
        await expect(page.locator("#recording-state")).to_have_text(
            "Not recorded: the patient's consent to recording has not been recorded."
        )
    await expect(dpage.locator("#consent-form")).to_be_hidden()
    await npage.check("#consent-form input[name=given_by][value=caregiver]")
    await expect(npage.locator("#caregiver-fields")).to_be_visible()
    await npage.fill("#consent-form input[name=caregiver]", "Sita Devi")
    await npage.fill("#consent-form input[name=relation]", "wife")
    await npage.check("#consent-form input[name=method][value=verbal]")
    await npage.get_by_role("button", name="Record consent to recording").click()
    waiting = "Not recorded yet: consent recorded by the nurse, waiting for the doctor to confirm."
    for page in (npage, dpage):
        await expect(page.locator("#recording-state")).to_have_text(waiting)
        await expect(page.locator("#consent-detail")).to_contain_text("Given by Sita Devi (wife)")
    await dpage.get_by_role("button", name="Confirm consent and record").click()
    for page in (npage, dpage):
        await expect(page.locator("#recording-state")).to_have_text(
            "Recording, with the patient's consent."
        )
        await expect(page.locator("#consent")).to_have_attribute("data-recording", "recording")
    await asyncio.sleep(seconds)


async def replay_as_auditor(auditor: Browser, base: str, shots: Path) -> None:
    """The auditor finds the consultation, both recordings play, and the badge says verified."""
    page = auditor.page
    await sign_in(auditor, base, "/audit", "auditor")
    rows = page.locator("[data-testid=audit-list] tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(PATIENT["name"])
    await rows.first.get_by_role("link").click()
    await page.wait_for_url(re.compile(r"/audit/[a-z0-9-]+\.[A-Za-z0-9_-]+$"))
    await expect(page.locator("[data-testid=verify-badge]")).to_have_attribute("data-state", "ok")
    await expect(page.locator("[data-testid=consent]")).to_contain_text("Sita Devi")
    await page.click("#play")

    async def times() -> list[float]:
        return list(
            await page.evaluate(
                "() => [...document.querySelectorAll('video.seat')].map((v) => v.currentTime)"
            )
        )

    played = await poll(
        "both recordings did not play for a second",
        times,
        lambda t: len(t) == 2 and min(t) > 1.0,
        timeout=30,
        describe=auditor.report,
    )
    assert abs(played[0] - played[1]) < 0.5, played
    await page.screenshot(path=str(shots / "auditor-replay.png"))


async def test_recorded_consultation_replayed_by_an_auditor(
    redis_url: str, tmp_path: Path, shots: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Consent in the consult page, a recorded call, then the auditor's replay in a browser."""
    require_chromium()
    caplog.set_level(logging.INFO)
    expect.set_options(timeout=STEP_MS)
    settings = make_settings(
        redis_url, data_dir=tmp_path / "data", heartbeat_s=10.0, room_grace_s=20.0
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with async_playwright() as pw, AsyncExitStack() as stack:
            nurse = await stack.enter_async_context(
                browser_for(pw, "nurse", tmp_path / "nurse-profile")
            )
            doctor = await stack.enter_async_context(
                browser_for(pw, "doctor", tmp_path / "doctor-profile")
            )
            auditor = await stack.enter_async_context(
                browser_for(pw, "auditor", tmp_path / "auditor-profile")
            )
            try:
                await consultation(nurse, doctor, base, shots, record_s=5)
                await replay_as_auditor(auditor, base, shots)
            except (AssertionError, PlaywrightError) as exc:
                raise AssertionError(
                    f"{exc}\n--- {nurse.report()}\n--- {doctor.report()}\n--- {auditor.report()}"
                ) from exc
            for browser in (nurse, doctor, auditor):
                errors = [p for p in browser.problems if "error" in p]
                assert not errors, browser.report()
    finally:
        await server.close()


class MovableClock:
    """The server's clock: real time, shifted by an offset the test can move forward."""

    def __init__(self, start: datetime.datetime) -> None:
        self.offset = start - datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + self.offset

    def jump_to(self, moment: datetime.datetime) -> None:
        self.offset = moment - datetime.datetime.now(datetime.UTC)


async def test_token_issued_before_the_window_opens_is_served_after(
    redis_url: str, tmp_path: Path, shots: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hub open 09:00-16:00: the nurse registers at 08:59, the doctor sees her at 09:00."""
    require_chromium()
    caplog.set_level(logging.INFO)
    expect.set_options(timeout=STEP_MS)
    text = DEMO_DIRECTORY.read_text().replace(
        'open = "00:00"\nclose = "24:00"', 'open = "09:00"\nclose = "16:00"'
    )
    directory = tmp_path / "directory.toml"
    directory.write_text(text)
    ist = zoneinfo.ZoneInfo("Asia/Kolkata")
    today = datetime.datetime.now(ist).date()
    opening = datetime.datetime.combine(today, datetime.time(9), tzinfo=ist)
    clock = MovableClock(opening - datetime.timedelta(minutes=1))
    settings = make_settings(
        redis_url,
        directory=directory,
        data_dir=tmp_path / "data",
        heartbeat_s=10.0,
        room_grace_s=20.0,
    )
    server = TestServer(create_app(settings, clock=clock), host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"

    async def open_window() -> None:
        clock.jump_to(opening + datetime.timedelta(seconds=1))

    try:
        async with async_playwright() as pw, AsyncExitStack() as stack:
            nurse = await stack.enter_async_context(
                browser_for(pw, "nurse", tmp_path / "nurse-profile")
            )
            doctor = await stack.enter_async_context(
                browser_for(pw, "doctor", tmp_path / "doctor-profile")
            )
            try:
                await consultation(nurse, doctor, base, shots, open_window=open_window)
            except (AssertionError, PlaywrightError) as exc:
                raise AssertionError(f"{exc}\n--- {nurse.report()}\n--- {doctor.report()}") from exc
    finally:
        await server.close()
