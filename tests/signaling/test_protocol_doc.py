"""docs/protocol.md names every message type, field, error code and close code of the protocol.

The models in ``signaling/messages.py`` and the exceptions' ``code`` attributes are the source of
truth; this test fails when one of them is missing from the document, so that the reference for
client authors cannot silently fall behind the code.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

import rooms.consent
import rooms.registry
import rooms.waiting_room
import signaling.auth
import signaling.session
from core.domain import EndReason, Participant, Role, Sex, TokenState
from media.peer import PeerState
from signaling import messages

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

#: Modules whose exceptions carry the error codes a client can see (or that the doc explains).
CODE_MODULES: tuple[ModuleType, ...] = (
    rooms.waiting_room,
    rooms.registry,
    rooms.consent,
    signaling.session,
    signaling.auth,
)
#: The codes ``parse_message`` is known to raise; the AST scan below must find at least these.
PARSE_CODES = {"bad_json", "bad_message", "bad_version", "unknown_type", "too_large"}


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC.is_file(), f"{DOC} is missing"
    return DOC.read_text(encoding="utf-8")


def missing(doc: str, names: set[str]) -> list[str]:
    """The names that do not appear in backticks in the document."""
    return sorted(name for name in names if f"`{name}`" not in doc)


def client_models() -> tuple[type[BaseModel], ...]:
    union = typing.get_args(messages.ClientMessage)[0]  # Annotated[Union, Field(...)]
    return typing.get_args(union)


def server_models() -> tuple[type[BaseModel], ...]:
    return typing.get_args(messages.ServerMessage)


def client_types() -> set[str]:
    found: set[str] = set()
    for model in client_models():
        found.update(typing.get_args(model.model_fields["type"].annotation))
    return found


def server_types() -> set[str]:
    return {model.model_fields["type"].default for model in server_models()}


def exception_codes() -> set[str]:
    """``code`` class attributes of the exceptions defined in :data:`CODE_MODULES`."""
    codes: set[str] = set()
    for module in CODE_MODULES:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls.__module__ == module.__name__
                and issubclass(cls, BaseException)
                and isinstance(cls.__dict__.get("code"), str)
            ):
                codes.add(cls.__dict__["code"])
    return codes


def literal_codes(module: ModuleType) -> set[str]:
    """Error codes written as literals in ``module``: the first argument of ``ProtocolError``,
    ``code=`` of ``Error``, and the default of ``getattr(exc, "code", ...)``."""
    codes: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        candidates: list[ast.expr] = []
        if name == "ProtocolError" and node.args:
            candidates.append(node.args[0])
        if name in ("Error", "ProtocolError"):
            candidates += [k.value for k in node.keywords if k.arg == "code"]
        if (
            name == "getattr"
            and len(node.args) == 3
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "code"
        ):
            candidates.append(node.args[2])
        codes.update(
            c.value for c in candidates if isinstance(c, ast.Constant) and isinstance(c.value, str)
        )
    return codes


def test_client_types_constant_matches_the_models() -> None:
    assert set(messages.CLIENT_TYPES) == client_types()
    assert len(messages.CLIENT_TYPES) == len(set(messages.CLIENT_TYPES))


def test_every_client_message_type_is_documented(doc: str) -> None:
    assert not missing(doc, set(messages.CLIENT_TYPES))


def test_every_server_message_type_is_documented(doc: str) -> None:
    types = server_types()
    assert len(types) == len(server_models())
    assert not missing(doc, types)


def test_every_exception_code_is_documented(doc: str) -> None:
    codes = exception_codes()
    # The scan must see the codes that clients meet most; an empty scan would prove nothing.
    assert {"forbidden", "queue_empty", "room_not_found", "room_ended"} <= codes
    assert not missing(doc, codes)


def test_every_parse_and_session_error_code_is_documented(doc: str) -> None:
    parse_codes = literal_codes(messages)
    assert parse_codes >= PARSE_CODES
    session_codes = literal_codes(signaling.session)
    assert {"store_unavailable", "replaced", "negotiation_failed"} <= session_codes
    assert not missing(doc, parse_codes | session_codes)


def test_parse_error_codes_are_real(doc: str) -> None:
    """Each documented parse code is what ``parse_message`` raises for such a message."""
    cases = {
        "too_large": "x" * (messages.MAX_MESSAGE_BYTES + 1),
        "bad_json": "{not json",
        "bad_message": "[1, 2]",
        "bad_version": '{"v": 2, "type": "ping"}',
        "unknown_type": '{"v": 1, "type": "no_such_type"}',
    }
    assert set(cases) == PARSE_CODES
    for code, raw in cases.items():
        with pytest.raises(messages.ProtocolError) as err:
            messages.parse_message(raw)
        assert err.value.code == code
    assert not missing(doc, PARSE_CODES)


def test_every_message_field_is_documented(doc: str) -> None:
    models = [
        cls
        for _, cls in inspect.getmembers(messages, inspect.isclass)
        if issubclass(cls, BaseModel) and cls.__module__ == messages.__name__
    ]
    fields = {name for model in models for name in model.model_fields}
    assert {"v", "id", "re", "type", "sdp", "patient", "heartbeat_s"} <= fields
    assert not missing(doc, fields)


def test_every_state_and_enum_value_in_messages_is_documented(doc: str) -> None:
    values = {
        *(r.value for r in Role),
        *(s.value for s in Sex),
        *(t.value for t in TokenState),
        *(p.value for p in Participant),
        *(e.value for e in EndReason),
        *(p.value for p in PeerState),
        "absent",  # the peer state of a seat without a peer connection (rooms/registry.py)
    }
    assert not missing(doc, values)


def test_close_codes_and_limits_are_documented(doc: str) -> None:
    close_codes = {
        str(value)
        for name, value in vars(signaling.session).items()
        if name.startswith("CLOSE_") and isinstance(value, int)
    }
    assert close_codes >= {"4008", "4009"}
    # 1001: server shutdown; 1009: message too big (aiohttp's max_msg_size).
    assert not missing(doc, close_codes | {"1001", "1009"})
    assert f"{messages.MAX_MESSAGE_BYTES:,}".replace(",", " ") in doc
    assert signaling.auth.COOKIE_NAME in doc
