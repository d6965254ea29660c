"""The archive of consultations: ``consultations/<UTC date>/<consultation id>/`` directories.

Room ids come from URLs, so every public method checks them against :data:`ROOM_ID` before
touching the file system (no ``..``, no slashes). Parsed manifests are cached by path and
modification time, so listing a busy archive reads only what changed.
"""

from __future__ import annotations

import builtins
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from .keys import AuditError
from .log import parse_iso
from .manifest import MANIFEST, PURGED, RECORDING, read_manifest, read_recording

logger = logging.getLogger(__name__)

ROOM_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}\.[A-Za-z0-9_-]{1,64}$")
_DATE_DIR = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_CACHE_SIZE = 20_000
STATES = frozenset({"none", "recorded", "interrupted", "purged", "in_progress"})


class InvalidRoomId(AuditError, ValueError):
    """A consultation id that does not have the shape of one (possibly a path trick)."""


@dataclass(frozen=True)
class ArchiveQuery:
    """Filters of a listing; ``None`` means any. Dates are UTC start dates, both inclusive."""

    date_from: date | None = None
    date_to: date | None = None
    hub: str | None = None
    spoke: str | None = None
    doctor: str | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    #: ``none``, ``recorded``, ``interrupted``, ``purged`` or ``in_progress``
    state: str | None = None


@dataclass(frozen=True)
class ConsultationSummary:
    """One line of a listing."""

    room_id: str
    token: str
    hub_id: str
    hub_name: str
    spoke_id: str
    spoke_name: str
    doctor: str
    doctor_name: str
    nurse: str
    patient_name: str
    started_at: datetime
    duration_s: float | None
    state: str
    files: int
    interrupted: bool

    def matches(self, query: ArchiveQuery) -> bool:
        """Whether this consultation passes every filter of ``query``."""
        day = self.started_at.astimezone(UTC).date()
        if query.date_from is not None and day < query.date_from:
            return False
        if query.date_to is not None and day > query.date_to:
            return False
        wanted = ((query.hub, self.hub_id), (query.spoke, self.spoke_id))
        if any(want is not None and want != have for want, have in wanted):
            return False
        if query.doctor is not None and query.doctor != self.doctor:
            return False
        if query.state is not None and query.state != self.state:
            return False
        if query.min_duration_s is not None or query.max_duration_s is not None:
            if self.duration_s is None:
                return False
            if query.min_duration_s is not None and self.duration_s < query.min_duration_s:
                return False
            if query.max_duration_s is not None and self.duration_s > query.max_duration_s:
                return False
        return True


@dataclass(frozen=True)
class ConsultationRecord:
    """What the archive holds for one consultation."""

    room_id: str
    directory: Path
    manifest: dict[str, Any] | None
    #: ``recording.json`` while the consultation is not sealed
    in_progress: dict[str, Any] | None
    purged: bool


def _text(obj: dict[str, Any], *path: str) -> str:
    value: Any = obj
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def summarize(room_id: str, data: dict[str, Any], state: str) -> ConsultationSummary:
    """The summary of a manifest (or of ``recording.json`` for one in progress)."""
    duration = data.get("duration_s")
    files = data.get("files")
    return ConsultationSummary(
        room_id=room_id,
        token=_text(data, "token"),
        hub_id=_text(data, "hub", "id"),
        hub_name=_text(data, "hub", "name"),
        spoke_id=_text(data, "spoke", "id"),
        spoke_name=_text(data, "spoke", "name"),
        doctor=_text(data, "doctor", "username"),
        doctor_name=_text(data, "doctor", "name"),
        nurse=_text(data, "nurse", "username"),
        patient_name=_text(data, "patient", "name"),
        started_at=parse_iso(str(data["started_at"])),
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        state=state,
        files=len(files) if isinstance(files, list) else 0,
        interrupted=data.get("interrupted") is True,
    )


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


class Archive:
    """The consultation directories under ``root`` (``<data dir>/consultations``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, tuple[tuple[int | None, ...], ConsultationSummary]] = (
            OrderedDict()
        )

    def directory_for(self, room_id: str, started_at: datetime) -> Path:
        """The directory of a consultation that started at ``started_at``, created."""
        if not ROOM_ID.match(room_id):
            raise InvalidRoomId(f"invalid consultation id {room_id!r}")
        if started_at.tzinfo is None:
            raise ValueError("naive datetime: consultation starts must carry a time zone")
        day = started_at.astimezone(UTC).date().isoformat()
        directory = self.root / day / room_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _days(self) -> list[Path]:
        try:
            days = [p for p in self.root.iterdir() if _DATE_DIR.match(p.name) and p.is_dir()]
        except FileNotFoundError:
            return []
        return sorted(days, reverse=True)

    def directories(self) -> Iterator[Path]:
        """Every consultation directory, newest day first."""
        for day in self._days():
            for path in sorted(day.iterdir()):
                if ROOM_ID.match(path.name) and path.is_dir():
                    yield path

    def find(self, room_id: str) -> Path | None:
        """The directory of ``room_id``; ``None`` if unknown or not a valid id."""
        if not ROOM_ID.match(room_id):
            return None
        for day in self._days():
            candidate = day / room_id
            if candidate.is_dir():
                return candidate
        return None

    def _summary(self, directory: Path) -> ConsultationSummary | None:
        stamp = tuple(_mtime_ns(directory / name) for name in (MANIFEST, RECORDING, PURGED))
        with self._lock:
            cached = self._cache.get(directory)
            if cached is not None and cached[0] == stamp:
                self._cache.move_to_end(directory)
                return cached[1]
        manifest = read_manifest(directory) if stamp[0] is not None else None
        try:
            if manifest is not None:
                state = "purged" if stamp[2] is not None else _text(manifest, "recording", "state")
                summary = summarize(directory.name, manifest, state or "none")
            elif stamp[1] is not None and (recording := read_recording(directory)) is not None:
                summary = summarize(directory.name, recording, "in_progress")
            else:
                return None
        except (KeyError, ValueError, TypeError) as exc:
            logger.warning("%s: cannot list (%s)", directory.name, exc)
            return None
        with self._lock:
            self._cache[directory] = (stamp, summary)
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return summary

    def list(self, query: ArchiveQuery, limit: int = 500) -> list[ConsultationSummary]:
        """Consultations matching ``query``, newest first, at most ``limit`` (blocking)."""
        out: list[ConsultationSummary] = []
        for day in self._days():
            day_date = date.fromisoformat(day.name)
            if query.date_to is not None and day_date > query.date_to:
                continue
            if query.date_from is not None and day_date < query.date_from:
                break
            found = []
            for path in day.iterdir():
                if ROOM_ID.match(path.name) and path.is_dir():
                    summary = self._summary(path)
                    if summary is not None and summary.matches(query):
                        found.append(summary)
            found.sort(key=lambda s: (s.started_at, s.room_id), reverse=True)
            out.extend(found[: limit - len(out)])
            if len(out) >= limit:
                break
        return out

    def load(self, room_id: str) -> ConsultationRecord | None:
        """Everything known about ``room_id``; ``None`` if it has no directory."""
        directory = self.find(room_id)
        if directory is None:
            return None
        manifest = read_manifest(directory)
        return ConsultationRecord(
            room_id=room_id,
            directory=directory,
            manifest=manifest,
            in_progress=read_recording(directory) if manifest is None else None,
            purged=(directory / PURGED).exists(),
        )

    def media_path(self, room_id: str, name: str) -> Path | None:
        """The file ``name`` of a sealed consultation, if its manifest lists it and it exists."""
        record = self.load(room_id)
        if record is None or record.manifest is None:
            return None
        files = record.manifest.get("files")
        listed = {f.get("name") for f in files if isinstance(f, dict)} if files else set()
        if name not in listed or Path(name).name != name or name.startswith("."):
            return None
        path = record.directory / name
        return path if path.is_file() else None

    def unsealed(self) -> builtins.list[Path]:
        """Directories with ``recording.json`` and no ``manifest.json`` (crash leftovers)."""
        return [
            d
            for d in self.directories()
            if (d / RECORDING).exists() and not (d / MANIFEST).exists()
        ]
