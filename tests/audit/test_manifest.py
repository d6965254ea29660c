"""Manifests: signed canonical JSON, and sealing a recording a crash left behind."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path

from audit import (
    AuditLog,
    SigningKey,
    canonical_json,
    read_log,
    read_manifest,
    seal_interrupted,
    sha256_file,
    verify,
    write_json_atomic,
    write_manifest,
)

from .conftest import T0, make_in_progress

CID = "sihoriya.crashed1"


def test_sha256_file_reads_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "f").write_bytes(data)

    assert sha256_file(tmp_path / "f") == (hashlib.sha256(data).hexdigest(), len(data))


def test_write_json_atomic_leaves_only_the_file(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "x.json", {"b": 1, "a": "ड"})
    write_json_atomic(tmp_path / "x.json", {"b": 2})

    assert (tmp_path / "x.json").read_bytes() == b'{"b":2}'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_write_manifest_signs_its_exact_bytes(tmp_path: Path, key: SigningKey) -> None:
    manifest = {"v": 1, "consultation": "bhabua.abc", "key_id": key.key_id}

    sha = write_manifest(tmp_path, manifest, key)

    data = (tmp_path / "manifest.json").read_bytes()
    assert data == canonical_json(manifest)
    assert sha == hashlib.sha256(data).hexdigest()
    sig = (tmp_path / "manifest.sig").read_bytes()
    assert sig.endswith(b"\n")
    key.public_key.verify(base64.b64decode(sig), data)
    assert read_manifest(tmp_path) == manifest
    assert read_manifest(tmp_path / "nothing") is None


def test_an_interrupted_recording_is_sealed_and_verifies(
    data_dir: Path, key: SigningKey, log: AuditLog
) -> None:
    directory = make_in_progress(data_dir, CID)
    (directory / "spoke-1.webm").write_bytes(b"spoke media" * 100)
    (directory / "hub-2.webm").write_bytes(b"hub media" * 70)
    last_write = T0 + timedelta(minutes=7, seconds=30)
    os.utime(directory / "spoke-1.webm", (T0.timestamp() + 60, T0.timestamp() + 60))
    os.utime(directory / "hub-2.webm", (last_write.timestamp(),) * 2)

    sha = seal_interrupted(directory, key, log, node="node-b", now=T0 + timedelta(hours=1))

    manifest = read_manifest(directory)
    assert manifest is not None
    assert hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest() == sha
    assert manifest["ended_at"] == "2026-11-27T05:07:30.000Z"
    assert manifest["duration_s"] == 450.0
    assert (manifest["end_reason"], manifest["interrupted"]) == ("interrupted", True)
    assert manifest["recording"]["state"] == "interrupted"
    assert (manifest["node"], manifest["key_id"]) == ("node-b", key.key_id)
    assert manifest["events"][-1]["kind"] == "ended"
    assert manifest["events"][-1]["detail"] == {"reason": "interrupted"}
    assert [(f["name"], f["seat"], f["segment"]) for f in manifest["files"]] == [
        ("hub-2.webm", "hub", 2),
        ("spoke-1.webm", "spoke", 1),
    ]
    hub = manifest["files"][0]
    assert (hub["bytes"], hub["first_s"], hub["interrupted"], hub["gaps"]) == (630, None, True, [])
    kinds = [(o["kind"], o["subject"]) for _, o in read_log(log.path) if o is not None]
    assert kinds[-2:] == [("recording_interrupted", CID), ("consultation_ended", CID)]
    last = json.loads(log.path.read_bytes().splitlines()[-1])
    assert last["detail"]["manifest_sha256"] == sha
    assert last["detail"]["recording"] == "interrupted"
    report = verify(data_dir)
    assert report.ok, [str(p) for p in report.problems]


def test_a_recording_without_media_ends_when_it_started(
    data_dir: Path, key: SigningKey, log: AuditLog
) -> None:
    directory = make_in_progress(data_dir, CID)

    seal_interrupted(directory, key, log, node="node-a", now=T0 + timedelta(hours=1))

    manifest = read_manifest(directory)
    assert manifest is not None
    assert (manifest["ended_at"], manifest["duration_s"], manifest["files"]) == (
        "2026-11-27T05:00:00.000Z",
        0.0,
        [],
    )
    assert verify(data_dir).ok
