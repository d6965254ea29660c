"""``verify`` names each kind of tampering, in the log and in a consultation."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit import AuditLog, SigningKey, canonical_json, verify, write_manifest
from audit.log import entry_hash

from .conftest import T0, make_consultation, make_in_progress

ROOT = Path(__file__).resolve().parents[2]
CID = "bhabua-sadar.Xk2abc"
OTHER = SigningKey.generate()


@pytest.fixture
def populated(data_dir: Path, key: SigningKey, log: AuditLog) -> Path:
    """Entries 1-6 (log_started, five plays), 7 consultation_ended, 8-10 views."""
    for i in range(5):
        log.append("recording_played", at=T0, actor="auditor", detail={"i": i})
    make_consultation(data_dir, key, log, CID)
    for i in range(3):
        log.append("recording_viewed", at=T0, actor="auditor", detail={"i": i})
    return data_dir


def run_verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "server.py", "verify", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _log(data_dir: Path) -> Path:
    return data_dir / "audit" / "audit.log"


def _entries(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _log(data_dir).read_bytes().splitlines()]


def _write(data_dir: Path, entries: list[Any]) -> None:
    _log(data_dir).write_bytes(
        b"".join(e if isinstance(e, bytes) else canonical_json(e) + b"\n" for e in entries)
    )


def _rehash(entry: dict[str, Any], signer: SigningKey | None = None) -> dict[str, Any]:
    if signer is not None:
        entry["key_id"] = signer.key_id
    entry["hash"] = entry_hash(entry)
    if signer is not None:
        entry["sig"] = base64.b64encode(signer.sign(entry["hash"].encode())).decode()
    return entry


def _consultation(data_dir: Path) -> Path:
    return data_dir / "consultations" / T0.date().isoformat() / CID


# Each tampering: what it does to a populated data directory, and what verify must say.


def edit_entry(d: Path) -> None:
    entries = _entries(d)
    entries[4]["actor"] = "nobody"
    _write(d, entries)


def rehash_entry(d: Path) -> None:
    entries = _entries(d)
    entries[4]["actor"] = "nobody"
    _write(d, [*entries[:4], _rehash(entries[4]), *entries[5:]])


def resign_entry(d: Path) -> None:
    entries = _entries(d)
    entries[4]["actor"] = "nobody"
    _write(d, [*entries[:4], _rehash(entries[4], OTHER), *entries[5:]])


def delete_entry(d: Path) -> None:
    entries = _entries(d)
    _write(d, entries[:4] + entries[5:])


def delete_two_entries(d: Path) -> None:
    entries = _entries(d)
    _write(d, entries[:4] + entries[6:])


def delete_first_entry(d: Path) -> None:
    _write(d, _entries(d)[1:])


def insert_entry(d: Path) -> None:
    entries = _entries(d)
    forged = dict(entries[5], kind="recording_downloaded", actor="intruder")
    _write(d, [*entries[:5], _rehash(forged, OTHER), *entries[5:]])


def insert_copy(d: Path) -> None:
    entries = _entries(d)
    _write(d, [*entries, entries[3]])


def insert_copy_early(d: Path) -> None:
    entries = _entries(d)
    _write(d, [*entries[:3], entries[7], *entries[3:]])


def move_entry(d: Path) -> None:
    e = _entries(d)
    _write(d, [*e[:2], *e[3:6], e[2], *e[6:]])


def swap_adjacent(d: Path) -> None:
    e = _entries(d)
    _write(d, [*e[:4], e[5], e[4], *e[6:]])


def swap_apart(d: Path) -> None:
    e = _entries(d)
    _write(d, [*e[:2], e[7], *e[3:7], e[2], *e[8:]])


def garble_line(d: Path) -> None:
    e = _entries(d)
    _write(d, [*e[:4], b"garbage\n", *e[5:]])


def cut_log_tail(d: Path) -> None:
    _write(d, _entries(d)[:6])


def flip_byte(d: Path) -> None:
    path = _consultation(d) / "spoke-1.webm"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))


def remove_file(d: Path) -> None:
    (_consultation(d) / "hub-1.webm").unlink()


def add_file(d: Path) -> None:
    (_consultation(d) / "extra.webm").write_bytes(b"extra")


def _edited_manifest(d: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((_consultation(d) / "manifest.json").read_bytes())
    manifest["doctor"]["name"] = "Dr Someone Else"
    return manifest


def resign_manifest_other_key(d: Path) -> None:
    write_manifest(_consultation(d), dict(_edited_manifest(d), key_id=OTHER.key_id), OTHER)


def resign_manifest_same_key(d: Path) -> None:
    write_manifest(_consultation(d), _edited_manifest(d), SigningKey.load_or_create(d / "keys"))


def edit_manifest(d: Path) -> None:
    (_consultation(d) / "manifest.json").write_bytes(canonical_json(_edited_manifest(d)))


def unsign_manifest(d: Path) -> None:
    (_consultation(d) / "manifest.sig").unlink()


def remove_manifest(d: Path) -> None:
    (_consultation(d) / "manifest.json").unlink()


def remove_consultation(d: Path) -> None:
    shutil.rmtree(_consultation(d))


def unlogged_consultation(d: Path) -> None:
    make_consultation(d, SigningKey.load_or_create(d / "keys"), None, "sihoriya.unlogged1")


CASES: list[tuple[Callable[[Path], None], str]] = [
    (edit_entry, "audit log: entry 5 altered (its hash does not match its content)"),
    (
        rehash_entry,
        "audit log: entry 5 altered (its signature does not match: its hash was recomputed)",
    ),
    (resign_entry, f"audit log: entry 5 altered (signed by an unknown key {OTHER.key_id})"),
    (delete_entry, "audit log: entry 5 removed (entry 6 follows entry 4)"),
    (delete_two_entries, "audit log: entries 5 to 6 removed (entry 7 follows entry 4)"),
    (delete_first_entry, "audit log: entry 1 removed (entry 2 starts the log)"),
    (insert_entry, "audit log: entry at line 6 inserted (not signed by a trusted key)"),
    (insert_copy, "audit log: entry at line 11 inserted (a copy of entry 4)"),
    (insert_copy_early, "audit log: entry at line 4 inserted (a copy of entry 8)"),
    (swap_adjacent, "audit log: entries 5 and 6 reordered"),
    (move_entry, "audit log: entries 3, 4, 5 and 6 reordered"),
    (swap_apart, "audit log: entries 3 and 8 reordered"),
    (garble_line, "audit log: line 5 unreadable (not a JSON object)"),
    (cut_log_tail, f"{CID}: manifest inserted (the audit log never recorded it)"),
    (flip_byte, f"{CID}: spoke-1.webm altered (SHA-256 differs from the manifest)"),
    (remove_file, f"{CID}: hub-1.webm removed (listed in the manifest, not on disk)"),
    (add_file, f"{CID}: extra.webm inserted (on disk, not in the manifest)"),
    (
        resign_manifest_other_key,
        f"{CID}: manifest replaced (signed by an unknown key {OTHER.key_id}; "
        "its SHA-256 differs from the audit log)",
    ),
    (
        resign_manifest_same_key,
        f"{CID}: manifest replaced (its SHA-256 differs from the audit log)",
    ),
    (
        edit_manifest,
        f"{CID}: manifest replaced (its signature does not match; "
        "its SHA-256 differs from the audit log)",
    ),
    (unsign_manifest, f"{CID}: manifest unsigned (manifest.sig is missing)"),
    (remove_manifest, f"{CID}: manifest removed (the audit log records its end)"),
    (
        remove_consultation,
        f"{CID}: consultation removed (the audit log records it, its directory is missing)",
    ),
    (
        unlogged_consultation,
        "sihoriya.unlogged1: manifest inserted (the audit log never recorded it)",
    ),
]


def test_an_untouched_data_directory_verifies(populated: Path) -> None:
    report = verify(populated)

    assert report.ok
    assert (report.problems, report.notices) == ([], [])
    assert (report.consultations, report.entries) == (1, 10)


def test_the_command_says_ok_on_an_untouched_directory(populated: Path) -> None:
    result = run_verify(populated)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "ok: 1 consultations, 10 log entries checked\n"


@pytest.mark.parametrize(("tamper", "expected"), CASES, ids=[c[0].__name__ for c in CASES])
def test_each_tampering_is_named(
    populated: Path, tamper: Callable[[Path], None], expected: str
) -> None:
    tamper(populated)

    report = verify(populated)
    result = run_verify(populated)

    assert [str(p) for p in report.problems] == [expected]
    assert not report.ok
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [expected]


def test_one_consultation_directory_is_checked_with_the_whole_log(populated: Path) -> None:
    directory = _consultation(populated)
    assert verify(directory).ok
    assert run_verify(directory).returncode == 0

    flip_byte(populated)
    delete_entry(populated)

    problems = [str(p) for p in verify(directory).problems]
    assert problems == [
        "audit log: entry 5 removed (entry 6 follows entry 4)",
        f"{CID}: spoke-1.webm altered (SHA-256 differs from the manifest)",
    ]
    assert run_verify(directory).returncode == 1


def test_a_recording_in_progress_is_noticed_not_blamed(populated: Path) -> None:
    make_in_progress(populated, "arrah.live1")

    report = verify(populated)

    assert report.ok
    assert [str(n) for n in report.notices] == [
        "arrah.live1: not sealed yet (recording.json without a manifest)"
    ]


def test_a_log_signed_by_another_key_is_unsigned(populated: Path, tmp_path: Path) -> None:
    other_pub = tmp_path / "other.pub"
    other_pub.write_bytes(OTHER.public_pem)

    result = run_verify(populated, "--key", other_pub)

    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith(
        "audit log: every entry unsigned (none is signed by a trusted key: "
    )


def test_the_log_and_key_can_be_given_explicitly(populated: Path, tmp_path: Path) -> None:
    log = tmp_path / "copy.log"
    shutil.copy(_log(populated), log)
    trusted = tmp_path / "trusted.pub"
    shutil.copy(populated / "keys" / "signing.pub", trusted)
    (populated / "keys" / "signing.pub").write_bytes(OTHER.public_pem)
    _log(populated).unlink()

    report = verify(_consultation(populated), log=log, key_files=[trusted])

    assert report.ok
    assert report.entries == 10


def test_a_missing_log_is_reported(populated: Path) -> None:
    _log(populated).unlink()

    assert [str(p) for p in verify(populated).problems] == [
        "audit log: audit/audit.log removed (the file is missing)",
        f"{CID}: manifest inserted (the audit log never recorded it)",
    ]


@pytest.mark.parametrize(
    "args",
    [[], ["/nonexistent/data"], ["--bogus", "x"], ["{tmp}"], ["{data}", "--key", "{tmp}/nope.pub"]],
)
def test_usage_errors_exit_2(populated: Path, tmp_path: Path, args: list[str]) -> None:
    argv = [a.format(tmp=tmp_path / "empty", data=populated) for a in args]
    (tmp_path / "empty").mkdir()

    result = run_verify(*argv)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
