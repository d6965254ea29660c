"""Setu's server: composes the packages into one aiohttp application, and the command line.

python server.py [flags]            serve (see --help; every flag is also SETU_<FLAG>)
python server.py check-config PATH  check a directory file; exits 1 on any problem
python server.py verify PATH        check the audit log and recordings; exits 1 on any tampering
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop
from aiohttp import web

import audit
import core.setup
import media
import rooms
import signaling
import web as pages
from audit.verify import main as verify_main
from core.checks import check_directory
from core.directory import DirectoryError
from core.settings import Settings, SettingsError, load_settings
from rooms import Clock, utc_now

logger = logging.getLogger("setu")


def create_app(settings: Settings, *, clock: Clock = utc_now) -> web.Application:
    """The whole application for ``settings``; ``clock`` lets tests move time."""
    app = web.Application(client_max_size=256 * 1024)
    core.setup.setup(app, settings)
    media.install_passthrough()
    audit.setup(app, settings, clock)
    rooms.setup(app, settings, clock)
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
    try:
        app = create_app(settings)
    except DirectoryError as exc:
        logger.error("directory: %s", exc)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # uvloop's faster datagram and timer handling cuts the per-packet cost of relaying media.
    web.run_app(
        app,
        loop=uvloop.new_event_loop(),
        host=settings.host,
        port=settings.port,
        ssl_context=_ssl_context(settings),
        print=lambda _msg: _announce(settings),
        shutdown_timeout=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
