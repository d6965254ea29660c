"""Time-limited TURN credentials: coturn's ``use-auth-secret`` scheme, fresh on every join."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import core.turn
from core.settings import IceServer, Settings
from core.turn import client_ice_servers, turn_credential
from server import create_app
from tests.helpers import DOCTOR, NURSE, PATIENT, ProtocolClient, make_settings

AiohttpClient = Any

SECRET = "north-bhabua-turn-secret-2026"
NOW = 1_790_000_000
TURN_URLS = (
    "turn:turn.example.org:3478?transport=udp",
    "turns:turn.example.org:443?transport=tcp",
)
STUN = IceServer(urls=("stun:turn.example.org:3478",))


def turn_settings(**overrides: Any) -> Settings:
    return Settings(ice_servers=(STUN,), turn_urls=TURN_URLS, turn_secret=SECRET, **overrides)


def password_for(username: str, secret: str = SECRET) -> str:
    """What coturn computes from the username to check the password."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def test_credential_matches_a_vector_computed_elsewhere() -> None:
    credential = turn_credential(SECRET, NURSE, NOW + 3600)
    assert credential.username == "1790003600:nurse.akhlaspur"
    # printf %s 1790003600:nurse.akhlaspur | openssl dgst -binary -sha1 -hmac "$SECRET" | base64
    assert credential.password == "4g1PN0Kkkvbt/zDEoEVK0TY5qjU="
    assert credential.password == password_for(credential.username)
    assert credential.expires_at == NOW + 3600


def test_a_client_gets_the_static_servers_then_the_turn_server() -> None:
    stun, turn = client_ice_servers(turn_settings(), DOCTOR, now=NOW)
    assert stun == STUN
    assert turn.urls == TURN_URLS
    assert turn.username == "1790003600:dr.sharma"
    assert turn.credential == "VT7tcIOD6nHfS5tvD9cV59XJzU8="


@pytest.mark.parametrize("ttl", [300, 3600, 86_400])
def test_the_credential_expires_ttl_seconds_from_now(ttl: int) -> None:
    (_, turn) = client_ice_servers(turn_settings(turn_ttl_s=ttl), NURSE, now=NOW + 0.9)
    assert turn.username is not None
    expiry, user = turn.username.split(":", 1)
    assert (int(expiry), user) == (NOW + ttl, NURSE)
    assert turn.credential == password_for(turn.username)


def test_every_call_makes_a_fresh_credential() -> None:
    settings = turn_settings()
    first = client_ice_servers(settings, NURSE, now=NOW)[-1]
    later = client_ice_servers(settings, NURSE, now=NOW + 90)[-1]
    assert later.username == f"{NOW + 90 + 3600}:{NURSE}"
    assert later.credential != first.credential
    assert later.credential == password_for(str(later.username))


def test_the_current_time_is_the_default() -> None:
    before = int(time.time())
    (_, turn) = client_ice_servers(turn_settings(), NURSE)
    after = int(time.time())
    assert before + 3600 <= int(str(turn.username).split(":")[0]) <= after + 3600


def test_without_a_turn_server_only_the_static_servers() -> None:
    assert client_ice_servers(Settings(ice_servers=(STUN,)), NURSE, now=NOW) == (STUN,)
    assert client_ice_servers(Settings(), NURSE, now=NOW) == ()


def test_a_credential_needs_a_user_id() -> None:
    with pytest.raises(ValueError, match="user id"):
        turn_credential(SECRET, "", NOW)


def test_reprs_show_neither_the_secret_nor_a_password() -> None:
    settings = turn_settings()
    credential = turn_credential(SECRET, NURSE, NOW)
    (_, turn) = client_ice_servers(settings, NURSE, now=NOW)
    assert SECRET not in repr(settings)
    assert credential.password not in repr(credential)
    assert credential.username in repr(credential)
    assert str(turn.credential) not in repr(turn)


# ---------------------------------------------------------------------------- over the protocol


async def call_a_patient(
    client: TestClient[Any, Any],
) -> tuple[ProtocolClient, ProtocolClient, str]:
    nurse, doctor = ProtocolClient(client, NURSE), ProtocolClient(client, DOCTOR)
    await nurse.connect()
    await doctor.connect()
    await doctor.request("watch_queue", "queue")
    await nurse.request("register_patient", "token_issued", patient=PATIENT)
    await doctor.expect("queue", where=lambda m: len(m["waiting"]) == 1)
    opened = await doctor.request("call_next", "room_opened")
    return nurse, doctor, str(opened["room_id"])


def check_ice_servers(joined: dict[str, Any], user: str, earliest: float, latest: float) -> str:
    """The static server, then the TURN server with a credential coturn accepts; returns it."""
    stun, turn = joined["ice_servers"]
    assert stun == {"urls": list(STUN.urls), "username": None, "credential": None}
    assert turn["urls"] == list(TURN_URLS)
    expiry, who = turn["username"].split(":", 1)
    assert who == user
    assert int(earliest) + 1800 <= int(expiry) <= int(latest) + 1800
    assert turn["credential"] == password_for(turn["username"])
    return str(turn["credential"])


class ShiftedTime:
    """Stands in for the ``time`` module in :mod:`core.turn`: real time, moved ahead."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def time(self) -> float:
        return time.time() + self.ahead


async def test_joined_hands_each_client_fresh_credentials(
    aiohttp_client: AiohttpClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    no_leaked_tasks: None,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(
        None,
        ice_servers=(STUN,),
        turn_urls=TURN_URLS,
        turn_secret=SECRET,
        turn_ttl_s=1800,
        room_grace_s=30.0,
    )
    client = await aiohttp_client(create_app(settings))
    nurse, doctor, room_id = await call_a_patient(client)

    before = time.time()
    joined_nurse = await nurse.request("join", "joined", room_id=room_id)
    joined_doctor = await doctor.request("join", "joined", room_id=room_id)
    after = time.time()
    handed = [
        check_ice_servers(joined_nurse, NURSE, before, after),
        check_ice_servers(joined_doctor, DOCTOR, before, after),
    ]

    # The nurse's page loses its socket, comes back ten minutes later and joins again: it gets
    # a new credential, valid from then on.
    await nurse.close()
    monkeypatch.setattr(core.turn, "time", ShiftedTime(600))
    again = ProtocolClient(client, NURSE)
    await again.connect()
    rejoined = await again.request("join", "joined", room_id=room_id)
    fresh = check_ice_servers(rejoined, NURSE, before + 600, time.time() + 600)
    assert fresh not in handed
    handed.append(fresh)

    await again.close()
    await doctor.close()
    await client.close()
    # Neither the shared secret nor any credential handed out reached a log line.
    assert caplog.records, "the test should have seen the server's log"
    assert SECRET not in caplog.text
    assert not [c for c in handed if c in caplog.text]
    for record in caplog.records:
        line = record.getMessage()
        assert SECRET not in line
        assert not [c for c in handed if c in line]
