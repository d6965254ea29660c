"""The administration pages: who may see and change what, live edits of service windows that
the keeper applies without a restart, the form's defences, and a scripted day's figures."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from core.appkeys import STORE
from core.directory import DEMO_DIRECTORY
from core.domain import HubId, Sex, SpokeId, UserId
from rooms import FIGURES, SERVICE_CONFIGS, SERVICE_KEEPER, WAITING_ROOM, Patient
from rooms.service_config import service_key
from server import create_app
from tests.conftest import RedisServer
from tests.helpers import DEMO_PASSWORD, DOCTOR, NURSE, make_settings
from tests.web.conftest import Login
from web import i18n
from web.plot import queue_plot

AiohttpClient = Any
HUB = HubId("bhabua-sadar")
PAGE = "/admin/hub/bhabua-sadar"
SAVE = PAGE + "/service"
RESET = PAGE + "/service/reset"
IST = timedelta(hours=5, minutes=30)
DAY_SHIFT = """[hubs.service]
capacity = 50
at_closing = "carry_over"

[[hubs.service.windows]]
open = "09:00"
close = "16:00"
"""


def ist(hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 11, 27, hh, mm, tzinfo=UTC) - IST


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(ist(8))


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, clock: Clock) -> TestClient[Any, Any]:
    """The demo directory: its hub serves around the clock until an edit says otherwise."""
    return await aiohttp_client(create_app(make_settings(None), clock=clock))  # type: ignore[no-any-return]


def field(page: str, name: str, action: str = SAVE) -> str:
    """The value of a hidden field in the form that posts to ``action``."""
    form = re.search(rf'<form method="post" action="{re.escape(action)}".*?</form>', page, re.S)
    assert form is not None, f"no form posting to {action}"
    found = re.search(rf'name="{name}" value="([^"]*)"', form.group(0))
    assert found is not None, name
    return html.unescape(found.group(1))


def figure(page: str, name: str) -> str:
    found = re.search(rf'<dd data-figure="{name}">([^<]*)</dd>', page)
    assert found is not None, name
    return found.group(1).strip()


async def page_of(session: aiohttp.ClientSession, client: TestClient[Any, Any]) -> str:
    resp = await session.get(client.make_url(PAGE))
    assert resp.status == 200
    return await resp.text()


async def save(
    session: aiohttp.ClientSession,
    client: TestClient[Any, Any],
    text: str,
    **override: str,
) -> aiohttp.ClientResponse:
    page = await page_of(session, client)
    data = {"csrf": field(page, "csrf"), "revision": field(page, "revision"), "service": text}
    headers = {k: v for k, v in override.items() if k in ("Origin", "Sec-Fetch-Site")}
    data.update({k: v for k, v in override.items() if k not in headers})
    return await session.post(
        client.make_url(SAVE), data=data, headers=headers, allow_redirects=False
    )


# ---------------------------------------------------------------- who may do what


async def test_only_administrators_and_auditors_see_the_pages(
    client: TestClient[Any, Any], login: Login
) -> None:
    for path in ("/admin", PAGE):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/login")
    for username in (NURSE, DOCTOR):
        session = await login(username)
        for path in ("/admin", PAGE):
            assert (await session.get(client.make_url(path))).status == 403, (username, path)
        resp = await session.post(client.make_url(SAVE), data={"service": DAY_SHIFT})
        assert resp.status == 403
    admin = await login("admin")
    listing = await admin.get(client.make_url("/admin"))
    assert listing.status == 200
    text = await listing.text()
    assert "Sadar Hospital, Bhabua" in text
    assert f'href="{PAGE}"' in text
    page = await page_of(admin, client)
    assert 'name="service"' in page
    unknown = await admin.get(client.make_url("/admin/hub/nowhere"))
    assert unknown.status == 404
    assert "There is no such hub" in await unknown.text()


async def test_an_auditor_may_look_but_not_change(
    client: TestClient[Any, Any], login: Login
) -> None:
    auditor = await login("auditor")
    page = await page_of(auditor, client)
    assert 'name="service"' not in page
    assert "only an administrator may change the service" in page
    assert 'data-testid="queue-plot"' in page
    # No form on the page to take a token from: post blind.
    resp = await auditor.post(client.make_url(SAVE), data={"service": DAY_SHIFT, "csrf": "x"})
    assert resp.status == 403
    resp = await auditor.post(client.make_url(RESET), data={"csrf": "x"})
    assert resp.status == 403
    assert client.app[SERVICE_CONFIGS].effective(HUB).override is None


async def test_home_links_to_administration(client: TestClient[Any, Any], login: Login) -> None:
    for username in ("admin", "auditor"):
        home = await (await login(username)).get(client.make_url("/home"))
        assert 'href="/admin"' in await home.text()
    nurse_page = await (await login(NURSE)).get(client.make_url("/spoke"))
    assert 'href="/admin"' not in await nurse_page.text()


def test_every_new_string_exists_in_both_languages() -> None:
    admin_keys = [k for k in i18n.STRINGS if k.startswith(("admin.", "day.", "closing.", "nav."))]
    assert len(admin_keys) > 40
    for key in admin_keys:
        assert set(i18n.STRINGS[key]) == set(i18n.LANGUAGES), key
        assert all(i18n.STRINGS[key].values()), key
    # Template-only strings stay out of the table every page hands its scripts.
    assert not any(k.startswith("admin.") for k in i18n.table("en"))


async def test_pages_speak_hindi(client: TestClient[Any, Any], login: Login) -> None:
    admin = await login("admin")
    admin.cookie_jar.update_cookies({i18n.LANG_COOKIE: "hi"})
    page = await page_of(admin, client)
    assert "सेवा अवधियाँ बदलें" in page
    assert "आज के आँकड़े" in page
    assert "सदर अस्पताल, भभुआ" in page


# ---------------------------------------------------------------- live edits


async def test_an_edit_applies_without_a_restart(
    client: TestClient[Any, Any], login: Login, clock: Clock
) -> None:
    app = client.app
    keeper = app[SERVICE_KEEPER]
    await keeper.tick()
    assert (await app[WAITING_ROOM].snapshot(HUB)).window is not None  # around the clock
    admin = await login("admin")
    resp = await save(admin, client, DAY_SHIFT)
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == PAGE + "?done=saved"

    # The keeper of this process follows the new windows at its next tick: 08:00 is closed...
    await keeper.tick()
    assert (await app[WAITING_ROOM].snapshot(HUB)).window is None
    # ...and 09:00 opens until 16:00.
    clock.now = ist(9)
    await keeper.tick()
    snap = await app[WAITING_ROOM].snapshot(HUB)
    assert snap.window is not None
    assert snap.closes_at == ist(16)

    page = await (await admin.get(client.make_url(PAGE + "?done=saved"))).text()
    assert "Saved. The new service windows apply now" in page
    assert "Edited live by admin at 2026-11-27 08:00" in page
    assert "<td>09:00</td><td>16:00</td>" in page
    assert "Open now, until 2026-11-27 16:00" in page
    assert "Edited live" in await (await admin.get(client.make_url("/admin"))).text()


async def test_reset_returns_to_the_directory(
    client: TestClient[Any, Any], login: Login, clock: Clock
) -> None:
    app = client.app
    admin = await login("admin")
    assert (await save(admin, client, DAY_SHIFT)).status == 303
    await app[SERVICE_KEEPER].tick()
    assert (await app[WAITING_ROOM].snapshot(HUB)).window is None
    clock.now = ist(9)
    await app[SERVICE_KEEPER].tick()
    assert (await app[WAITING_ROOM].snapshot(HUB)).closes_at == ist(16)
    page = await page_of(admin, client)
    resp = await admin.post(
        client.make_url(RESET),
        data={"csrf": field(page, "csrf", RESET), "revision": field(page, "revision", RESET)},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == PAGE + "?done=reset"
    assert app[SERVICE_CONFIGS].effective(HUB).override is None
    await app[SERVICE_KEEPER].tick()
    snap = await app[WAITING_ROOM].snapshot(HUB)
    assert snap.window is not None  # around the clock again: today's 00:00-24:00 window
    assert snap.closes_at == datetime(2026, 11, 28, tzinfo=UTC) - IST  # local midnight
    page = await (await admin.get(client.make_url(PAGE + "?done=reset"))).text()
    assert "The directory&#39;s service windows apply again" in page
    assert "As the directory file sets them" in page
    assert f'action="{RESET}"' not in page  # nothing left to reset


async def test_an_invalid_edit_shows_its_problems_and_saves_nothing(
    client: TestClient[Any, Any], login: Login
) -> None:
    admin = await login("admin")
    bad = (
        '[hubs.service]\ncapacity = 10\ncolour = "red"\n\n'
        '[[hubs.service.windows]]\nopen = "09:00"\nclose = "13:00"\n\n'
        '[[hubs.service.windows]]\nopen = "12:00"\nclose = "25:00"\n\n'
        '[[hubs.service.windows]]\ndays = ["mon"]\nopen = "07:00"\nclose = "10:00"\n'
    )
    resp = await save(admin, client, bad)
    assert resp.status == 422
    page = await resp.text()
    assert "Not saved. Fix these problems" in page
    assert "colour: unknown key" in page
    assert "windows[2].close: &#39;25:00&#39; is not a time of day" in page
    assert "Traceback" not in page
    # The text comes back as written, to be corrected.
    textarea = re.search(r'<textarea name="service"[^>]*>(.*?)</textarea>', page, re.S)
    assert textarea is not None
    assert html.unescape(textarea.group(1)) == bad
    assert client.app[SERVICE_CONFIGS].effective(HUB).override is None
    assert await client.app[WAITING_ROOM].open_window_key(HUB) is not None

    resp = await save(
        admin,
        client,
        DAY_SHIFT.replace(
            '"16:00"', '"16:00"\n[[hubs.service.windows]]\nopen = "15:00"\nclose = "17:00"'
        ),
    )
    assert resp.status == 422
    assert "windows overlap on mon" in await resp.text()
    resp = await save(admin, client, "[hubs.service\n")
    assert resp.status == 422
    assert "not valid TOML" in await resp.text()
    assert await client.app[STORE].exists(service_key(HUB)) == 0


async def test_an_edit_from_a_stale_page_is_refused(
    client: TestClient[Any, Any], login: Login
) -> None:
    first, second = await login("admin"), await login("admin")
    stale = await page_of(first, client)
    assert (await save(second, client, DAY_SHIFT)).status == 303
    resp = await first.post(
        client.make_url(SAVE),
        data={
            "csrf": field(stale, "csrf"),
            "revision": field(stale, "revision"),
            "service": DAY_SHIFT.replace("16:00", "17:00"),
        },
        allow_redirects=False,
    )
    assert resp.status == 409
    page = await resp.text()
    assert "someone else changed this hub" in page
    assert "<td>09:00</td><td>16:00</td>" in page  # what is in force now
    assert "17:00" in page  # and the text that was not saved, to try again from
    assert client.app[SERVICE_CONFIGS].get(HUB).windows[0].close == "16:00"


async def test_posts_need_the_form_token_and_a_same_site_origin(
    client: TestClient[Any, Any], login: Login
) -> None:
    admin = await login("admin")
    other = await login("admin")
    someone_elses = field(await page_of(other, client), "csrf")
    for override in (
        {"csrf": ""},
        {"csrf": "forged"},
        {"csrf": "ठग"},  # not even ASCII
        {"csrf": someone_elses},  # a token of another session
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        resp = await save(admin, client, DAY_SHIFT, **override)
        assert resp.status == 403, override
        assert "The form was refused" in await resp.text()
    resp = await admin.post(client.make_url(SAVE), data={"service": DAY_SHIFT})
    assert resp.status == 403
    assert client.app[SERVICE_CONFIGS].effective(HUB).override is None
    # Our own page posts with `Origin: null` (Referrer-Policy: no-referrer) or its own origin.
    own = str(client.make_url("/")).rstrip("/")
    assert (await save(admin, client, DAY_SHIFT, Origin="null")).status == 303
    resp = await save(admin, client, DAY_SHIFT, Origin=own, **{"Sec-Fetch-Site": "same-origin"})
    assert resp.status == 303


# ---------------------------------------------------------------- a day in figures


@pytest.fixture
async def day_client(
    aiohttp_client: AiohttpClient, clock: Clock, tmp_path: Path
) -> TestClient[Any, Any]:
    """A hub that serves 09:00-16:00, its clock at 08:30."""
    text = DEMO_DIRECTORY.read_text().replace(
        'open = "00:00"\nclose = "24:00"', 'open = "09:00"\nclose = "16:00"'
    )
    path = tmp_path / "directory.toml"
    path.write_text(text)
    clock.now = ist(8, 30)
    settings = make_settings(None, directory=path)
    return await aiohttp_client(create_app(settings, clock=clock))  # type: ignore[no-any-return]


async def test_a_scripted_day_in_figures(day_client: TestClient[Any, Any], clock: Clock) -> None:
    app = day_client.app
    room, keeper = app[WAITING_ROOM], app[SERVICE_KEEPER]
    spoke, nurse, doctor = SpokeId("akhlaspur"), UserId(NURSE), UserId(DOCTOR)

    def patient(name: str) -> Patient:
        return Patient(name=name, age=40, sex=Sex.FEMALE, complaint="cough")

    async def at(hh: int, mm: int = 0) -> None:
        clock.now = ist(hh, mm)
        await keeper.tick()

    async def consult(ended: tuple[int, int]) -> None:
        called = await room.call_next(HUB, doctor, "node-test")
        assert called.room is not None
        await room.activate_room(HUB, called.room)
        await at(*ended)
        assert await room.end_room(HUB, called.room, "hangup") == "completed"

    await at(8, 30)
    await room.issue(spoke, nurse, patient("A"))  # scheduled: the hub opens at 09:00
    await at(8, 45)
    c = await room.issue(spoke, nurse, patient("C"))
    await at(8, 50)
    await room.cancel(spoke, c.id)
    await at(9)  # the window opens; A waits from now
    await at(9, 10)
    await room.issue(spoke, nurse, patient("B"))
    await at(9, 20)
    await consult(ended=(9, 35))  # A waited 20 min
    await at(9, 40)
    await consult(ended=(9, 50))  # B waited 30 min
    await at(10)
    await room.issue(spoke, nurse, patient("D"))
    # A no-show, as the no-show timer would record it.
    await app[STORE].xadd(
        "wr:{bhabua-sadar}:events",
        {"event": "no_show", "token": "x", "at": str(int(ist(12).timestamp() * 1000))},
    )
    await at(16)  # closing: D is carried over to tomorrow
    await at(17)

    figures = await app[FIGURES].today(HUB)
    assert [p.waiting for p in figures.queue] == [0, 1, 2, 1, 2, 1, 0, 1]
    assert [p.at for p in figures.queue][1:] == [
        ist(8, 30),
        ist(8, 45),
        ist(8, 50),
        ist(9, 10),
        ist(9, 20),
        ist(9, 40),
        ist(10),
    ]
    assert figures.open_spans == ((ist(9), ist(16)),)

    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        resp = await session.post(
            day_client.make_url("/login"),
            data={"username": "admin", "password": DEMO_PASSWORD},
            allow_redirects=False,
        )
        assert resp.status == 303
        page = await (await session.get(day_client.make_url(PAGE))).text()
        listing = await (await session.get(day_client.make_url("/admin"))).text()
    finally:
        await session.close()
    assert "Today&#39;s figures (2026-11-27)" in page
    assert {
        name: figure(page, name)
        for name in (
            "issued",
            "served",
            "no_shows",
            "carried_over",
            "cancelled",
            "expired",
            "waiting",
            "wait_avg",
            "wait_p90",
        )
    } == {
        "issued": "4",
        "served": "2",
        "no_shows": "1",
        "carried_over": "1",
        "cancelled": "1",
        "expired": "0",
        "waiting": "1",
        "wait_avg": "25.0 min",
        "wait_p90": "30.0 min",
    }
    assert re.search(
        r'<tr data-hub="bhabua-sadar">.*?<td>1</td><td>4</td><td>2</td>', listing, re.S
    )

    # The plot: inline SVG, no script and no inline style (the CSP forbids both).
    svg = re.search(r'<svg [^>]*data-testid="queue-plot".*?</svg>', page, re.S)
    assert svg is not None
    markup = svg.group(0)
    assert "Time of day (hub&#39;s local time)" in markup
    assert "Patients waiting" in markup
    for label in ("00:00", "09:00", "12:00", "24:00"):
        assert f">{label}</text>" in markup
    assert [int(v) for v in re.findall(r'text-anchor="end">(\d+)</text>', markup)] == [0, 1, 2]
    assert "style=" not in page
    assert "<script>" not in page
    plot = queue_plot(figures)
    points = re.search(r'<polyline class="line" points="([^"]+)"', markup)
    assert points is not None
    assert points.group(1) == plot.points
    # Drawn as steps: every value held until the next change, the last one until now.
    coords = [tuple(map(float, p.split(","))) for p in plot.points.split()]
    assert len(coords) == 2 * len(figures.queue)
    ys = sorted({y for _, y in coords})
    assert len(ys) == 3  # 0, 1 and 2 waiting
    assert coords[-1][0] == plot.now_x
    assert len(plot.bands) == 1


async def test_pages_say_so_when_the_store_is_down(
    aiohttp_client: AiohttpClient, clock: Clock, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        client = await aiohttp_client(create_app(make_settings(redis.url), clock=clock))
        admin = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        try:
            resp = await admin.post(
                client.make_url("/login"),
                data={"username": "admin", "password": DEMO_PASSWORD},
                allow_redirects=False,
            )
            assert resp.status == 303
            page = await page_of(admin, client)
            redis.stop(kill=True)
            listing = await admin.get(client.make_url("/admin"))
            assert listing.status == 200
            assert "The store is unreachable right now" in await listing.text()
            page_now = await admin.get(client.make_url(PAGE))
            assert page_now.status == 200
            text = await page_now.text()
            assert "The store is unreachable right now" in text
            assert 'data-testid="queue-plot"' not in text
            resp = await admin.post(
                client.make_url(SAVE),
                data={
                    "csrf": field(page, "csrf"),
                    "revision": field(page, "revision"),
                    "service": DAY_SHIFT,
                },
                allow_redirects=False,
            )
            assert resp.status == 503
            assert client.app[SERVICE_CONFIGS].effective(HUB).override is None
        finally:
            await admin.close()
    finally:
        redis.stop()
