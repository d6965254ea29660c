"""Test helpers: settings for tests, a signed-in protocol client and an aiortc client peer."""

from __future__ import annotations

import asyncio
import atexit
import fractions
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack

from core.settings import Settings

DEMO_PASSWORD = "test-password-1"
NURSE = "nurse.akhlaspur"
OTHER_NURSE = "nurse.sihoriya"
DOCTOR = "dr.sharma"
OTHER_DOCTOR = "dr.khan"
PATIENT = {"name": "Ramesh Yadav", "age": 54, "sex": "male", "complaint": "chest pain on exertion"}


def make_settings(redis_url: str | None = None, **overrides: Any) -> Settings:
    """Test settings; files (keys, audit log, recordings) go to a fresh temporary directory."""
    data_dir = Path(tempfile.mkdtemp(prefix="setu-test-"))
    atexit.register(shutil.rmtree, data_dir, True)
    base = Settings(
        redis_url=redis_url,
        data_dir=data_dir,
        demo_password=DEMO_PASSWORD,
        secret_key="test-secret",
        heartbeat_s=5.0,
        room_grace_s=1.0,
        node_id="node-test",
    )
    return replace(base, **overrides)


class ProtocolClient:
    """A signed-in user speaking the websocket protocol, as a page would."""

    def __init__(self, client: TestClient[Any, Any], username: str) -> None:
        self.client = client
        self.username = username
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 1
        self.welcome: dict[str, Any] = {}
        # Each user has a cookie jar of their own, as each browser does.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def login(self, password: str = DEMO_PASSWORD) -> aiohttp.ClientResponse:
        return await self.session.post(
            self.client.make_url("/login"),
            data={"username": self.username, "password": password},
            allow_redirects=False,
        )

    async def connect(self, origin: str | None = None) -> dict[str, Any]:
        resp = await self.login()
        assert resp.status == 303, await resp.text()
        origin = origin or str(self.client.make_url("/")).rstrip("/")
        self.ws = await self.session.ws_connect(
            self.client.make_url("/ws"), headers={"Origin": origin}
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.welcome = await self.expect("welcome")
        return self.welcome

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self.inbox.put(json.loads(msg.data))
        await self.inbox.put({"type": "_closed", "code": self.ws.close_code})

    async def send(self, type_: str, **fields: Any) -> int:
        assert self.ws is not None
        rid = self._next_id
        self._next_id += 1
        await self.ws.send_str(json.dumps({"v": 1, "type": type_, "id": rid, **fields}))
        return rid

    async def send_raw(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(text)

    async def expect(
        self,
        type_: str,
        timeout: float = 10.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The next message of ``type_`` (others are skipped); fails on an unexpected error."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.username}: no {type_!r} within {timeout}s")
            msg = await asyncio.wait_for(self.inbox.get(), remaining)
            if msg["type"] == type_ and (where is None or where(msg)):
                return msg
            if msg["type"] == "error" and type_ != "error":
                raise AssertionError(f"{self.username}: error while waiting for {type_}: {msg}")
            if msg["type"] == "_closed" and type_ != "_closed":
                raise AssertionError(f"{self.username}: socket closed waiting for {type_}")

    async def request(self, type_: str, reply: str, **fields: Any) -> dict[str, Any]:
        rid = await self.send(type_, **fields)
        return await self.expect(reply, where=lambda m: m.get("re") == rid)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader
        await self.session.close()


class ClockVideoTrack(VideoStreamTrack):  # type: ignore[misc]
    """Small synthetic video: a moving bar, cheap to encode."""

    def __init__(self, width: int = 320, height: int = 180, fps: int = 15) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.n = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self.n / self.fps
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        img = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        x = (self.n * 4) % self.width
        img[:, x : x + 8] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.n * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.n += 1
        return frame


class ClientPeer:
    """A browser stand-in: offers audio and video, counts what it gets back decoded."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video_frames = 0
        self.audio_frames = 0
        self._sinks: list[asyncio.Task[None]] = []
        self.pc.addTrack(AudioStreamTrack())
        self.video_sender = self.pc.addTrack(ClockVideoTrack())
        self.pc.on("track", self._on_track)
        # Count the keyframe requests (PLI/FIR) that reach our video sender.
        self.keyframe_requests = 0
        stock = self.video_sender._send_keyframe

        def on_keyframe_request() -> None:
            self.keyframe_requests += 1
            stock()

        self.video_sender._send_keyframe = on_keyframe_request

    def _on_track(self, track: Any) -> None:
        self._sinks.append(asyncio.get_running_loop().create_task(self._consume(track)))

    async def _consume(self, track: Any) -> None:
        try:
            while True:
                await track.recv()
                if track.kind == "video":
                    self.video_frames += 1
                else:
                    self.audio_frames += 1
        except MediaStreamError:
            return

    async def request_keyframe(self) -> None:
        """Ask the far side for a keyframe, as a browser's decoder does after a loss."""
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                receiver = transceiver.receiver
                for source in receiver.getSynchronizationSources():
                    await receiver._send_rtcp_pli(source.source)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def wait_for(self, video: int, audio: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.video_frames < video or self.audio_frames < audio:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"media did not flow: {self.video_frames} video, {self.audio_frames} audio"
                )
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._sinks:
            task.cancel()
        await asyncio.gather(*self._sinks, return_exceptions=True)
