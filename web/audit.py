"""The auditor pages: the archive of consultations, filtered; one consultation's replay, with
both seats on one timeline, its events and a verification badge; its files, streamed.

Auditors and administrators, and nobody else, reach these pages.  Each listing, replay, playback
and download is written to the audit log *before* anything is sent: when the log cannot take the
entry the request fails, so nobody sees a recording without leaving a trace.  Filters are
checked strictly; a value that cannot be used is answered with a 400 page that says which.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiMapping

from audit import (
    ARCHIVE,
    AUDIT_TRAIL,
    Archive,
    ArchiveQuery,
    AuditError,
    ConsultationRecord,
    ConsultationSummary,
    verify,
)
from core.appkeys import DIRECTORY
from core.directory import Directory
from core.domain import HubId, Role, SpokeId, UserId
from rooms import WAITING_ROOM

from . import i18n
from .pages import USER, context, language, require

logger = logging.getLogger(__name__)

ROOM_ID = r"{room_id:[a-z0-9][a-z0-9-]{0,47}\.[A-Za-z0-9_-]{1,64}}"
#: Media files are ``<seat>-<segment>.webm``; anything else is not a route at all.
FILE_NAME = r"{name:[A-Za-z0-9_]{1,32}-[0-9]{1,6}\.webm}"
#: At most this many consultations per listing; narrower filters show the rest.
LIMIT = 500
STATES = ("recorded", "interrupted", "none", "purged", "in_progress")
SEATS = ("spoke", "hub")
FILTERS = ("from", "to", "hub", "spoke", "doctor", "min_minutes", "max_minutes", "state")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MINUTES = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,3})?$")
_MAX_VALUE = 64
#: Event kinds the pages have words for; others are shown as written in the manifest.
EVENT_KINDS = frozenset(
    {
        "called",
        "joined",
        "left",
        "reconnecting",
        "reconnected",
        "media_connected",
        "consent_recorded",
        "consent_confirmed",
        "consent_withdrawn",
        "recording_started",
        "recording_stopped",
        "hangup",
        "ended",
    }
)
END_REASONS = frozenset({"hangup", "peer_lost", "no_show", "shutdown", "interrupted"})


# ---------------------------------------------------------------- filters


class BadFilter(Exception):
    """A filter of the listing has a value that cannot be used; ``key`` names the message."""

    def __init__(self, key: str, name: str, value: str = "") -> None:
        super().__init__(f"{name}={value!r}: {key}")
        self.key = key
        self.name = name
        self.value = value[:_MAX_VALUE]


@dataclass(frozen=True)
class Filters:
    """A listing's filters: as the request gave them, and as the archive takes them."""

    given: Mapping[str, str]
    query: ArchiveQuery


def parse_filters(params: MultiMapping[str], directory: Directory) -> Filters:
    """The filters of ``params`` (the query string); raises :class:`BadFilter`.

    Empty values mean "any", as an untouched form field sends them.  Unknown or repeated
    parameters are refused rather than ignored: a filter silently dropped would list more than
    the auditor asked for, and the log would say so.
    """
    given: dict[str, str] = {}
    for name in params:
        if name not in FILTERS:
            raise BadFilter("audit.bad.unknown", name[:_MAX_VALUE])
        values = params.getall(name)
        if len(values) > 1:
            raise BadFilter("audit.bad.repeated", name)
        value = values[0].strip()
        if len(value) > _MAX_VALUE:
            raise BadFilter("audit.bad.too_long", name, value)
        if value:
            given[name] = value

    date_from = _date(given, "from")
    date_to = _date(given, "to")
    if date_from and date_to and date_from > date_to:
        raise BadFilter("audit.bad.date_order", "to", given["to"])
    hub = given.get("hub")
    if hub is not None and HubId(hub) not in directory.hubs:
        raise BadFilter("audit.bad.hub", "hub", hub)
    spoke = given.get("spoke")
    if spoke is not None and SpokeId(spoke) not in directory.spokes:
        raise BadFilter("audit.bad.spoke", "spoke", spoke)
    doctor = given.get("doctor")
    if doctor is not None:
        user = directory.users.get(UserId(doctor))
        if user is None or user.role is not Role.DOCTOR:
            raise BadFilter("audit.bad.doctor", "doctor", doctor)
    low = _minutes(given, "min_minutes")
    high = _minutes(given, "max_minutes")
    if low is not None and high is not None and low > high:
        raise BadFilter("audit.bad.minutes_order", "max_minutes", given["max_minutes"])
    state = given.get("state")
    if state is not None and state not in STATES:
        raise BadFilter("audit.bad.state", "state", state)
    query = ArchiveQuery(
        date_from=date_from,
        date_to=date_to,
        hub=hub,
        spoke=spoke,
        doctor=doctor,
        min_duration_s=None if low is None else low * 60,
        max_duration_s=None if high is None else high * 60,
        state=state,
    )
    return Filters(given=given, query=query)


def _date(given: Mapping[str, str], name: str) -> date | None:
    text = given.get(name)
    if text is None:
        return None
    # date.fromisoformat also takes "20261127" and week dates; the form sends YYYY-MM-DD only.
    if not _DATE.match(text):
        raise BadFilter("audit.bad.date", name, text)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadFilter("audit.bad.date", name, text) from None


def _minutes(given: Mapping[str, str], name: str) -> float | None:
    text = given.get(name)
    if text is None:
        return None
    if not _MINUTES.match(text):
        raise BadFilter("audit.bad.minutes", name, text)
    return float(text)


def _shift(day: date | None, days: int) -> date | None:
    try:
        return None if day is None else day + timedelta(days=days)
    except OverflowError:
        return day


def search(
    archive: Archive, filters: Filters, directory: Directory
) -> tuple[list[ConsultationSummary], bool]:
    """The consultations ``filters`` select, newest first, and whether more were left out.

    The archive files consultations by their UTC date, but the auditor reads and filters dates
    in each hub's time zone: ask for a day more on each side, then keep the hub-local days.
    Blocking (it reads the archive).
    """
    query = filters.query
    wide = replace(query, date_from=_shift(query.date_from, -1), date_to=_shift(query.date_to, 1))
    found = archive.list(wide, limit=2 * LIMIT)
    kept = [
        s for s in found if _within(s.started_at.astimezone(_tz(directory, s.hub_id)).date(), query)
    ]
    return kept[:LIMIT], len(kept) > LIMIT or len(found) >= 2 * LIMIT


def _within(day: date, query: ArchiveQuery) -> bool:
    if query.date_from is not None and day < query.date_from:
        return False
    return query.date_to is None or day <= query.date_to


# ---------------------------------------------------------------- shared helpers


async def _log(
    request: web.Request, kind: str, subject: str | None, detail: Mapping[str, Any] | None
) -> None:
    """Append ``kind`` for the signed-in auditor; fails the request if the log cannot take it."""
    await request.app[AUDIT_TRAIL].record(
        kind,
        at=request.app[WAITING_ROOM].now(),
        actor=request[USER].username,
        source=request.remote,
        subject=subject,
        detail=detail,
    )


def _not_found(request: web.Request) -> web.HTTPNotFound:
    return web.HTTPNotFound(
        text=aiohttp_jinja2.render_string(
            "message.html",
            request,
            context(request, request[USER], message="audit.unknown", back="/audit"),
        ),
        content_type="text/html",
    )


def _tz(directory: Directory, hub_id: str) -> tzinfo:
    hub = directory.hubs.get(HubId(hub_id))
    return hub.tz if hub is not None else UTC


def _local(moment: datetime | None, tz: tzinfo, fmt: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    return "" if moment is None else moment.astimezone(tz).strftime(fmt)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _size(count: float | None) -> str:
    if count is None:
        return "—"
    for unit in ("B", "KB", "MB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def _word(lang: str) -> Callable[[str, str], str]:
    """``word(prefix, value)``: the string for a manifest value, or the value as written."""

    def word(prefix: str, value: str) -> str:
        key = prefix + value
        return i18n.translate(lang, key) if key in i18n.STRINGS else value

    return word


def _place_names(directory: Directory, lang: str) -> dict[str, dict[str, str]]:
    """Hub and spoke names in the reader's language, by id."""
    hindi = lang == "hi"
    return {
        "hub": {
            h.id: (h.name_hi if hindi and h.name_hi else h.name) for h in directory.hubs.values()
        },
        "spoke": {
            s.id: (s.name_hi if hindi and s.name_hi else s.name) for s in directory.spokes.values()
        },
    }


# ---------------------------------------------------------------- the listing


def _row(
    s: ConsultationSummary, directory: Directory, names: dict[str, dict[str, str]]
) -> dict[str, Any]:
    nurse = directory.user(s.nurse) if s.nurse else None
    return {
        "room_id": s.room_id,
        "when": _local(s.started_at, _tz(directory, s.hub_id), "%Y-%m-%d %H:%M %Z"),
        "hub": names["hub"].get(s.hub_id, s.hub_name),
        "spoke": names["spoke"].get(s.spoke_id, s.spoke_name),
        "doctor": s.doctor_name or s.doctor,
        "nurse": nurse.name if nurse is not None else s.nurse,
        "patient": s.patient_name,
        "duration": _duration(s.duration_s),
        "state": s.state if s.state in STATES else "none",
        "interrupted": s.interrupted,
    }


@require(Role.AUDITOR, Role.ADMIN)
async def audit_list(request: web.Request) -> web.StreamResponse:
    directory = request.app[DIRECTORY]
    lang = language(request)
    names = _place_names(directory, lang)
    options = {
        "hubs": sorted(names["hub"].items(), key=lambda kv: kv[1]),
        "spokes": sorted(names["spoke"].items(), key=lambda kv: kv[1]),
        "doctors": sorted(
            ((u.username, u.name) for u in directory.users.values() if u.role is Role.DOCTOR),
            key=lambda kv: kv[1],
        ),
        "states": STATES,
    }
    try:
        filters = parse_filters(request.query, directory)
    except BadFilter as exc:
        logger.info("%s: listing refused (%s)", request[USER].username, exc)
        given = {k: v[:_MAX_VALUE] for k, v in request.query.items() if k in FILTERS}
        label = f"audit.f.{exc.name}"
        name = i18n.translate(lang, label) if label in i18n.STRINGS else exc.name
        problem = i18n.translate(lang, exc.key, name=name, value=exc.value)
        return aiohttp_jinja2.render_template(
            "audit_list.html",
            request,
            context(request, request[USER], given=given, rows=None, problem=problem, **options),
            status=400,
        )
    found, truncated = await asyncio.to_thread(search, request.app[ARCHIVE], filters, directory)
    await _log(request, "consultation_listed", None, dict(filters.given))
    rows = [_row(s, directory, names) for s in found]
    return aiohttp_jinja2.render_template(
        "audit_list.html",
        request,
        context(
            request,
            request[USER],
            given=filters.given,
            rows=rows,
            problem=None,
            truncated=truncated,
            limit=LIMIT,
            **options,
        ),
    )


# ---------------------------------------------------------------- the replay page


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objs(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _not_recorded_because(consent: dict[str, Any]) -> str:
    """Why a sealed consultation has no recording, as the manifest tells it."""
    if consent.get("withdrawn_at"):
        return "audit.why.withdrawn"
    if not consent.get("confirmed_at"):
        return "audit.why.no_consent"
    # Consent was confirmed and never withdrawn: this server was not recording.
    return "audit.why.recording_off"


def _people(directory: Directory, username: object) -> str:
    if not isinstance(username, str) or not username:
        return ""
    user = directory.user(username)
    return f"{user.name} ({username})" if user is not None else username


def _replay_view(record: ConsultationRecord, directory: Directory, lang: str) -> dict[str, Any]:
    """Everything the replay page shows, from the manifest (or ``recording.json``)."""
    data = record.manifest if record.manifest is not None else (record.in_progress or {})
    hub, spoke = _obj(data.get("hub")), _obj(data.get("spoke"))
    tz = _tz(directory, _text(hub.get("id")))
    names = _place_names(directory, lang)
    recording = _obj(data.get("recording"))
    t0 = _moment(recording.get("t0"))
    state = _text(recording.get("state")) or "none"
    sealed = record.manifest is not None

    seats: dict[str, list[dict[str, Any]]] = {seat: [] for seat in SEATS}
    gaps: list[dict[str, Any]] = []
    length = 0.0
    for f in sorted(_objs(data.get("files")), key=lambda f: _number(f.get("segment")) or 0):
        name, seat = _text(f.get("name")), _text(f.get("seat"))
        if not name:
            continue
        last = _number(f.get("last_s"))
        length = max(length, last or 0.0)
        if seat in seats:
            seats[seat].append(
                {
                    "name": name,
                    "segment": _text(f.get("segment")),
                    "size": _size(_number(f.get("bytes"))),
                    "first": _duration(_number(f.get("first_s"))),
                    "last": _duration(last),
                    "interrupted": f.get("interrupted") is True,
                }
            )
        for gap in _objs(f.get("gaps")):
            start, end = _number(gap.get("from_s")), _number(gap.get("to_s"))
            gaps.append(
                {
                    "file": name,
                    "track": _text(gap.get("track")),
                    "from": _duration(start),
                    "to": _duration(end),
                    "seek": start,
                }
            )
    stopped = _moment(recording.get("stopped_at"))
    if not length and t0 is not None and stopped is not None:
        length = max((stopped - t0).total_seconds(), 0.0)

    events = []
    for e in _objs(data.get("events")):
        at = _moment(e.get("at"))
        kind = _text(e.get("kind"))
        offset = (at - t0).total_seconds() if at is not None and t0 is not None else None
        detail = _obj(e.get("detail"))
        events.append(
            {
                "time": _local(at, tz, "%H:%M:%S"),
                "kind": kind,
                "known": kind in EVENT_KINDS,
                "seat": _text(e.get("seat")),
                "by": _people(directory, e.get("by")),
                "detail": ", ".join(
                    f"{k}: {v}" for k, v in sorted(detail.items()) if v is not None
                ),
                # Events before recording started or after it stopped have nothing to show.
                "seek": round(offset, 3) if offset is not None and 0 <= offset <= length else None,
            }
        )

    consent = _obj(data.get("consent"))
    doctor, nurse, patient = (
        _obj(data.get("doctor")),
        _obj(data.get("nurse")),
        _obj(data.get("patient")),
    )
    playable = sealed and not record.purged and any(seats.values())
    end_reason = _text(data.get("end_reason"))
    return {
        "room_id": record.room_id,
        "sealed": sealed,
        "purged": record.purged,
        "state": state,
        "playable": playable,
        "why_not": _not_recorded_because(consent) if sealed and state == "none" else None,
        "seats": seats,
        "length": round(length, 3),
        "length_text": _duration(length),
        "events": events,
        "gaps": gaps,
        "hub": names["hub"].get(_text(hub.get("id")), _text(hub.get("name"))),
        "spoke": names["spoke"].get(_text(spoke.get("id")), _text(spoke.get("name"))),
        "doctor": _text(doctor.get("name")) or _text(doctor.get("username")),
        "doctor_username": _text(doctor.get("username")),
        "registration": _text(doctor.get("registration")),
        "nurse": _text(nurse.get("name")) or _text(nurse.get("username")),
        "nurse_username": _text(nurse.get("username")),
        "patient": {
            "name": _text(patient.get("name")),
            "age": _text(patient.get("age")),
            "sex": _text(patient.get("sex")),
            "complaint": _text(patient.get("complaint")),
            "priority": _text(patient.get("priority")),
        },
        "token": _text(data.get("token")),
        "started": _local(_moment(data.get("started_at")), tz),
        "ended": _local(_moment(data.get("ended_at")), tz),
        "duration": _duration(_number(data.get("duration_s"))),
        "end_reason": end_reason,
        "end_reason_known": end_reason in END_REASONS,
        "interrupted": data.get("interrupted") is True,
        "recording_started": _local(_moment(recording.get("started_at")), tz),
        "recording_stopped": _local(stopped, tz),
        "consent": None
        if not consent
        else {
            "given_by": _text(consent.get("given_by")),
            "caregiver": _text(consent.get("caregiver")),
            "relation": _text(consent.get("relation")),
            "method": _text(consent.get("method")),
            "recorded_by": _people(directory, consent.get("recorded_by")),
            "recorded_at": _local(_moment(consent.get("recorded_at")), tz),
            "confirmed_by": _people(directory, consent.get("confirmed_by")),
            "confirmed_at": _local(_moment(consent.get("confirmed_at")), tz),
            "withdrawn_by": _people(directory, consent.get("withdrawn_by")),
            "withdrawn_at": _local(_moment(consent.get("withdrawn_at")), tz),
        },
        "node": _text(data.get("node")),
        "key_id": _text(data.get("key_id")),
    }


async def _record(request: web.Request) -> ConsultationRecord:
    record = await asyncio.to_thread(request.app[ARCHIVE].load, request.match_info["room_id"])
    if record is None:
        raise _not_found(request)
    return record


@require(Role.AUDITOR, Role.ADMIN)
async def audit_replay(request: web.Request) -> web.StreamResponse:
    record = await _record(request)
    view = _replay_view(record, request.app[DIRECTORY], language(request))
    await _log(request, "recording_viewed", record.room_id, {"state": view["state"]})
    return aiohttp_jinja2.render_template(
        "audit_replay.html",
        request,
        context(request, request[USER], c=view, word=_word(language(request))),
    )


@require(Role.AUDITOR, Role.ADMIN)
async def audit_verify(request: web.Request) -> web.StreamResponse:
    record = await _record(request)
    # Hashing every file and checking the whole log's chain takes a while: off the loop.
    try:
        report = await asyncio.to_thread(verify, record.directory)
    except AuditError as exc:  # nothing to check against (no trusted key, say)
        logger.error("verification of %s impossible: %s", record.room_id, exc)
        body: dict[str, Any] = {"ok": False, "problems": [str(exc)], "notices": []}
    else:
        if not report.ok:
            logger.warning(
                "%s: verification of %s found %d problems",
                request[USER].username,
                record.room_id,
                len(report.problems),
            )
        body = {
            "ok": report.ok,
            "problems": [str(p) for p in report.problems],
            "notices": [str(n) for n in report.notices],
        }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _starts_playback(request: web.Request) -> bool:
    """Whether this request reads the file from its first byte: a playback or a download.

    Players fetch the rest of a file, and every seek, with ranges further on: logging only
    the first request keeps one entry per playback.
    """
    if request.method != "GET":
        return False  # HEAD sends no bytes
    if "Range" not in request.headers:
        return True
    try:
        return request.http_range.start in (None, 0)
    except ValueError:
        return False  # a malformed range gets a 416 and no bytes


@require(Role.AUDITOR, Role.ADMIN)
async def audit_file(request: web.Request) -> web.StreamResponse:
    room_id, name = request.match_info["room_id"], request.match_info["name"]
    # Only files the manifest names, in this consultation's own directory, are ever served.
    path = await asyncio.to_thread(request.app[ARCHIVE].media_path, room_id, name)
    if path is None:
        raise _not_found(request)
    download = request.query.get("download") == "1"
    if _starts_playback(request):
        kind = "recording_downloaded" if download else "recording_played"
        await _log(request, kind, room_id, {"file": name})
    headers = {"Content-Type": "video/webm", "Cache-Control": "private, no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{room_id}.{name}"'
    return web.FileResponse(path, headers=headers)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/audit", audit_list)
    r.add_get(f"/audit/{ROOM_ID}", audit_replay)
    r.add_get(f"/audit/{ROOM_ID}/verify", audit_verify)
    r.add_get(f"/audit/{ROOM_ID}/files/{FILE_NAME}", audit_file)
