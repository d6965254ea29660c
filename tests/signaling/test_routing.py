"""Several nodes on one Redis: rooms are placed on the least-loaded node, and a websocket on any
node reaches its room through the node that holds it."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from core.domain import HubId, RoomId, UserId
from core.nodes import NODES
from rooms import ROOMS, WAITING_ROOM
from server import create_app
from signaling import BUS
from tests.helpers import DOCTOR, NURSE, OTHER_DOCTOR, PATIENT, ProtocolClient, make_settings
from tests.signaling.test_consultation import join_with_media

AiohttpClient = Any
HUB = HubId("bhabua-sadar")


async def nodes(
    aiohttp_client: AiohttpClient, redis_url: str, *ids: str
) -> list[TestClient[Any, Any]]:
    """One application per id on the same Redis and data directory, each registered."""
    data_dir = Path(tempfile.mkdtemp(prefix="setu-nodes-"))
    clients = [
        await aiohttp_client(
            create_app(make_settings(redis_url, node_id=node_id, data_dir=data_dir))
        )
        for node_id in ids
    ]
    for client in clients:
        await client.server.app[NODES].beat()
    return clients


async def drain(*clients: TestClient[Any, Any]) -> None:
    """These nodes take no new room from now on (their websockets still work)."""
    for client in clients:
        client.server.app[ROOMS].drain()
        await client.server.app[NODES].beat()


def app_of(clients: list[TestClient[Any, Any]], node_id: str) -> Any:
    return next(c.server.app for c in clients if c.server.app[NODES].id == node_id)


async def queue_and_call(
    nurse: ProtocolClient, doctor: ProtocolClient
) -> tuple[dict[str, Any], str]:
    await nurse.connect()
    await doctor.connect()
    await doctor.request("watch_queue", "queue")
    await nurse.request("watch_queue", "queue")
    await nurse.request("register_patient", "token_issued", patient=PATIENT)
    await doctor.expect("queue", where=lambda m: len(m["waiting"]) == 1)
    opened = await doctor.request("call_next", "room_opened")
    return opened, opened["room_id"]


async def test_nurse_and_doctor_on_different_nodes_hold_a_consultation(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    a, b, c = await nodes(aiohttp_client, redis_url, "node-a", "node-b", "node-c")
    # node-a and node-c take no new rooms: the room goes to node-b, which holds neither
    # websocket.
    await drain(a, c)
    nurse, doctor = ProtocolClient(a, NURSE), ProtocolClient(c, DOCTOR)
    try:
        _opened, room_id = await queue_and_call(nurse, doctor)
        room = await a.server.app[WAITING_ROOM].room(HUB, RoomId(room_id))
        assert room is not None
        assert room["node"] == "node-b"

        spoke = await join_with_media(nurse, room_id)
        hub = await join_with_media(doctor, room_id)
        await asyncio.gather(spoke.wait_for(video=20, audio=30), hub.wait_for(video=20, audio=30))
        # The media and the room live on node-b only; the others only relay signalling.
        assert b.server.app[ROOMS].get(RoomId(room_id)) is not None
        assert a.server.app[ROOMS].get(RoomId(room_id)) is None
        assert c.server.app[ROOMS].get(RoomId(room_id)) is None
        assert len(a.server.app[BUS]) == 1
        assert len(c.server.app[BUS]) == 1
        assert len(b.server.app[BUS]) == 2

        # Consent and the hang-up go through the links like any other room message.
        consent = await nurse.request(
            "record_consent", "consent", given_by="patient", method="verbal"
        )
        assert consent["state"] == "recorded"
        pushed = await doctor.expect("consent", where=lambda m: m["state"] == "recorded")
        assert pushed["room_id"] == room_id
        ended = await doctor.request("hangup", "room_ended")
        assert ended["reason"] == "hangup"
        assert (await nurse.expect("room_ended"))["reason"] == "hangup"
        done = await nurse.expect("queue", where=lambda m: m["today"][0]["state"] == "completed")
        assert done["today"][0]["number"] == 1
        for _ in range(100):
            if len(a.server.app[BUS]) == len(b.server.app[BUS]) == len(c.server.app[BUS]) == 0:
                break
            await asyncio.sleep(0.05)
        assert len(a.server.app[BUS]) == len(b.server.app[BUS]) == len(c.server.app[BUS]) == 0
        await asyncio.gather(spoke.close(), hub.close())
    finally:
        await asyncio.gather(nurse.close(), doctor.close())


async def test_a_room_whose_node_is_gone_is_placed_again(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    a, b = await nodes(aiohttp_client, redis_url, "node-a", "node-b")
    waiting_room = a.server.app[WAITING_ROOM]
    nurse, doctor = ProtocolClient(a, NURSE), ProtocolClient(b, DOCTOR)
    try:
        await nurse.connect()
        await doctor.connect()
        await nurse.request("register_patient", "token_issued", patient=PATIENT)
        # A room placed on a node that has no record any more (it died).
        token = await waiting_room.call_next(HUB, UserId(DOCTOR), "node-gone")
        assert token.room is not None
        room_id = token.room

        joined = await doctor.request("join", "joined", room_id=room_id)
        assert joined["media"] is False
        room = await waiting_room.room(HUB, RoomId(room_id))
        assert room is not None
        assert room["node"] in ("node-a", "node-b")
        holder = app_of([a, b], room["node"])
        assert holder[ROOMS].get(RoomId(room_id)) is not None
        # The nurse's join finds the same node, and the placement does not move again.
        await nurse.request("join", "joined", room_id=room_id)
        again = await waiting_room.room(HUB, RoomId(room_id))
        assert again is not None
        assert again["node"] == room["node"]
        await doctor.request("hangup", "room_ended")
    finally:
        await asyncio.gather(nurse.close(), doctor.close())


async def test_a_join_refused_by_the_rooms_node_is_reported(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    """A doctor who is not the room's participant is refused by the room's node, through the
    link, and the link ends."""
    a, _b = await nodes(aiohttp_client, redis_url, "node-a", "node-b")
    await drain(a)
    nurse, doctor = ProtocolClient(a, NURSE), ProtocolClient(a, DOCTOR)
    other = ProtocolClient(a, OTHER_DOCTOR)
    try:
        _, room_id = await queue_and_call(nurse, doctor)
        await other.connect()
        rid = await other.send("join", room_id=room_id)
        refused = await other.expect("error", where=lambda m: m["re"] == rid)
        assert refused["code"] == "not_a_participant"
        for _ in range(100):
            if len(a.server.app[BUS]) == 0:
                break
            await asyncio.sleep(0.05)
        assert len(a.server.app[BUS]) == 0
        # The link is gone, and the connection is free to join again.
        rid = await other.send("hangup")
        assert (await other.expect("error", where=lambda m: m["re"] == rid))["code"] == "forbidden"
    finally:
        await asyncio.gather(nurse.close(), doctor.close(), other.close())
