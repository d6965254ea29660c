"""Fixtures for the audit package: a data directory with a key, a log and consultations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audit import Archive, AuditLog, SigningKey, iso, sha256_file, write_json_atomic, write_manifest

T0 = datetime(2026, 11, 27, 5, 0, 0, tzinfo=UTC)
MEDIA = {
    "spoke-1.webm": b"\x1aE\xdf\xa3 spoke media " * 50,
    "hub-1.webm": b"\x1aE\xdf\xa3 hub " * 80,
}


def consultation_fields(
    room_id: str,
    *,
    started: datetime = T0,
    hub: str = "bhabua",
    spoke: str = "akhlaspur",
    doctor: str = "dr.sharma",
    key_id: str = "",
) -> dict[str, Any]:
    """The manifest fields known while recording (what ``recording.json`` holds)."""
    return {
        "v": 1,
        "consultation": room_id,
        "token": "T-" + room_id[-4:],
        "hub": {"id": hub, "name": hub.title() + " Sadar"},
        "spoke": {"id": spoke, "name": spoke.title()},
        "doctor": {"username": doctor, "name": "Dr " + doctor[3:].title(), "registration": "BR-1"},
        "nurse": {"username": "nurse." + spoke, "name": "Sunita"},
        "patient": {"name": "Ramesh Yadav", "age": 54, "sex": "male", "complaint": "cough"},
        "started_at": iso(started),
        "consent": None,
        "recording": {"state": "recording", "t0": iso(started), "started_at": iso(started)},
        "events": [],
        "node": "node-test",
        "key_id": key_id,
    }


def make_consultation(
    data_dir: Path,
    key: SigningKey,
    log: AuditLog | None,
    room_id: str,
    *,
    started: datetime = T0,
    duration_s: float = 600.0,
    media: dict[str, bytes] | None = None,
    **fields: Any,
) -> Path:
    """A sealed consultation as the server leaves it; ``log=None`` writes no log entry."""
    directory = Archive(data_dir / "consultations").directory_for(room_id, started)
    media = MEDIA if media is None else media
    files = []
    for name, data in media.items():
        (directory / name).write_bytes(data)
        digest, size = sha256_file(directory / name)
        seat, segment = name.removesuffix(".webm").split("-")
        files.append(
            {
                "name": name,
                "seat": seat,
                "segment": int(segment),
                "sha256": digest,
                "bytes": size,
                "first_s": 0.0,
                "last_s": duration_s,
                "interrupted": False,
                "gaps": [],
            }
        )
    ended = started + timedelta(seconds=duration_s)
    manifest = consultation_fields(room_id, started=started, key_id=key.key_id, **fields)
    manifest["recording"]["state"] = "recorded" if media else "none"
    manifest.update(
        ended_at=iso(ended),
        duration_s=duration_s,
        end_reason="hangup",
        interrupted=False,
        files=files,
    )
    sha = write_manifest(directory, manifest, key)
    if log is not None:
        log.append(
            "consultation_ended",
            at=ended,
            subject=room_id,
            detail={
                "manifest_sha256": sha,
                "files": [{k: f[k] for k in ("name", "sha256", "bytes")} for f in files],
                "recording": manifest["recording"]["state"],
            },
        )
    return directory


def make_in_progress(
    data_dir: Path, room_id: str, *, started: datetime = T0, **fields: Any
) -> Path:
    """A consultation being recorded: ``recording.json``, no manifest."""
    directory = Archive(data_dir / "consultations").directory_for(room_id, started)
    recording = consultation_fields(room_id, started=started, **fields)
    write_json_atomic(directory / "recording.json", recording)
    return directory


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def key(data_dir: Path) -> SigningKey:
    return SigningKey.load_or_create(data_dir / "keys")


@pytest.fixture
def log(data_dir: Path, key: SigningKey) -> AuditLog:
    return AuditLog(data_dir / "audit" / "audit.log", key)
