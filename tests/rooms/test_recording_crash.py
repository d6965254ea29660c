"""Crash: kill the server process mid-recording; the partial file plays and is marked interrupted.

``docs/recording.md``: files are flushed packet by packet, so what was written up to the crash
stays playable; on its next start the server finds the recording without a manifest, writes one
marked ``"interrupted": true``, signs it and logs it.  This test does it for real: ``python
server.py`` on a real redis-server, a nurse and a doctor over HTTP and the websocket protocol
with aiortc peers sending audio and video, consent recorded and confirmed, a few seconds of
recording, ``kill -9``, then a restart on the same data directory and the same Redis.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import av
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from core.domain import TokenState
from core.store import open_store
from rooms.waiting_room import prefix
from tests.helpers import DOCTOR, NURSE, PATIENT, ClientPeer, ProtocolClient
from tests.rooms.test_durability import HUB, ROOT, SetuProcess, reopen

#: Each seat's file of the first recording segment.
MEDIA = ("hub-1.webm", "spoke-1.webm")
#: How long the consultation records before the server is killed.
RECORD_S = 4.0
#: Generous: a busy two-core machine runs the server, its media and both client peers.
MEDIA_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class Playback:
    """What a player gets out of a WebM file, decoding every frame."""

    kinds: frozenset[str]
    video_frames: int
    audio_frames: int
    audio_samples: int
    #: Seconds from the file's time 0 (when recording started) to its first picture.
    first_video_s: float | None
    #: Seconds from the file's time 0 to its last decoded frame.
    duration_s: float


def play(path: Path) -> Playback:
    """Decode every frame of ``path`` with PyAV (blocking); raises if the file does not play."""
    video = audio = samples = 0
    first_video: float | None = None
    end = 0.0
    with av.open(str(path)) as container:
        kinds = frozenset(str(s.type) for s in container.streams)
        for frame in container.decode(*container.streams):
            at = frame.time
            if isinstance(frame, av.VideoFrame):
                video += 1
                if first_video is None:
                    first_video = at
            elif isinstance(frame, av.AudioFrame):
                audio += 1
                samples += frame.samples
            if at is not None:
                end = max(end, at)
    return Playback(kinds, video, audio, samples, first_video, end)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def consultation_dir(data_dir: Path, room_id: str) -> Path:
    found = list((data_dir / "consultations").glob(f"*/{room_id}"))
    assert len(found) == 1, f"consultation directories of {room_id}: {found}"
    return found[0]


def log_entries(data_dir: Path) -> list[dict[str, Any]]:
    lines = (data_dir / "audit" / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


async def token_record(redis_url: str, token_id: str) -> dict[str, str]:
    """A token's hash as stored, read by a client of our own."""
    store = open_store(redis_url)
    try:
        record = await store.hgetall(prefix(HUB) + "token:" + token_id)
    finally:
        await store.aclose()
    return {str(k): str(v) for k, v in record.items()}


async def join_with_media(who: ProtocolClient, room_id: str) -> ClientPeer:
    """Join ``room_id`` and negotiate a peer that sends audio and video."""
    await who.request("join", "joined", room_id=room_id)
    peer = ClientPeer()
    answer = await who.request("offer", "answer", sdp=await peer.offer())
    await peer.accept(answer["sdp"])
    return peer


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    """Await ``check()`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.1)


def verify_cli(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "server.py", "verify", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_kill_mid_recording_leaves_playable_files_sealed_as_interrupted(
    redis_url: str, tmp_path: Path
) -> None:
    """kill -9 while a consented consultation records: both seats' files play up to the crash;
    the next start seals them with a signed manifest marked interrupted, logged and verifiable,
    and the patient's token is neither lost nor put back in the queue."""
    server = SetuProcess(redis_url, tmp_path, node_id="node-crash")
    data_dir = tmp_path / "data"
    nurse = ProtocolClient(server, NURSE)  # type: ignore[arg-type]
    doctor = ProtocolClient(server, DOCTOR)  # type: ignore[arg-type]
    people = [nurse, doctor]
    peers: list[ClientPeer] = []
    try:
        server.start()
        await server.wait_ready(READY_TIMEOUT_S)
        for who in people:
            await who.connect()
        issued = await nurse.request("register_patient", "token_issued", patient=PATIENT)
        token_id = issued["token"]["id"]
        opened = await doctor.request("call_next", "room_opened")
        room_id = opened["room_id"]
        assert opened["token"]["id"] == token_id

        peers.append(await join_with_media(nurse, room_id))
        peers.append(await join_with_media(doctor, room_id))
        await asyncio.gather(
            *(p.wait_for(video=15, audio=25, timeout=MEDIA_TIMEOUT_S) for p in peers)
        )

        async def in_consultation() -> bool:
            stored = await token_record(redis_url, token_id)
            return stored.get("state") == TokenState.IN_CONSULTATION

        await poll(in_consultation, "the token goes in consultation", MEDIA_TIMEOUT_S)

        recorded = await nurse.request(
            "record_consent", "consent", given_by="patient", method="verbal"
        )
        assert (recorded["state"], recorded["recording"]) == ("recorded", "off")
        confirmed = await doctor.request("confirm_consent", "consent")
        assert (confirmed["state"], confirmed["recording"]) == ("confirmed", "recording")
        await nurse.expect("consent", where=lambda m: m["recording"] == "recording")
        folder = consultation_dir(data_dir, room_id)
        await asyncio.sleep(RECORD_S)

        async def both_files_written() -> bool:
            return all(
                (folder / n).is_file() and (folder / n).stat().st_size > 2_000 for n in MEDIA
            )

        await poll(both_files_written, "both seats' files are written", MEDIA_TIMEOUT_S)

        # ----------------------------------------------------------------- the crash
        server.stop(kill=True)
        for who in people:
            await who.expect("_closed", timeout=30)
        for peer in peers:
            await peer.close()
        peers.clear()

        # Before any restart: the marker, no manifest, and both files play up to the crash.
        assert (folder / "recording.json").is_file()
        assert not (folder / "manifest.json").exists()
        assert not (folder / "manifest.sig").exists()
        assert sorted(p.name for p in folder.glob("*.webm")) == list(MEDIA)
        marker = json.loads((folder / "recording.json").read_text())
        assert marker["consultation"] == room_id
        assert marker["recording"]["state"] == "recording"
        at_crash: dict[str, str] = {}
        for name in MEDIA:
            played = await asyncio.to_thread(play, folder / name)
            assert played.kinds == {"audio", "video"}, (name, played)
            assert played.duration_s > 2.0, (name, played)
            assert played.video_frames > 20, (name, played)
            # The picture starts on the keyframe asked for when recording started, before the
            # recorder would give up waiting and write audio alone (3 s).
            assert played.first_video_s is not None, (name, played)
            assert played.first_video_s < 3.0, (name, played)
            assert played.audio_frames > 50, (name, played)
            assert played.audio_samples > 48_000, (name, played)
            at_crash[name] = await asyncio.to_thread(digest, folder / name)

        # ----------------------------------------------------------------- the restart
        server.start()
        await server.wait_ready(READY_TIMEOUT_S)

        # Sealing runs before the server listens: the manifest is there once it is ready.
        assert (folder / "manifest.json").is_file()
        assert (folder / "manifest.sig").is_file()
        assert (folder / "recording.json").is_file()
        manifest_bytes = (folder / "manifest.json").read_bytes()
        manifest = json.loads(manifest_bytes)
        public = load_pem_public_key((data_dir / "keys" / "signing.pub").read_bytes())
        assert isinstance(public, Ed25519PublicKey)
        public.verify(base64.b64decode((folder / "manifest.sig").read_bytes()), manifest_bytes)

        assert manifest["consultation"] == room_id
        assert manifest["token"] == token_id
        assert manifest["interrupted"] is True
        assert manifest["end_reason"] == "interrupted"
        assert manifest["recording"]["state"] == "interrupted"
        assert manifest["recording"]["t0"] is not None
        assert manifest["node"] == "node-crash"
        assert manifest["duration_s"] > 2.0
        consent = manifest["consent"]
        assert consent["given_by"] == "patient"
        assert consent["method"] == "verbal"
        assert consent["recorded_by"] == NURSE
        assert consent["confirmed_by"] == DOCTOR
        assert consent["withdrawn_by"] is None
        kinds = [e["kind"] for e in manifest["events"]]
        order = ["called", "consent_recorded", "consent_confirmed", "recording_started", "ended"]
        assert [k for k in kinds if k in order] == order, kinds
        assert kinds.count("media_connected") == 2, kinds
        assert manifest["events"][-1]["detail"] == {"reason": "interrupted"}
        files = {f["name"]: f for f in manifest["files"]}
        assert sorted(files) == list(MEDIA)
        for name, entry in files.items():
            assert entry["seat"] == name.split("-")[0]
            assert entry["segment"] == 1
            assert entry["interrupted"] is True
            assert entry["sha256"] == at_crash[name], f"{name} changed after the crash"
            assert entry["sha256"] == await asyncio.to_thread(digest, folder / name)
            assert entry["bytes"] == (folder / name).stat().st_size

        mine = [e for e in log_entries(data_dir) if e.get("subject") == room_id]
        assert [e["kind"] for e in mine] == [
            "consent_recorded",
            "consent_confirmed",
            "recording_started",
            "recording_interrupted",
            "consultation_ended",
        ]
        manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
        interrupted, ended = mine[-2:]
        assert interrupted["detail"]["manifest_sha256"] == manifest_sha
        assert ended["detail"]["manifest_sha256"] == manifest_sha
        assert ended["detail"]["recording"] == "interrupted"
        assert {f["name"]: f["sha256"] for f in ended["detail"]["files"]} == at_crash

        checked = await asyncio.to_thread(verify_cli, data_dir)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("ok"), checked.stdout
        for name in MEDIA:
            played = await asyncio.to_thread(play, folder / name)
            assert played.duration_s > 2.0, (name, played)
            assert played.video_frames > 20, (name, played)
            assert played.audio_frames > 50, (name, played)

        # ----------------------------------------------------------------- the token
        # Media flowed, so the consultation took place: its token keeps its number, room and
        # doctor and never goes back to the queue.  (Today nothing ends the room in the store
        # after a crash, so it stays in consultation; ending it would complete it.)
        after = {TokenState.IN_CONSULTATION, TokenState.COMPLETED}
        stored = await token_record(redis_url, token_id)
        assert stored["state"] in after, stored
        assert (stored["number"], stored["room"], stored["doctor"]) == ("1", room_id, DOCTOR)
        for who in people:
            await reopen(who, server)
        for who in people:
            queue = await who.request("watch_queue", "queue")
            today = {t["id"]: t for t in queue["today"]}
            assert token_id in today, f"{who.username}: the token was lost"
            shown = today[token_id]
            assert shown["state"] in after, shown
            assert (shown["number"], shown["room_id"], shown["doctor"]) == (1, room_id, DOCTOR)
            assert shown["position"] is None, shown
            assert queue["waiting"] == [], "the token went back to the queue"
            assert queue["waiting_total"] == 0

        # ----------------------------------------------------------------- the room resumes
        # Both come back: the consultation goes on where it was, its consent stands, and the
        # recording continues as a second segment beside the sealed first one.
        peers.append(await join_with_media(nurse, room_id))
        peers.append(await join_with_media(doctor, room_id))
        await asyncio.gather(
            *(p.wait_for(video=15, audio=25, timeout=MEDIA_TIMEOUT_S) for p in peers)
        )
        second = ("hub-2.webm", "spoke-2.webm")

        async def second_segment_written() -> bool:
            return all(
                (folder / n).is_file() and (folder / n).stat().st_size > 2_000 for n in second
            )

        await poll(second_segment_written, "the second segment is written", MEDIA_TIMEOUT_S)
        # While this life records, the first life's manifest is set aside.
        assert (folder / "manifest-1.json").read_bytes() == manifest_bytes
        assert not (folder / "manifest.json").exists()
        await asyncio.sleep(2)
        await doctor.request("hangup", "room_ended")

        async def sealed_again() -> bool:
            return (folder / "manifest.json").is_file()

        await poll(sealed_again, "the resumed consultation is sealed", MEDIA_TIMEOUT_S)
        final = json.loads((folder / "manifest.json").read_text())
        assert final["interrupted"] is False
        assert final["end_reason"] == "hangup"
        assert final["previous"]["sha256"] == manifest_sha
        assert final["previous"]["end_reason"] == "interrupted"
        assert final["consent"]["confirmed_by"] == DOCTOR
        names = sorted(f["name"] for f in final["files"])
        assert names == sorted([*MEDIA, *second])
        for entry in final["files"]:
            assert entry["t0"], entry
            assert entry["interrupted"] is (entry["segment"] == 1), entry
            if entry["segment"] == 1:
                assert entry["sha256"] == at_crash[entry["name"]]
        kinds = [e["kind"] for e in final["events"]]
        assert kinds.count("recording_started") == 2, kinds
        assert "resumed" in kinds
        assert kinds[-1] == "ended"
        for name in second:
            played = await asyncio.to_thread(play, folder / name)
            assert played.video_frames > 10, (name, played)
        ends = [
            e
            for e in log_entries(data_dir)
            if e.get("subject") == room_id and e["kind"] == "consultation_ended"
        ]
        assert len(ends) == 2
        checked = await asyncio.to_thread(verify_cli, data_dir)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        async def completed() -> bool:
            stored = await token_record(redis_url, token_id)
            return stored.get("state") == TokenState.COMPLETED

        await poll(completed, "the token completes", MEDIA_TIMEOUT_S)
    finally:
        for peer in peers:
            await peer.close()
        for who in people:
            await who.close()
        server.stop()
