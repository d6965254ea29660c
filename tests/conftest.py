"""Shared fixtures: a real redis-server on a free port, the app, signed-in clients."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from bench.common import redis_server_argv
from core.store import Redis, open_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A real redis-server process of our own, on loopback."""

    def __init__(self, directory: Path, appendonly: str = "no", appendfsync: str = "everysec"):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it")
        self.exe = exe
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            redis_server_argv(
                self.exe, self.port, self.directory, self.appendonly, self.appendfsync
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def start_on_same_port(self) -> None:
        """Start again after :meth:`stop` (a Redis restart as clients see it)."""
        self.start()

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "redis"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Each store test runs against the embedded store and against a real Redis."""
    if request.param == "embedded":
        yield None
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        yield server.url


@pytest.fixture
async def store(store_url: str | None) -> AsyncIterator[Redis]:
    """A client of the store under test (embedded, then real Redis)."""
    client = open_store(store_url)
    yield client
    await client.aclose()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fails a test that leaves a task of ours running after its app shut down."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    left = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    names = [t.get_name() for t in left]
    assert not left, f"tasks left running: {names}"
