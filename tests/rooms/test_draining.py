"""Deploys lose no consultation: on SIGTERM a node drains.

It makes no new room live (a join gets ``node_draining``, and the client tries again through
the load balancer), ``/healthz`` answers 503, its live rooms go on with media and signalling,
and once the last of them has ended (or ``--drain-timeout`` has passed, and they end with
reason ``shutdown``) the process shuts down cleanly and exits 0.

The process tests run ``python server.py`` on loopback with a real redis-server, and aiortc
peers in place of the browsers.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from core.store import open_store
from rooms import ROOMS
from rooms.waiting_room import prefix
from server import create_app
from tests.helpers import (
    DOCTOR,
    NURSE,
    OTHER_DOCTOR,
    PATIENT,
    ClientPeer,
    ProtocolClient,
    make_settings,
)
from tests.rooms.test_durability import (
    HUB,
    SetuProcess,
    error_for,
    eventually,
    join_with_media,
)

AiohttpClient = Any


class DrainingNode(SetuProcess):
    """A :class:`SetuProcess` with a given ``--drain-timeout`` (``None``: the default)."""

    def __init__(self, redis_url: str, workdir: Path, drain_timeout_s: float | None) -> None:
        extra = [] if drain_timeout_s is None else ["--drain-timeout", str(drain_timeout_s)]
        super().__init__(redis_url, workdir, node_id="node-draining", extra_args=extra)
        self.drain_timeout_s = drain_timeout_s

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def exit_code(self, timeout: float) -> int:
        """Wait (without blocking the loop: peers keep running) until the process exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            assert time.monotonic() < deadline, f"still running after {timeout}s:\n{self.log()}"
            await asyncio.sleep(0.05)
        return code

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.make_url("/healthz")) as resp,
        ):
            return resp.status, await resp.json()

    async def wait_draining(self, timeout: float = 10.0) -> dict[str, Any]:
        """``/healthz`` once it answers 503 (the signal is handled asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.health()
            if status == 503:
                return body
            assert status == 200, body
            assert time.monotonic() < deadline, f"not draining after {timeout}s:\n{self.log()}"
            await asyncio.sleep(0.05)


async def token_state(redis_url: str, token_id: str) -> str | None:
    store = open_store(redis_url)
    try:
        state = await store.hget(prefix(HUB) + "token:" + token_id, "state")
    finally:
        await store.aclose()
    assert state is None or isinstance(state, str)  # the store decodes its replies
    return state


async def wait_token_state(redis_url: str, token_id: str, state: str) -> None:
    deadline = time.monotonic() + 20
    while (now := await token_state(redis_url, token_id)) != state:
        assert time.monotonic() < deadline, f"token {token_id} is {now}, never {state}"
        await asyncio.sleep(0.05)


async def media_flows(peers: list[ClientPeer], what: str) -> None:
    """Each peer decodes at least one more second of video and audio from now on."""
    for p in peers:
        v0, a0 = p.video_frames, p.audio_frames

        def more(p: ClientPeer = p, v0: int = v0, a0: int = a0) -> bool:
            return p.video_frames >= v0 + 15 and p.audio_frames >= a0 + 25

        await eventually(more, what, timeout=30)


async def live_consultation(
    server: DrainingNode, patients: int = 1
) -> tuple[ProtocolClient, ProtocolClient, str, str, list[ClientPeer]]:
    """A nurse registers ``patients``, the doctor calls the first, both join with media."""
    nurse = ProtocolClient(server, NURSE)  # type: ignore[arg-type]
    doctor = ProtocolClient(server, DOCTOR)  # type: ignore[arg-type]
    await nurse.connect()
    await doctor.connect()
    issued = [
        await nurse.request(
            "register_patient", "token_issued", patient={**PATIENT, "name": f"Patient {i}"}
        )
        for i in range(patients)
    ]
    token_id = issued[0]["token"]["id"]
    room_id = (await doctor.request("call_next", "room_opened"))["room_id"]
    peers = [await join_with_media(nurse, room_id), await join_with_media(doctor, room_id)]
    await asyncio.gather(*(p.wait_for(video=10, audio=20, timeout=30) for p in peers))
    await wait_token_state(server.redis_url, token_id, "in_consultation")
    return nurse, doctor, room_id, token_id, peers


async def test_sigterm_lets_the_live_consultation_finish_then_exits_0(
    redis_url: str, tmp_path: Path
) -> None:
    """SIGTERM in the middle of a consultation: the node stops taking rooms and says so on
    ``/healthz``; the consultation goes on (media, signalling, even a reconnecting nurse);
    when the doctor hangs up, the process exits 0 within seconds and the token is completed."""
    server = DrainingNode(redis_url, tmp_path, drain_timeout_s=120)
    people: list[ProtocolClient] = []
    peers: list[ClientPeer] = []
    try:
        server.start()
        await server.wait_ready()
        nurse, doctor, room_id, token_id, peers = await live_consultation(server, patients=2)
        people += [nurse, doctor]
        # Another doctor calls the next patient just before the deploy: that room is not live.
        other_doctor = ProtocolClient(server, OTHER_DOCTOR)  # type: ignore[arg-type]
        people.append(other_doctor)
        await other_doctor.connect()
        called = await other_doctor.request("call_next", "room_opened")

        server.signal(signal.SIGTERM)
        health = await server.wait_draining()
        assert health == {"ok": False, "node": "node-draining", "draining": True, "rooms": 1}

        # A room not live here is refused with a code that says "try another node".
        refused = await error_for(other_doctor, "join", room_id=called["room_id"])
        assert refused["code"] == "node_draining", refused
        # The live room goes on: media both ways, and signalling.
        await media_flows(peers, "media relayed while draining")
        for who in (nurse, doctor):
            assert (await who.request("ping", "pong"))["type"] == "pong"
        # A nurse whose page reconnects gets her seat back on this node.
        again = ProtocolClient(server, NURSE)  # type: ignore[arg-type]
        people.append(again)
        await again.connect()
        joined = await again.request("join", "joined", room_id=room_id)
        assert joined["seat"] == "spoke"
        assert (await nurse.expect("error"))["code"] == "replaced"
        await media_flows(peers, "media relayed after the nurse reconnected")
        assert server.running(), "the node exited with a live room"
        assert (await server.health())[0] == 503

        ended = await doctor.request("hangup", "room_ended")
        assert ended["reason"] == (await again.expect("room_ended"))["reason"] == "hangup"
        hung_up = time.monotonic()
        assert await server.exit_code(timeout=20) == 0
        assert time.monotonic() - hung_up < 20
        await wait_token_state(redis_url, token_id, "completed")
        # The room called before the deploy is untouched, for another node to take.
        assert await token_state(redis_url, called["token"]["id"]) == "called"
        log = server.log()
        assert "draining: 1 live rooms left" in log
        assert "drained: no live room left" in log
        for who in (doctor, again, other_doctor):
            assert (await who.expect("_closed"))["code"] == 1001
    finally:
        for p in peers:
            await p.close()
        for who in people:
            await who.close()
        server.stop(kill=True)


async def test_drain_timeout_ends_the_rooms_left_with_reason_shutdown(
    redis_url: str, tmp_path: Path
) -> None:
    """With ``--drain-timeout 3`` a consultation that goes on is ended after about 3 s with
    reason ``shutdown``, as a shutdown without draining would, and the process exits 0."""
    server = DrainingNode(redis_url, tmp_path, drain_timeout_s=3)
    people: list[ProtocolClient] = []
    peers: list[ClientPeer] = []
    try:
        server.start()
        await server.wait_ready()
        nurse, doctor, _room_id, _token_id, peers = await live_consultation(server)
        people += [nurse, doctor]

        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        await server.wait_draining()
        ended = [await who.expect("room_ended", timeout=30) for who in (nurse, doctor)]
        waited = time.monotonic() - signalled
        assert [e["reason"] for e in ended] == ["shutdown", "shutdown"]
        assert 2.5 <= waited < 20, waited
        assert await server.exit_code(timeout=20) == 0
        assert "drain timeout (3 s): ending the 1 live rooms" in server.log()
    finally:
        for p in peers:
            await p.close()
        for who in people:
            await who.close()
        server.stop(kill=True)


async def test_sigterm_without_live_rooms_exits_promptly(redis_url: str, tmp_path: Path) -> None:
    """Nothing to wait for: open websockets that hold no room do not keep the node up, even
    with the default half-hour drain timeout."""
    server = DrainingNode(redis_url, tmp_path, drain_timeout_s=None)
    nurse = ProtocolClient(server, NURSE)  # type: ignore[arg-type]
    try:
        server.start()
        await server.wait_ready()
        await nurse.connect()
        await nurse.request("watch_queue", "queue")

        server.signal(signal.SIGTERM)
        assert await server.exit_code(timeout=15) == 0
        assert (await nurse.expect("_closed"))["code"] == 1001
        assert "drained: no live room left" in server.log()
    finally:
        await nurse.close()
        server.stop(kill=True)


async def test_a_second_signal_ends_the_live_rooms_at_once(redis_url: str, tmp_path: Path) -> None:
    """SIGTERM starts the drain; SIGINT (or SIGTERM) again ends the live rooms now."""
    server = DrainingNode(redis_url, tmp_path, drain_timeout_s=600)
    nurse = ProtocolClient(server, NURSE)  # type: ignore[arg-type]
    doctor = ProtocolClient(server, DOCTOR)  # type: ignore[arg-type]
    try:
        server.start()
        await server.wait_ready()
        await nurse.connect()
        await doctor.connect()
        await nurse.request("register_patient", "token_issued", patient=PATIENT)
        room_id = (await doctor.request("call_next", "room_opened"))["room_id"]
        await nurse.request("join", "joined", room_id=room_id)  # the room is live here

        server.signal(signal.SIGTERM)
        assert (await server.wait_draining())["rooms"] == 1
        await asyncio.sleep(0.5)
        assert server.running()
        server.signal(signal.SIGINT)
        assert (await nurse.expect("room_ended", timeout=15))["reason"] == "shutdown"
        assert await server.exit_code(timeout=15) == 0
    finally:
        await nurse.close()
        await doctor.close()
        server.stop(kill=True)


async def test_a_draining_registry_refuses_new_rooms_only(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    """In process: a room live before the drain can be joined again; a new one cannot, and
    ``/healthz`` answers 503 until the process stops."""
    client = await aiohttp_client(create_app(make_settings(redis_url)))
    nurse, doctor = ProtocolClient(client, NURSE), ProtocolClient(client, DOCTOR)
    try:
        await nurse.connect()
        await doctor.connect()
        for _ in range(2):
            await nurse.request("register_patient", "token_issued", patient=PATIENT)
        live = (await doctor.request("call_next", "room_opened"))["room_id"]
        later = (await doctor.request("call_next", "room_opened"))["room_id"]
        await nurse.request("join", "joined", room_id=live)
        registry = client.app[ROOMS]
        assert not registry.draining
        assert (await client.get("/healthz")).status == 200

        registry.drain()
        registry.drain()  # idempotent
        assert registry.draining
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert await resp.json() == {
            "ok": False,
            "node": "node-test",
            "draining": True,
            "rooms": 1,
        }
        refused = await error_for(doctor, "join", room_id=later)
        assert refused["code"] == "node_draining"
        assert "restarting" in refused["message"]
        assert registry.get(later) is None
        # The doctor of the live room still takes his seat in it.
        assert (await doctor.request("join", "joined", room_id=live))["seat"] == "hub"
    finally:
        await nurse.close()
        await doctor.close()
