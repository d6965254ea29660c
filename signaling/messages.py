"""The websocket protocol: every message, typed and validated once, here at the edge.

:func:`parse_message` turns the text of a websocket frame into one :data:`ClientMessage` or
raises :class:`ProtocolError`.  Core code only sees these models, never a JSON dict.  Outgoing
messages are models too, serialized by :func:`encode`.  ``docs/protocol.md`` documents them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from core.domain import ConsentGiver, ConsentMethod, Priority, Sex

PROTOCOL_VERSION = 1
#: Largest websocket message accepted, in bytes; an SDP offer is about 5 KiB.  A larger one
#: gets a ``too_large`` error; one over :data:`MAX_FRAME_BYTES` closes the socket (1009).
MAX_MESSAGE_BYTES = 64 * 1024
MAX_FRAME_BYTES = 2 * MAX_MESSAGE_BYTES

RequestId = (
    Annotated[str, StringConstraints(max_length=64), Field(strict=True)]
    | Annotated[int, Field(ge=0, lt=2**53, strict=True)]
)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ProtocolError(Exception):
    """A client message that is not valid JSON, not a known type or has bad fields."""

    def __init__(self, code: str, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=MAX_MESSAGE_BYTES)

    v: Annotated[int, Field(strict=True, ge=PROTOCOL_VERSION, le=PROTOCOL_VERSION)]
    #: Chosen by the client; echoed as ``re`` in the reply or error that answers this message.
    id: RequestId | None = None


class Ping(_In):
    type: Literal["ping"]


class WatchQueue(_In):
    type: Literal["watch_queue"]


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text
    age: Annotated[int, Field(ge=0, le=130, strict=True)]
    sex: Sex
    complaint: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
    ]
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 -]{6,20}$")] | None = None
    priority: Priority = Priority.NORMAL


class RegisterPatient(_In):
    type: Literal["register_patient"]
    patient: PatientIn


class CancelToken(_In):
    type: Literal["cancel_token"]
    token_id: Annotated[str, StringConstraints(max_length=100)]


class CallNext(_In):
    type: Literal["call_next"]
    #: Call this waiting token instead of the head of the queue.
    token_id: Annotated[str, StringConstraints(max_length=100)] | None = None


class SkipToken(_In):
    type: Literal["skip_token"]
    token_id: Annotated[str, StringConstraints(max_length=100)]


class RecallToken(_In):
    type: Literal["recall_token"]
    token_id: Annotated[str, StringConstraints(max_length=100)]


class Join(_In):
    type: Literal["join"]
    room_id: Annotated[str, StringConstraints(max_length=100)]


class Offer(_In):
    type: Literal["offer"]
    sdp: Annotated[str, StringConstraints(min_length=10, max_length=60_000)]


class Hangup(_In):
    type: Literal["hangup"]


class RecordConsent(_In):
    """The nurse records the patient's consent to recording (who gave it and how)."""

    type: Literal["record_consent"]
    given_by: ConsentGiver
    method: ConsentMethod
    #: For ``given_by: caregiver``: the caregiver's name and relation to the patient.
    caregiver: Text | None = None
    relation: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)] | None
    ) = None


class ConfirmConsent(_In):
    type: Literal["confirm_consent"]


class WithdrawConsent(_In):
    type: Literal["withdraw_consent"]


Kbps = Annotated[float, Field(ge=0, le=1_000_000)]
Millis = Annotated[float, Field(ge=0, le=600_000)]


class LinkReport(_In):
    """What the page measured of its links over the last interval (``getStats()``)."""

    type: Literal["link_report"]
    #: The browser's estimate of its uplink (the candidate pair's availableOutgoingBitrate).
    available_out_kbps: Kbps | None = None
    out_kbps: Kbps | None = None
    rtt_ms: Millis | None = None
    in_kbps: Kbps | None = None
    #: Fraction of the packets due over the interval that were lost, 0 to 1.
    in_loss: Annotated[float, Field(ge=0, le=1)] | None = None
    in_jitter_ms: Millis | None = None
    in_fps: Annotated[float, Field(ge=0, le=240)] | None = None
    #: The pre-call check's measurement of the uplink to the server.
    probe_kbps: Kbps | None = None
    #: The page paused its own video at once: its uplink estimate fell far below what it was
    #: sending (a link collapsing faster than the server's reports can follow).
    brake: Annotated[bool, Field(strict=True)] = False


class GetIceServers(_In):
    """Fresh ICE servers (TURN credentials expire) before a new peer connection."""

    type: Literal["get_ice_servers"]


class SetLowBandwidth(_In):
    """The nurse's manual switch: cap video on both sides to keep the call going."""

    type: Literal["set_low_bandwidth"]
    on: Annotated[bool, Field(strict=True)]


ClientMessage = Annotated[
    Ping
    | WatchQueue
    | RegisterPatient
    | CancelToken
    | CallNext
    | SkipToken
    | RecallToken
    | Join
    | Offer
    | Hangup
    | RecordConsent
    | ConfirmConsent
    | WithdrawConsent
    | LinkReport
    | SetLowBandwidth
    | GetIceServers,
    Field(discriminator="type"),
]
_CLIENT = TypeAdapter(ClientMessage)
CLIENT_TYPES = (
    "ping",
    "watch_queue",
    "register_patient",
    "cancel_token",
    "call_next",
    "skip_token",
    "recall_token",
    "join",
    "offer",
    "hangup",
    "record_consent",
    "confirm_consent",
    "withdraw_consent",
    "link_report",
    "set_low_bandwidth",
    "get_ice_servers",
)


def parse_message(raw: str | bytes) -> ClientMessage:
    """Validate one websocket message; raises :class:`ProtocolError` with a precise reason."""
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"message exceeds {MAX_MESSAGE_BYTES} bytes")
    try:
        return _CLIENT.validate_json(raw)
    except ValidationError as exc:
        raise _explain(exc, raw) from None


def _explain(exc: ValidationError, raw: str | bytes) -> ProtocolError:
    request_id: str | int | None = None
    try:
        import json

        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return ProtocolError("bad_json", "message is not valid JSON")
    if not isinstance(doc, dict):
        return ProtocolError("bad_message", "message must be a JSON object")
    rid = doc.get("id")
    if isinstance(rid, (str, int)) and not isinstance(rid, bool):
        request_id = rid
    version = doc.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        return ProtocolError(
            "bad_version", f"protocol version must be {PROTOCOL_VERSION}", request_id
        )
    if doc.get("type") not in CLIENT_TYPES:
        return ProtocolError(
            "unknown_type", f"unknown message type {doc.get('type')!r}", request_id
        )
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"][1:]]  # drop the discriminator's tag
        problems.append(f"{'.'.join(loc) or 'message'}: {err['msg']}")
    return ProtocolError("bad_message", "; ".join(problems), request_id)


# ---------------------------------------------------------------------------- server to client


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)

    v: Literal[1] = 1
    re: str | int | None = None


class UserOut(BaseModel):
    username: str
    name: str
    role: str
    hub: str | None = None
    spoke: str | None = None


class Welcome(_Out):
    type: Literal["welcome"] = "welcome"
    user: UserOut
    node: str
    heartbeat_s: float


class Pong(_Out):
    type: Literal["pong"] = "pong"


class PatientOut(BaseModel):
    name: str
    age: int
    sex: str
    complaint: str
    phone: str | None = None
    priority: str = "normal"


class TokenOut(BaseModel):
    id: str
    number: int
    hub: str
    spoke: str
    spoke_name: str
    state: str
    patient: PatientOut
    issued_at: str
    position: int | None = None
    #: For a waiting token: minutes until its call, from recent consultations and doctors.
    estimated_wait_minutes: int | None = None
    #: For a waiting token: it is about to be called (the spoke should be ready).
    turn_near: bool = False
    #: The spoke's page has been away longer than the hub's presence grace: the token keeps
    #: its place but "call next" passes it over until the spoke is back.
    spoke_away: bool = False
    room_id: str | None = None
    doctor: str | None = None
    doctor_name: str | None = None


class QueueOut(_Out):
    type: Literal["queue"] = "queue"
    hub: str
    hub_name: str
    #: Tokens in the order they will be called (a nurse sees only her spoke's).
    waiting: list[TokenOut]
    #: All of today's tokens by number (a nurse sees only her spoke's).
    today: list[TokenOut]
    waiting_total: int
    #: Tokens held for the next window: carried over first, then scheduled (a nurse sees only
    #: her spoke's).
    held: list[TokenOut]
    #: Whether a service window is open now, when it closes, and when the next one opens.
    service_open: bool
    #: Doctors of the hub watching its queue in the last minute.
    doctors_on_duty: int = 0
    closes_at: str | None = None
    opens_at: str | None = None


class TokenIssued(_Out):
    type: Literal["token_issued"] = "token_issued"
    token: TokenOut


class TokenCancelled(_Out):
    type: Literal["token_cancelled"] = "token_cancelled"
    token_id: str


class RoomOpened(_Out):
    type: Literal["room_opened"] = "room_opened"
    room_id: str
    token: TokenOut


class IceServerOut(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class PeerOut(BaseModel):
    name: str
    role: str
    place: str


class Joined(_Out):
    type: Literal["joined"] = "joined"
    room_id: str
    seat: str
    ice_servers: list[IceServerOut]
    peer: PeerOut
    token: TokenOut
    #: The server's peer connection for this seat is up: a page whose own one is too keeps it.
    media: bool = False


class Answer(_Out):
    type: Literal["answer"] = "answer"
    sdp: str


class PeerState(_Out):
    type: Literal["peer_state"] = "peer_state"
    seat: str
    state: str


class RoomEnded(_Out):
    type: Literal["room_ended"] = "room_ended"
    room_id: str
    reason: str


class ConsentOut(_Out):
    """The consent to recording and whether the consultation is being recorded."""

    type: Literal["consent"] = "consent"
    room_id: str
    state: str
    recording: str
    given_by: str | None = None
    caregiver: str | None = None
    relation: str | None = None
    method: str | None = None
    recorded_by: str | None = None
    recorded_at: str | None = None
    confirmed_by: str | None = None
    confirmed_at: str | None = None
    withdrawn_by: str | None = None
    withdrawn_at: str | None = None


class IceServers(_Out):
    type: Literal["ice_servers"] = "ice_servers"
    ice_servers: list[IceServerOut]


class Quality(_Out):
    """The step a seat's browser must send at (it applies it with setParameters)."""

    type: Literal["quality"] = "quality"
    seat: str
    step: int
    label: str
    video: bool
    max_bitrate_kbps: int
    scale_down: float
    max_fps: int
    #: ``encodings[0].maxBitrate`` of the audio sender, in kbit/s.
    audio_kbps: int
    reason: str
    low_bandwidth: bool


class LegOut(BaseModel):
    up: str
    down: str
    rtt_ms: float | None = None
    up_loss: float | None = None
    down_loss: float | None = None


class Network(_Out):
    """Both seats' link quality, for the indicators (pushed every two seconds)."""

    type: Literal["network"] = "network"
    spoke: LegOut
    hub: LegOut


class Error(_Out):
    type: Literal["error"] = "error"
    code: str
    message: str


ServerMessage = (
    Welcome
    | Pong
    | QueueOut
    | TokenIssued
    | TokenCancelled
    | RoomOpened
    | Joined
    | Answer
    | PeerState
    | RoomEnded
    | ConsentOut
    | IceServers
    | Quality
    | Network
    | Error
)


def encode(message: ServerMessage) -> str:
    return message.model_dump_json(exclude_none=False)


def dump(message: ServerMessage) -> dict[str, Any]:
    return message.model_dump()
