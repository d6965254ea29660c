"""What survives a crash: of a Setu process, of redis-server (per appendfsync policy), of a
connection to Redis, and of Redis during a live consultation.

Every test runs real processes on loopback: a redis-server of its own with AOF in a
directory of the test, and, where the server itself is killed, ``python server.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
from yarl import URL

from core.directory import DEMO_DIRECTORY, Directory
from core.domain import HubId, Sex, SpokeId, TokenId, TokenState, UserId
from core.store import Redis, StoreUnavailable, open_store
from rooms import ROOMS, Patient, ServiceKeeper, Token, WaitingRoom
from rooms.waiting_room import prefix
from server import create_app
from tests.conftest import RedisServer, free_port
from tests.helpers import (
    DEMO_PASSWORD,
    DOCTOR,
    NURSE,
    OTHER_NURSE,
    PATIENT,
    ClientPeer,
    ProtocolClient,
    make_settings,
)

AiohttpClient = Any

ROOT = Path(__file__).resolve().parents[2]
HUB = HubId("bhabua-sadar")
SPOKES = (SpokeId("akhlaspur"), SpokeId("sihoriya"))
#: 10:00 in Bhabua, inside the demo hub's around-the-clock window.
START = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
DAY = "20261127"  # START's service day


async def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


def redis_with_aof(directory: Path, appendfsync: str) -> RedisServer:
    directory.mkdir(parents=True, exist_ok=True)
    return RedisServer(directory, appendonly="yes", appendfsync=appendfsync)


class TickingClock:
    """Moves one millisecond per reading: one service day, distinct issue moments."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def waiting_room(store: Redis, tmp_path: Path) -> WaitingRoom:
    """The demo hub's waiting room with room in its window for every token of a test."""
    path = tmp_path / "directory.toml"
    path.write_text(DEMO_DIRECTORY.read_text().replace("capacity = 120", "capacity = 10000"))
    return WaitingRoom(store, Directory.load(path), TickingClock(START))


def patient(label: str) -> Patient:
    return Patient(name=f"Patient {label}", age=52, sex=Sex.MALE, complaint="breathlessness")


# --------------------------------------------------------------------- a real server process


class SetuProcess:
    """``python server.py`` on a loopback port, on a given Redis; its log goes to a file."""

    def __init__(
        self,
        redis_url: str,
        workdir: Path,
        node_id: str = "node-durable",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.redis_url = redis_url
        self.workdir = workdir
        self.node_id = node_id
        #: Further flags of server.py (a short grace, a drain timeout).
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def make_url(self, path: str) -> URL:
        """As ``TestClient.make_url``, so that :class:`ProtocolClient` can talk to it."""
        return URL(f"http://127.0.0.1:{self.port}").join(URL(path))

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SETU_")}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "server.py",
                "--port",
                str(self.port),
                "--redis-url",
                self.redis_url,
                "--demo-password",
                DEMO_PASSWORD,
                "--node-id",
                self.node_id,
                "--data-dir",
                str(self.workdir / "data"),
                *self.extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc is not None
                assert self.proc.poll() is None, f"server exited early:\n{self.log()}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.make_url("/healthz")) as resp:
                        if resp.status == 200 and (await resp.json())["node"] == self.node_id:
                            return
                assert time.monotonic() < deadline, f"server not ready in {timeout}s:\n{self.log()}"
                await asyncio.sleep(0.1)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


async def reopen(who: ProtocolClient, server: SetuProcess) -> None:
    """A new websocket on the same browser session: the old cookie, no new sign-in."""
    assert who.ws is not None
    assert who.ws.closed
    if who._reader is not None:
        await who._reader
    origin = str(server.make_url("/")).rstrip("/")
    who.ws = await who.session.ws_connect(server.make_url("/ws"), headers={"Origin": origin})
    who._reader = asyncio.get_running_loop().create_task(who._read())
    who.welcome = await who.expect("welcome")


#: What a token and a room are: other fields (notifications sent, presence...) may change.
TOKEN_FIELDS = (
    "id", "number", "hub", "date", "spoke", "nurse", "state", "order", "score", "issued_at",
    "priority", "name", "age", "sex", "phone", "complaint", "doctor", "room", "called_at",
)  # fmt: skip
ROOM_FIELDS = ("id", "token", "spoke", "nurse", "doctor", "state", "created_at")


async def waiting_room_state(store: Redis) -> dict[str, Any]:
    """The hub's waiting room as stored: queue and held tokens with their scores, the day's
    index and sequence, and every token and room (their defining fields)."""
    p = prefix(HUB)
    out: dict[str, Any] = {}
    for name in ("queue", "held"):
        out[name] = await store.zrange(p + name, 0, -1, withscores=True)
    async for key in store.scan_iter(match=p + "day:*"):
        out[key] = await store.zrange(key, 0, -1, withscores=True)
    async for key in store.scan_iter(match=p + "seq:*"):
        out[key] = await store.get(key)
    for kind, fields in (("token", TOKEN_FIELDS), ("room", ROOM_FIELDS)):
        async for key in store.scan_iter(match=f"{p}{kind}:*"):
            record = await store.hgetall(key)
            out[key] = {f: record.get(f) for f in fields}
    return out


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What differs between two states: per key, the fields of a record, else the values."""
    out: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            fields = sorted(set(old) | set(new))
            out[key] = {f: (old.get(f), new.get(f)) for f in fields if old.get(f) != new.get(f)}
        else:
            out[key] = (old, new)
    return out


#: What the queue shows of each token that a restart must not change (estimates may).
SHOWN_FIELDS = ("id", "number", "spoke", "state", "patient", "issued_at", "position", "room_id")


def queue_shown(queue: dict[str, Any]) -> dict[str, Any]:
    """The queue as shown: waiting (in order), today's and held tokens, and the totals."""
    out: dict[str, Any] = {
        name: [{f: t[f] for f in SHOWN_FIELDS} | {"doctor": t["doctor"]} for t in queue[name]]
        for name in ("waiting", "today", "held")
    }
    return out | {f: queue[f] for f in ("waiting_total", "service_open", "closes_at")}


async def test_server_killed_and_restarted_keeps_queue_and_numbering(tmp_path: Path) -> None:
    """kill -9 of the Setu process loses nothing: every token is in Redis, not in the process.

    After a restart on the same Redis the queue is the same (order and positions), each token
    has the same state and number, sign-in cookies still work, and the next token takes the
    next number.  (The demo hub's window turns over at midnight in Bhabua, 18:30 UTC: a run
    across that moment sees the window's carry-over, not a crash's doing.)
    """
    redis = redis_with_aof(tmp_path / "redis", "always")
    redis.start()
    server = SetuProcess(redis.url, tmp_path)
    store = open_store(redis.url)
    people: list[ProtocolClient] = []
    try:
        server.start()
        await server.wait_ready()
        nurse_a, nurse_s, doctor = (
            ProtocolClient(server, NURSE),  # type: ignore[arg-type]
            ProtocolClient(server, OTHER_NURSE),  # type: ignore[arg-type]
            ProtocolClient(server, DOCTOR),  # type: ignore[arg-type]
        )
        people = [nurse_a, nurse_s, doctor]
        for who in people:
            await who.connect()
        for i in range(6):
            nurse = (nurse_a, nurse_s)[i % 2]
            issued = await nurse.request(
                "register_patient", "token_issued", patient={**PATIENT, "name": f"Patient {i}"}
            )
            assert issued["token"]["number"] == i + 1
        opened = await doctor.request("call_next", "room_opened")
        assert opened["token"]["number"] == 1
        before = await doctor.request("watch_queue", "queue")
        assert [t["number"] for t in before["waiting"]] == [2, 3, 4, 5, 6]
        assert [t["position"] for t in before["waiting"]] == [1, 2, 3, 4, 5]
        assert [t["state"] for t in before["today"]] == ["called"] + ["waiting"] * 5
        stored_before = await waiting_room_state(store)

        server.stop(kill=True)
        for who in people:
            await who.expect("_closed")
        server.start()
        await server.wait_ready()

        for who in people:
            await reopen(who, server)
        after = await doctor.request("watch_queue", "queue")
        assert queue_shown(after) == queue_shown(before)
        changed = changes(stored_before, await waiting_room_state(store))
        assert changed == {}, "the restart changed the waiting room"
        mine = await nurse_a.request("watch_queue", "queue")
        assert [t["number"] for t in mine["today"]] == [1, 3, 5]

        # The numbering goes on where it was: no number is given twice.
        issued = await nurse_s.request(
            "register_patient", "token_issued", patient={**PATIENT, "name": "After restart"}
        )
        assert issued["token"]["number"] == 7
        # The queue goes on in its order, and the room opened before the crash is still there.
        opened_again = await doctor.request("call_next", "room_opened")
        assert opened_again["token"]["number"] == 2
        joined = await nurse_a.request("join", "joined", room_id=opened["room_id"])
        assert joined["token"]["number"] == 1
    finally:
        for who in people:
            await who.close()
        server.stop(kill=True)
        await store.aclose()
        redis.stop()


# ------------------------------------------------------------------- redis-server crashes


@dataclass(frozen=True)
class Ack:
    token: Token
    at: float  # time.monotonic() when the nurse was told the number


async def issue_until_redis_dies(
    room: WaitingRoom, writers: int, acked: list[Ack], pace_s: float
) -> None:
    """``writers`` nurses issue tokens back to back until the store fails them."""

    async def writer(i: int) -> None:
        k = 0
        while True:
            try:
                token = await room.issue(SPOKES[i % 2], UserId(f"nurse.{i}"), patient(f"{i}/{k}"))
            except StoreUnavailable:
                return
            acked.append(Ack(token, time.monotonic()))
            k += 1
            await asyncio.sleep(pace_s)

    await asyncio.gather(*(writer(i) for i in range(writers)))


async def stored_tokens(store: Redis) -> dict[int, dict[str, str]]:
    """Today's tokens in the store, by number; asserts the numbers are 1..n without a gap."""
    p = prefix(HUB)
    days = [k async for k in store.scan_iter(match=p + "day:*")]
    assert days == [p + f"day:{DAY}"], days
    ids = await store.zrange(days[0], 0, -1, withscores=True)
    by_number = {int(score): await store.hgetall(p + "token:" + tid) for tid, score in ids}
    assert sorted(by_number) == list(range(1, len(by_number) + 1)), "numbering has a gap"
    assert int(await store.get(p + f"seq:{DAY}") or 0) == len(by_number)
    return by_number


def same(token: Token, stored: dict[str, str]) -> bool:
    return (
        stored.get("id") == token.id
        and stored.get("name") == token.patient.name
        and stored.get("nurse") == token.nurse
        and stored.get("state") == token.state.value
    )


async def test_redis_kill_with_appendfsync_always_loses_no_acknowledged_token(
    tmp_path: Path,
) -> None:
    """kill -9 of redis-server while nurses issue tokens: with ``appendfsync always`` every
    token a nurse was told about is there after Redis restarts from its directory, and no
    number is ever given twice.  Tokens in flight at the kill may or may not be there."""
    writers = 6
    redis = redis_with_aof(tmp_path / "redis", "always")
    redis.start()
    store = open_store(redis.url)
    check = open_store(redis.url)
    try:
        room = waiting_room(store, tmp_path)
        await ServiceKeeper(room, [HUB]).tick()
        acked: list[Ack] = []
        issuing = asyncio.create_task(issue_until_redis_dies(room, writers, acked, 0.0))
        await eventually(lambda: len(acked) >= 300 or issuing.done(), "300 tokens issued")
        redis.stop(kill=True)
        await asyncio.wait_for(issuing, 60)
        told = {a.token.number: a.token for a in acked}
        assert len(told) == len(acked) >= 300

        redis.start_on_same_port()
        stored = await stored_tokens(check)
        lost = [n for n, token in told.items() if not same(token, stored.get(n, {}))]
        assert not lost, f"acknowledged tokens lost or changed: {lost[:10]}"
        # Whatever else survived was in flight at the kill: at most one per nurse.
        assert len(stored) - len(told) <= writers
        queue = await check.zrange(prefix(HUB) + "queue", 0, -1)
        assert {t.id for t in told.values()} <= set(queue)
        # Redis and Setu go on: the next token takes the next number, never a used one.
        after = await waiting_room(check, tmp_path).issue(
            SPOKES[0], UserId("nurse.after"), patient("after")
        )
        assert after.number == len(stored) + 1 > max(told)
    finally:
        await store.aclose()
        await check.aclose()
        redis.stop()


async def test_redis_kill_with_appendfsync_everysec_keeps_all_but_the_last_second(
    tmp_path: Path,
) -> None:
    """kill -9 of redis-server with ``appendfsync everysec``: what it may lose.

    Redis answers a write before it reaches the disk and fsyncs the AOF once a second, so a
    crash may lose the acknowledged writes of about the last second; when the disk is slow
    Redis even delays its write to the file for up to two seconds.  (A kill of the process
    alone usually loses nothing, as written data sits in the kernel's cache, but a power cut or
    a kernel crash does.)  So a nurse may have been told a number that is gone after the
    restart, and that number is then given again to the next patient.  This test asserts only
    what ``everysec`` guarantees: every token acknowledged more than 2.5 s before the kill
    survives unchanged, and what survives is a consistent prefix of what was issued (gap-free
    numbers, no changed token).  The README's Deployment section gives the same advice: use
    ``appendfsync always`` to lose no acknowledged token.
    """
    safe_s = 2.5  # the two seconds Redis may hold back a write, and a margin
    writers = 4
    redis = redis_with_aof(tmp_path / "redis", "everysec")
    redis.start()
    store = open_store(redis.url)
    check = open_store(redis.url)
    try:
        room = waiting_room(store, tmp_path)
        await ServiceKeeper(room, [HUB]).tick()
        acked: list[Ack] = []
        issuing = asyncio.create_task(issue_until_redis_dies(room, writers, acked, 0.005))
        await eventually(lambda: len(acked) >= 200 or issuing.done(), "200 tokens issued")
        early = time.monotonic()
        # Keep issuing for more than safe_s, so that some tokens are old enough to be safe
        # and others are fresh at the moment of the kill.
        await eventually(
            lambda: time.monotonic() - early > safe_s + 0.5 or issuing.done(),
            "issuing for a while",
            timeout=30,
        )
        assert not issuing.done(), issuing.exception()
        killed_at = time.monotonic()
        redis.stop(kill=True)
        await asyncio.wait_for(issuing, 60)
        told = {a.token.number: a for a in acked}
        assert len(told) == len(acked)

        redis.start_on_same_port()
        stored = await stored_tokens(check)
        safe = [a for a in acked if a.at < killed_at - safe_s]
        assert len(safe) >= 200
        lost_safe = [
            a.token.number for a in safe if not same(a.token, stored.get(a.token.number, {}))
        ]
        assert not lost_safe, (
            f"tokens acknowledged over {safe_s}s before the kill lost: {lost_safe}"
        )
        # What survived is what was issued: an acknowledged number that survived belongs to the
        # same token; a lost one is above every survivor (the AOF is replayed in order).
        for n, record in stored.items():
            if n in told:
                assert same(told[n].token, record), n
        lost = sorted(n for n in told if n not in stored)
        assert all(n > len(stored) for n in lost)
        assert len(stored) - len([n for n in told if n in stored]) <= writers
        after = await waiting_room(check, tmp_path).issue(
            SPOKES[0], UserId("nurse.after"), patient("after")
        )
        assert after.number == len(stored) + 1
        print(f"everysec: {len(told)} tokens acknowledged, {len(lost)} of them lost at the kill")
    finally:
        await store.aclose()
        await check.aclose()
        redis.stop()


# ------------------------------------------------------- a connection lost before the reply


class FlakyLink:
    """A loopback TCP relay to Redis that can lose one reply.

    Armed, it forwards the next command containing ``marker`` to Redis, then swallows Redis's
    answer and drops the client's connection: Redis did the work, the client never heard.  A
    network fault does this, and so does a Redis crash between its write and its reply.
    """

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.port = 0
        self._marker: bytes | None = None
        self.swallowed = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply_to(self, marker: bytes) -> None:
        self._marker = marker

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        r_reader, r_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        self._writers |= {c_writer, r_writer}
        swallow = asyncio.Event()

        async def up() -> None:
            while data := await c_reader.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    swallow.set()
                r_writer.write(data)
                await r_writer.drain()

        async def down() -> None:
            while data := await r_reader.read(65536):
                if swallow.is_set():
                    self.swallowed += 1
                    return
                c_writer.write(data)
                await c_writer.drain()

        pumps = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (c_writer, r_writer):
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()
            self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def test_a_lost_reply_neither_duplicates_a_token_nor_loses_a_patient(
    redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis runs a script and its reply is lost on the way back (a network fault, or Redis
    dying right after its write).  The store client must not run the script a second time on
    its own: issuing would give one patient two tokens, and calling would take a second patient
    off the queue and leave the first "called" into a room whose id nobody was given (the room
    id is made before the script runs, so a second run re-uses it for another token).

    The action may fail (the client cannot know that it was done): then the token is issued,
    or called by this doctor and shown on his dashboard as his, exactly once.
    """
    link = FlakyLink(redis_server.port)
    await link.start()
    store = open_store(link.url)
    direct = open_store(redis_url)
    doctor = UserId("dr.sharma")
    p = prefix(HUB)
    try:
        room = waiting_room(store, tmp_path)
        await ServiceKeeper(room, [HUB]).tick()
        # Every script this test uses is loaded first, so the lost reply is the script's own.
        await room.issue(SPOKES[0], UserId("nurse.akhlaspur"), patient("warm-up"))
        await room.call_next(HUB, doctor, "node-a")
        rooms_before = len([k async for k in direct.scan_iter(match=p + "room:*")])

        link.lose_reply_to(b"EVALSHA")
        with contextlib.suppress(StoreUnavailable):
            await room.issue(SPOKES[0], UserId("nurse.akhlaspur"), patient("second"))
        assert link.swallowed == 1
        tokens = [await direct.hgetall(k) async for k in direct.scan_iter(match=p + "token:*")]
        seconds = [t for t in tokens if t["name"] == "Patient second"]
        assert len(seconds) == 1, f"one registration left {len(seconds)} tokens"
        second = TokenId(seconds[0]["id"])
        third = await room.issue(SPOKES[1], UserId("nurse.sihoriya"), patient("third"))

        link.lose_reply_to(b"EVALSHA")
        try:
            called: Token | None = await room.call_next(HUB, doctor, "node-a")
        except StoreUnavailable:
            called = None
        assert link.swallowed == 2
        # One call took one patient: the head, and nobody behind it.
        assert await direct.zrange(p + "queue", 0, -1) == [third.id]
        assert (await direct.hgetall(p + "token:" + third.id))["state"] == "waiting"
        rooms = [await direct.hgetall(k) async for k in direct.scan_iter(match=p + "room:*")]
        assert len(rooms) == rooms_before + 1
        head = await direct.hgetall(p + "token:" + second)
        assert head["state"] == "called"
        assert head["doctor"] == doctor
        assert [r["token"] for r in rooms if r["id"] == head["room"]] == [second]
        if called is not None:
            assert (called.id, called.room) == (second, head["room"])
    finally:
        await store.aclose()
        await direct.aclose()
        await link.close()


# ------------------------------------------------------- Redis down during a consultation


async def join_with_media(who: ProtocolClient, room_id: str) -> ClientPeer:
    await who.request("join", "joined", room_id=room_id)
    peer = ClientPeer()
    answer = await who.request("offer", "answer", sdp=await peer.offer())
    await peer.accept(answer["sdp"])
    return peer


async def replies_to_ping(who: ProtocolClient, timeout: float = 20.0) -> list[str]:
    """The types of every message that answers one ``ping`` (the protocol says: one ``pong``).

    A malformed message sent right behind it is answered after everything the ping caused,
    as the server handles a connection's messages in order, so no wait is needed.
    """
    rid = await who.send("ping")
    marker = f"after-ping-{rid}"
    await who.send_raw(json.dumps({"v": 1, "type": "ping", "id": marker, "not": "a field"}))
    got = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await asyncio.wait_for(who.inbox.get(), deadline - time.monotonic())
        if msg.get("re") == marker:
            assert msg["code"] == "bad_message", msg
            return got
        if msg.get("re") == rid:
            got.append(msg["type"] if msg["type"] != "error" else f"error {msg['code']}")


async def token_state(redis: RedisServer, token_id: str) -> str | None:
    """A token's state, read by a client of its own (none of the server's connections)."""
    store = open_store(redis.url)
    try:
        return await store.hget(prefix(HUB) + "token:" + token_id, "state")
    finally:
        await store.aclose()


async def error_for(who: ProtocolClient, type_: str, **fields: Any) -> dict[str, Any]:
    rid = await who.send(type_, **fields)
    return await who.expect("error", timeout=30, where=lambda m: m.get("re") == rid)


async def test_redis_outage_during_a_consultation(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Redis goes down in the middle of a consultation: the call goes on (media is relayed by
    this process alone), token actions fail with ``store_unavailable`` and a clear message,
    and once Redis is back (same port, its AOF kept) the live room can still be hung up, which
    completes its token, and token actions work again, for everyone at once.

    The server's store client keeps a pool of connections, one per command in flight; all of
    them died with Redis.  Users acting together after the restart need several of them, so
    each of those must reconnect rather than fail.
    """
    redis = redis_with_aof(tmp_path / "redis", "always")
    redis.start()
    peers: list[ClientPeer] = []
    people: list[ProtocolClient] = []
    client = None
    try:
        client = await aiohttp_client(create_app(make_settings(redis.url)))
        app = client.server.app
        nurse, other_nurse, doctor = (
            ProtocolClient(client, NURSE),
            ProtocolClient(client, OTHER_NURSE),
            ProtocolClient(client, DOCTOR),
        )
        people = [nurse, other_nurse, doctor]
        for who in people:
            await who.connect()
        # Everyone watches the queue at once, as the three pages do when they open.
        await asyncio.gather(*(who.request("watch_queue", "queue") for who in people))
        issued = await nurse.request("register_patient", "token_issued", patient=PATIENT)
        token_id = issued["token"]["id"]
        room_id = (await doctor.request("call_next", "room_opened"))["room_id"]
        spoke_peer = await join_with_media(nurse, room_id)
        peers.append(spoke_peer)
        hub_peer = await join_with_media(doctor, room_id)
        peers.append(hub_peer)
        await asyncio.gather(
            spoke_peer.wait_for(video=10, audio=20, timeout=30),
            hub_peer.wait_for(video=10, audio=20, timeout=30),
        )
        deadline = time.monotonic() + 20
        while await token_state(redis, token_id) != TokenState.IN_CONSULTATION:
            assert time.monotonic() < deadline, "the token never went in consultation"
            await asyncio.sleep(0.02)

        redis.stop(kill=True)
        counts = {p: (p.video_frames, p.audio_frames) for p in peers}
        # Token actions fail cleanly, one after the other, while the call goes on.
        for who, type_, fields in (
            (nurse, "register_patient", {"patient": PATIENT}),
            (nurse, "cancel_token", {"token_id": token_id}),
            (doctor, "call_next", {}),
            (doctor, "watch_queue", {}),
        ):
            err = await error_for(who, type_, **fields)
            assert err["code"] == "store_unavailable", (type_, err)
            assert "try again" in err["message"], err
        for p in peers:
            v0, a0 = counts[p]
            await eventually(
                lambda p=p, v0=v0, a0=a0: p.video_frames >= v0 + 15 and p.audio_frames >= a0 + 25,
                "media flowing while Redis is down",
            )
        assert redis.proc is None  # it was down all along
        live = app[ROOMS].get(room_id)  # type: ignore[arg-type]
        assert live is not None
        assert live.state == "active"
        # Each connection is alive and answers a ping with one pong, as the protocol says.
        for who in people:
            assert await replies_to_ping(who) == ["pong"], who.username

        redis.start_on_same_port()
        # The live room can be hung up: both sides are told, and the token completes.
        ended_d = await doctor.request("hangup", "room_ended")
        ended_n = await nurse.expect("room_ended")
        assert ended_d["reason"] == ended_n["reason"] == "hangup"
        assert ended_d["room_id"] == ended_n["room_id"] == room_id
        deadline = time.monotonic() + 20
        while await token_state(redis, token_id) != TokenState.COMPLETED:
            assert time.monotonic() < deadline, "the hung-up consultation's token never completed"
            await asyncio.sleep(0.02)
        await eventually(lambda: len(app[ROOMS]) == 0, "the room is cleaned up")

        # Token actions work again, for the three users acting at the same moment.
        replies = await asyncio.gather(
            *(
                who.request(type_, reply, **fields)
                for who, type_, reply, fields in (
                    (nurse, "register_patient", "token_issued", {"patient": PATIENT}),
                    (other_nurse, "register_patient", "token_issued", {"patient": PATIENT}),
                    (doctor, "watch_queue", "queue", {}),
                )
            ),
            return_exceptions=True,
        )
        failed = [r for r in replies if isinstance(r, BaseException)]
        assert not failed, f"after Redis came back: {failed}"
        numbers = sorted(r["token"]["number"] for r in replies[:2])  # type: ignore[index]
        assert numbers == [2, 3]  # the AOF kept token 1; its number is not reused
    finally:
        for p in peers:
            await p.close()
        for who in people:
            await who.close()
        if client is not None:
            if redis.proc is None:  # the test failed during the outage: let the app end cleanly
                redis.start_on_same_port()
            await client.close()
        redis.stop()


async def test_every_user_can_act_at_once_after_a_redis_restart(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Redis restarts (crash and restart, its AOF kept) while nurses and a doctor are signed in.
    As soon as Redis answers again, every user's next action works, also when they act at the
    same moment.

    The server's store client pools its connections and several were open before the restart;
    each of them must reconnect rather than fail the action that next uses it.
    """
    redis = redis_with_aof(tmp_path / "redis", "always")
    redis.start()
    people: list[ProtocolClient] = []
    try:
        client = await aiohttp_client(create_app(make_settings(redis.url)))
        nurse, other_nurse, doctor = (
            ProtocolClient(client, NURSE),
            ProtocolClient(client, OTHER_NURSE),
            ProtocolClient(client, DOCTOR),
        )
        people = [nurse, other_nurse, doctor]
        for who in people:
            await who.connect()

        async def all_at_once() -> list[dict[str, Any] | BaseException]:
            return await asyncio.gather(
                nurse.request("register_patient", "token_issued", patient=PATIENT),
                other_nurse.request("register_patient", "token_issued", patient=PATIENT),
                doctor.request("watch_queue", "queue"),
                return_exceptions=True,
            )

        before = await all_at_once()
        assert not [r for r in before if isinstance(r, BaseException)], before
        redis.stop(kill=True)
        redis.start_on_same_port()  # returns once Redis answers, its AOF loaded
        after = await all_at_once()
        failed = [str(r) for r in after if isinstance(r, BaseException)]
        assert not failed, f"actions failed with Redis up again: {failed}"
        numbers = sorted(r["token"]["number"] for r in after[:2])  # type: ignore[index]
        assert numbers == [3, 4]
    finally:
        for who in people:
            await who.close()
        redis.stop()
