"""Consultation manifests: written once, signed, and sealed after a crash.

``manifest.json`` holds canonical JSON and ``manifest.sig`` the base64 Ed25519 signature of its
exact bytes. ``manifest.sig`` is written first: a directory with ``manifest.json`` is sealed, so
once that name exists its signature exists too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .keys import SigningKey, write_atomic
from .log import AuditLog, canonical_json, iso, parse_iso

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
RECORDING = "recording.json"
PURGED = "purged.json"
#: Files a consultation directory may hold besides its media.
OWN_FILES = frozenset({MANIFEST, SIGNATURE, RECORDING, PURGED})

_MEDIA_NAME = re.compile(r"^(?P<seat>[A-Za-z0-9_]+)-(?P<segment>[0-9]+)\.webm$")
_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size in bytes) of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_json_atomic(path: Path, obj: object) -> None:
    """Write ``obj`` as canonical JSON to ``path``: temporary file, fsync, rename, fsync dir."""
    write_atomic(path, canonical_json(obj))


def write_manifest(directory: Path, manifest: Mapping[str, Any], key: SigningKey) -> str:
    """Sign and write ``manifest`` into ``directory``; returns the SHA-256 of ``manifest.json``.

    The manifest is written as given (its ``key_id`` should be ``key.key_id``).
    """
    data = canonical_json(manifest)
    write_atomic(directory / SIGNATURE, base64.b64encode(key.sign(data)) + b"\n")
    write_atomic(directory / MANIFEST, data)
    return hashlib.sha256(data).hexdigest()


def _read_object(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s unreadable: %s", path, exc)
        return None
    if not isinstance(obj, dict):
        logger.warning("%s is not a JSON object", path)
        return None
    return obj


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of ``directory``; ``None`` if it has none or it is unreadable."""
    return _read_object(directory / MANIFEST)


def read_recording(directory: Path) -> dict[str, Any] | None:
    """``recording.json`` of ``directory``; ``None`` if missing or unreadable."""
    return _read_object(directory / RECORDING)


def media_file_entry(path: Path) -> dict[str, Any]:
    """A manifest ``files`` entry for a media file left by an interrupted recording."""
    match = _MEDIA_NAME.match(path.name)
    digest, size = sha256_file(path)
    return {
        "name": path.name,
        "seat": match["seat"] if match else None,
        "segment": int(match["segment"]) if match else None,
        "sha256": digest,
        "bytes": size,
        "first_s": None,
        "last_s": None,
        "interrupted": True,
        "gaps": [],
    }


def file_receipts(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``{"name", "sha256", "bytes"}`` of each file entry, as the audit log records them."""
    return [{"name": f["name"], "sha256": f["sha256"], "bytes": f["bytes"]} for f in files]


def seal_interrupted(
    directory: Path, key: SigningKey, log: AuditLog, *, node: str, now: datetime
) -> str:
    """Write the manifest of a recording the server did not end (it died); returns its SHA-256.

    ``recording.json`` holds what was known while recording. The consultation is taken to have
    ended when its newest media file was last written (or when recording started, if there is
    none). The log gets ``recording_interrupted`` and the usual ``consultation_ended``.
    """
    recording = read_recording(directory)
    if recording is None:
        raise FileNotFoundError(f"{directory / RECORDING} missing or unreadable")
    media = sorted(directory.glob("*.webm"))
    state = dict(recording.get("recording") or {})
    started = parse_iso(str(recording.get("started_at") or state["started_at"]))
    if media:
        newest = max(p.stat().st_mtime for p in media)
        ended = max(datetime.fromtimestamp(newest, UTC), started)
    else:
        ended = parse_iso(str(state.get("started_at") or recording["started_at"]))
    duration = round(max((ended - started).total_seconds(), 0.0), 3)
    files = [media_file_entry(p) for p in media]
    state["state"] = "interrupted"
    events = list(recording.get("events") or [])
    events.append(
        {
            "at": iso(ended),
            "t": duration,
            "kind": "ended",
            "seat": None,
            "by": None,
            "detail": {"reason": "interrupted"},
        }
    )
    manifest = {
        **recording,
        "ended_at": iso(ended),
        "duration_s": duration,
        "end_reason": "interrupted",
        "interrupted": True,
        "recording": state,
        "events": events,
        "files": files,
        "node": node,
        "key_id": key.key_id,
    }
    sha = write_manifest(directory, manifest, key)
    room_id = str(recording.get("consultation") or directory.name)
    receipts = file_receipts(files)
    log.append(
        "recording_interrupted",
        at=now,
        subject=room_id,
        detail={"manifest_sha256": sha, "files": receipts},
    )
    log.append(
        "consultation_ended",
        at=now,
        subject=room_id,
        detail={"manifest_sha256": sha, "files": receipts, "recording": "interrupted"},
    )
    logger.warning("%s: sealed an interrupted recording (%d files)", room_id, len(files))
    return sha
