"""Shared fixtures: a real redis-server on a free port, the app, signed-in clients."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
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


# ------------------------------------------------------------- Sentinel and Cluster topologies


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


class _Processes:
    """Processes of our own (each redis-server or sentinel), stopped together, reliably."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.clear()


def _redis_exe() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed; `make test` installs it")
    return exe


def _ping(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=1) as client:
        return bool(client.ping())


class RedisSentinelSet:
    """A master, one replica and three sentinels (quorum 2) watching them as service
    ``setu``: all processes of our own, on loopback, that fail over within seconds."""

    SERVICE = "setu"
    SENTINELS = 3
    QUORUM = 2
    DOWN_AFTER_MS = 1000

    def __init__(self, directory: Path) -> None:
        self.exe = _redis_exe()
        self.directory = directory
        self.data_ports = [free_port(), free_port()]  # the first starts as master
        self.sentinel_ports = [free_port() for _ in range(self.SENTINELS)]
        self.sentinel_ids = [secrets.token_hex(20) for _ in range(self.SENTINELS)]
        self._processes = _Processes()
        self._data: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> None:
        master, replica = self.data_ports
        try:
            # A replica's first sync would otherwise wait 5 s for more replicas to join it.
            self._start_data(master, ["--repl-diskless-sync-delay", "0"])
            self._start_data(replica, ["--replicaof", "127.0.0.1", str(master)])
            _wait_until(
                lambda: self._replication(replica).get("master_link_status") == "up",
                "the replica follows the master",
            )
            for i in range(self.SENTINELS):
                self._start_sentinel(i, master, replica)
            _wait_until(self._sentinels_agree, "the sentinels know each other and the replica")
        except BaseException:
            self.stop()
            raise

    def _start_data(self, port: int, extra: list[str]) -> None:
        directory = self.directory / f"redis-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        self._data[port] = self._processes.spawn(
            redis_server_argv(self.exe, port, directory, "yes", "always") + extra
        )
        _wait_until(lambda: _ping(port), f"redis-server on port {port}")

    def _start_sentinel(self, i: int, master: int, replica: int) -> None:
        port = self.sentinel_ports[i]
        directory = self.directory / f"sentinel-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        # Each sentinel is told its peers and the replica, which it would otherwise discover
        # over several seconds (hello messages every 2 s, INFO every 10 s).
        peers = [
            f"sentinel known-sentinel {self.SERVICE} 127.0.0.1 {other} {self.sentinel_ids[j]}\n"
            for j, other in enumerate(self.sentinel_ports)
            if j != i
        ]
        conf = directory / "sentinel.conf"  # sentinels rewrite their file: one each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\nloglevel warning\n"
            f"sentinel myid {self.sentinel_ids[i]}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {master} {self.QUORUM}\n"
            f"sentinel down-after-milliseconds {self.SERVICE} {self.DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {self.SERVICE} 5000\n"
            f"sentinel known-replica {self.SERVICE} 127.0.0.1 {replica}\n" + "".join(peers)
        )
        self._processes.spawn([self.exe, str(conf), "--sentinel"])
        _wait_until(lambda: _ping(port), f"sentinel on port {port}")

    def _replication(self, port: int) -> dict[str, object]:
        with redis.Redis(port=port, socket_timeout=1) as client:
            return dict(client.info("replication"))

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel:
                state = sentinel.sentinel_master(self.SERVICE)
                if int(state["num-other-sentinels"]) < self.SENTINELS - 1:
                    return False
                if int(state["num-slaves"]) < 1 or not state["is_master"] or state["is_sdown"]:
                    return False
        return True

    def master_port(self) -> int:
        """The master's port, as the sentinels have it now."""
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=1) as sentinel:
            _host, port = sentinel.sentinel_get_master_addr_by_name(self.SERVICE)
            return int(port)

    def kill_master(self) -> int:
        """Kill the master (SIGKILL, as a crash); returns its port."""
        port = self.master_port()
        proc = self._data[port]
        proc.kill()
        proc.wait(10)
        return port

    def flush(self) -> None:
        with redis.Redis(port=self.master_port()) as client:
            client.flushall()
            client.execute_command("WAIT", 1, 5000)

    def stop(self) -> None:
        self._processes.stop_all()


class RedisClusterNodes:
    """A Redis Cluster of three masters (no replicas) of our own, on loopback."""

    MASTERS = 3

    def __init__(self, directory: Path) -> None:
        self.exe = _redis_exe()
        self.directory = directory
        self.ports = [free_port() for _ in range(self.MASTERS)]
        # Each node's bus port is given, not port + 10000, which may be taken or out of range.
        self.bus_ports = [free_port() for _ in range(self.MASTERS)]
        self._processes = _Processes()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        try:
            for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
                directory = self.directory / f"node-{port}"
                directory.mkdir(parents=True, exist_ok=True)
                extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                extra += ["--cluster-port", str(bus_port), "--cluster-node-timeout", "3000"]
                self._processes.spawn(
                    redis_server_argv(self.exe, port, directory, "yes", "everysec") + extra
                )
            for port in self.ports:
                _wait_until(lambda port=port: _ping(port), f"cluster node on port {port}")
            self._create()
            _wait_until(self._cluster_ok, "every node sees the whole cluster")
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is not None:
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [cli, "--cluster", "create", *nodes, "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            return
        # Without redis-cli: split the 16384 slots, then introduce the nodes to each other.
        share = 16384 // self.MASTERS
        for i, port in enumerate(self.ports):
            last = 16383 if i == self.MASTERS - 1 else (i + 1) * share - 1
            with redis.Redis(port=port) as node:
                node.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
                node.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        with redis.Redis(port=self.ports[0]) as first:
            for port, bus_port in zip(self.ports[1:], self.bus_ports[1:], strict=True):
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus_port)

    def _cluster_ok(self) -> bool:
        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as node:
                info = node.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info or "cluster_known_nodes:3" not in info:
                    return False
        return True

    def flush(self) -> None:
        for port in self.ports:
            with redis.Redis(port=port) as node:
                node.flushall()

    def stop(self) -> None:
        self._processes.stop_all()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelSet]:
    """A Sentinel-watched master and replica shared by the tests that leave it as it is."""
    servers = RedisSentinelSet(tmp_path_factory.mktemp("sentinel"))
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def own_redis_sentinel(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    """A Sentinel set of the test's own, for tests that kill or fail over its master."""
    servers = RedisSentinelSet(tmp_path / "sentinel")
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A three-master Redis Cluster shared by the tests; flush it before use."""
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster"))
    nodes.start()
    yield nodes
    nodes.stop()
