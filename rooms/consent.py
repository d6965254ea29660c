"""The patient's consent to recording: recorded by the nurse, confirmed by the doctor.

India's telemedicine guidelines ask for explicit consent to a spoke consultation and to its
recording, obtained by both the health worker and the doctor.  So recording starts only when the
nurse has recorded who consented and how, and the doctor has confirmed it; either may withdraw
it, and a withdrawn consent is final for that consultation.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, TypeVar

from audit import iso, parse_iso
from core.domain import ConsentGiver, ConsentMethod, ConsentState

_ALLOWED = {
    ConsentState.NONE: {ConsentState.RECORDED},
    # The nurse may correct what she recorded until the doctor confirms it.
    ConsentState.RECORDED: {ConsentState.RECORDED, ConsentState.CONFIRMED, ConsentState.WITHDRAWN},
    ConsentState.CONFIRMED: {ConsentState.WITHDRAWN},
    ConsentState.WITHDRAWN: set(),
}


class ConsentError(Exception):
    """A consent step that does not follow from the current state."""

    code = "consent_state"


@dataclasses.dataclass
class Consent:
    """One consultation's consent; every change goes through :meth:`_move`."""

    state: ConsentState = ConsentState.NONE
    given_by: ConsentGiver | None = None
    caregiver: str | None = None
    relation: str | None = None
    method: ConsentMethod | None = None
    recorded_by: str | None = None
    recorded_at: datetime | None = None
    confirmed_by: str | None = None
    confirmed_at: datetime | None = None
    withdrawn_by: str | None = None
    withdrawn_at: datetime | None = None
    history: list[ConsentState] = dataclasses.field(default_factory=lambda: [ConsentState.NONE])

    def _move(self, new: ConsentState) -> None:
        if new not in _ALLOWED[self.state]:
            raise ConsentError(_REFUSALS.get((self.state, new), f"consent is {self.state}"))
        self.state = new
        self.history.append(new)

    def record(
        self,
        *,
        by: str,
        at: datetime,
        given_by: ConsentGiver,
        method: ConsentMethod,
        caregiver: str | None = None,
        relation: str | None = None,
    ) -> None:
        """The nurse records who consented and how."""
        if given_by is ConsentGiver.CAREGIVER and not (caregiver and relation):
            raise ConsentError("a caregiver's consent needs the caregiver's name and relation")
        if given_by is ConsentGiver.PATIENT and (caregiver or relation):
            raise ConsentError("a patient's own consent names no caregiver")
        self._move(ConsentState.RECORDED)
        self.given_by, self.method = given_by, method
        self.caregiver, self.relation = caregiver, relation
        self.recorded_by, self.recorded_at = by, at

    def confirm(self, *, by: str, at: datetime) -> None:
        """The doctor confirms the consent the nurse recorded."""
        self._move(ConsentState.CONFIRMED)
        self.confirmed_by, self.confirmed_at = by, at

    def withdraw(self, *, by: str, at: datetime) -> None:
        self._move(ConsentState.WITHDRAWN)
        self.withdrawn_by, self.withdrawn_at = by, at

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Consent:
        """The consent an earlier life of the consultation recorded (a resumed room)."""
        if not record:
            return cls()
        state = ConsentState(record["state"])
        return cls(
            state=state,
            given_by=_member(ConsentGiver, record.get("given_by")),
            caregiver=record.get("caregiver"),
            relation=record.get("relation"),
            method=_member(ConsentMethod, record.get("method")),
            recorded_by=record.get("recorded_by"),
            recorded_at=_when(record.get("recorded_at")),
            confirmed_by=record.get("confirmed_by"),
            confirmed_at=_when(record.get("confirmed_at")),
            withdrawn_by=record.get("withdrawn_by"),
            withdrawn_at=_when(record.get("withdrawn_at")),
            history=[ConsentState.NONE, state],
        )

    def as_record(self) -> dict[str, Any] | None:
        """The consent as the manifest keeps it (``None`` when none was ever recorded)."""
        if self.recorded_at is None:
            return None
        return {
            "state": self.state.value,
            "given_by": _value(self.given_by),
            "caregiver": self.caregiver,
            "relation": self.relation,
            "method": _value(self.method),
            "recorded_by": self.recorded_by,
            "recorded_at": _iso(self.recorded_at),
            "confirmed_by": self.confirmed_by,
            "confirmed_at": _iso(self.confirmed_at),
            "withdrawn_by": self.withdrawn_by,
            "withdrawn_at": _iso(self.withdrawn_at),
        }


_REFUSALS = {
    (ConsentState.NONE, ConsentState.CONFIRMED): "the nurse has not recorded the consent yet",
    (ConsentState.NONE, ConsentState.WITHDRAWN): "no consent has been recorded",
    (ConsentState.CONFIRMED, ConsentState.RECORDED): "the doctor has already confirmed consent",
    (ConsentState.CONFIRMED, ConsentState.CONFIRMED): "consent is already confirmed",
    (ConsentState.WITHDRAWN, ConsentState.RECORDED): (
        "consent was withdrawn; this consultation is not recorded"
    ),
    (ConsentState.WITHDRAWN, ConsentState.CONFIRMED): (
        "consent was withdrawn; this consultation is not recorded"
    ),
    (ConsentState.WITHDRAWN, ConsentState.WITHDRAWN): "consent is already withdrawn",
}


def _value(member: ConsentGiver | ConsentMethod | None) -> str | None:
    return None if member is None else member.value


_E = TypeVar("_E", ConsentGiver, ConsentMethod)


def _member(kind: type[_E], value: object) -> _E | None:
    return None if value is None else kind(str(value))


def _when(value: object) -> datetime | None:
    return None if value is None else parse_iso(str(value))


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else iso(dt)
