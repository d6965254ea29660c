"""The auditor pages: who may list, replay, stream and download consultations; the filters; the
replay page's timeline and details; range requests; the verification badge; and the audit log
entry every look at a consultation leaves behind."""

from __future__ import annotations

import asyncio
import fractions
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from audit import (
    ARCHIVE,
    AUDIT_TRAIL,
    SIGNING_KEY,
    iso,
    sha256_file,
    write_json_atomic,
    write_manifest,
)
from core.directory import DEMO_DIRECTORY
from server import create_app
from tests.helpers import DOCTOR, NURSE, make_settings
from tests.web.conftest import Login
from web import i18n

AiohttpClient = Any
IST = timedelta(hours=5, minutes=30)
WEBM_MAGIC = b"\x1a\x45\xdf\xa3"

RECORDED = "bhabua-sadar.Rec0rded-A1"
UNRECORDED = "bhabua-sadar.NoConsent-B2"
INTERRUPTED = "mohania.Interrupted-C3"
LIVE = "bhabua-sadar.InProgress-D4"
EVERY = {RECORDED, UNRECORDED, INTERRUPTED, LIVE}
STARTED = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)  # 10:30 at the hub
T0 = STARTED + timedelta(seconds=20)  # recording started 20 s into the consultation

#: A second hub, so that the hub filter has something to leave out.
SECOND_HUB = """
[[hubs]]
id = "mohania"
name = "Referral Hospital, Mohania"
timezone = "Asia/Kolkata"

[[blocks]]
id = "mohania"
name = "Mohania block"

[[spokes]]
id = "kudra"
name = "HWC Kudra"
block = "mohania"
hub = "mohania"

[[users]]
username = "dr.verma"
name = "Dr. Neha Verma"
role = "doctor"
hub = "mohania"
registration = "BMC-50112"

[[users]]
username = "nurse.kudra"
name = "Anita Kumari"
role = "nurse"
spoke = "kudra"
"""


def encode_webm(path: Path, seconds: float = 3.0, shade: int = 0) -> None:
    """``seconds`` of VP8 video and Opus audio in WebM, as the recorder leaves them."""
    fps, rate, samples = 15, 48000, 960
    with av.open(str(path), "w", format="webm") as out:
        video = out.add_stream("libvpx", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream("libopus", rate=rate, layout="mono")
        for n in range(round(seconds * fps)):
            img = np.full((120, 160, 3), shade, np.uint8)
            img[:, (n * 4) % 152 : (n * 4) % 152 + 8] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = n
            frame.time_base = fractions.Fraction(1, fps)
            out.mux(video.encode(frame))
        tone = np.arange(samples) / rate
        for n in range(round(seconds * rate / samples)):
            pcm = (np.sin(2 * np.pi * 440 * (tone + n * samples / rate)) * 8000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = n * samples
            frame.time_base = fractions.Fraction(1, rate)
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s per seat, encoded once for the module."""
    folder = tmp_path_factory.mktemp("media")
    encode_webm(folder / "spoke-1.webm", shade=40)
    encode_webm(folder / "hub-1.webm", shade=200)
    return folder


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 27, 8, 0, tzinfo=UTC) - IST)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, tmp_path: Path, data_dir: Path, clock: Clock
) -> TestClient[Any, Any]:
    directory = tmp_path / "directory.toml"
    directory.write_text(DEMO_DIRECTORY.read_text(encoding="utf-8") + SECOND_HUB, encoding="utf-8")
    settings = make_settings(None, data_dir=data_dir, directory=directory)
    return await aiohttp_client(create_app(settings, clock=clock))  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the archive under test


def _header(
    room_id: str,
    *,
    hub: tuple[str, str],
    spoke: tuple[str, str],
    doctor: tuple[str, str, str],
    nurse: tuple[str, str],
    patient: str,
    started: datetime,
    key_id: str,
) -> dict[str, Any]:
    return {
        "v": 1,
        "consultation": room_id,
        "token": f"tok-{room_id[-2:]}",
        "hub": {"id": hub[0], "name": hub[1]},
        "spoke": {"id": spoke[0], "name": spoke[1]},
        "doctor": {"username": doctor[0], "name": doctor[1], "registration": doctor[2]},
        "nurse": {"username": nurse[0], "name": nurse[1]},
        "patient": {
            "name": patient,
            "age": 54,
            "sex": "male",
            "complaint": "chest pain on exertion",
            "phone": None,
            "priority": "urgent",
        },
        "started_at": iso(started),
        "node": "node-test",
        "key_id": key_id,
    }


def _event(
    at: datetime, kind: str, seat: str | None = None, by: str | None = None, **detail: Any
) -> dict[str, Any]:
    return {
        "at": iso(at),
        "t": (at - STARTED).total_seconds(),
        "kind": kind,
        "seat": seat,
        "by": by,
        "detail": detail,
    }


async def _seal(
    app: Any, room_id: str, manifest: dict[str, Any], started: datetime, media: Path | None
) -> Path:
    """Write a consultation's files, its signed manifest and its ``consultation_ended`` entry."""
    folder: Path = await asyncio.to_thread(app[ARCHIVE].directory_for, room_id, started)
    files = []
    if media is not None:
        for seat in ("spoke", "hub"):
            name = f"{seat}-1.webm"
            await asyncio.to_thread(shutil.copyfile, media / name, folder / name)
            digest, size = await asyncio.to_thread(sha256_file, folder / name)
            gaps = [{"track": "video", "from_s": 1.0, "to_s": 2.2}] if seat == "spoke" else []
            files.append(
                {
                    "name": name,
                    "seat": seat,
                    "segment": 1,
                    "sha256": digest,
                    "bytes": size,
                    "first_s": 0.0,
                    "last_s": 3.0,
                    "interrupted": False,
                    "gaps": gaps,
                }
            )
    manifest["files"] = files
    digest = await asyncio.to_thread(write_manifest, folder, manifest, app[SIGNING_KEY])
    await app[AUDIT_TRAIL].record(
        "consultation_ended",
        at=started + timedelta(seconds=manifest["duration_s"]),
        subject=room_id,
        detail={
            "manifest_sha256": digest,
            "files": [{k: f[k] for k in ("name", "sha256", "bytes")} for f in files],
            "recording": manifest["recording"]["state"],
        },
    )
    return folder


@pytest.fixture
async def archive(client: TestClient[Any, Any], media: Path) -> dict[str, Path]:
    """Four consultations: recorded, not recorded, interrupted (another hub), in progress."""
    app = client.app
    key_id = app[SIGNING_KEY].key_id
    sadar = ("bhabua-sadar", "Sadar Hospital, Bhabua")
    akhlaspur = ("akhlaspur", "HWC Akhlaspur")
    sharma = ("dr.sharma", "Dr. Anil Sharma", "BMC-38291")
    sunita = ("nurse.akhlaspur", "Sunita Devi")
    folders = {}

    recorded = _header(
        RECORDED,
        hub=sadar,
        spoke=akhlaspur,
        doctor=sharma,
        nurse=sunita,
        patient="Ramesh Yadav",
        started=STARTED,
        key_id=key_id,
    )
    ended = STARTED + timedelta(minutes=10)
    recorded.update(
        ended_at=iso(ended),
        duration_s=600.0,
        end_reason="hangup",
        interrupted=False,
        consent={
            "given_by": "caregiver",
            "caregiver": "Sita Yadav",
            "relation": "wife",
            "method": "verbal",
            "recorded_by": "nurse.akhlaspur",
            "recorded_at": iso(STARTED + timedelta(seconds=12)),
            "confirmed_by": "dr.sharma",
            "confirmed_at": iso(T0),
            "withdrawn_by": None,
            "withdrawn_at": None,
        },
        recording={
            "state": "recorded",
            "t0": iso(T0),
            "started_at": iso(T0),
            "stopped_at": iso(T0 + timedelta(seconds=3)),
        },
        events=[
            _event(STARTED, "called", "hub", "dr.sharma"),
            _event(STARTED + timedelta(seconds=5), "joined", "spoke", "nurse.akhlaspur"),
            _event(STARTED + timedelta(seconds=12), "consent_recorded", "spoke", "nurse.akhlaspur"),
            _event(T0, "consent_confirmed", "hub", "dr.sharma"),
            _event(T0, "recording_started", None, "dr.sharma"),
            _event(T0 + timedelta(seconds=2.5), "reconnecting", "spoke"),
            _event(T0 + timedelta(seconds=3), "recording_stopped", reason="ended"),
            _event(ended, "ended", reason="hangup"),
        ],
    )
    folders[RECORDED] = await _seal(app, RECORDED, recorded, STARTED, media)

    started = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    unrecorded = _header(
        UNRECORDED,
        hub=sadar,
        spoke=("sihoriya", "HWC Sihoriya"),
        doctor=("dr.khan", "Dr. Farah Khan", "BMC-41077"),
        nurse=("nurse.sihoriya", "Rekha Kumari"),
        patient="Geeta Devi",
        started=started,
        key_id=key_id,
    )
    unrecorded.update(
        ended_at=iso(started + timedelta(minutes=3)),
        duration_s=180.0,
        end_reason="peer_lost",
        interrupted=False,
        consent=None,
        recording={"state": "none", "t0": None, "started_at": None, "stopped_at": None},
        events=[_event(started, "called", "hub", "dr.khan")],
    )
    folders[UNRECORDED] = await _seal(app, UNRECORDED, unrecorded, started, None)

    # 01:00 at the hub on the 27th, still the 26th in UTC (the archive's date).
    started = datetime(2026, 11, 26, 19, 30, tzinfo=UTC)
    interrupted = _header(
        INTERRUPTED,
        hub=("mohania", "Referral Hospital, Mohania"),
        spoke=("kudra", "HWC Kudra"),
        doctor=("dr.verma", "Dr. Neha Verma", "BMC-50112"),
        nurse=("nurse.kudra", "Anita Kumari"),
        patient="Mohan Lal",
        started=started,
        key_id=key_id,
    )
    interrupted.update(
        ended_at=iso(started + timedelta(minutes=25)),
        duration_s=1500.0,
        end_reason="interrupted",
        interrupted=True,
        consent=None,
        recording={"state": "interrupted", "t0": None, "started_at": None, "stopped_at": None},
        events=[],
    )
    folders[INTERRUPTED] = await _seal(app, INTERRUPTED, interrupted, started, None)

    started = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    live = _header(
        LIVE,
        hub=sadar,
        spoke=akhlaspur,
        doctor=sharma,
        nurse=sunita,
        patient="Lalita Devi",
        started=started,
        key_id=key_id,
    )
    live.update(recording={"state": "recording", "t0": iso(started)}, events=[])
    folder = await asyncio.to_thread(app[ARCHIVE].directory_for, LIVE, started)
    await asyncio.to_thread(write_json_atomic, folder / "recording.json", live)
    folders[LIVE] = folder
    return folders


def log_entries(data_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    lines = (data_dir / "audit" / "audit.log").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [e for e in entries if kind is None or e["kind"] == kind]


def listed(page: str) -> set[str]:
    return set(re.findall(r'<tr data-room="([^"]+)"', page))


async def get(
    session: aiohttp.ClientSession, client: TestClient[Any, Any], path: str, **kw: Any
) -> aiohttp.ClientResponse:
    return await session.get(client.make_url(path), allow_redirects=False, **kw)


# ---------------------------------------------------------------- who may look


async def test_nobody_else_gets_a_list_a_page_or_a_byte(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    paths = [
        "/audit",
        "/audit?state=recorded",
        f"/audit/{RECORDED}",
        f"/audit/{RECORDED}/verify",
        f"/audit/{RECORDED}/files/spoke-1.webm",
        f"/audit/{RECORDED}/files/hub-1.webm?download=1",
    ]
    before = len(log_entries(data_dir))
    for path in paths:
        resp = await client.get(path, allow_redirects=False, headers={"Range": "bytes=0-"})
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/login?next=/audit"), path
        assert WEBM_MAGIC not in await resp.read(), path
    for username in (NURSE, DOCTOR):
        session = await login(username)
        for path in paths:
            resp = await get(session, client, path, headers={"Range": "bytes=0-"})
            assert resp.status == 403, (username, path)
            body = await resp.read()
            assert WEBM_MAGIC not in body, (username, path)
            assert b"Ramesh Yadav" not in body
            assert b'"problems"' not in body
            assert "video/webm" not in resp.headers.get("Content-Type", "")
    assert len(log_entries(data_dir)) == before  # nothing was shown, nothing is logged


async def test_auditors_and_admins_are_led_to_the_pages(
    client: TestClient[Any, Any], login: Login
) -> None:
    for username in ("auditor", "admin"):
        home = await (await login(username)).get(client.make_url("/home"))
        assert 'href="/audit"' in await home.text()


# ---------------------------------------------------------------- the listing


async def test_listing_shows_every_consultation_in_the_hubs_time(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    auditor = await login("auditor")
    resp = await get(auditor, client, "/audit")
    assert resp.status == 200
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    page = await resp.text()
    assert listed(page) == EVERY
    row = re.search(rf'<tr data-room="{re.escape(RECORDED)}".*?</tr>', page, re.S)
    assert row is not None
    for text in (
        "2026-11-25 10:30 IST",
        "Sadar Hospital, Bhabua",
        "HWC Akhlaspur",
        "Dr. Anil Sharma",
        "Sunita Devi",
        "Ramesh Yadav",
        "10:00",
        "Recorded",
        f'href="/audit/{RECORDED}"',
    ):
        assert text in row.group(0), text
    # The form offers the directory's hubs, spokes and doctors.
    for option in ('value="mohania"', 'value="kudra"', 'value="dr.verma"', 'value="dr.khan"'):
        assert option in page
    assert 'value="nurse.kudra"' not in page
    assert "2026-11-27 01:00 IST" in page  # the interrupted one, at its hub
    assert "<script>" not in page  # no inline script (CSP)

    entry = log_entries(data_dir, "consultation_listed")[-1]
    assert entry["actor"] == "auditor"
    assert entry["source"] == "127.0.0.1"
    assert entry["subject"] is None
    assert entry["detail"] == {}
    assert entry["at"] == "2026-11-27T02:30:00.000Z"


#: Filters and what each leaves of the four consultations.
NARROWING: list[tuple[str, set[str]]] = [
    ("from=2026-11-26", {UNRECORDED, INTERRUPTED, LIVE}),
    ("to=2026-11-25", {RECORDED}),
    # Dates are the hub's: the interrupted one started on the 27th there, the 26th in UTC.
    ("from=2026-11-26&to=2026-11-26", {UNRECORDED}),
    ("from=2026-11-27", {INTERRUPTED, LIVE}),
    ("to=2026-11-26", {RECORDED, UNRECORDED}),
    ("hub=mohania", {INTERRUPTED}),
    ("hub=bhabua-sadar", {RECORDED, UNRECORDED, LIVE}),
    ("spoke=sihoriya", {UNRECORDED}),
    ("spoke=akhlaspur", {RECORDED, LIVE}),
    ("doctor=dr.sharma", {RECORDED, LIVE}),
    ("doctor=dr.verma", {INTERRUPTED}),
    ("min_minutes=5", {RECORDED, INTERRUPTED}),
    ("max_minutes=5", {UNRECORDED}),
    ("min_minutes=5&max_minutes=15", {RECORDED}),
    ("min_minutes=2.5", {RECORDED, UNRECORDED, INTERRUPTED}),
    ("state=recorded", {RECORDED}),
    ("state=none", {UNRECORDED}),
    ("state=interrupted", {INTERRUPTED}),
    ("state=in_progress", {LIVE}),
    ("state=purged", set()),
    ("hub=bhabua-sadar&state=recorded&doctor=dr.sharma", {RECORDED}),
    # Untouched fields of the form arrive empty and mean "any".
    ("from=&to=&hub=&spoke=&doctor=&min_minutes=&max_minutes=&state=", EVERY),
]


async def test_each_filter_narrows_the_listing(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    admin = await login("admin")
    for query, expected in NARROWING:
        resp = await get(admin, client, f"/audit?{query}")
        assert resp.status == 200, (query, await resp.text())
        page = await resp.text()
        assert listed(page) == expected, query
        if not expected:
            assert "No consultation matches these filters" in page
        entry = log_entries(data_dir, "consultation_listed")[-1]
        assert entry["actor"] == "admin"
        given = dict(part.split("=") for part in query.split("&"))
        assert entry["detail"] == {k: v for k, v in given.items() if v}, query


#: Filters that cannot be used, and what the page says about each.
REFUSED: list[tuple[str, str]] = [
    ("from=2026-13-01", "must be a date written YYYY-MM-DD"),
    ("from=20261127", "must be a date written YYYY-MM-DD"),
    ("to=yesterday", "must be a date written YYYY-MM-DD"),
    ("from=2026-11-27&to=2026-11-25", "The end date comes before the start date"),
    ("hub=nowhere", "There is no hub"),
    ("hub=..%2F..%2Fkeys", "There is no hub"),
    ("spoke=mohania", "There is no spoke"),
    ("doctor=nurse.akhlaspur", "There is no doctor"),
    ("min_minutes=-1", "must be a number of minutes"),
    ("max_minutes=ten", "must be a number of minutes"),
    ("min_minutes=1e3", "must be a number of minutes"),
    ("min_minutes=nan", "must be a number of minutes"),
    ("min_minutes=20&max_minutes=10", "The shortest duration is longer than the longest"),
    ("state=deleted", "There is no recording state"),
    ("sort=doctor", "Unknown filter"),
    ("hub=mohania&hub=bhabua-sadar", "is given more than once"),
    ("patient=" + "x" * 100, "Unknown filter"),
    ("hub=" + "x" * 100, "is too long"),
]


async def test_bad_filters_are_refused_plainly(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    auditor = await login("auditor")
    before = len(log_entries(data_dir, "consultation_listed"))
    for query, message in REFUSED:
        resp = await get(auditor, client, f"/audit?{query}")
        assert resp.status == 400, query
        page = await resp.text()
        assert message in page, query
        assert 'data-testid="audit-error"' in page
        assert listed(page) == set()
    # Nothing was listed, so nothing is logged.
    assert len(log_entries(data_dir, "consultation_listed")) == before


async def test_the_listing_speaks_hindi(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path]
) -> None:
    auditor = await login("auditor")
    auditor.cookie_jar.update_cookies({i18n.LANG_COOKIE: "hi"})
    page = await (await get(auditor, client, "/audit")).text()
    assert i18n.translate("hi", "audit.title") in page
    assert "सदर अस्पताल, भभुआ" in page
    assert i18n.translate("hi", "audit.state.recorded") in page
    bad = await (await get(auditor, client, "/audit?state=x")).text()
    assert i18n.translate("hi", "audit.bad.state", value="x") in bad
    replay = await (await get(auditor, client, f"/audit/{RECORDED}")).text()
    for key in ("audit.details", "audit.event.recording_started", "audit.reason.hangup"):
        assert i18n.translate("hi", key) in replay, key
    assert i18n.translate("hi", "replay.checking") in replay


# ---------------------------------------------------------------- the replay page


async def test_replay_page_shows_both_seats_on_one_timeline(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    auditor = await login("auditor")
    resp = await get(auditor, client, f"/audit/{RECORDED}")
    assert resp.status == 200
    page = await resp.text()
    for seat in ("spoke", "hub"):
        assert f'id="video-{seat}"' in page
        assert f'src="/audit/{RECORDED}/files/{seat}-1.webm"' in page
        assert f'href="/audit/{RECORDED}/files/{seat}-1.webm?download=1"' in page
    assert 'id="seek" type="range" min="0" max="3.0"' in page
    assert 'id="play"' in page
    assert f'data-verify="/audit/{RECORDED}/verify"' in page
    assert 'data-purged="false"' in page
    script = re.search(r'<script type="module" src="(/static/replay\.js[^"]*)"', page)
    assert script is not None
    served = await get(auditor, client, script.group(1))
    assert served.status == 200
    assert "javascript" in served.headers["Content-Type"]
    assert "<script>" not in page
    # Events after recording started seek to (their time - t0); earlier ones cannot.
    events = re.findall(
        r'<li data-kind="([a-z_]+)">\s*(?:<button [^>]*data-seek="([0-9.]+)")?', page
    )
    seeks = dict(events)
    assert seeks["recording_started"] == "0.0"
    assert seeks["reconnecting"] == "2.5"
    assert seeks["recording_stopped"] == "3.0"
    assert seeks["ended"] == ""  # after the recording stopped
    assert seeks["called"] == ""
    assert seeks["consent_recorded"] == ""
    assert "10:30:00" in page  # the hub's local time
    for text in (
        "Dr. Anil Sharma",
        "BMC-38291",
        "Sunita Devi",
        "Ramesh Yadav",
        "chest pain on exertion",
        "Sita Yadav",
        "(wife)",
        "Confirmed by Dr. Anil Sharma (dr.sharma) at 2026-11-25 10:30:20 IST",
        "Hung up",
        "0:01 – 0:02",  # the spoke's video gap
    ):
        assert text in page, text
    assert re.search(r'data-testid="interrupted">\s*No<', page)

    entry = log_entries(data_dir, "recording_viewed")[-1]
    assert (entry["actor"], entry["source"], entry["subject"]) == ("auditor", "127.0.0.1", RECORDED)


async def test_an_unrecorded_consultation_says_why(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    admin = await login("admin")
    page = await (await get(admin, client, f"/audit/{UNRECORDED}")).text()
    assert "This consultation was not recorded" in page
    assert "consent was not given and confirmed" in page
    assert "<video" not in page
    assert "Dr. Farah Khan" in page
    assert "Geeta Devi" in page
    assert 'data-kind="called"' in page
    live = await get(admin, client, f"/audit/{LIVE}")
    assert live.status == 200
    assert "still going on" in await live.text()
    assert (await get(admin, client, f"/audit/{LIVE}/files/spoke-1.webm")).status == 404
    subjects = [e["subject"] for e in log_entries(data_dir, "recording_viewed")]
    assert subjects[-2:] == [UNRECORDED, LIVE]


async def test_an_unknown_consultation_is_404(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    auditor = await login("auditor")
    for path in ("/audit/bhabua-sadar.nope", "/audit/bhabua-sadar.nope/verify"):
        resp = await get(auditor, client, path)
        assert resp.status == 404, path
    assert "no such consultation" in await (await get(auditor, client, "/audit/x.y")).text()
    assert log_entries(data_dir, "recording_viewed") == []


# ---------------------------------------------------------------- streaming and downloads


async def test_files_stream_with_range_requests(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    auditor = await login("auditor")
    path = f"/audit/{RECORDED}/files/spoke-1.webm"
    content = (archive[RECORDED] / "spoke-1.webm").read_bytes()

    whole = await get(auditor, client, path)
    assert whole.status == 200
    assert whole.headers["Content-Type"] == "video/webm"
    assert whole.headers["Cache-Control"] == "private, no-store"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert "Content-Disposition" not in whole.headers
    assert await whole.read() == content

    part = await get(auditor, client, path, headers={"Range": "bytes=100-1099"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(content)}"
    assert await part.read() == content[100:1100]

    first = await get(auditor, client, path, headers={"Range": "bytes=0-"})
    assert first.status == 206
    assert await first.read() == content

    # The full read and the read from byte 0 are playbacks; the seek in between is not logged.
    played = log_entries(data_dir, "recording_played")
    assert len(played) == 2
    for entry in played:
        assert entry["actor"] == "auditor"
        assert entry["source"] == "127.0.0.1"
        assert entry["subject"] == RECORDED
        assert entry["detail"] == {"file": "spoke-1.webm"}


async def test_downloads_are_attachments_and_logged(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    admin = await login("admin")
    resp = await get(admin, client, f"/audit/{RECORDED}/files/hub-1.webm?download=1")
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{RECORDED}.hub-1.webm"'
    assert await resp.read() == (archive[RECORDED] / "hub-1.webm").read_bytes()
    entry = log_entries(data_dir, "recording_downloaded")[-1]
    assert (entry["actor"], entry["source"], entry["subject"]) == ("admin", "127.0.0.1", RECORDED)
    assert entry["detail"] == {"file": "hub-1.webm"}
    assert log_entries(data_dir, "recording_played") == []


async def test_only_the_manifests_files_are_served(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path], data_dir: Path
) -> None:
    auditor = await login("auditor")
    (archive[RECORDED] / "extra-1.webm").write_bytes(WEBM_MAGIC + b"not listed")
    base = str(client.make_url("/")).rstrip("/")
    raw_paths = [
        f"/audit/{RECORDED}/files/../../keys/signing.key",
        f"/audit/{RECORDED}/files/%2e%2e/%2e%2e/keys/signing.key",
        f"/audit/{RECORDED}/files/%2e%2e%2f%2e%2e%2fkeys%2fsigning.key",
        f"/audit/{RECORDED}/files/..%2F..%2F..%2Fkeys%2Fsigning.key",
        f"/audit/{RECORDED}/files/%2e%2e%2f%2e%2e%2f{UNRECORDED}%2fmanifest.json",
        f"/audit/{RECORDED}/files/manifest.json",
        f"/audit/{RECORDED}/files/recording.json",
        f"/audit/{RECORDED}/files/extra-1.webm",
        f"/audit/{UNRECORDED}/files/spoke-1.webm",
        "/audit/bhabua-sadar.nope/files/spoke-1.webm",
        "/audit/..%2fkeys/files/signing.key",
        "/audit/%2e%2e/keys/files/spoke-1.webm",
    ]
    for raw in raw_paths:
        resp = await auditor.get(URL(base + raw, encoded=True), allow_redirects=False)
        assert resp.status in (400, 404), (raw, resp.status)
        body = await resp.read()
        assert b"PRIVATE KEY" not in body, raw
        assert WEBM_MAGIC not in body, raw
        assert "video/webm" not in resp.headers.get("Content-Type", ""), raw
    # A listed file gone from the disk is not found either.
    (archive[RECORDED] / "hub-1.webm").unlink()
    assert (await get(auditor, client, f"/audit/{RECORDED}/files/hub-1.webm")).status == 404
    assert log_entries(data_dir, "recording_played") == []
    assert log_entries(data_dir, "recording_downloaded") == []


# ---------------------------------------------------------------- verification


async def test_verification_names_an_altered_file(
    client: TestClient[Any, Any], login: Login, archive: dict[str, Path]
) -> None:
    auditor = await login("auditor")
    resp = await get(auditor, client, f"/audit/{RECORDED}/verify")
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "problems": [], "notices": []}

    target = archive[RECORDED] / "hub-1.webm"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    report = await (await get(auditor, client, f"/audit/{RECORDED}/verify")).json()
    assert report["ok"] is False
    assert report["problems"] == [
        f"{RECORDED}: hub-1.webm altered (SHA-256 differs from the manifest)"
    ]

    # Each consultation is checked on its own (with the whole log): the others stay verified.
    unrecorded = await (await get(auditor, client, f"/audit/{UNRECORDED}/verify")).json()
    assert unrecorded == {"ok": True, "problems": [], "notices": []}
    live = await (await get(auditor, client, f"/audit/{LIVE}/verify")).json()
    assert live["ok"] is True
    assert live["notices"] == [f"{LIVE}: not sealed yet (recording.json without a manifest)"]


# ---------------------------------------------------------------- strings


def test_every_string_the_pages_use_exists_in_both_languages() -> None:
    web = Path(__file__).parents[2] / "web"
    used: set[str] = set()
    for name in ("audit_list.html", "audit_replay.html"):
        text = (web / "templates" / name).read_text(encoding="utf-8")
        used |= {k for k in re.findall(r'\bt\("([a-z_.]+)"', text) if not k.endswith(".")}
    script = (web / "static" / "replay.js").read_text(encoding="utf-8")
    scripted = set(re.findall(r'\bt\("([a-z_.]+)"', script))
    assert scripted
    assert used
    for key in used | scripted:
        assert key in i18n.STRINGS, key
        assert set(i18n.STRINGS[key]) == set(i18n.LANGUAGES), key
        assert all(i18n.STRINGS[key].values()), key
    for kind in ("state", "event", "reason", "bad", "why"):
        keys = [k for k in i18n.STRINGS if k.startswith(f"audit.{kind}.")]
        assert keys, kind
    # The replay module's strings reach it; the rest stay in the templates.
    table = i18n.table("en")
    assert scripted <= set(table)
    assert not any(k.startswith("audit.") for k in table)
