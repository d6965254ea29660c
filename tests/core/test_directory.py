"""The TOML directory is validated strictly, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.directory import DEMO_DIRECTORY, Directory, DirectoryError
from core.domain import HubId, Role

DEMO = DEMO_DIRECTORY.read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "directory.toml"
    path.write_text(text)
    return path


def test_demo_directory_has_a_hub_two_spokes_in_one_block_and_every_role() -> None:
    d = Directory.load(DEMO_DIRECTORY)
    assert [h.name for h in d.hubs.values()] == ["Sadar Hospital, Bhabua"]
    assert {s.block for s in d.spokes.values()} == {"bhabua"}
    assert len(d.spokes) == 2
    assert {u.role for u in d.users.values()} == set(Role)
    nurse = d.user("nurse.akhlaspur")
    assert nurse is not None
    assert d.hub_of(nurse) == HubId("bhabua-sadar")


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path, DEMO.replace('district = "Kaimur"\ntimezone', 'distrct = "x"\ntimezone', 1)
    )
    with pytest.raises(DirectoryError, match="distrct"):
        Directory.load(path)


def test_unknown_time_zone(tmp_path: Path) -> None:
    path = write(tmp_path, DEMO.replace("Asia/Kolkata", "Asia/Bhabua"))
    with pytest.raises(DirectoryError, match="time zone"):
        Directory.load(path)


def test_nurse_must_belong_to_a_spoke(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        DEMO.replace('role = "nurse"\nspoke = "akhlaspur"', 'role = "nurse"\nhub = "bhabua-sadar"'),
    )
    with pytest.raises(DirectoryError, match="nurse belongs to exactly one spoke"):
        Directory.load(path)


def test_references_must_exist(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        DEMO.replace(
            'block = "bhabua"\nhub = "bhabua-sadar"', 'block = "bhabua"\nhub = "nowhere"', 1
        ),
    )
    with pytest.raises(DirectoryError, match="unknown hub 'nowhere'"):
        Directory.load(path)


def test_duplicate_ids(tmp_path: Path) -> None:
    path = write(tmp_path, DEMO.replace('id = "sihoriya"', 'id = "akhlaspur"'))
    with pytest.raises(DirectoryError, match="duplicate spoke id"):
        Directory.load(path)


def test_ids_are_url_safe(tmp_path: Path) -> None:
    path = write(tmp_path, DEMO.replace('id = "sihoriya"', 'id = "Sihoriya.HWC"'))
    with pytest.raises(DirectoryError, match="spokes"):
        Directory.load(path)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot read"):
        Directory.load(tmp_path / "absent.toml")
    with pytest.raises(DirectoryError, match="not valid TOML"):
        Directory.load(write(tmp_path, "[[hubs]\nid="))
