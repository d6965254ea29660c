"""The archive: where consultations live, listing them with filters, and safe lookups."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from audit import Archive, ArchiveQuery, AuditLog, InvalidRoomId, SigningKey, write_json_atomic

from .conftest import T0, make_consultation, make_in_progress

DAY2 = T0 + timedelta(days=1)


@pytest.fixture
def archive(data_dir: Path, key: SigningKey, log: AuditLog) -> Archive:
    make_consultation(data_dir, key, log, "bhabua.first1", started=T0, duration_s=300.0)
    make_consultation(
        data_dir,
        key,
        log,
        "bhabua.second2",
        started=T0 + timedelta(hours=2),
        duration_s=900.0,
        spoke="sihoriya",
        doctor="dr.khan",
    )
    make_consultation(
        data_dir, key, log, "arrah.third3", started=DAY2, duration_s=60.0, hub="arrah", media={}
    )
    make_in_progress(data_dir, "arrah.live4", started=DAY2 + timedelta(hours=1), hub="arrah")
    return Archive(data_dir / "consultations")


def ids(archive: Archive, **filters: object) -> list[str]:
    return [s.room_id for s in archive.list(ArchiveQuery(**filters))]  # type: ignore[arg-type]


def test_directories_are_by_utc_start_date(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    late_evening_ist = datetime(2026, 11, 27, 23, 30, tzinfo=UTC) + timedelta(hours=1)

    directory = archive.directory_for("bhabua.abc", late_evening_ist)

    assert directory == tmp_path / "2026-11-28" / "bhabua.abc"
    assert directory.is_dir()
    assert archive.find("bhabua.abc") == directory
    with pytest.raises(ValueError, match="naive"):
        archive.directory_for("bhabua.abc", datetime(2026, 11, 27))


@pytest.mark.parametrize(
    "bad", ["../x", "..", "bhabua/../../etc.passwd", "bhabua.abc/..", "Bhabua.abc", ".abc", ""]
)
def test_bad_room_ids_are_rejected(archive: Archive, bad: str) -> None:
    assert archive.find(bad) is None
    assert archive.load(bad) is None
    assert archive.media_path(bad, "spoke-1.webm") is None
    with pytest.raises(InvalidRoomId):
        archive.directory_for(bad, T0)


def test_list_is_newest_first_with_in_progress_ones(archive: Archive) -> None:
    summaries = archive.list(ArchiveQuery())

    assert [s.room_id for s in summaries] == [
        "arrah.live4",
        "arrah.third3",
        "bhabua.second2",
        "bhabua.first1",
    ]
    live, third, second, _ = summaries
    assert (live.state, live.duration_s, live.files) == ("in_progress", None, 0)
    assert (third.state, third.files) == ("none", 0)
    assert second.state == "recorded"
    assert (second.hub_id, second.hub_name, second.spoke_id) == (
        "bhabua",
        "Bhabua Sadar",
        "sihoriya",
    )
    assert (second.doctor, second.doctor_name, second.nurse) == (
        "dr.khan",
        "Dr Khan",
        "nurse.sihoriya",
    )
    assert (second.patient_name, second.duration_s, second.files) == ("Ramesh Yadav", 900.0, 2)
    assert second.started_at == T0 + timedelta(hours=2)
    assert not second.interrupted
    assert len(archive.list(ArchiveQuery(), limit=3)) == 3


def test_list_filters(archive: Archive) -> None:
    assert ids(archive, date_from=date(2026, 11, 28)) == ["arrah.live4", "arrah.third3"]
    assert ids(archive, date_to=date(2026, 11, 27)) == ["bhabua.second2", "bhabua.first1"]
    assert ids(archive, date_from=date(2026, 11, 29)) == []
    assert ids(archive, hub="bhabua") == ["bhabua.second2", "bhabua.first1"]
    assert ids(archive, spoke="sihoriya") == ["bhabua.second2"]
    assert ids(archive, doctor="dr.sharma") == ["arrah.live4", "arrah.third3", "bhabua.first1"]
    assert ids(archive, min_duration_s=200) == ["bhabua.second2", "bhabua.first1"]
    assert ids(archive, max_duration_s=300) == ["arrah.third3", "bhabua.first1"]
    assert ids(archive, state="in_progress") == ["arrah.live4"]
    assert ids(archive, state="none") == ["arrah.third3"]
    assert ids(archive, state="recorded", doctor="dr.khan") == ["bhabua.second2"]


def test_purged_consultations_are_listed_as_purged(archive: Archive) -> None:
    directory = archive.find("bhabua.first1")
    assert directory is not None
    assert ids(archive, state="purged") == []

    write_json_atomic(directory / "purged.json", {"at": "x", "files": [], "log_seq": 9})

    assert ids(archive, state="purged") == ["bhabua.first1"]
    record = archive.load("bhabua.first1")
    assert record is not None
    assert record.purged


def test_load(archive: Archive) -> None:
    sealed = archive.load("bhabua.first1")
    live = archive.load("arrah.live4")

    assert sealed is not None
    assert sealed.manifest is not None
    assert (sealed.manifest["consultation"], sealed.in_progress, sealed.purged) == (
        "bhabua.first1",
        None,
        False,
    )
    assert live is not None
    assert live.manifest is None
    assert live.in_progress is not None
    assert archive.load("bhabua.unknown") is None


def test_media_path_serves_only_listed_files_on_disk(archive: Archive) -> None:
    directory = archive.find("bhabua.first1")
    assert directory is not None
    (directory / "extra.webm").write_bytes(b"x")

    assert archive.media_path("bhabua.first1", "spoke-1.webm") == directory / "spoke-1.webm"
    assert archive.media_path("bhabua.first1", "extra.webm") is None
    assert archive.media_path("bhabua.first1", "manifest.json") is None
    assert archive.media_path("bhabua.first1", "../bhabua.first1/spoke-1.webm") is None
    assert archive.media_path("arrah.live4", "spoke-1.webm") is None
    (directory / "hub-1.webm").unlink()
    assert archive.media_path("bhabua.first1", "hub-1.webm") is None


def test_unsealed_finds_recordings_without_a_manifest(archive: Archive) -> None:
    assert [p.name for p in archive.unsealed()] == ["arrah.live4"]


def test_listing_rereads_a_changed_manifest(
    archive: Archive, data_dir: Path, key: SigningKey
) -> None:
    assert ids(archive, hub="bhabua") == ["bhabua.second2", "bhabua.first1"]
    make_in_progress(data_dir, "bhabua.first1")
    directory = archive.find("bhabua.first1")
    assert directory is not None
    (directory / "manifest.json").unlink()

    assert ids(archive, state="in_progress") == ["arrah.live4", "bhabua.first1"]


def test_an_empty_archive_lists_nothing(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "missing")

    assert archive.list(ArchiveQuery()) == []
    assert archive.unsealed() == []
    assert archive.find("bhabua.abc") is None
