"""Bad cases at the edge: wrong role, other people's objects, cross-origin, malformed input,
unknown rooms, and the store going away."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from rooms import ROOMS
from server import create_app
from tests.conftest import RedisServer
from tests.helpers import (
    DOCTOR,
    NURSE,
    OTHER_DOCTOR,
    OTHER_NURSE,
    PATIENT,
    ProtocolClient,
    make_settings,
)

AiohttpClient = Any


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, redis_url: str) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(make_settings(redis_url)))  # type: ignore[no-any-return]


async def connected(client: TestClient[Any, Any], username: str) -> ProtocolClient:
    who = ProtocolClient(client, username)
    await who.connect()
    return who


async def error_for(who: ProtocolClient, type_: str, **fields: Any) -> dict[str, Any]:
    rid = await who.send(type_, **fields)
    return await who.expect("error", where=lambda m: m.get("re") == rid)


async def test_roles_are_checked_on_every_message(client: TestClient[Any, Any]) -> None:
    nurse, doctor = await connected(client, NURSE), await connected(client, DOCTOR)
    assert (await error_for(nurse, "call_next"))["code"] == "forbidden"
    assert (await error_for(doctor, "register_patient", patient=PATIENT))["code"] == "forbidden"
    auditor = await connected(client, "auditor")
    assert (await error_for(auditor, "watch_queue"))["code"] == "forbidden"
    assert (await error_for(auditor, "join", room_id="bhabua-sadar.abc"))["code"] == "forbidden"
    for who in (nurse, doctor, auditor):
        await who.close()


async def test_nurses_see_and_touch_only_their_own_spokes_tokens(
    client: TestClient[Any, Any],
) -> None:
    nurse, other = await connected(client, NURSE), await connected(client, OTHER_NURSE)
    issued = await nurse.request("register_patient", "token_issued", patient=PATIENT)
    token_id = issued["token"]["id"]
    queue = await other.request("watch_queue", "queue")
    assert queue["today"] == []
    assert queue["waiting"] == []
    assert queue["waiting_total"] == 1  # she may know how long the hub's queue is, no more
    assert (await error_for(other, "cancel_token", token_id=token_id))["code"] == "token_not_found"
    await nurse.close()
    await other.close()


async def test_only_the_paired_users_may_join_a_room(client: TestClient[Any, Any]) -> None:
    nurse, doctor = await connected(client, NURSE), await connected(client, DOCTOR)
    await nurse.request("register_patient", "token_issued", patient=PATIENT)
    room_id = (await doctor.request("call_next", "room_opened"))["room_id"]
    for name in (OTHER_NURSE, OTHER_DOCTOR):
        intruder = await connected(client, name)
        err = await error_for(intruder, "join", room_id=room_id)
        assert err["code"] == "not_a_participant"
        await intruder.close()
    assert len(client.server.app[ROOMS]) == 0  # an intruder cannot make a room live
    assert (await error_for(nurse, "join", room_id="bhabua-sadar.nope"))["code"] == "room_not_found"
    assert (await error_for(nurse, "join", room_id="garbage"))["code"] == "room_not_found"
    assert (await error_for(nurse, "offer", sdp="v=0 not joined"))["code"] == "forbidden"
    assert (await error_for(doctor, "hangup"))["code"] == "forbidden"
    await nurse.close()
    await doctor.close()


async def test_a_broken_offer_is_an_error_not_a_crash(client: TestClient[Any, Any]) -> None:
    nurse, doctor = await connected(client, NURSE), await connected(client, DOCTOR)
    await nurse.request("register_patient", "token_issued", patient=PATIENT)
    room_id = (await doctor.request("call_next", "room_opened"))["room_id"]
    await nurse.request("join", "joined", room_id=room_id)
    err = await error_for(nurse, "offer", sdp="v=0\r\nthis is not sdp\r\n")
    assert err["code"] == "negotiation_failed"
    # The session is still usable.
    assert (await nurse.request("ping", "pong"))["type"] == "pong"
    await nurse.close()
    await doctor.close()


async def test_malformed_and_oversized_messages(client: TestClient[Any, Any]) -> None:
    nurse = await connected(client, NURSE)
    await nurse.send_raw("{nope")
    assert (await nurse.expect("error"))["code"] == "bad_json"
    await nurse.send_raw(json.dumps({"v": 1, "type": "ping", "surprise": True}))
    assert (await nurse.expect("error"))["code"] == "bad_message"
    await nurse.send_raw(
        json.dumps({"v": 1, "type": "register_patient", "id": 4, "patient": {"name": "x"}})
    )
    err = await nurse.expect("error")
    assert err["code"] == "bad_message"
    assert err["re"] == 4
    await nurse.send_raw(
        json.dumps({"v": 1, "type": "offer", "sdp": "é" * 40_000}, ensure_ascii=False)
    )
    assert (await nurse.expect("error"))["code"] == "too_large"  # 80 KB once encoded
    await nurse.send_raw(json.dumps({"v": 1.0, "type": "ping"}))
    assert (await nurse.expect("error"))["code"] == "bad_version"
    await nurse.send_raw("x" * (200 * 1024))
    closed = await nurse.expect("_closed")
    assert closed["code"] == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await nurse.close()


async def test_websocket_needs_a_session_and_the_same_origin(
    client: TestClient[Any, Any],
) -> None:
    origin = str(client.make_url("/")).rstrip("/")
    with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
        await client.session.ws_connect(client.make_url("/ws"), headers={"Origin": origin})
    assert anonymous.value.status == 401
    nurse = ProtocolClient(client, NURSE)
    with pytest.raises(aiohttp.WSServerHandshakeError) as cross:
        await nurse.connect(origin="https://evil.example")
    assert cross.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as no_origin:
        await nurse.session.ws_connect(client.make_url("/ws"))
    assert no_origin.value.status == 403
    await nurse.session.close()


async def test_store_outage_gives_a_clear_error_and_recovers(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        client = await aiohttp_client(create_app(make_settings(redis.url)))
        nurse = await connected(client, NURSE)
        await nurse.request("register_patient", "token_issued", patient=PATIENT)
        redis.stop()
        err = await error_for(nurse, "register_patient", patient=PATIENT)
        assert err["code"] == "store_unavailable"
        assert "try again" in err["message"]
        redis.start_on_same_port()
        issued = await nurse.request("register_patient", "token_issued", patient=PATIENT)
        assert issued["token"]["number"] >= 1
        await nurse.close()
    finally:
        redis.stop()
