"""A whole consultation over the real protocol: aiortc peers stand in for the browsers."""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from core.domain import Participant
from rooms import ROOMS
from server import create_app
from tests.helpers import (
    DEMO_PASSWORD,
    DOCTOR,
    NURSE,
    PATIENT,
    ClientPeer,
    ProtocolClient,
    make_settings,
)

AiohttpClient = Any


async def start(
    aiohttp_client: AiohttpClient, redis_url: str | None, **overrides: Any
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(make_settings(redis_url, **overrides)))


async def register_and_call(
    client: TestClient[Any, Any],
) -> tuple[ProtocolClient, ProtocolClient, str]:
    nurse, doctor = ProtocolClient(client, NURSE), ProtocolClient(client, DOCTOR)
    await nurse.connect()
    await doctor.connect()
    queue = await doctor.request("watch_queue", "queue")
    assert queue["waiting"] == []
    await nurse.request("watch_queue", "queue")
    issued = await nurse.request("register_patient", "token_issued", patient=PATIENT)
    assert issued["token"]["number"] == 1
    pushed = await doctor.expect("queue", where=lambda m: len(m["waiting"]) == 1)
    assert pushed["waiting"][0]["patient"]["name"] == PATIENT["name"]
    opened = await doctor.request("call_next", "room_opened")
    room_id = opened["room_id"]
    called = await nurse.expect(
        "queue", where=lambda m: any(t["state"] == "called" for t in m["today"])
    )
    assert called["today"][0]["room_id"] == room_id
    return nurse, doctor, room_id


async def join_with_media(who: ProtocolClient, room_id: str) -> ClientPeer:
    joined = await who.request("join", "joined", room_id=room_id)
    assert joined["room_id"] == room_id
    peer = ClientPeer()
    answer = await who.request("offer", "answer", sdp=await peer.offer())
    assert "VP8" in answer["sdp"]
    assert "H264" not in answer["sdp"]
    assert "useinbandfec=1" in answer["sdp"]
    await peer.accept(answer["sdp"])
    return peer


async def test_whole_consultation(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    client = await start(aiohttp_client, redis_url)
    app = client.server.app
    nurse, doctor, room_id = await register_and_call(client)

    spoke_peer = await join_with_media(nurse, room_id)
    hub_peer = await join_with_media(doctor, room_id)
    # Each side decodes what the other sent, relayed without transcoding.
    await asyncio.gather(
        spoke_peer.wait_for(video=30, audio=50), hub_peer.wait_for(video=30, audio=50)
    )
    # A keyframe request from the doctor's side reaches the nurse's video sender.
    before = spoke_peer.keyframe_requests
    await asyncio.sleep(0.6)  # past the relay's keyframe rate limit
    await hub_peer.request_keyframe()
    for _ in range(50):
        if spoke_peer.keyframe_requests > before:
            break
        await asyncio.sleep(0.05)
    assert spoke_peer.keyframe_requests > before
    live = app[ROOMS].get(room_id)  # type: ignore[arg-type]
    assert live is not None
    assert live.state == "active"
    in_consult = await nurse.expect(
        "queue", where=lambda m: m["today"][0]["state"] == "in_consultation"
    )
    assert in_consult["today"][0]["room_id"] == room_id

    ended_d = await doctor.request("hangup", "room_ended")  # the reply to the hang-up
    ended_n = await nurse.expect("room_ended")  # pushed to the other side
    assert ended_n["reason"] == ended_d["reason"] == "hangup"
    done = await nurse.expect("queue", where=lambda m: m["today"][0]["state"] == "completed")
    assert done["today"][0]["number"] == 1
    # Everything of the room is gone from the server.
    for _ in range(50):
        if len(app[ROOMS]) == 0:
            break
        await asyncio.sleep(0.05)
    assert len(app[ROOMS]) == 0
    assert live.history == ["created", "active", "ended"]
    # The room is over for good: joining again is refused, and creates nothing.
    again = await nurse.send("join", room_id=room_id)
    refused = await nurse.expect("error", where=lambda m: m["re"] == again)
    assert refused["code"] == "room_ended"
    assert len(app[ROOMS]) == 0
    assert all(
        t.readyState == "ended" for seat in live.media.outbound.values() for t in seat.values()
    )
    assert live.media.peer(Participant.SPOKE) is None
    assert live.media.peer(Participant.HUB) is None

    for p in (spoke_peer, hub_peer):
        await p.close()
    await nurse.close()
    await doctor.close()
    await client.close()
    # aiortc runs a thread per receiver; every one of them has stopped.
    for _ in range(50):
        decoders = [t.name for t in threading.enumerate() if t.name.endswith("-decoder")]
        if not decoders:
            break
        await asyncio.sleep(0.05)
    assert decoders == []


async def test_dead_link_ends_room_for_both(aiohttp_client: AiohttpClient, redis_url: str) -> None:
    """A socket that stops answering pings is dropped; after the grace the room ends."""
    client = await start(aiohttp_client, redis_url, heartbeat_s=0.4, room_grace_s=0.3)
    nurse, doctor, room_id = await register_and_call(client)
    await doctor.request("join", "joined", room_id=room_id)
    # The nurse joins from a socket that will go silent: it never answers a ping.
    silent = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    await silent.post(
        client.make_url("/login"), data={"username": NURSE, "password": DEMO_PASSWORD}
    )
    origin = str(client.make_url("/")).rstrip("/")
    ws = await silent.ws_connect(
        client.make_url("/ws"), headers={"Origin": origin}, autoping=False, heartbeat=None
    )
    await ws.send_str(json.dumps({"v": 1, "type": "join", "room_id": room_id}))
    ended = await doctor.expect("room_ended", timeout=10)
    assert ended["reason"] == "peer_lost"
    await ws.close()
    await silent.close()
    await nurse.close()
    await doctor.close()


async def test_closed_tab_ends_room_after_grace(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    client = await start(aiohttp_client, redis_url, room_grace_s=0.5)
    nurse, doctor, room_id = await register_and_call(client)
    spoke_peer = await join_with_media(nurse, room_id)
    hub_peer = await join_with_media(doctor, room_id)
    await hub_peer.wait_for(video=5, audio=5)
    # The nurse's tab closes: her socket and her peer connection go away without a hang-up.
    await spoke_peer.close()
    await nurse.close()
    gone = await doctor.expect(
        "peer_state",
        where=lambda m: m["seat"] == "spoke" and m["state"] in ("absent", "closed", "failed"),
    )
    assert gone["state"] in ("absent", "closed", "failed")
    ended = await doctor.expect("room_ended", timeout=10)
    assert ended["reason"] == "peer_lost"
    await hub_peer.close()
    await doctor.close()


async def test_doctor_hangup_before_nurse_joins_requeues_token(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    client = await start(aiohttp_client, redis_url)
    nurse, doctor, room_id = await register_and_call(client)
    await doctor.request("join", "joined", room_id=room_id)
    await doctor.send("hangup")
    await doctor.expect("room_ended")
    back = await doctor.expect("queue", where=lambda m: len(m["waiting"]) == 1)
    assert back["waiting"][0]["number"] == 1
    assert back["waiting"][0]["state"] == "waiting"
    await nurse.close()
    await doctor.close()


@pytest.mark.parametrize("store", ["embedded"])
async def test_consultation_on_embedded_store(aiohttp_client: AiohttpClient, store: str) -> None:
    client = await start(aiohttp_client, None)
    nurse, doctor, room_id = await register_and_call(client)
    spoke_peer = await join_with_media(nurse, room_id)
    hub_peer = await join_with_media(doctor, room_id)
    await asyncio.gather(spoke_peer.wait_for(10, 10), hub_peer.wait_for(10, 10))
    await nurse.send("hangup")
    await doctor.expect("room_ended")
    for p in (spoke_peer, hub_peer):
        await p.close()
    await nurse.close()
    await doctor.close()


class MovableClock:
    """Real time shifted by an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = datetime.timedelta()

    def __call__(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + self.offset


async def test_a_spoke_that_does_not_join_is_a_no_show(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    clock = MovableClock()
    client = await aiohttp_client(create_app(make_settings(redis_url), clock=clock))
    nurse, doctor, room_id = await register_and_call(client)
    # Just before the demo hub's 5 minutes to join run out.
    clock.offset = datetime.timedelta(minutes=5) - datetime.timedelta(seconds=1.5)
    await doctor.request("join", "joined", room_id=room_id)
    ended = await doctor.expect("room_ended", timeout=10)
    assert ended["reason"] == "no_show"
    # Nobody else waits, so the token goes back to the queue (a few places back, at its end).
    back = await doctor.expect("queue", where=lambda m: len(m["waiting"]) == 1)
    assert back["waiting"][0]["state"] == "waiting"
    await nurse.close()
    await doctor.close()


async def test_doctors_skip_and_recall_over_the_protocol(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    client = await start(aiohttp_client, redis_url)
    nurse, doctor = ProtocolClient(client, NURSE), ProtocolClient(client, DOCTOR)
    await nurse.connect()
    await doctor.connect()
    ids = [
        (await nurse.request("register_patient", "token_issued", patient=PATIENT))["token"]["id"]
        for _ in range(3)
    ]
    queue = await doctor.request("skip_token", "queue", token_id=ids[0])
    assert [t["id"] for t in queue["waiting"]] == [ids[1], ids[2], ids[0]]
    rid = await nurse.send("skip_token", token_id=ids[0])
    refused = await nurse.expect("error", where=lambda m: m["re"] == rid)
    assert refused["code"] == "forbidden"
    rid = await doctor.send("recall_token", token_id=ids[1])
    refused = await doctor.expect("error", where=lambda m: m["re"] == rid)
    assert refused["code"] == "token_not_waiting"  # only a no-show can be recalled
    rid = await doctor.send("skip_token", token_id="other-hub.20261127.1")
    refused = await doctor.expect("error", where=lambda m: m["re"] == rid)
    assert refused["code"] == "forbidden"
    await nurse.close()
    await doctor.close()
