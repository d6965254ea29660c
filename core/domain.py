"""The domain vocabulary: ids, roles and the states of tokens and rooms.

Defined once here and imported everywhere else, so that a state or a role is spelled the same in
Redis, in messages, in templates and in logs.
"""

from __future__ import annotations

import enum
import re
from typing import NewType

HubId = NewType("HubId", str)
SpokeId = NewType("SpokeId", str)
BlockId = NewType("BlockId", str)
UserId = NewType("UserId", str)
TokenId = NewType("TokenId", str)
RoomId = NewType("RoomId", str)

#: Directory ids are short, lowercase and URL-safe.  A dot never appears in one, which lets a
#: room id carry its hub (``<hub>.<random>``) so that every key of a room hashes with its hub.
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")


class Role(enum.StrEnum):
    NURSE = "nurse"
    DOCTOR = "doctor"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Sex(enum.StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"


class Priority(enum.StrEnum):
    """How soon a patient should be seen; the nurse decides at registration."""

    NORMAL = "normal"
    URGENT = "urgent"


class TokenState(enum.StrEnum):
    """Where a patient's token stands in the waiting room."""

    SCHEDULED = "scheduled"  # issued while the hub is closed (or its window is full)
    WAITING = "waiting"  # in the queue of an open window
    CARRIED_OVER = "carried_over"  # still waiting at closing; first in the next window
    CALLED = "called"
    IN_CONSULTATION = "in_consultation"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # still waiting at closing, at a hub that does not carry over
    NO_SHOW = "no_show"  # called and did not join, twice; a doctor may recall it


class RoomState(enum.StrEnum):
    """The life of a consultation room."""

    CREATED = "created"  # the doctor called a token; nobody has joined yet
    ACTIVE = "active"  # both participants' media came up at least once
    ENDED = "ended"


class Participant(enum.StrEnum):
    """The two seats of a consultation room."""

    SPOKE = "spoke"
    HUB = "hub"

    @property
    def other(self) -> Participant:
        return Participant.HUB if self is Participant.SPOKE else Participant.SPOKE


class EndReason(enum.StrEnum):
    HANGUP = "hangup"
    PEER_LOST = "peer_lost"
    SHUTDOWN = "shutdown"
    NO_SHOW = "no_show"  # the spoke did not join in time


class ConsentState(enum.StrEnum):
    """The patient's consent to recording, in one consultation."""

    NONE = "none"  # not asked yet: nothing is recorded
    RECORDED = "recorded"  # the nurse recorded it; the doctor has not confirmed yet
    CONFIRMED = "confirmed"  # the doctor confirmed it: recording runs
    WITHDRAWN = "withdrawn"  # withdrawn: recording stopped and does not start again


class ConsentGiver(enum.StrEnum):
    PATIENT = "patient"
    CAREGIVER = "caregiver"  # a named adult, for a minor or a patient who cannot consent


class ConsentMethod(enum.StrEnum):
    VERBAL = "verbal"
    WRITTEN = "written"


class RecordingState(enum.StrEnum):
    """Whether a consultation is being recorded."""

    OFF = "off"  # no confirmed consent yet
    RECORDING = "recording"
    STOPPED = "stopped"  # consent withdrawn, or the consultation ended
    DISABLED = "disabled"  # this server does not record (``--recording off``)


def room_hub(room_id: str) -> HubId:
    """The hub that a room id belongs to (room ids are ``<hub>.<random>``)."""
    hub, sep, rest = room_id.partition(".")
    if not sep or not rest or not ID_PATTERN.match(hub):
        raise ValueError(f"not a room id: {room_id!r}")
    return HubId(hub)


def token_hub(token_id: str) -> HubId:
    """The hub that a token id belongs to (token ids are ``<hub>.<date>.<number>``)."""
    parts = token_id.split(".")
    if len(parts) != 3 or not ID_PATTERN.match(parts[0]):
        raise ValueError(f"not a token id: {token_id!r}")
    return HubId(parts[0])
