"""``--workers N``: a supervisor runs N server processes sharing one port and one store.

The setting is read like every other.  The supervisor's policy (pass signals on, stop all when
a worker cannot start, start a dead worker again, give up one that keeps dying) is checked with
small stand-in worker processes; the embedded store it serves to its workers runs what Setu
needs (scripts, streams, pub/sub, transactions); and ``python server.py --workers 2`` is run
for real on loopback, on a real Redis and on the embedded store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO

import aiohttp
import psutil
import pytest
from yarl import URL

from core.nodes import NodeLoad, NodeRegistry
from core.settings import MAX_WORKERS, SettingsError, load_settings, usable_cpus
from core.store import open_store
from core.workers import (
    READY_LINE,
    EmbeddedStoreServer,
    IllegalWorkerTransition,
    Supervisor,
    Worker,
    WorkerState,
    tell_ready,
    worker_node_id,
)
from tests.conftest import free_port
from tests.helpers import DEMO_PASSWORD, DOCTOR, NURSE, PATIENT, ProtocolClient, make_settings

ROOT = Path(__file__).resolve().parents[2]

NEW, STARTING, RUNNING, WAITING, STOPPED, FAILED = (
    WorkerState.NEW,
    WorkerState.STARTING,
    WorkerState.RUNNING,
    WorkerState.WAITING,
    WorkerState.STOPPED,
    WorkerState.FAILED,
)


async def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------- the setting


def test_one_process_unless_asked() -> None:
    s = load_settings([], {})
    assert s.workers == 1
    assert not s.reuse_port
    assert s.ready_fd is None


@pytest.mark.parametrize(
    ("argv", "env", "workers"),
    [
        (["--workers", "3"], {}, 3),
        ([], {"SETU_WORKERS": "2"}, 2),
        (["--workers", "4"], {"SETU_WORKERS": "2"}, 4),
        (["--workers", str(MAX_WORKERS)], {}, MAX_WORKERS),
        (["--workers", "auto"], {}, usable_cpus()),
        ([], {"SETU_WORKERS": "AUTO"}, usable_cpus()),
    ],
)
def test_workers_is_a_number_or_auto(argv: list[str], env: dict[str, str], workers: int) -> None:
    assert load_settings(argv, env).workers == workers


def test_auto_is_one_per_core_this_process_may_use() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert load_settings(["--workers", "auto"], {}).workers == expected


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--workers", "0"], {}),
        (["--workers", "-1"], {}),
        (["--workers", "abc"], {}),
        (["--workers", "1.5"], {}),
        (["--workers", ""], {}),
        (["--workers", str(MAX_WORKERS + 1)], {}),
        ([], {"SETU_WORKERS": "0"}),
        ([], {"SETU_WORKERS": "many"}),
    ],
)
def test_bad_workers_are_clear_errors(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=r"--workers \(SETU_WORKERS\) .*1 to .* or auto"):
        load_settings(argv, env)


def test_reuse_port_is_a_switch() -> None:
    assert load_settings(["--reuse-port", "on"], {}).reuse_port
    assert not load_settings([], {"SETU_REUSE_PORT": "off"}).reuse_port


def test_a_workers_own_flags_win_over_the_users() -> None:
    """The supervisor appends its flags to the user's; the worker reads them last."""
    supervisor = Supervisor(["python", "server.py", "--workers", "4", "--node-id", "web"], "web", 4)
    worker = supervisor.workers[1]
    argv = supervisor.argv(worker, ready_fd=7)
    s = load_settings(argv[2:], {"SETU_WORKERS": "4", "SETU_NODE_ID": "other"})
    assert (s.workers, s.reuse_port, s.node_id, s.ready_fd) == (1, True, "web-2", 7)
    assert s.redis_url is None
    shared = Supervisor(["server.py"], "web", 2, redis_url="unix:///tmp/x/store.sock?db=0")
    assert load_settings(shared.argv(shared.workers[0], 9)[1:], {}).redis_url == (
        "unix:///tmp/x/store.sock?db=0"
    )


def test_worker_node_ids_number_from_one() -> None:
    assert [w.node_id for w in Supervisor(["x"], "node-ab12", 3).workers] == [
        "node-ab12-1",
        "node-ab12-2",
        "node-ab12-3",
    ]
    assert worker_node_id("hub-a", 12) == "hub-a-12"


def test_tell_ready_writes_one_line_to_the_supervisors_pipe() -> None:
    read_fd, write_fd = os.pipe()
    try:
        tell_ready(make_settings(ready_fd=write_fd))
        tell_ready(make_settings())  # not a worker: nothing to tell
        os.close(write_fd)
        write_fd = -1
        assert os.read(read_fd, 100) == READY_LINE
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_a_worker_changes_state_only_along_its_lifecycle() -> None:
    worker = Worker(1, "n-1")
    worker.move(STARTING)
    worker.move(RUNNING)
    with pytest.raises(IllegalWorkerTransition, match="running -> starting"):
        worker.move(STARTING)
    worker.move(WAITING)
    worker.move(STOPPED)
    with pytest.raises(IllegalWorkerTransition):
        worker.move(WAITING)
    assert worker.history == [NEW, STARTING, RUNNING, WAITING, STOPPED]


# ------------------------------------------------------- the policy, with stand-in workers

#: A stand-in worker: ``python -c STAND_IN MODE DIR`` followed by the supervisor's flags.
#: ``serve`` says it is up and runs until SIGTERM (then exits 0); ``drain`` exits 0 at its
#: second SIGTERM only, as a worker with live rooms does; ``fail-first`` is worker 1 exiting 3
#: before it is up (the others serve); ``crash-once`` is up, then exits 5 on its first run only;
#: ``crash`` is up, then exits 5 every time.
STAND_IN = """
import os, signal, sys, time
args = sys.argv[1:]
mode, directory = args[0], args[1]
def flag(name):
    return args[len(args) - 1 - args[::-1].index(name) + 1]
node = flag("--node-id")
terms = []
def on_term(*_):
    terms.append(1)
    if mode != "drain" or len(terms) == 2:
        sys.exit(0)
    open(os.path.join(directory, node + ".draining"), "w").close()
signal.signal(signal.SIGTERM, on_term)
if mode == "fail-first" and node.endswith("-1"):
    sys.exit(3)
os.write(int(flag("--ready-fd")), b"ready\\n")
marker = os.path.join(directory, node)
if mode == "crash" or (mode == "crash-once" and not os.path.exists(marker)):
    open(marker, "w").close()
    time.sleep(0.1)
    sys.exit(5)
time.sleep(60)
sys.exit(9)
"""


def stand_in(mode: str, directory: Path) -> list[str]:
    return [sys.executable, "-c", STAND_IN, mode, str(directory)]


async def supervised(
    supervisor: Supervisor, body: Callable[[], Awaitable[None]], timeout: float = 30.0
) -> int:
    """Run ``supervisor`` while ``body`` acts on it; its exit status, within ``timeout``."""
    run = asyncio.get_running_loop().create_task(supervisor.run())
    try:
        await body()
        return await asyncio.wait_for(run, timeout)
    finally:
        if not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run


async def test_a_stop_signal_reaches_every_worker_and_the_run_ends_0(tmp_path: Path) -> None:
    supervisor = Supervisor(stand_in("serve", tmp_path), "node-t", 2)

    async def stop_once_up() -> None:
        await eventually(lambda: all(w.state is RUNNING for w in supervisor.workers), "up")
        pids = [w.pid for w in supervisor.workers]
        assert None not in pids
        assert len(set(pids)) == 2
        supervisor.signal(signal.SIGTERM)

    assert await supervised(supervisor, stop_once_up) == 0
    for worker in supervisor.workers:
        assert worker.history == [NEW, STARTING, RUNNING, STOPPED]
        assert worker.returncode == 0
        assert worker.starts == 1


async def test_a_second_signal_is_passed_on_too(tmp_path: Path) -> None:
    """The first SIGTERM makes a worker drain; the second ends its rooms and it exits."""
    supervisor = Supervisor(stand_in("drain", tmp_path), "node-t", 2)

    async def signal_twice() -> None:
        await eventually(lambda: all(w.state is RUNNING for w in supervisor.workers), "up")
        supervisor.signal(signal.SIGTERM)
        await eventually(
            lambda: all((tmp_path / f"{w.node_id}.draining").exists() for w in supervisor.workers),
            "draining",
        )
        await asyncio.sleep(0.2)
        assert all(w.state is RUNNING for w in supervisor.workers)  # still draining
        supervisor.signal(signal.SIGTERM)

    assert await supervised(supervisor, signal_twice) == 0
    for worker in supervisor.workers:
        assert worker.history == [NEW, STARTING, RUNNING, STOPPED]
        assert worker.returncode == 0


async def test_a_worker_that_exits_before_it_is_up_stops_them_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(stand_in("fail-first", tmp_path), "node-t", 2)

    async def nothing() -> None:
        return None

    with caplog.at_level(logging.ERROR, logger="core.workers"):
        status = await supervised(supervisor, nothing)
    assert status == 3  # the failed worker's own status
    first, second = supervisor.workers
    assert first.history == [NEW, STARTING, FAILED]
    # The second one may or may not have been up when the first one failed.
    assert second.history in ([NEW, STARTING, STOPPED], [NEW, STARTING, RUNNING, STOPPED])
    assert (first.starts, second.starts) == (1, 1)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "node-t-1 exited with status 3" in message
    assert "Setu cannot start" in message


async def test_a_worker_that_dies_is_started_again_after_a_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(stand_in("crash-once", tmp_path), "node-t", 1, backoff_s=0.2)
    worker = supervisor.workers[0]

    async def stop_once_back() -> None:
        await eventually(lambda: worker.starts == 2 and worker.state is RUNNING, "restarted")
        supervisor.signal(signal.SIGTERM)

    with caplog.at_level(logging.WARNING, logger="core.workers"):
        assert await supervised(supervisor, stop_once_back) == 0
    assert worker.history == [NEW, STARTING, RUNNING, WAITING, STARTING, RUNNING, STOPPED]
    assert any(
        "node-t-1" in r.getMessage() and "exited with status 5" in r.getMessage()
        for r in caplog.records
    )


async def test_a_worker_that_keeps_dying_is_given_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(
        stand_in("crash", tmp_path), "node-t", 1, backoff_s=0.05, max_quick_failures=3
    )

    async def nothing() -> None:
        return None

    with caplog.at_level(logging.ERROR, logger="core.workers"):
        status = await supervised(supervisor, nothing)
    assert status == 1
    worker = supervisor.workers[0]
    assert worker.history == [NEW, *[STARTING, RUNNING, WAITING] * 2, STARTING, RUNNING, FAILED]
    assert worker.starts == 3
    assert any("giving it up" in r.getMessage() for r in caplog.records)


async def test_a_stop_during_the_backoff_starts_nothing_more(tmp_path: Path) -> None:
    supervisor = Supervisor(stand_in("crash", tmp_path), "node-t", 1, backoff_s=30)
    worker = supervisor.workers[0]

    async def stop_while_waiting() -> None:
        await eventually(lambda: worker.state is WAITING, "waiting")
        supervisor.signal(signal.SIGTERM)

    assert await supervised(supervisor, stop_while_waiting, timeout=5) == 1  # its last exit: 5
    assert worker.history == [NEW, STARTING, RUNNING, WAITING, STOPPED]
    assert worker.starts == 1


# --------------------------------------------------------------- the embedded store, shared


async def test_the_embedded_store_serves_what_setu_needs_to_other_connections() -> None:
    """Lua scripts (EVALSHA, EVAL), streams with a blocking XREAD, pub/sub, MULTI/EXEC and the
    node registry, through the socket the workers use."""
    with EmbeddedStoreServer() as server:
        assert server.url is not None
        assert server.url.startswith("unix://")
        directory = Path(URL(server.url).path).parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        a, b = open_store(server.url), open_store(server.url)
        try:
            add = a.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            assert await add(keys=["n{t}"], args=[2]) == 2
            assert await add(keys=["n{t}"], args=[3], client=b) == 5  # one script cache
            assert await b.eval("return {KEYS[1], ARGV[1]}", 1, "k", "v") == ["k", "v"]

            reading = asyncio.get_running_loop().create_task(
                b.xread({"s{t}": "$"}, block=5000, count=10)
            )
            await asyncio.sleep(0.2)
            entry = await a.xadd("s{t}", {"kind": "queued"})
            assert await asyncio.wait_for(reading, 5) == [["s{t}", [(entry, {"kind": "queued"})]]]

            pubsub = b.pubsub()
            try:
                await pubsub.subscribe("route:n-2")
                await pubsub.psubscribe("route:*")
                for _ in range(2):
                    assert (await pubsub.get_message(timeout=2))["type"] in (  # type: ignore[index]
                        "subscribe",
                        "psubscribe",
                    )
                assert await a.publish("route:n-2", "hello") == 2
                got = [await pubsub.get_message(timeout=2) for _ in range(2)]
                assert sorted((m["type"], m["data"]) for m in got if m) == [
                    ("message", "hello"),
                    ("pmessage", "hello"),
                ]
            finally:
                await pubsub.aclose()

            async with a.pipeline(transaction=True) as pipe:
                pipe.hset("h{t}", mapping={"a": "1"})
                pipe.pexpire("h{t}", 10_000)
                pipe.zadd("z{t}", {"m": 1})
                assert await pipe.execute() == [1, True, 1]

            node = NodeRegistry(a, make_settings(node_id="n-1"), NodeLoad)
            await node.beat()
            reader = NodeRegistry(b, make_settings(node_id="n-2"), NodeLoad)
            assert [n.id for n in await reader.live_nodes()] == ["n-1"]
        finally:
            await a.aclose()
            await b.aclose()
        server.close()  # as the supervisor does, then once more on leaving the block
    assert server.url is None
    assert not directory.exists()


async def test_each_embedded_store_server_is_a_store_of_its_own() -> None:
    with EmbeddedStoreServer() as one, EmbeddedStoreServer() as two:
        assert one.url != two.url
        a, b = open_store(one.url), open_store(two.url)
        try:
            await a.set("k", "1")
            assert await b.get("k") is None
        finally:
            await a.aclose()
            await b.aclose()


# ------------------------------------------------------------------ python server.py --workers


class SupervisedSetu:
    """``python server.py --workers N`` on a loopback port; its log and its workers' go to a
    file.  Only processes it started are ever signalled, each by its PID."""

    def __init__(
        self,
        workdir: Path,
        workers: int = 2,
        redis_url: str | None = None,
        node_id: str = "node-w",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.count = workers
        self.redis_url = redis_url
        self.node_id = node_id
        self.port = free_port() if port is None else port
        self.extra_args = list(extra_args)
        self.node_ids = {worker_node_id(node_id, k) for k in range(1, workers + 1)}
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        #: Every worker process seen, to be sure none outlives the test.
        self._seen: dict[int, psutil.Process] = {}

    def make_url(self, path: str) -> URL:
        """As ``TestClient.make_url``, so that :class:`ProtocolClient` can talk to it."""
        return URL(f"http://127.0.0.1:{self.port}").join(URL(path))

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SETU_")}
        store = [] if self.redis_url is None else ["--redis-url", self.redis_url]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "server.py",
                "--workers",
                str(self.count),
                "--port",
                str(self.port),
                "--node-id",
                self.node_id,
                "--demo-password",
                DEMO_PASSWORD,
                "--data-dir",
                str(self.workdir / "data"),
                *store,
                *self.extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def workers(self) -> dict[str, psutil.Process]:
        """The supervisor's live worker processes, by node id."""
        assert self.proc is not None
        found: dict[str, psutil.Process] = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    argv = child.cmdline()
                    if "--node-id" in argv and child.status() != psutil.STATUS_ZOMBIE:
                        node = argv[len(argv) - 1 - argv[::-1].index("--node-id") + 1]
                        found[node] = child
                        self._seen[child.pid] = child
        return found

    def flag_of_workers(self, name: str) -> set[str]:
        """The values of the flag ``name`` (the last one) on the workers' command lines."""
        values = set()
        for child in self.workers().values():
            argv = child.cmdline()
            values.add(argv[len(argv) - 1 - argv[::-1].index(name) + 1])
        return values

    async def answering(self, connections: int) -> collections.Counter[str]:
        """The node ids that answer ``/healthz`` over ``connections`` new connections."""
        seen: collections.Counter[str] = collections.Counter()
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(connections):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.make_url("/healthz")) as resp:
                        seen[(await resp.json())["node"]] += 1
        return seen

    async def wait_up(self, timeout: float = 60.0) -> None:
        """Until every worker has answered ``/healthz``."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while True:
            assert self.proc.poll() is None, f"supervisor exited early:\n{self.log()}"
            seen |= set(await self.answering(4))
            if seen >= self.node_ids and set(self.workers()) == self.node_ids:
                return
            assert time.monotonic() < deadline, f"not up in {timeout}s ({seen}):\n{self.log()}"
            await asyncio.sleep(0.1)

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.workers()  # remember them, to check they are gone later
        self.proc.send_signal(signum)

    async def exit_code(self, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            assert time.monotonic() < deadline, f"still running after {timeout}s:\n{self.log()}"
            await asyncio.sleep(0.05)
        return code

    def leftover_workers(self) -> list[psutil.Process]:
        left = []
        for process in self._seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(process)
        return left

    def started_pids(self) -> list[int]:
        """The PIDs of the workers started so far, as the supervisor logged them."""
        return [int(pid) for pid in re.findall(r"started \(pid (\d+)", self.log())]

    def stop(self) -> None:
        """Stop everything this test started, whatever state it is in."""
        if self.proc is not None:
            self.workers()
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        for process in self._seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()  # psutil checks it is still the process it saw
        psutil.wait_procs(list(self._seen.values()), timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


async def test_two_workers_share_the_port_and_each_is_a_node(
    redis_url: str, tmp_path: Path
) -> None:
    setu = SupervisedSetu(tmp_path, workers=2, redis_url=redis_url)
    setu.start()
    try:
        await setu.wait_up()
        assert len({p.pid for p in setu.workers().values()}) == 2
        store = open_store(redis_url)
        try:
            reader = NodeRegistry(store, make_settings(redis_url, node_id="reader"), NodeLoad)
            nodes = await reader.live_nodes()
        finally:
            await store.aclose()
        assert {n.id for n in nodes} == setu.node_ids
        assert {(n.host, n.port) for n in nodes} == {("127.0.0.1", setu.port)}
        # SO_REUSEPORT spreads new connections by a hash of their addresses: over 60 of them
        # both workers answer (the chance that one never does is 2**-59).
        seen = await setu.answering(60)
        assert set(seen) == setu.node_ids, seen
        assert sum(seen.values()) == 60
    finally:
        setu.stop()


async def test_workers_share_the_embedded_store(tmp_path: Path) -> None:
    """A patient registered through one worker is called by a doctor signed in on the other."""
    setu = SupervisedSetu(tmp_path, workers=2)
    setu.start()
    clients: list[ProtocolClient] = []
    try:
        await setu.wait_up()
        (url,) = setu.flag_of_workers("--redis-url")
        assert url.startswith("unix://")
        store = open_store(url)
        try:
            reader = NodeRegistry(store, make_settings(node_id="reader"), NodeLoad)
            assert {n.id for n in await reader.live_nodes()} == setu.node_ids
        finally:
            await store.aclose()

        nurse = ProtocolClient(setu, NURSE)  # type: ignore[arg-type]
        clients.append(nurse)
        nurse_node = (await nurse.connect())["node"]
        await nurse.request("register_patient", "token_issued", patient=PATIENT)
        doctor = None
        for _ in range(40):
            candidate = ProtocolClient(setu, DOCTOR)  # type: ignore[arg-type]
            clients.append(candidate)
            if (await candidate.connect())["node"] != nurse_node:
                doctor = candidate
                break
            await candidate.close()
            clients.remove(candidate)
        assert doctor is not None, "every connection of the doctor went to the nurse's worker"
        opened = await doctor.request("call_next", "room_opened")
        assert opened["room_id"]
    finally:
        for client in clients:
            await client.close()
        setu.stop()


async def test_sigterm_drains_every_worker_and_exits_0(redis_url: str, tmp_path: Path) -> None:
    setu = SupervisedSetu(tmp_path, workers=2, redis_url=redis_url)
    setu.start()
    try:
        await setu.wait_up()
        setu.signal(signal.SIGTERM)
        assert await setu.exit_code(timeout=30) == 0
        assert setu.leftover_workers() == []
        store = open_store(redis_url)
        try:
            reader = NodeRegistry(store, make_settings(redis_url, node_id="reader"), NodeLoad)
            assert await reader.live_nodes() == []  # each worker left the registry
        finally:
            await store.aclose()
        log = setu.log()
        for node in setu.node_ids:
            assert f"Setu {node} stopped" in log
        assert "Setu supervisor stopped (status 0)" in log
    finally:
        setu.stop()


async def test_a_killed_worker_is_started_again_under_its_node_id(tmp_path: Path) -> None:
    setu = SupervisedSetu(tmp_path, workers=2)
    setu.start()
    try:
        await setu.wait_up()
        before = setu.workers()
        victim = before["node-w-1"]
        victim.send_signal(signal.SIGKILL)

        def replaced() -> bool:
            now = setu.workers().get("node-w-1")
            return now is not None and now.pid != victim.pid

        await eventually(replaced, "a new node-w-1 process", timeout=30)
        assert setu.workers()["node-w-2"].pid == before["node-w-2"].pid
        # The killed process is gone, so an answer from node-w-1 comes from the new one.
        deadline = time.monotonic() + 30
        while "node-w-1" not in await setu.answering(10):
            assert time.monotonic() < deadline, f"node-w-1 not back:\n{setu.log()}"
            await asyncio.sleep(0.1)
        assert "worker node-w-1" in setu.log()
        assert "exited with signal SIGKILL" in setu.log()
        setu.signal(signal.SIGTERM)
        assert await setu.exit_code(timeout=30) == 0
    finally:
        setu.stop()


async def test_a_port_in_use_stops_the_supervisor_with_an_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        setu = SupervisedSetu(tmp_path, workers=2, port=port)
        setu.start()
        try:
            assert await setu.exit_code(timeout=60) != 0
            log = setu.log()
            assert "address already in use" in log
            assert "Setu cannot start" in log
            pids = setu.started_pids()
            assert len(pids) == 2
            assert not any(psutil.pid_exists(pid) for pid in pids)
        finally:
            setu.stop()
