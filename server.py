"""Setu's server: composes the packages into one aiohttp application, and the command line.

python server.py [flags]            serve (see --help; every flag is also SETU_<FLAG>)
python server.py check-config PATH  check a directory file; exits 1 on any problem
python server.py verify PATH        check the audit log and recordings; exits 1 on any tampering
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop
from aiohttp import web

import audit
import core.nodes
import core.setup
import core.workers
import media
import rooms
import signaling
import web as pages
from audit.verify import main as verify_main
from core.checks import check_directory
from core.directory import DirectoryError
from core.settings import Settings, SettingsError, load_settings
from rooms import Clock, utc_now
from web.metrics import node_load

logger = logging.getLogger("setu")


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    """The whole application for ``settings``; ``clock`` lets tests move time."""
    app = web.Application(client_max_size=256 * 1024)
    core.setup.setup(app, settings)
    media.install_passthrough()
    audit.setup(app, settings, clock)
    rooms.setup(app, settings, clock)
    # After the rooms, whose load it reports; before signalling, which places rooms on nodes.
    core.nodes.setup(app, settings, load=node_load)
    signaling.setup(app, settings)
    pages.setup(app, settings)
    return app


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def _announce(settings: Settings) -> None:
    host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
    url = f"{settings.scheme}://{host}:{settings.port}/"
    logger.info("Setu %s listening on %s:%d", settings.node_id, settings.host, settings.port)
    logger.info(
        "open %s and sign in; demo users: nurse.akhlaspur, nurse.sihoriya (spokes), "
        "dr.sharma, dr.khan (hub), auditor, admin",
        url,
    )


#: How often a draining process says how many live rooms it still holds.
_DRAIN_REPORT_S = 10.0
#: How often a draining process looks whether its last room has ended (a length check).
_DRAIN_POLL_S = 0.25
#: After the rooms have ended and the sockets closed, how long requests in flight may take.
_SHUTDOWN_TIMEOUT_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _StopRequests:
    """SIGTERM or SIGINT: the first one starts the drain, a second one ends it at once."""

    def __init__(self) -> None:
        self.drain = asyncio.Event()
        self.now = asyncio.Event()

    def signalled(self, signum: signal.Signals) -> None:
        if not self.drain.is_set():
            logger.info("%s: draining (send it again to end the live rooms at once)", signum.name)
            self.drain.set()
        elif not self.now.is_set():
            logger.warning("%s again: ending the live rooms now", signum.name)
            self.now.set()
        else:
            logger.info("%s: already shutting down", signum.name)


async def _drain(registry: rooms.RoomRegistry, timeout_s: float, now: asyncio.Event) -> None:
    """Take no new rooms, and wait until the live ones have ended, for ``timeout_s`` at most or
    until ``now`` is set.  Rooms still live then are ended by the shutdown that follows."""
    registry.drain()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    report_at = loop.time()
    # The registry has no "emptied" event; a length check four times a second costs nothing.
    while len(registry) > 0 and not now.is_set():
        left = deadline - loop.time()
        if left <= 0:
            logger.warning(
                "drain timeout (%g s): ending the %d live rooms", timeout_s, len(registry)
            )
            return
        if loop.time() >= report_at:
            logger.info(
                "draining: %d live rooms left, ended in %.0f s at most", len(registry), left
            )
            report_at += _DRAIN_REPORT_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(now.wait(), min(_DRAIN_POLL_S, left))
    if len(registry) == 0:
        logger.info("drained: no live room left")


async def _serve(app: web.Application, settings: Settings) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, drain, then shut down cleanly.

    While draining, the listening socket stays open: the live rooms' participants may still
    reconnect and load pages, and ``/healthz`` tells the load balancer to send nobody new.
    The shutdown runs ``on_shutdown`` (rooms end, sockets close) and then ``cleanup_ctx``.
    """
    loop = asyncio.get_running_loop()
    stop = _StopRequests()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.signalled, signum)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    try:
        try:
            await runner.setup()
            site = web.TCPSite(
                runner,
                settings.host,
                settings.port,
                ssl_context=_ssl_context(settings),
                reuse_port=settings.reuse_port,
            )
            await site.start()
            _settle_heap()
            _announce(settings)
            core.workers.tell_ready(settings)
            await stop.drain.wait()
            await _drain(app[rooms.ROOMS], settings.drain_timeout_s, stop.now)
        finally:
            await runner.cleanup()
        logger.info("Setu %s stopped", settings.node_id)
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)


#: Allocations between two young-generation collections.  Relaying allocates a few objects per
#: packet, and CPython's default (700) collects hundreds of times a second, each time also
#: walking whatever survived since; a larger batch costs the same per object, far fewer times.
_GC_YOUNG_THRESHOLD = 50_000


def _settle_heap() -> None:
    """Once started: move everything made so far (modules, codecs, the application) out of the
    collector's sight, so that its collections walk only what the rooms create.  A node's
    start-up heap is the same however many rooms it holds, and walking it again and again
    would make every node cost more than its rooms."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def check_config(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: server.py check-config PATH", file=sys.stderr)
        return 2
    problems = check_directory(Path(argv[0]))
    for problem in problems:
        print(f"{argv[0]}: {problem}")
    if problems:
        return 1
    print(f"{argv[0]}: ok")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check-config"]:
        return check_config(argv[1:])
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    try:
        settings = load_settings(argv, os.environ)
    except SettingsError as exc:
        print(f"server.py: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if settings.workers > 1:
        return core.workers.run_workers(settings, [sys.executable, __file__, *argv])
    try:
        app = create_app(settings)
    except DirectoryError as exc:
        logger.error("directory: %s", exc)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # uvloop's faster datagram and timer handling cuts the per-packet cost of relaying media.
    # The runner cancels whatever task is left and waits for the executor's threads at the end.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        loop_runner.run(_serve(app, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
