"""Every move a Lua script makes is a move of the token lifecycle, and the lifecycle is whole."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.domain import TokenState
from rooms.lifecycle import FINAL, MOVES, PENDING, IllegalMove, check_move

SCRIPTS = Path(__file__).resolve().parents[2] / "rooms" / "scripts"
MOVE = re.compile(r"(\(new\)|[a-z_]+) -> ([a-z_]+)")


def declared_moves() -> dict[str, list[tuple[str, str]]]:
    out = {}
    for script in sorted(SCRIPTS.glob("*.lua")):
        lines = [ln for ln in script.read_text().splitlines() if ln.startswith("-- moves:")]
        out[script.name] = [m for ln in lines for m in MOVE.findall(ln)]
    return out


def test_every_state_has_an_entry() -> None:
    assert set(MOVES) == set(TokenState)
    assert {TokenState.COMPLETED, TokenState.CANCELLED, TokenState.EXPIRED} == FINAL
    assert TokenState.NO_SHOW not in FINAL  # a doctor may recall it
    assert set(MOVES) >= PENDING


def test_scripts_make_only_lifecycle_moves() -> None:
    moves = declared_moves()
    for name in (
        "issue.lua",
        "call_next.lua",
        "activate_room.lua",
        "end_room.lua",
        "cancel.lua",
        "open_window.lua",
        "close_window.lua",
        "skip.lua",
        "recall.lua",
    ):
        assert moves[name], f"{name} declares no moves"
    for name, pairs in moves.items():
        for old, new in pairs:
            if old == "(new)":
                assert TokenState(new) in (TokenState.WAITING, TokenState.SCHEDULED), name
            else:
                check_move(TokenState(old), TokenState(new))


def test_every_lifecycle_move_is_made_by_some_script() -> None:
    made = {
        (TokenState(o), TokenState(n))
        for pairs in declared_moves().values()
        for o, n in pairs
        if o != "(new)"
    }
    allowed = {(o, n) for o, targets in MOVES.items() for n in targets}
    assert made == allowed


def test_illegal_moves_are_refused() -> None:
    with pytest.raises(IllegalMove):
        check_move(TokenState.COMPLETED, TokenState.WAITING)
    with pytest.raises(IllegalMove):
        check_move(TokenState.SCHEDULED, TokenState.CALLED)
