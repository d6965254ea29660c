"""Consent to recording over the real protocol, and the record each consultation leaves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import av

from audit import read_manifest, verify
from core.appkeys import SETTINGS
from rooms import ROOMS
from tests.helpers import ClientPeer, ProtocolClient
from tests.signaling.test_consultation import (
    AiohttpClient,
    join_with_media,
    register_and_call,
    start,
)


def log_entries(data_dir: Path) -> list[dict[str, Any]]:
    lines = (data_dir / "audit" / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def consultation_dir(data_dir: Path, room_id: str) -> Path:
    found = list((data_dir / "consultations").glob(f"*/{room_id}"))
    assert len(found) == 1, found
    return found[0]


async def wait_ended(app: Any) -> None:
    for _ in range(200):
        if len(app[ROOMS]) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the room did not finish ending")


async def join_seeing_consent(
    who: ProtocolClient, room_id: str
) -> tuple[ClientPeer, dict[str, Any]]:
    """Join with media; also returns the ``consent`` pushed right after ``joined``."""
    await who.request("join", "joined", room_id=room_id)
    consent = await who.expect("consent")
    peer = ClientPeer()
    answer = await who.request("offer", "answer", sdp=await peer.offer())
    await peer.accept(answer["sdp"])
    return peer, consent


async def error_for(who: ProtocolClient, type_: str, **fields: Any) -> dict[str, Any]:
    sent = await who.send(type_, **fields)
    return await who.expect("error", where=lambda m: m["re"] == sent)


async def test_unrecorded_consultation_leaves_a_signed_record(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    client = await start(aiohttp_client, redis_url)
    app = client.server.app
    data_dir = app[SETTINGS].data_dir
    nurse, doctor, room_id = await register_and_call(client)
    spoke_peer, first = await join_seeing_consent(nurse, room_id)
    assert first["state"] == "none"
    assert first["recording"] == "off"
    hub_peer = await join_with_media(doctor, room_id)
    await asyncio.gather(spoke_peer.wait_for(video=10, audio=20), hub_peer.wait_for(10, 20))
    await doctor.request("hangup", "room_ended")
    await wait_ended(app)
    await asyncio.gather(spoke_peer.close(), hub_peer.close())

    folder = consultation_dir(data_dir, room_id)
    manifest = read_manifest(folder)
    assert manifest is not None
    assert manifest["consultation"] == room_id
    assert manifest["recording"]["state"] == "none"
    assert manifest["consent"] is None
    assert manifest["files"] == []
    assert manifest["doctor"]["registration"]
    assert manifest["patient"]["name"] == "Ramesh Yadav"
    kinds = [e["kind"] for e in manifest["events"]]
    assert kinds[0] == "called"
    for kind in ("joined", "media_connected", "hangup", "ended"):
        assert kind in kinds
    assert not list(folder.glob("*.webm"))
    await asyncio.gather(nurse.close(), doctor.close())
    await client.close()
    ended = [e for e in log_entries(data_dir) if e["kind"] == "consultation_ended"]
    assert [e["subject"] for e in ended] == [room_id]
    assert ended[0]["detail"]["recording"] == "none"
    report = await asyncio.to_thread(verify, data_dir)
    assert report.ok, report.problems
    await asyncio.gather(nurse.close(), doctor.close())
    await client.close()


async def test_consent_steps_are_checked(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    client = await start(aiohttp_client, redis_url)
    app = client.server.app
    nurse, doctor, room_id = await register_and_call(client)
    # Not in a room yet.
    assert (await error_for(nurse, "withdraw_consent"))["code"] == "forbidden"
    await nurse.request("join", "joined", room_id=room_id)
    await doctor.request("join", "joined", room_id=room_id)
    # The doctor cannot record it, the nurse cannot confirm it, nothing to confirm yet.
    wrong_seat = await error_for(doctor, "record_consent", given_by="patient", method="verbal")
    assert wrong_seat["code"] == "not_a_participant"
    assert (await error_for(nurse, "confirm_consent"))["code"] == "not_a_participant"
    assert (await error_for(doctor, "confirm_consent"))["code"] == "consent_state"
    assert (await error_for(nurse, "withdraw_consent"))["code"] == "consent_state"
    # A caregiver must be named, with a relation; a patient's own consent names nobody.
    no_relation = await error_for(
        nurse, "record_consent", given_by="caregiver", caregiver="Sita Devi", method="verbal"
    )
    assert no_relation["code"] == "consent_state"
    assert "relation" in no_relation["message"]
    stray = await error_for(
        nurse, "record_consent", given_by="patient", caregiver="Sita", method="verbal"
    )
    assert stray["code"] == "consent_state"
    bad = await error_for(nurse, "record_consent", given_by="neighbour", method="verbal")
    assert bad["code"] == "bad_message"
    # Nothing was recorded by the refusals.
    live = app[ROOMS].get(room_id)
    assert live is not None
    assert live.journal.consent.history == ["none"]

    recorded = await nurse.request(
        "record_consent",
        "consent",
        given_by="caregiver",
        caregiver="Sita Devi",
        relation="mother",
        method="written",
    )
    assert recorded["state"] == "recorded"
    assert recorded["recording"] == "off"
    assert recorded["recorded_by"] == "nurse.akhlaspur"
    pushed = await doctor.expect("consent", where=lambda m: m["state"] == "recorded")
    assert pushed["caregiver"] == "Sita Devi"
    assert pushed["relation"] == "mother"
    withdrawn = await doctor.request("withdraw_consent", "consent")
    assert withdrawn["state"] == "withdrawn"
    assert withdrawn["withdrawn_by"] == "dr.sharma"
    # Withdrawn is final for this consultation.
    again = await error_for(nurse, "record_consent", given_by="patient", method="verbal")
    assert again["code"] == "consent_state"
    assert "withdrawn" in again["message"]
    assert (await error_for(doctor, "confirm_consent"))["code"] == "consent_state"
    await doctor.request("hangup", "room_ended")
    await wait_ended(app)
    assert live.journal.consent.history == ["none", "recorded", "withdrawn"]
    await asyncio.gather(nurse.close(), doctor.close())
    await client.close()


async def test_recorded_consultation(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    client = await start(aiohttp_client, redis_url)
    app = client.server.app
    data_dir = app[SETTINGS].data_dir
    nurse, doctor, room_id = await register_and_call(client)
    spoke_peer = await join_with_media(nurse, room_id)
    hub_peer = await join_with_media(doctor, room_id)
    await asyncio.gather(spoke_peer.wait_for(video=10, audio=20), hub_peer.wait_for(10, 20))

    await nurse.request("record_consent", "consent", given_by="patient", method="verbal")
    confirmed = await doctor.request("confirm_consent", "consent")
    assert confirmed["state"] == "confirmed"
    assert confirmed["recording"] == "recording"
    await nurse.expect("consent", where=lambda m: m["recording"] == "recording")
    await asyncio.sleep(4)
    stopped = await nurse.request("withdraw_consent", "consent")
    assert stopped["recording"] == "stopped"
    await doctor.expect("consent", where=lambda m: m["state"] == "withdrawn")
    await asyncio.sleep(1)
    await nurse.request("hangup", "room_ended")
    await wait_ended(app)
    await asyncio.gather(spoke_peer.close(), hub_peer.close())

    folder = consultation_dir(data_dir, room_id)
    manifest = read_manifest(folder)
    assert manifest is not None
    assert manifest["recording"]["state"] == "recorded"
    assert manifest["consent"]["given_by"] == "patient"
    assert manifest["consent"]["confirmed_by"] == "dr.sharma"
    assert manifest["consent"]["withdrawn_by"] == "nurse.akhlaspur"
    names = sorted(f["name"] for f in manifest["files"])
    assert names == ["hub-1.webm", "spoke-1.webm"]
    kinds = [e["kind"] for e in manifest["events"]]
    order = [
        "consent_recorded",
        "consent_confirmed",
        "recording_started",
        "consent_withdrawn",
        "recording_stopped",
        "hangup",
        "ended",
    ]
    assert [k for k in kinds if k in order] == order
    for entry in manifest["files"]:
        path = folder / entry["name"]
        assert path.stat().st_size == entry["bytes"]
        with av.open(str(path)) as container:
            kinds_in_file = {s.type for s in container.streams}
            assert kinds_in_file == {"audio", "video"}
            frames = sum(1 for _ in container.decode(video=0))
        # About four seconds at 15 fps, recorded between confirmation and withdrawal.
        assert frames >= 30, (entry["name"], frames)
        assert 2.5 <= entry["last_s"] - entry["first_s"] <= 6.5
    logged = [e["kind"] for e in log_entries(data_dir) if e.get("subject") == room_id]
    assert logged == [
        "consent_recorded",
        "consent_confirmed",
        "recording_started",
        "consent_withdrawn",
        "recording_stopped",
        "consultation_ended",
    ]
    consent_entry = next(e for e in log_entries(data_dir) if e["kind"] == "consent_recorded")
    assert consent_entry["actor"] == "nurse.akhlaspur"
    assert consent_entry["source"] == "127.0.0.1"
    report = await asyncio.to_thread(verify, data_dir)
    assert report.ok, report.problems
    await asyncio.gather(nurse.close(), doctor.close())
    await client.close()


async def test_recording_off(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    client = await start(aiohttp_client, redis_url, recording=False)
    app = client.server.app
    data_dir = app[SETTINGS].data_dir
    nurse, doctor, room_id = await register_and_call(client)
    spoke_peer, first = await join_seeing_consent(nurse, room_id)
    assert first["recording"] == "disabled"
    await doctor.request("join", "joined", room_id=room_id)
    await nurse.request("record_consent", "consent", given_by="patient", method="verbal")
    confirmed = await doctor.request("confirm_consent", "consent")
    assert confirmed["state"] == "confirmed"
    assert confirmed["recording"] == "disabled"
    # Let the nurse's media come up before ending, so that its peer closes from a settled state.
    await nurse.expect(
        "peer_state", where=lambda m: m["seat"] == "spoke" and m["state"] == "connected"
    )
    await doctor.request("hangup", "room_ended")
    await wait_ended(app)
    await spoke_peer.close()
    folder = consultation_dir(data_dir, room_id)
    manifest = read_manifest(folder)
    assert manifest is not None
    assert manifest["recording"]["state"] == "none"
    assert manifest["consent"]["state"] == "confirmed"
    assert not list(folder.glob("*.webm"))
    await asyncio.gather(nurse.close(), doctor.close())
    await client.close()
