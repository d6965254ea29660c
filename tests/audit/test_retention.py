"""Retention deletes old media for real and leaves a receipt that verify accepts."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path

from audit import (
    Archive,
    ArchiveQuery,
    AuditLog,
    AuditTrail,
    RetentionKeeper,
    SigningKey,
    purge_expired,
    read_log,
    sha256_file,
    verify,
)

from .conftest import MEDIA, T0, make_consultation

CID = "bhabua-sadar.old1"
ENDED = T0 + timedelta(seconds=600)


def _archive(data_dir: Path) -> Archive:
    return Archive(data_dir / "consultations")


def test_expired_media_are_deleted_with_a_receipt(
    data_dir: Path, key: SigningKey, log: AuditLog
) -> None:
    directory = make_consultation(data_dir, key, log, CID)
    hashes = {name: sha256_file(directory / name) for name in MEDIA}
    now = ENDED + timedelta(days=30, seconds=1)

    receipts = purge_expired(_archive(data_dir), log, now=now, retention_days=30)

    assert [r.room_id for r in receipts] == [CID]
    assert receipts[0].at == now
    assert receipts[0].files == [
        {"name": n, "sha256": hashes[n][0], "bytes": hashes[n][1]} for n in MEDIA
    ]
    assert sorted(p.name for p in directory.iterdir()) == [
        "manifest.json",
        "manifest.sig",
        "purged.json",
    ]
    entry = [o for _, o in read_log(log.path) if o is not None][-1]
    assert (entry["kind"], entry["subject"], entry["at"]) == (
        "recording_purged",
        CID,
        "2026-12-27T05:10:01.000Z",
    )
    assert entry["detail"] == {
        "files": receipts[0].files,
        "ended_at": "2026-11-27T05:10:00.000Z",
        "retention_days": 30,
    }
    purged = json.loads((directory / "purged.json").read_bytes())
    assert purged == {"at": entry["at"], "files": receipts[0].files, "log_seq": entry["seq"]}
    assert [s.state for s in _archive(data_dir).list(ArchiveQuery())] == ["purged"]
    assert _archive(data_dir).media_path(CID, "spoke-1.webm") is None

    report = verify(data_dir)
    assert report.ok, [str(p) for p in report.problems]
    assert [str(n) for n in report.notices] == [
        f"{CID}: spoke-1.webm, hub-1.webm purged by retention on 2026-12-27"
    ]


def test_recent_consultations_and_retention_0_keep_everything(
    data_dir: Path, key: SigningKey, log: AuditLog
) -> None:
    directory = make_consultation(data_dir, key, log, CID)
    archive = _archive(data_dir)

    assert purge_expired(archive, log, now=ENDED + timedelta(days=29), retention_days=30) == []
    assert purge_expired(archive, log, now=ENDED + timedelta(days=3000), retention_days=0) == []
    assert all((directory / name).exists() for name in MEDIA)
    assert verify(data_dir).ok


def test_a_purge_runs_again_safely(data_dir: Path, key: SigningKey, log: AuditLog) -> None:
    directory = make_consultation(data_dir, key, log, CID)
    archive = _archive(data_dir)
    now = ENDED + timedelta(days=31)

    assert len(purge_expired(archive, log, now=now, retention_days=30)) == 1
    assert purge_expired(archive, log, now=now, retention_days=30) == []
    # As if the server had died after the receipt and before the files were unlinked:
    for name, data in MEDIA.items():
        (directory / name).write_bytes(data)
    assert len(purge_expired(archive, log, now=now, retention_days=30)) == 1

    kinds = [o["kind"] for _, o in read_log(log.path) if o is not None]
    assert kinds.count("recording_purged") == 2
    assert not any((directory / name).exists() for name in MEDIA)
    assert verify(data_dir).ok


def test_a_file_removed_without_a_receipt_is_still_tampering(
    data_dir: Path, key: SigningKey, log: AuditLog
) -> None:
    make_consultation(data_dir, key, log, CID)
    other = make_consultation(
        data_dir, key, log, "bhabua-sadar.new2", started=T0 + timedelta(days=20)
    )
    purge_expired(_archive(data_dir), log, now=ENDED + timedelta(days=15), retention_days=10)

    (other / "spoke-1.webm").unlink()

    assert [str(p) for p in verify(data_dir).problems] == [
        "bhabua-sadar.new2: spoke-1.webm removed (listed in the manifest, not on disk)"
    ]


async def test_the_keeper_purges_on_start_and_closes_twice(
    data_dir: Path, key: SigningKey, log: AuditLog
) -> None:
    directory = make_consultation(data_dir, key, log, CID)
    now = [ENDED + timedelta(days=5)]
    trail = AuditTrail(log)
    keeper = RetentionKeeper(_archive(data_dir), trail, 7, lambda: now[0], interval_s=0.01)

    keeper.start()
    await asyncio.sleep(0.1)
    assert (directory / "spoke-1.webm").exists()

    now[0] = ENDED + timedelta(days=8)
    for _ in range(200):
        if not (directory / "spoke-1.webm").exists():
            break
        await asyncio.sleep(0.01)
    await keeper.close()
    await keeper.close()
    await trail.close()

    assert (directory / "purged.json").exists()
    assert verify(data_dir).ok
    assert [t for t in asyncio.all_tasks() if t.get_name() == "retention"] == []


async def test_run_once_uses_the_clock(data_dir: Path, key: SigningKey, log: AuditLog) -> None:
    make_consultation(data_dir, key, log, CID)
    later = datetime.fromisoformat("2027-01-01T00:00:00+00:00")
    trail = AuditTrail(log)
    keeper = RetentionKeeper(_archive(data_dir), trail, 30, lambda: later)

    receipts = await keeper.run_once()

    assert [(r.room_id, r.at) for r in receipts] == [(CID, later)]
    await keeper.close()
    await trail.close()


async def test_retention_0_starts_no_task(data_dir: Path, log: AuditLog) -> None:
    trail = AuditTrail(log)
    keeper = RetentionKeeper(_archive(data_dir), trail, 0, lambda: ENDED)

    keeper.start()

    assert [t for t in asyncio.all_tasks() if t.get_name() == "retention"] == []
    await keeper.close()
    await trail.close()
