"""``/metrics`` in the Prometheus text format, who may read it, what it counts during a
consultation, and the administrators' page of server nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from core.nodes import NODES
from server import create_app
from tests.conftest import RedisServer
from tests.helpers import DEMO_PASSWORD, DOCTOR, NURSE, PATIENT, ProtocolClient, make_settings
from tests.signaling.test_consultation import join_with_media, register_and_call
from tests.web.conftest import Login
from web import i18n
from web.metrics import CONTENT_TYPE, may_read

AiohttpClient = Any
HUB = "bhabua-sadar"

FAMILIES = {
    "setu_node_info": "gauge",
    "setu_live_rooms": "gauge",
    "setu_peers": "gauge",
    "setu_websocket_sessions": "gauge",
    "setu_relay_frames_total": "counter",
    "setu_link_loss_ratio_max": "gauge",
    "setu_link_loss_ratio_mean": "gauge",
    "setu_link_rtt_seconds_max": "gauge",
    "setu_link_rtt_seconds_mean": "gauge",
    "setu_event_loop_lag_seconds": "gauge",
    "setu_event_loop_lag_max_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "setu_node_start_time_seconds": "gauge",
    "setu_store_up": "gauge",
    "setu_queue_length": "gauge",
    "setu_wait_seconds_p50": "gauge",
    "setu_wait_seconds_p90": "gauge",
}


# ---------------------------------------------------------------- a small reader of the format


@dataclasses.dataclass
class Family:
    type: str
    help: str
    samples: list[tuple[dict[str, str], float]] = dataclasses.field(default_factory=list)

    def value(self, **labels: str) -> float:
        found = [v for ls, v in self.samples if all(ls.get(k) == x for k, x in labels.items())]
        assert len(found) == 1, (labels, self.samples)
        return found[0]


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"(?P<name>{_NAME})(?:\{{(?P<labels>.*)\}})? (?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"(?:,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse(text: str) -> dict[str, Family]:
    """Families of the text format 0.0.4; fails on any line that is not HELP, TYPE or a sample
    of a family declared before it."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name), line
            assert name not in helps, line
            helps[name] = help_
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge"), line
            assert name not in families, f"{name} declared twice"
            families[name] = Family(kind, helps.get(name, ""))
        else:
            match = _SAMPLE.fullmatch(line)
            assert match is not None, f"not a sample: {line!r}"
            family = families.get(match["name"])
            assert family is not None, f"sample before its TYPE: {line!r}"
            labels: dict[str, str] = {}
            rest = match["labels"] or ""
            while rest:
                label = _LABEL.match(rest)
                assert label is not None, f"bad labels: {line!r}"
                value = re.sub(r"\\.", lambda m: _ESCAPES[m.group(0)], label["value"])
                labels[label["key"]] = value
                rest = rest[label.end() :]
            family.samples.append((labels, float(match["value"])))
    for name, family in families.items():
        assert family.help, f"{name} has no HELP"
        if family.type == "counter":
            assert name.endswith("_total"), name
            assert all(v >= 0 for _, v in family.samples), name
    return families


def test_the_reader_reads_escapes_and_refuses_junk() -> None:
    text = (
        '# HELP x_total A "count".\n# TYPE x_total counter\n'
        'x_total{a="q\\"uote",b="back\\\\slash\\nline"} 3\n'
    )
    [(labels, value)] = parse(text)["x_total"].samples
    assert labels == {"a": 'q"uote', "b": "back\\slash\nline"}
    assert value == 3
    with pytest.raises(AssertionError):
        parse("# TYPE y gauge\ny{a=b} 1\n")
    with pytest.raises(AssertionError):
        parse("z 1\n")


# ---------------------------------------------------------------- fixtures


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(make_settings(None)))  # type: ignore[no-any-return]


async def scrape(client: TestClient[Any, Any]) -> dict[str, Family]:
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == CONTENT_TYPE
    return parse(await resp.text())


# ---------------------------------------------------------------- the format and who may read


async def test_metrics_have_every_family_in_the_text_format(
    client: TestClient[Any, Any],
) -> None:
    families = await scrape(client)
    assert {name: f.type for name, f in families.items()} == FAMILIES
    info = families["setu_node_info"]
    assert info.samples == [({"node": "node-test", "version": client.app[NODES].version}, 1.0)]
    assert families["setu_live_rooms"].value() == 0
    assert families["setu_peers"].value() == 0
    assert families["setu_websocket_sessions"].value() == 0
    relay = families["setu_relay_frames_total"]
    assert len(relay.samples) == 2 * 2 * 3  # kinds, directions, outcomes
    assert relay.value(kind="video", direction="spoke_to_hub", outcome="forwarded") == 0
    assert families["setu_store_up"].value() == 1
    assert families["setu_queue_length"].value(hub=HUB) == 0
    assert families["setu_wait_seconds_p50"].samples == []  # nobody called yet today
    lag = families["setu_event_loop_lag_seconds"].value()
    assert 0 <= lag <= families["setu_event_loop_lag_max_seconds"].value() < 1
    assert families["process_cpu_seconds_total"].value() > 0
    assert abs(families["setu_node_start_time_seconds"].value() - time.time()) < 60
    # No label names a person, a room or a token.
    labels = {k for f in families.values() for ls, _ in f.samples for k in ls}
    assert labels <= {"node", "version", "kind", "direction", "outcome", "seat", "leg", "hub"}


async def test_only_this_machine_and_administrators_may_read(
    client: TestClient[Any, Any], login: Login
) -> None:
    for username in (NURSE, DOCTOR, "auditor"):
        session = await login(username)
        resp = await session.get(client.make_url("/metrics"))
        assert resp.status == 403, username
    admin = await login("admin")
    resp = await admin.get(client.make_url("/metrics"), headers={"X-Forwarded-For": "192.0.2.7"})
    assert resp.status == 200
    assert "setu_live_rooms 0" in await resp.text()
    # A request a reverse proxy passed on comes from loopback too, but not from this machine.
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP", "Via"):
        resp = await client.get("/metrics", headers={header: "192.0.2.7"})
        assert resp.status == 403, header
    assert (await client.get("/metrics")).status == 200


async def test_anonymous_readers_must_be_on_loopback(client: TestClient[Any, Any]) -> None:
    for peer, allowed in [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.0.2.7", False),
        ("10.0.0.5", False),
        ("2001:db8::1", False),
        ("", False),  # a Unix socket: no address to judge by
    ]:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None, peer=peer: (
            (peer, 40000) if name == "peername" and peer else default
        )
        request = make_mocked_request("GET", "/metrics", app=client.app, transport=transport)
        assert may_read(request) is allowed, peer


async def test_the_queue_of_a_hub(aiohttp_client: AiohttpClient, redis_url: str) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url)))
    nurse = ProtocolClient(client, NURSE)
    try:
        await nurse.connect()
        await nurse.request("register_patient", "token_issued", patient=PATIENT)
        families = await scrape(client)
        assert families["setu_queue_length"].value(hub=HUB) == 1
        assert families["setu_websocket_sessions"].value() == 1
        text = await (await client.get("/metrics")).text()
        assert PATIENT["name"] not in text
        assert NURSE not in text
    finally:
        await nurse.close()


async def test_metrics_when_the_store_is_down(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        client = await aiohttp_client(create_app(make_settings(redis.url)))
        redis.stop(kill=True)
        families = await scrape(client)
        assert families["setu_store_up"].value() == 0
        assert families["setu_queue_length"].samples == []
        assert families["setu_live_rooms"].value() == 0  # what the node knows by itself
        await client.close()
    finally:
        redis.stop()


# ---------------------------------------------------------------- during a consultation


async def test_a_consultation_in_the_metrics_and_on_the_nodes_page(
    aiohttp_client: AiohttpClient, redis_url: str, no_leaked_tasks: None
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url)))
    app = client.server.app
    nurse, doctor, room_id = await register_and_call(client)
    spoke_peer = await join_with_media(nurse, room_id)
    hub_peer = await join_with_media(doctor, room_id)
    await asyncio.gather(
        spoke_peer.wait_for(video=20, audio=40), hub_peer.wait_for(video=20, audio=40)
    )
    families = await scrape(client)
    assert families["setu_live_rooms"].value() == 1
    assert families["setu_peers"].value() == 2
    assert families["setu_websocket_sessions"].value() == 2
    relay = families["setu_relay_frames_total"]
    for kind in ("audio", "video"):
        for direction in ("spoke_to_hub", "hub_to_spoke"):
            assert relay.value(kind=kind, direction=direction, outcome="forwarded") > 0
    assert families["setu_queue_length"].value(hub=HUB) == 0
    assert families["setu_wait_seconds_p50"].value(hub=HUB) >= 0  # the one called token
    assert families["setu_wait_seconds_p90"].value(hub=HUB) >= 0
    # The links are measured every two seconds.
    deadline = time.monotonic() + 10
    while not families["setu_link_rtt_seconds_max"].samples:
        assert time.monotonic() < deadline, "no round trip measured"
        await asyncio.sleep(0.5)
        families = await scrape(client)
    for labels, rtt in families["setu_link_rtt_seconds_max"].samples:
        assert labels["seat"] in ("spoke", "hub")
        assert 0 <= rtt < 1
    for labels, loss in families["setu_link_loss_ratio_max"].samples:
        assert labels["leg"] in ("up", "down")
        assert 0 <= loss <= 1

    # The next heartbeat carries the load to the store, where the nodes' page reads it.
    await app[NODES].beat()
    [node] = await app[NODES].live_nodes()
    assert (node.rooms, node.peers) == (1, 2)
    admin = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        await admin.post(
            client.make_url("/login"), data={"username": "admin", "password": DEMO_PASSWORD}
        )
        page = await (await admin.get(client.make_url("/admin/nodes"))).text()
    finally:
        await admin.close()
    row = re.search(r'<tr data-node="node-test">.*?</tr>', page, re.S)
    assert row is not None
    assert '<td data-figure="rooms">1</td>' in row.group(0)
    assert '<td data-figure="peers">2</td>' in row.group(0)

    before = relay.value(kind="video", direction="spoke_to_hub", outcome="received")
    await doctor.request("hangup", "room_ended")
    await nurse.expect("room_ended")
    deadline = time.monotonic() + 10
    while (families := await scrape(client))["setu_live_rooms"].value() != 0:
        assert time.monotonic() < deadline, "the room is still live"
        await asyncio.sleep(0.1)
    assert families["setu_peers"].value() == 0
    # Counters never go down when the room that counted them ends.
    after = families["setu_relay_frames_total"]
    assert after.value(kind="video", direction="spoke_to_hub", outcome="received") >= before

    for peer in (spoke_peer, hub_peer):
        await peer.close()
    await nurse.close()
    await doctor.close()
    await client.close()


# ---------------------------------------------------------------- the nodes' page


async def test_administrators_see_the_nodes(client: TestClient[Any, Any], login: Login) -> None:
    resp = await client.get("/admin/nodes", allow_redirects=False)
    assert resp.status == 303
    for username in (NURSE, DOCTOR, "auditor"):
        session = await login(username)
        assert (await session.get(client.make_url("/admin/nodes"))).status == 403, username
    admin = await login("admin")
    resp = await admin.get(client.make_url("/admin/nodes"))
    assert resp.status == 200
    page = await resp.text()
    assert 'data-node="node-test"' in page
    assert "this server" in page
    assert "127.0.0.1:8080" in page
    assert "Server nodes" in page
    # The overview links to it for administrators only.
    assert 'href="/admin/nodes"' in await (await admin.get(client.make_url("/admin"))).text()
    auditor = await login("auditor")
    overview = await (await auditor.get(client.make_url("/admin"))).text()
    assert 'href="/admin/nodes"' not in overview


async def test_the_nodes_page_speaks_hindi(client: TestClient[Any, Any], login: Login) -> None:
    admin = await login("admin")
    admin.cookie_jar.update_cookies({i18n.LANG_COOKIE: "hi"})
    page = await (await admin.get(client.make_url("/admin/nodes"))).text()
    assert "सर्वर नोड" in page
    assert "यह सर्वर" in page
    assert "अंतिम धड़कन" in page
    for key in (k for k in i18n.STRINGS if k.startswith("admin.nodes")):
        assert set(i18n.STRINGS[key]) == set(i18n.LANGUAGES), key
