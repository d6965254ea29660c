"""``server.py check-config``: what a district should fix in its directory before going live."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .directory import Directory, DirectoryError
from .domain import Role

#: A state directive asks for at least two spokes in every block.
MIN_SPOKES_PER_BLOCK = 2


def check_directory(path: Path) -> list[str]:
    """Every problem found in the directory at ``path``; an empty list means it is fine."""
    try:
        directory = Directory.load(path)
    except DirectoryError as exc:
        return [p.strip() for p in str(exc).split(";")]
    problems = []
    spokes_per_block = Counter(s.block for s in directory.spokes.values())
    for block in directory.blocks.values():
        count = spokes_per_block.get(block.id, 0)
        if count < MIN_SPOKES_PER_BLOCK:
            problems.append(
                f"block {block.id!r} ({block.name}) has {count} spoke"
                f"{'' if count == 1 else 's'}; every block needs at least {MIN_SPOKES_PER_BLOCK}"
            )
    doctors = Counter(u.hub for u in directory.users.values() if u.role is Role.DOCTOR)
    nurses = Counter(u.spoke for u in directory.users.values() if u.role is Role.NURSE)
    for hub in directory.hubs.values():
        if not hub.service.windows and not hub.service.extra_days:
            problems.append(f"hub {hub.id!r} ({hub.name}) has no service windows")
        if not doctors.get(hub.id):
            problems.append(f"hub {hub.id!r} ({hub.name}) has no doctors")
        if not any(s.hub == hub.id for s in directory.spokes.values()):
            problems.append(f"hub {hub.id!r} ({hub.name}) serves no spoke")
    for spoke in directory.spokes.values():
        if not nurses.get(spoke.id):
            problems.append(f"spoke {spoke.id!r} ({spoke.name}) has no nurse")
    return problems
