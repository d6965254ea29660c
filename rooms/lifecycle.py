"""The token lifecycle: every state a token can be in and every move between them.

The Lua scripts make the moves atomically in Redis; this table is the one written statement of
which moves exist.  Each script names the moves it makes in a ``-- moves:`` line, and a test
holds every script to this table.
"""

from __future__ import annotations

from core.domain import TokenState as S


class IllegalMove(Exception):
    code = "illegal_transition"


#: ``MOVES[a]`` is the set of states a token in state ``a`` may move to.
MOVES: dict[S, frozenset[S]] = {
    S.SCHEDULED: frozenset({S.WAITING, S.CANCELLED}),
    S.WAITING: frozenset({S.CALLED, S.CANCELLED, S.CARRIED_OVER, S.EXPIRED, S.WAITING}),
    S.CARRIED_OVER: frozenset({S.WAITING, S.CANCELLED}),
    # A called token whose room ends before media flowed goes back to its place (waiting, or
    # carried over if the window closed meanwhile); one whose media flowed completes even if
    # the store missed the start.
    S.CALLED: frozenset({S.IN_CONSULTATION, S.WAITING, S.CARRIED_OVER, S.COMPLETED, S.NO_SHOW}),
    S.IN_CONSULTATION: frozenset({S.COMPLETED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
    # A no-show can be recalled by a doctor when the patient turns up after all.
    S.NO_SHOW: frozenset({S.WAITING, S.CARRIED_OVER}),
    # Skipping moves a waiting token back a few places; its state does not change.
}

#: States in which a token is queued or held for a window, and may still be withdrawn.
PENDING = frozenset({S.SCHEDULED, S.WAITING, S.CARRIED_OVER})
FINAL = frozenset(state for state, targets in MOVES.items() if not targets)


def check_move(current: S, new: S) -> None:
    """Raise :class:`IllegalMove` unless ``current -> new`` is a move of the lifecycle."""
    if new not in MOVES[current]:
        raise IllegalMove(f"a token cannot go from {current} to {new}")
