"""A browser's websocket: how long a silent client is kept, and its TCP socket's settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from server import create_app
from signaling.transport import (
    CLOSE_TOO_SLOW,
    SILENT_HEARTBEATS,
    TCP_THIN_LINEAR_TIMEOUTS,
    thin_stream,
)
from tests.helpers import DEMO_PASSWORD, NURSE, make_settings

AiohttpClient = Any
HEARTBEAT_S = 0.3


@contextlib.asynccontextmanager
async def raw_socket(
    aiohttp_client: AiohttpClient, redis_url: str, *, autoping: bool
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A signed-in nurse's websocket that sends nothing unless the test does, past its welcome."""
    client = await aiohttp_client(create_app(make_settings(redis_url, heartbeat_s=HEARTBEAT_S)))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await http.post(
            client.make_url("/login"), data={"username": NURSE, "password": DEMO_PASSWORD}
        )
        origin = str(client.make_url("/")).rstrip("/")
        async with http.ws_connect(
            client.make_url("/ws"), headers={"Origin": origin}, autoping=autoping, heartbeat=None
        ) as ws:
            welcome = await ws.receive_json(timeout=5)
            assert welcome["type"] == "welcome"
            assert welcome["heartbeat_s"] == HEARTBEAT_S
            yield ws


async def test_a_client_silent_for_longer_than_half_a_heartbeat_is_kept(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    """Pings unanswered for two heartbeats (a flooded village link) do not drop the socket; a
    frame from the client then is answered.  Silent for three, the client is dropped."""
    async with raw_socket(aiohttp_client, redis_url, autoping=False) as ws:
        await silent_twice_then_dropped(ws)


async def silent_twice_then_dropped(ws: aiohttp.ClientWebSocketResponse) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    pings = 0
    while loop.time() - started < (SILENT_HEARTBEATS - 1) * HEARTBEAT_S:
        try:  # the server's pings arrive; the client does not answer them
            msg = await ws.receive(timeout=0.05)
        except TimeoutError:
            continue
        assert msg.type is aiohttp.WSMsgType.PING, msg
        pings += 1
    assert pings >= 1
    await ws.send_str(json.dumps({"v": 1, "type": "ping", "id": 7}))
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type is aiohttp.WSMsgType.TEXT:
            pong = json.loads(msg.data)
            assert (pong["type"], pong["re"]) == ("pong", 7)
            break
    # Now silent for good: dropped after three heartbeats, give or take one, with 4008.
    silent_from = loop.time()
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert ws.close_code == CLOSE_TOO_SLOW
    waited = loop.time() - silent_from
    assert (SILENT_HEARTBEATS - 1) * HEARTBEAT_S <= waited <= (SILENT_HEARTBEATS + 2) * HEARTBEAT_S


async def test_answered_pings_keep_a_quiet_client(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    """A client that only answers the server's pings (protocol pongs) stays connected."""
    async with raw_socket(aiohttp_client, redis_url, autoping=True) as ws:
        # (The client's receive() answers pings and waits on: bound it from outside.)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout((SILENT_HEARTBEATS + 2) * HEARTBEAT_S):
                await ws.receive()
        assert not ws.closed
        await ws.send_str(json.dumps({"v": 1, "type": "ping", "id": 1}))
        assert (await ws.receive_json(timeout=5))["re"] == 1


async def test_a_clients_ping_frame_is_answered(
    aiohttp_client: AiohttpClient, redis_url: str
) -> None:
    async with raw_socket(aiohttp_client, redis_url, autoping=False) as ws:
        await ws.ping(b"are you there")
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.PONG
        assert msg.data == b"are you there"


def test_signalling_sockets_are_thin_streams() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as sock,
    ):
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS) == 0
        thin_stream(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS) == 1
    thin_stream(None)  # a transport without a socket: nothing to do
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        thin_stream(udp)  # not TCP: left alone
