"""Link quality over the real protocol: reports in, steps and indicators out."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from core.domain import Participant
from rooms import ROOMS
from tests.helpers import DOCTOR, ProtocolClient
from tests.signaling.test_consent import error_for, wait_ended
from tests.signaling.test_consultation import (
    AiohttpClient,
    join_with_media,
    register_and_call,
    start,
)


async def quality_for(who: ProtocolClient, seat: str, **match: Any) -> dict[str, Any]:
    return await who.expect(
        "quality",
        timeout=15.0,
        where=lambda m: m["seat"] == seat and all(m[k] == v for k, v in match.items()),
    )


@dataclasses.dataclass
class Call:
    """A consultation with media flowing both ways, over the real protocol."""

    client: Any
    nurse: ProtocolClient
    doctor: ProtocolClient
    peers: tuple[Any, Any]
    live: Any

    async def end(self) -> None:
        await self.doctor.request("hangup", "room_ended")
        await wait_ended(self.client.server.app)
        await asyncio.gather(
            *(p.close() for p in self.peers), self.nurse.close(), self.doctor.close()
        )
        await self.client.close()


async def in_a_call(aiohttp_client: AiohttpClient, redis_url: str) -> Call:
    client = await start(aiohttp_client, redis_url)
    nurse, doctor, room_id = await register_and_call(client)
    spoke_peer = await join_with_media(nurse, room_id)
    hub_peer = await join_with_media(doctor, room_id)
    await asyncio.gather(spoke_peer.wait_for(video=10, audio=20), hub_peer.wait_for(10, 20))
    live = client.server.app[ROOMS].get(room_id)
    assert live is not None
    return Call(client, nurse, doctor, (spoke_peer, hub_peer), live)


async def test_steps_follow_the_links_and_the_nurse_switch(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    call = await in_a_call(aiohttp_client, redis_url)
    nurse, doctor, live = call.nurse, call.doctor, call.live

    # Both pages get both seats' indicators every two seconds.
    network = await nurse.expect("network", timeout=10.0)
    assert set(network) >= {"spoke", "hub"}
    assert network["spoke"]["up"] in ("good", "fair", "poor", "bad", "unknown")

    # The nurse's page receives badly: the doctor's browser (which feeds it) steps down.
    await nurse.send("link_report", in_loss=0.2, in_kbps=90)
    down = await quality_for(doctor, "hub", reason="loss")
    assert down["step"] == 2
    assert down["video"] is True
    assert down["max_bitrate_kbps"] == 100
    await quality_for(nurse, "hub", step=2)
    assert live.links.step(Participant.SPOKE).index == 1, "the other direction is untouched"

    # A page about to make a new peer connection asks for fresh ICE servers.
    fresh = await nurse.request("get_ice_servers", "ice_servers")
    assert fresh["ice_servers"] == []  # none configured here; tests/core/test_turn.py has TURN

    # A report with an id gets a pong; a value out of range is refused.
    pong = await nurse.request("link_report", "pong", in_loss=0.0)
    assert pong["type"] == "pong"
    bad = await error_for(nurse, "link_report", in_loss=2)
    assert bad["code"] == "bad_message"

    # Only the nurse has the low-bandwidth switch; it caps both directions at step 3.
    refused = await error_for(doctor, "set_low_bandwidth", on=True)
    assert refused["code"] == "not_a_participant"
    switched = await nurse.request("set_low_bandwidth", "quality", on=True)
    assert switched["low_bandwidth"] is True
    assert switched["step"] == 3
    hub_step = await quality_for(doctor, "hub", step=3, low_bandwidth=True)
    assert hub_step["max_fps"] == 8

    # A pre-call measurement too slow for video: the nurse's browser sends audio only.
    await nurse.send("link_report", probe_kbps=50)
    paused = await quality_for(doctor, "spoke", step=4)
    assert paused["video"] is False
    kinds = [(e.kind, e.seat) for e in live.journal.events]
    assert ("quality_step", Participant.HUB) in kinds
    assert ("low_bandwidth", Participant.SPOKE) in kinds
    await call.end()


async def test_link_messages_need_a_seat(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    client = await start(aiohttp_client, redis_url)
    doctor = ProtocolClient(client, DOCTOR)
    await doctor.connect()
    assert (await error_for(doctor, "link_report", rtt_ms=20))["code"] == "forbidden"
    assert (await error_for(doctor, "set_low_bandwidth", on=False))["code"] == "forbidden"
    assert (await error_for(doctor, "get_ice_servers"))["code"] == "forbidden"
    await doctor.close()
    await client.close()


async def test_a_page_brake_puts_both_seats_on_audio_only_at_once(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    call = await in_a_call(aiohttp_client, redis_url)
    nurse, live = call.nurse, call.live
    relays = live.media.outbound
    assert not relays[Participant.HUB]["video"].held

    # The nurse's page saw its uplink collapse and paused its own video.
    assert (await error_for(nurse, "link_report", brake=1))["code"] == "bad_message"
    await nurse.send("link_report", brake=True)
    spoke = await quality_for(nurse, "spoke", reason="browser")
    assert (spoke["step"], spoke["video"]) == (4, False)
    hub = await quality_for(call.doctor, "hub", reason="browser")
    assert (hub["step"], hub["video"]) == (4, False)
    # The server stops relaying video both ways without waiting for the pages, and caps what
    # each browser may send to what audio needs.
    for _ in range(50):
        if relays[Participant.HUB]["video"].held and relays[Participant.SPOKE]["video"].held:
            break
        await asyncio.sleep(0.1)
    assert relays[Participant.HUB]["video"].held
    assert relays[Participant.SPOKE]["video"].held
    spoke_server_peer = live.media.peer(Participant.SPOKE)
    assert spoke_server_peer is not None
    assert spoke_server_peer._estimate_cap is not None
    # ...and asks neither browser to resend video or to send a keyframe.
    assert spoke_server_peer._hushed

    # A page that brakes again, already on audio only, hears its step again.
    await nurse.send("link_report", brake=True)
    again = await quality_for(nurse, "spoke", reason="browser")
    assert again["step"] == 4
    await call.end()


async def test_what_an_uplink_carried_is_counted_in_bytes(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    """The server's count of what arrived over a browser's uplink is what the browser sent:
    its datagrams' bytes, media payload included (aiortc counts bytes per transport only)."""
    call = await in_a_call(aiohttp_client, redis_url)
    peer = call.live.media.peer(Participant.SPOKE)
    assert peer is not None

    async def sent() -> float:
        report = await call.peers[0].pc.getStats()
        return float(sum(s.bytesSent for s in report.values() if s.type == "transport"))

    before, sent_before = await peer.stats(), await sent()
    await asyncio.sleep(1.0)
    after, sent_after = await peer.stats(), await sent()
    got = after["transport"]["bytesReceived"] - before["transport"]["bytesReceived"]
    packets = sum(
        after[f"inbound-rtp:{kind}"]["packetsReceived"]
        - before[f"inbound-rtp:{kind}"]["packetsReceived"]
        for kind in ("audio", "video")
    )
    assert packets > 50
    assert after["transport"]["packetsReceived"] - before["transport"]["packetsReceived"] >= packets
    # On loopback nothing is lost: within what was in flight at either reading.
    assert abs(got - (sent_after - sent_before)) < 0.1 * got
    # RTP's header and SRTP's tag alone are 22 bytes a packet: the payloads are counted too.
    assert got > 30 * packets
    await call.end()
