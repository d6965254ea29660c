"""Three nodes on one Redis, as separate server processes: a consultation whose nurse and doctor
reach different nodes, the room's node killed in the middle of it, and a node draining.

The test's clients behave as the consult page does: when their websocket closes with ``4010``
(the room's node is gone) they reconnect, join again and, since the server's end of their peer
connection is new, make a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from core.nodes import INDEX, node_key
from rooms.waiting_room import room_key
from tests.helpers import DOCTOR, NURSE, OTHER_DOCTOR, PATIENT, ClientPeer, ProtocolClient
from tests.rooms.test_durability import (
    HUB,
    SetuProcess,
    changes,
    reopen,
    waiting_room_state,
)
from tests.rooms.test_recording_crash import verify_cli

logger = logging.getLogger(__name__)

#: Nodes are named so that logs read easily; placement does not depend on the names.
NODE_IDS = ("node-a", "node-b", "node-c")
#: The issue's bound: the consultation is back within this long of the node's death.
RESUME_WITHIN_S = 10.0
MEDIA_TIMEOUT_S = 30.0


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def poll(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.1)


async def start_nodes(
    redis_url: str, tmp_path: Path, ids: tuple[str, ...], *extra: str
) -> dict[str, SetuProcess]:
    data = tmp_path / "data"
    nodes = {}
    for node_id in ids:
        workdir = tmp_path / node_id
        workdir.mkdir()
        nodes[node_id] = SetuProcess(
            redis_url, workdir, node_id=node_id, extra_args=["--data-dir", str(data), *extra]
        )
    for node in nodes.values():
        node.start()
    await asyncio.gather(*(node.wait_ready(60) for node in nodes.values()))
    return nodes


async def all_registered(store: aioredis.Redis, ids: tuple[str, ...]) -> None:
    async def registered() -> bool:
        listed = set(await store.zrange(INDEX, 0, -1))
        alive = [bool(await store.exists(node_key(i))) for i in ids]
        return listed >= set(ids) and all(alive)

    await poll(registered, "every node is registered", 15)


async def negotiate(who: ProtocolClient, room_id: str) -> tuple[dict[str, Any], ClientPeer]:
    rid = await who.send("join", room_id=room_id)
    joined = await who.expect("joined", timeout=MEDIA_TIMEOUT_S, where=lambda m: m["re"] == rid)
    peer = ClientPeer()
    answer = await who.request("offer", "answer", sdp=await peer.offer())
    await peer.accept(answer["sdp"])
    return joined, peer


async def fresh_media(peers: list[ClientPeer], timeout: float) -> None:
    await asyncio.gather(*(p.wait_for(video=10, audio=20, timeout=timeout) for p in peers))


async def test_the_consultation_resumes_on_another_node_when_its_node_is_killed(
    redis_url: str, store: aioredis.Redis, tmp_path: Path
) -> None:
    nodes = await start_nodes(redis_url, tmp_path, NODE_IDS)
    clients: list[ProtocolClient] = []
    peers: list[ClientPeer] = []
    try:
        await all_registered(store, NODE_IDS)
        # Two patients: the first is called, the second keeps waiting through it all.
        registrar = ProtocolClient(nodes["node-a"], NURSE)  # type: ignore[arg-type]
        clients.append(registrar)
        await registrar.connect()
        first = await registrar.request("register_patient", "token_issued", patient=PATIENT)
        second = await registrar.request(
            "register_patient", "token_issued", patient={**PATIENT, "name": "Second Patient"}
        )
        caller = ProtocolClient(nodes["node-b"], DOCTOR)  # type: ignore[arg-type]
        clients.append(caller)
        await caller.connect()
        opened = await caller.request("call_next", "room_opened")
        room_id = opened["room_id"]
        assert opened["token"]["id"] == first["token"]["id"]
        holder = await store.hget(room_key(HUB, room_id), "node")
        assert holder in NODE_IDS
        # The nurse's and the doctor's consult pages reach the two other nodes.
        nurse_node, doctor_node = (n for n in NODE_IDS if n != holder)
        nurse = ProtocolClient(nodes[nurse_node], NURSE)  # type: ignore[arg-type]
        doctor = ProtocolClient(nodes[doctor_node], DOCTOR)  # type: ignore[arg-type]
        clients += [nurse, doctor]
        await nurse.connect()
        await doctor.connect()
        joined, spoke = await negotiate(nurse, room_id)
        assert joined["seat"] == "spoke"
        _, hub = await negotiate(doctor, room_id)
        peers += [spoke, hub]
        await fresh_media([spoke, hub], MEDIA_TIMEOUT_S)
        await nurse.request("record_consent", "consent", given_by="patient", method="verbal")
        confirmed = await doctor.request("confirm_consent", "consent")
        assert confirmed["state"] == "confirmed"
        folder = next((tmp_path / "data" / "consultations").glob(f"*/{room_id}"))

        async def recording() -> bool:
            return all(
                (folder / n).is_file() and (folder / n).stat().st_size > 2_000
                for n in ("hub-1.webm", "spoke-1.webm")
            )

        await poll(recording, "the first segment is recorded", MEDIA_TIMEOUT_S)
        before = await waiting_room_state(store)  # type: ignore[arg-type]

        # ------------------------------------------------------------ the room's node dies
        nodes[holder].stop(kill=True)
        killed_at = time.monotonic()
        for who, node in ((nurse, nurse_node), (doctor, doctor_node)):
            closed = await who.expect("_closed", timeout=RESUME_WITHIN_S)
            assert closed["code"] == 4010, closed
            await reopen(who, nodes[node])  # type: ignore[arg-type]
        resumed = await asyncio.gather(negotiate(nurse, room_id), negotiate(doctor, room_id))
        assert all(joined["media"] is False for joined, _ in resumed)
        new_peers = [peer for _, peer in resumed]
        peers += new_peers
        await fresh_media(new_peers, RESUME_WITHIN_S)
        took = time.monotonic() - killed_at
        logger.info("media resumed on another node %.1fs after the kill", took)
        assert took <= RESUME_WITHIN_S, f"media resumed {took:.1f}s after the kill"

        # The room lives on one of the other nodes now; the waiting room is as it was: the
        # token in consultation, the second patient waiting in the same place, no token added.
        now_on = await store.hget(room_key(HUB, room_id), "node")
        assert now_on in (nurse_node, doctor_node)
        assert changes(before, await waiting_room_state(store)) == {}  # type: ignore[arg-type]
        queue = await nurse.request("watch_queue", "queue")
        assert [t["id"] for t in queue["waiting"]] == [second["token"]["id"]]
        assert queue["waiting"][0]["position"] == 1

        # The recording goes on as a second segment; the first was sealed as interrupted.
        async def second_segment() -> bool:
            return all(
                (folder / n).is_file() and (folder / n).stat().st_size > 2_000
                for n in ("hub-2.webm", "spoke-2.webm")
            )

        await poll(second_segment, "the second segment is recorded", MEDIA_TIMEOUT_S)
        await doctor.request("hangup", "room_ended")
        assert (await nurse.expect("room_ended"))["reason"] == "hangup"

        async def sealed() -> bool:
            return (folder / "manifest.json").is_file()

        await poll(sealed, "the consultation is sealed", MEDIA_TIMEOUT_S)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["previous"]["end_reason"] == "interrupted"
        assert manifest["consent"]["confirmed_by"] == DOCTOR
        segments = {(f["segment"], f["interrupted"]) for f in manifest["files"]}
        assert segments == {(1, True), (2, False)}, manifest["files"]
        checked = await asyncio.to_thread(verify_cli, tmp_path / "data")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for node in nodes.values():
            node.stop()


async def test_a_draining_node_finishes_its_room_and_is_given_no_new_one(
    redis_url: str, store: aioredis.Redis, tmp_path: Path
) -> None:
    ids = ("node-a", "node-b")
    nodes = await start_nodes(redis_url, tmp_path, ids, "--drain-timeout", "60")
    clients: list[ProtocolClient] = []
    peers: list[ClientPeer] = []
    try:
        await all_registered(store, ids)
        nurse = ProtocolClient(nodes["node-a"], NURSE)  # type: ignore[arg-type]
        doctor = ProtocolClient(nodes["node-b"], DOCTOR)  # type: ignore[arg-type]
        clients += [nurse, doctor]
        await nurse.connect()
        await doctor.connect()
        for name in ("One", "Two"):
            await nurse.request(
                "register_patient", "token_issued", patient={**PATIENT, "name": name}
            )
        room_id = (await doctor.request("call_next", "room_opened"))["room_id"]
        holder = await store.hget(room_key(HUB, room_id), "node")
        other = next(n for n in ids if n != holder)
        _, spoke = await negotiate(nurse, room_id)
        _, hub = await negotiate(doctor, room_id)
        peers += [spoke, hub]
        await fresh_media([spoke, hub], MEDIA_TIMEOUT_S)

        draining = nodes[holder]
        assert draining.proc is not None
        draining.proc.send_signal(signal.SIGTERM)

        async def marked() -> bool:
            return await store.hget(node_key(holder), "draining") == "1"

        await poll(marked, "the node's record says it is draining", 10)
        # The next room goes to the other node, and the live room goes on.
        caller = ProtocolClient(nodes[other], OTHER_DOCTOR)  # type: ignore[arg-type]
        clients.append(caller)
        await caller.connect()
        next_room = (await caller.request("call_next", "room_opened"))["room_id"]
        assert await store.hget(room_key(HUB, next_room), "node") == other
        v0, a0 = spoke.video_frames, spoke.audio_frames
        await asyncio.sleep(2)
        assert spoke.video_frames > v0
        assert spoke.audio_frames > a0
        assert draining.proc.poll() is None, "the node left with a live room"

        await doctor.request("hangup", "room_ended")

        async def exited() -> bool:
            return draining.proc is not None and draining.proc.poll() is not None

        await poll(exited, "the drained node exits", 30)
        assert draining.proc.returncode == 0, draining.log()
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for node in nodes.values():
            node.stop()
