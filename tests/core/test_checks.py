"""``server.py check-config`` names what a district must fix, and fails until it is fixed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.checks import check_directory
from core.directory import DEMO_DIRECTORY

ROOT = Path(__file__).resolve().parents[2]
DEMO = DEMO_DIRECTORY.read_text()


def run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "server.py", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_directory_passes() -> None:
    result = run(DEMO_DIRECTORY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": ok")


def test_a_one_spoke_block_is_named(tmp_path: Path) -> None:
    one_spoke = DEMO.replace(
        'block = "bhabua"\nhub = "bhabua-sadar"\n\n[[spokes]]\nid = "sihoriya"',
        'block = "ramgarh"\nhub = "bhabua-sadar"\n\n[[spokes]]\nid = "sihoriya"',
    )
    one_spoke += '\n[[blocks]]\nid = "ramgarh"\nname = "Ramgarh block"\n'
    path = tmp_path / "one-spoke.toml"
    path.write_text(one_spoke)
    result = run(path)
    assert result.returncode == 1
    assert "block 'bhabua' (Bhabua block) has 1 spoke" in result.stdout
    assert "block 'ramgarh' (Ramgarh block) has 1 spoke" in result.stdout


def test_every_kind_of_problem_is_reported(tmp_path: Path) -> None:
    text = DEMO.split("# The demo hub serves around the clock")[0]  # the hub loses its windows...
    text += DEMO[DEMO.index("[[blocks]]") :]
    text = text.replace('role = "doctor"\nhub = "bhabua-sadar"', 'role = "auditor"')  # ...doctors
    text = text.replace('registration = "BMC-38291"\n', "").replace(
        'registration = "BMC-41077"\n', ""
    )
    path = tmp_path / "bad.toml"
    path.write_text(text)
    problems = check_directory(path)
    assert "hub 'bhabua-sadar' (Sadar Hospital, Bhabua) has no service windows" in problems
    assert "hub 'bhabua-sadar' (Sadar Hospital, Bhabua) has no doctors" in problems


def test_spokes_without_a_hub_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "orphan.toml"
    path.write_text(
        DEMO.replace('hub = "bhabua-sadar"\n\n[[spokes]]', 'hub = "nowhere"\n\n[[spokes]]')
    )
    assert check_directory(path) == ["spoke 'akhlaspur' names unknown hub 'nowhere'"]
    result = run(tmp_path / "missing.toml")
    assert result.returncode == 1
    assert "cannot read directory" in result.stdout
    usage = subprocess.run(
        [sys.executable, "server.py", "check-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2
