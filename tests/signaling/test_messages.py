"""Every websocket message is validated once, at the edge, into a typed model."""

from __future__ import annotations

import json

import pytest

from signaling import messages as m


def raw(**fields: object) -> str:
    return json.dumps({"v": 1, **fields})


def test_valid_messages_become_typed_models() -> None:
    msg = m.parse_message(
        raw(
            type="register_patient",
            id=7,
            patient={"name": " Sita Devi ", "age": 31, "sex": "female", "complaint": "fever"},
        )
    )
    assert isinstance(msg, m.RegisterPatient)
    assert msg.patient.name == "Sita Devi"
    assert msg.id == 7
    assert isinstance(m.parse_message(raw(type="join", room_id="bhabua-sadar.x")), m.Join)
    assert isinstance(m.parse_message(raw(type="call_next")), m.CallNext)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        (json.dumps({"type": "ping"}), "bad_version"),
        (json.dumps({"v": 2, "type": "ping"}), "bad_version"),
        (raw(type="launch_missiles"), "unknown_type"),
        (raw(type="ping", extra=1), "bad_message"),
        (raw(type="join"), "bad_message"),
        (
            raw(
                type="register_patient",
                patient={"name": "A", "age": 200, "sex": "female", "complaint": "x"},
            ),
            "bad_message",
        ),
        (
            raw(
                type="register_patient",
                patient={"name": "A", "age": 3, "sex": "female", "complaint": "x", "aadhaar": "1"},
            ),
            "bad_message",
        ),
        (
            raw(
                type="register_patient",
                patient={"name": "", "age": 3, "sex": "female", "complaint": "x"},
            ),
            "bad_message",
        ),
        (
            raw(
                type="register_patient",
                patient={
                    "name": "A",
                    "age": 3,
                    "sex": "female",
                    "complaint": "x",
                    "phone": "call me",
                },
            ),
            "bad_message",
        ),
        (raw(type="ping", id=True), "bad_message"),
        (raw(type="offer", sdp="x" * 70_000), "too_large"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(text: str, code: str) -> None:
    with pytest.raises(m.ProtocolError) as err:
        m.parse_message(text)
    assert err.value.code == code
    assert err.value.message


def test_deeply_nested_junk_is_bad_json_not_a_crash() -> None:
    with pytest.raises(m.ProtocolError) as err:
        m.parse_message("[" * 60_000)
    assert err.value.code in ("bad_json", "bad_message")


def test_errors_carry_the_request_id_when_readable() -> None:
    with pytest.raises(m.ProtocolError) as err:
        m.parse_message(raw(type="join", id="abc"))
    assert err.value.request_id == "abc"
    assert "room_id" in err.value.message


def test_outgoing_messages_are_versioned_json() -> None:
    out = json.loads(m.encode(m.Error(code="x", message="y", re=3)))
    assert out == {"v": 1, "re": 3, "type": "error", "code": "x", "message": "y"}
