"""Several server processes on one machine: ``--workers N``.

The process the user starts becomes a *supervisor* that serves nothing itself.  It starts N
workers, each an ordinary single-node ``server.py`` with the same flags plus ``--workers 1
--reuse-port on --node-id <node-id>-<k>``: all of them listen on the same host and port with
``SO_REUSEPORT``, and the kernel spreads new connections among them.  Each worker registers as a
node of its own (:mod:`core.nodes`).

Without ``--redis-url`` the workers must still share one store: the supervisor serves the
embedded store (:class:`EmbeddedStoreServer`) on a Unix socket in a directory only its user may
enter, and gives each worker ``--redis-url unix://...`` for it.

A worker says it is up by writing a line to a pipe the supervisor gave it (``--ready-fd``,
:func:`tell_ready`), once it listens.  The supervisor

- passes every SIGTERM and SIGINT on to the workers, so that each drains as a lone server does
  (a second signal ends their live rooms at once); a SIGHUP is passed on too.  Workers run in a
  process group of their own, so a Ctrl-C in a terminal reaches them once, through it;
- stops every worker and exits non-zero when a worker exits before it was first up (a port in
  use, a bad directory file): that error would only repeat;
- starts a worker again when it exits later while nothing asked it to, after a backoff that
  doubles with each quick failure, and gives that worker up after :data:`MAX_QUICK_FAILURES`
  quick failures in a row;
- exits 0 once every worker has exited cleanly after a stop signal.

If the supervisor itself is killed with SIGKILL its workers keep serving until they are
stopped: under systemd, the unit's control group takes them down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import fakeredis

from .settings import Settings
from .tasks import TaskOwner

logger = logging.getLogger(__name__)

#: A worker that dies sooner than this after it was started counts as a quick failure.
STABLE_S = 60.0
#: The first wait before a restart; it doubles with each quick failure in a row, up to the max.
BACKOFF_S = 1.0
BACKOFF_MAX_S = 30.0
#: Quick failures in a row after which a worker is given up.
MAX_QUICK_FAILURES = 5
#: Signals passed on to the workers.  SIGTERM and SIGINT drain (a second one ends the rooms at
#: once); SIGHUP ends a worker as it ends a lone server.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Exit statuses of a worker that ended cleanly after a stop signal: 0 once drained, or killed
#: by the signal itself before it could set up its handlers.
_CLEAN_EXITS = frozenset({0, *(-s for s in FORWARDED_SIGNALS)})
#: What a worker writes to its ``--ready-fd`` once it listens.
READY_LINE = b"ready\n"


def worker_node_id(node_id: str, index: int) -> str:
    """The node id of worker ``index`` (1-based) of a supervisor started as ``node_id``."""
    return f"{node_id}-{index}"


def tell_ready(settings: Settings) -> None:
    """Tell the supervisor, if this process is a worker, that it listens now.

    The descriptor stays open (it closes when the process exits): closing a number twice could
    close whatever reused it in between.
    """
    if settings.ready_fd is None:
        return
    try:
        os.write(settings.ready_fd, READY_LINE)
    except OSError as exc:
        logger.warning("node %s: could not tell the supervisor it is up: %s", settings.node_id, exc)


class WorkerState(enum.Enum):
    NEW = "new"
    #: Its process runs but has not said it is up yet.
    STARTING = "starting"
    RUNNING = "running"
    #: Its process exited unasked; a new one starts after a backoff.
    WAITING = "waiting"
    #: Exited after a stop signal, or stopped before a new process was started.
    STOPPED = "stopped"
    #: Would not start, or kept dying: given up.
    FAILED = "failed"


_ALLOWED = {
    WorkerState.NEW: {WorkerState.STARTING, WorkerState.STOPPED, WorkerState.FAILED},
    WorkerState.STARTING: {
        WorkerState.RUNNING,
        WorkerState.WAITING,
        WorkerState.STOPPED,
        WorkerState.FAILED,
    },
    WorkerState.RUNNING: {WorkerState.WAITING, WorkerState.STOPPED, WorkerState.FAILED},
    WorkerState.WAITING: {WorkerState.STARTING, WorkerState.STOPPED, WorkerState.FAILED},
    WorkerState.STOPPED: set(),
    WorkerState.FAILED: set(),
}


class IllegalWorkerTransition(Exception):
    """A worker was asked to move between two states that do not follow each other."""

    def __init__(self, node_id: str, old: WorkerState, new: WorkerState) -> None:
        super().__init__(f"worker {node_id}: {old.value} -> {new.value} is not allowed")
        self.node_id = node_id
        self.old = old
        self.new = new


class Worker:
    """One worker slot: its node id, its current process (a new one after each restart) and
    the states it went through."""

    def __init__(self, index: int, node_id: str) -> None:
        self.index = index
        self.node_id = node_id
        self.state = WorkerState.NEW
        self.history: list[WorkerState] = [self.state]
        self.process: asyncio.subprocess.Process | None = None
        #: Processes started for this slot so far.
        self.starts = 0
        self.quick_failures = 0
        #: The exit status of its last process (negative: killed by that signal).
        self.returncode: int | None = None

    def move(self, new: WorkerState) -> None:
        """The one place a worker changes state; :class:`IllegalWorkerTransition` otherwise."""
        old = self.state
        if new not in _ALLOWED[old]:
            raise IllegalWorkerTransition(self.node_id, old, new)
        self.state = new
        self.history.append(new)
        logger.debug("worker %s: %s -> %s", self.node_id, old.value, new.value)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class Supervisor:
    """Runs one process per worker: ``command`` followed by the worker's own flags.

    :meth:`run` returns the supervisor's exit status once every worker has stopped or failed;
    :meth:`signal` passes a stop signal on (``run_workers`` calls it from signal handlers).
    """

    def __init__(
        self,
        command: Sequence[str],
        node_id: str,
        workers: int,
        *,
        redis_url: str | None = None,
        stable_s: float = STABLE_S,
        backoff_s: float = BACKOFF_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        max_quick_failures: int = MAX_QUICK_FAILURES,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be 1 or more, not {workers}")
        self._command = tuple(command)
        self._redis_url = redis_url
        self._stable_s = stable_s
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._max_quick_failures = max_quick_failures
        self.workers = tuple(Worker(k, worker_node_id(node_id, k)) for k in range(1, workers + 1))
        #: Signals passed on so far, replayed to a process that was being started meanwhile.
        self._forwarded: list[signal.Signals] = []
        self._stopping = asyncio.Event()
        #: The worker that exited before it was first up, which stops the whole supervisor.
        self._failed_start: Worker | None = None
        self._tasks = TaskOwner("supervisor")

    def argv(self, worker: Worker, ready_fd: int) -> list[str]:
        """The command line of ``worker``'s process: the flags it adds win over the user's."""
        own = ["--workers", "1", "--reuse-port", "on", "--node-id", worker.node_id]
        own += ["--ready-fd", str(ready_fd)]
        if self._redis_url is not None:
            own += ["--redis-url", self._redis_url]
        return [*self._command, *own]

    async def run(self) -> int:
        """Start every worker and supervise them until all have stopped or failed."""
        try:
            tasks = [
                task
                for worker in self.workers
                if (task := self._tasks.spawn(self._keep(worker), name=worker.node_id))
            ]
            # Each task ends exactly when its worker has stopped or failed.
            await asyncio.wait(tasks)
        finally:
            # Workers are still alive here only if the run itself was cancelled or broke.
            self._kill_all()
            await self._tasks.close()
        return self._exit_status()

    def signal(self, signum: signal.Signals) -> None:
        """Stop: restart nothing more, and pass ``signum`` on to every worker's process."""
        if not self._stopping.is_set():
            logger.info("%s: stopping the %d workers", signum.name, len(self.workers))
            self._stopping.set()
        else:
            logger.info("%s: passing it on to the workers", signum.name)
        self._forwarded.append(signum)
        for worker in self.workers:
            _send(worker.process, signum)

    async def _keep(self, worker: Worker) -> None:
        """Run ``worker``'s processes, one after another, until it stops or fails."""
        while not self._stopping.is_set():
            read_fd, write_fd = os.pipe()
            try:
                process = await self._start(worker, write_fd)
            except BaseException as exc:
                os.close(read_fd)
                if not isinstance(exc, OSError):
                    raise
                self._cannot_start(worker, exc)
                return
            finally:
                # The worker has its own copy: end of file on read_fd means it has exited.
                os.close(write_fd)
            started = time.monotonic()
            worker.move(WorkerState.STARTING)
            if await _read_ready(read_fd):
                worker.move(WorkerState.RUNNING)
                logger.info("worker %s (pid %d) is up", worker.node_id, process.pid)
            code = await process.wait()
            ran_s = time.monotonic() - started
            worker.returncode = code
            if self._stopping.is_set():
                if code not in _CLEAN_EXITS:
                    logger.warning(
                        "worker %s (pid %d) exited with %s while stopping",
                        worker.node_id,
                        process.pid,
                        _status(code),
                    )
                break
            if worker.state is WorkerState.STARTING and worker.starts == 1:
                self._first_start_failed(worker, code, ran_s)
                return
            delay = self._after_exit(worker, code, ran_s)
            if delay is None:
                return
            worker.move(WorkerState.WAITING)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        # Stopped while waiting to start again, its last exit (already logged) still counts
        # against the supervisor's exit status.
        worker.move(WorkerState.STOPPED)

    async def _start(self, worker: Worker, ready_fd: int) -> asyncio.subprocess.Process:
        worker.starts += 1
        # A process group of its own: a Ctrl-C in the terminal reaches the worker once, passed
        # on by the supervisor, not twice (which would end its live rooms at once).
        process = await asyncio.create_subprocess_exec(
            *self.argv(worker, ready_fd),
            stdin=asyncio.subprocess.DEVNULL,
            process_group=0,
            pass_fds=(ready_fd,),
        )
        worker.process = process
        for signum in self._forwarded:
            # Signals that came while the process was being started.
            _send(process, signum)
        logger.info(
            "worker %s started (pid %d%s)",
            worker.node_id,
            process.pid,
            "" if worker.starts == 1 else f", start {worker.starts}",
        )
        return process

    def _cannot_start(self, worker: Worker, exc: OSError) -> None:
        logger.error("worker %s: cannot start a process: %s", worker.node_id, exc)
        worker.move(WorkerState.FAILED)
        if worker.starts == 1:
            self._stop_after_failed_start(worker)

    def _first_start_failed(self, worker: Worker, code: int, ran_s: float) -> None:
        logger.error(
            "worker %s exited with %s %.1f s after it started, before it was up: Setu cannot "
            "start (the worker's own error is above); stopping the other workers",
            worker.node_id,
            _status(code),
            ran_s,
        )
        worker.move(WorkerState.FAILED)
        self._stop_after_failed_start(worker)

    def _stop_after_failed_start(self, worker: Worker) -> None:
        if self._failed_start is None:
            self._failed_start = worker
        if not self._stopping.is_set():
            self.signal(signal.SIGTERM)

    def _after_exit(self, worker: Worker, code: int, ran_s: float) -> float | None:
        """How long to wait before starting ``worker`` again; ``None``: it is given up."""
        if ran_s < self._stable_s:
            worker.quick_failures += 1
        else:
            worker.quick_failures = 0
        if worker.quick_failures >= self._max_quick_failures:
            left = sum(w.state is not WorkerState.FAILED for w in self.workers) - 1
            logger.error(
                "worker %s exited with %s, %d times in a row soon after its start: giving it "
                "up (%d of %d workers left)",
                worker.node_id,
                _status(code),
                worker.quick_failures,
                left,
                len(self.workers),
            )
            worker.move(WorkerState.FAILED)
            return None
        delay = min(self._backoff_max_s, self._backoff_s * (1 << max(0, worker.quick_failures - 1)))
        log = logger.info if code == 0 else logger.warning
        log(
            "worker %s (pid %s) exited with %s after %.0f s; starting it again in %.0f s",
            worker.node_id,
            worker.pid,
            _status(code),
            ran_s,
            delay,
        )
        return delay

    def _kill_all(self) -> None:
        for worker in self.workers:
            _send(worker.process, signal.SIGKILL)

    def _exit_status(self) -> int:
        if self._failed_start is not None:
            code = self._failed_start.returncode
            return code if code is not None and code > 0 else 1
        if any(w.state is WorkerState.FAILED for w in self.workers):
            return 1
        if any(w.returncode not in _CLEAN_EXITS for w in self.workers):
            return 1
        return 0


async def _read_ready(read_fd: int) -> bool:
    """Whether the worker writing to the pipe ``read_fd`` said it is up before it closed the
    pipe (by exiting).  Closes ``read_fd``."""
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    reader = asyncio.StreamReader()
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        line = await reader.readline()
    finally:
        transport.close()
    return line == READY_LINE


def _send(process: asyncio.subprocess.Process | None, signum: signal.Signals) -> None:
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)


def _status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"status {code}"


# ------------------------------------------------------------------------ the embedded store


class _UnixFakeServer(fakeredis.TcpFakeServer):
    """fakeredis's threaded server of the Redis protocol, on a Unix socket.

    Its handler keys its connections by client address, which is empty for every client of a
    Unix socket: each one gets a number of its own instead.
    """

    address_family = socket.AF_UNIX

    def __init__(self, path: str) -> None:
        self._client_numbers = itertools.count(1)
        # A Unix socket's address is its path, where the base class expects (host, port).
        super().__init__(path)  # type: ignore[arg-type]

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        connection, _ = self.socket.accept()
        return connection, ("unix", next(self._client_numbers))


class EmbeddedStoreServer:
    """The embedded store (fakeredis, with its Lua interpreter) served to other processes of
    this user, on a Unix socket in a private temporary directory.

    Connections are served by threads of this process, one each.  :meth:`start` returns the
    ``unix://`` URL to give as ``--redis-url``; :meth:`close` (idempotent) stops serving,
    waits for the threads and removes the directory.  Usable as a context manager.
    """

    def __init__(self) -> None:
        self._directory: Path | None = None
        self._server: _UnixFakeServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self) -> str:
        if self.url is not None:
            return self.url
        # mkdtemp makes the directory readable and enterable by this user only: no other user
        # of the machine can connect to the socket, which has no password.
        self._directory = Path(tempfile.mkdtemp(prefix="setu-store-"))
        path = self._directory / "store.sock"
        try:
            self._server = _UnixFakeServer(str(path))
        except OSError:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedded store", daemon=True
        )
        self._thread.start()
        self.url = f"unix://{path}"
        return self.url

    def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            # shutdown() returns once serve_forever has; server_close() then waits for the
            # connection threads, which see the shutdown within a poll interval (10 ms) or
            # when their blocking command (XREAD BLOCK, say) returns.
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self.url = None

    def __enter__(self) -> EmbeddedStoreServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ------------------------------------------------------------------------------ entry point


def run_workers(settings: Settings, command: Sequence[str]) -> int:
    """Supervise ``settings.workers`` processes of ``command`` (``python server.py`` and the
    user's flags) until they have stopped; returns the exit status for the supervisor."""
    if not hasattr(socket, "SO_REUSEPORT"):
        logger.error("--workers needs SO_REUSEPORT, which this system lacks: use --workers 1")
        return 2
    with contextlib.ExitStack() as stack:
        redis_url = None
        if settings.embedded_store:
            try:
                redis_url = stack.enter_context(EmbeddedStoreServer()).url
            except OSError as exc:
                logger.error("cannot serve the embedded store to the workers: %s", exc)
                return 1
            logger.warning(
                "using the embedded store, shared by the %d workers through this process: "
                "queues, tokens and rooms are lost when it stops (give --redis-url for a real "
                "Redis)",
                settings.workers,
            )
        logger.info(
            "Setu supervisor: %d workers on %s:%d, nodes %s to %s",
            settings.workers,
            settings.host,
            settings.port,
            worker_node_id(settings.node_id, 1),
            worker_node_id(settings.node_id, settings.workers),
        )
        with asyncio.Runner() as runner:
            status = runner.run(_supervise(settings, command, redis_url))
    return status


async def _supervise(settings: Settings, command: Sequence[str], redis_url: str | None) -> int:
    supervisor = Supervisor(command, settings.node_id, settings.workers, redis_url=redis_url)
    loop = asyncio.get_running_loop()
    for signum in FORWARDED_SIGNALS:
        loop.add_signal_handler(signum, supervisor.signal, signum)
    try:
        status = await supervisor.run()
    finally:
        for signum in FORWARDED_SIGNALS:
            loop.remove_signal_handler(signum)
    logger.info("Setu supervisor stopped (status %d)", status)
    return status
