"""One frozen :class:`Settings`, read once in ``main()`` from flags and the environment.

Every flag has an environment variable (``SETU_<NAME>``); a flag given on the command line wins.
Packages receive the settings object; none of them reads the environment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .directory import DEMO_DIRECTORY
from .store import InvalidStoreUrl, parse_store_url


class SettingsError(Exception):
    """A flag or environment variable has a value Setu cannot use."""


class IceServer(BaseModel):
    """One entry of ``RTCConfiguration.iceServers``, as browsers and aiortc take it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: tuple[str, ...] = Field(min_length=1)
    username: str | None = None
    #: Kept out of ``repr`` so that a logged server list never shows a password.
    credential: str | None = Field(default=None, repr=False)


_ICE_LIST = TypeAdapter(tuple[IceServer, ...])


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    #: URL of a real Redis, a Sentinel-watched one or a Cluster (see :mod:`core.store`);
    #: ``None`` runs the embedded store.
    redis_url: str | None = None
    directory: Path = DEMO_DIRECTORY
    ice_servers: tuple[IceServer, ...] = ()
    #: ``turn:``/``turns:`` URLs of a TURN server that checks time-limited credentials
    #: (coturn's ``use-auth-secret``); each client gets fresh ones on every join.
    turn_urls: tuple[str, ...] = ()
    #: The TURN server's ``static-auth-secret``; kept out of ``repr`` so it is never logged.
    turn_secret: str | None = field(default=None, repr=False)
    #: How long a TURN credential handed to a client stays valid.
    turn_ttl_s: int = 3600
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Password for every directory user that has none yet; ``None`` generates one per user.
    demo_password: str | None = None
    #: Key that signs session cookies; ``None`` shares one generated key through the store.
    secret_key: str | None = None
    #: Origins allowed to open the websocket besides the server's own.
    allowed_origins: tuple[str, ...] = ()
    #: Interval of websocket pings; a peer that misses a pong for half of it is dropped.
    heartbeat_s: float = 10.0
    #: How long a room waits for a participant whose link dropped before ending.
    room_grace_s: float = 60.0
    #: After SIGTERM, how long live rooms may go on (the process takes no new ones) before they
    #: are ended with reason ``shutdown``; 0 ends them at once.  A consultation rarely lasts
    #: half an hour.
    drain_timeout_s: float = 1800.0
    #: Bound on each websocket's outgoing queue; a client that lets it fill is disconnected.
    outbox_size: int = 256
    #: Record consultations whose patient consented (``--recording off`` never records).
    recording: bool = True
    #: Weak-link tuning: the adaptation ladder and the loss-tolerant jitter buffers.  Off only
    #: to measure what they bring (``bench.weaklink``).
    link_tuning: bool = True
    #: Days after which recordings are deleted (with a receipt in the audit log); 0 keeps them.
    retention_days: int = 0
    node_id: str = field(default_factory=lambda: "node-" + secrets.token_hex(3))
    log_level: str = "INFO"
    #: Server processes (nodes) to run on this machine, sharing the HTTP port; more than one
    #: starts a supervisor (:mod:`core.workers`).  ``--workers auto`` is one per usable core.
    workers: int = 1
    #: Listen with ``SO_REUSEPORT``, so that other processes of the same user may listen on the
    #: same port and the kernel spreads new connections among them.  Each worker sets it.
    reuse_port: bool = False
    #: A worker's pipe to its supervisor, written to once the worker listens (set by
    #: :mod:`core.workers`, not by users).
    ready_fd: int | None = None

    @property
    def embedded_store(self) -> bool:
        return self.redis_url is None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


_ENV_PREFIX = "SETU_"

#: Bounds of ``--turn-ttl``.  The TURN server checks a credential's expiry only when a client
#: allocates a relay: seconds after ``joined``, and again whenever the page builds a new peer
#: connection from the same ``joined`` (the reference client does so when ICE fails).  So the
#: TTL should outlast a consultation, and five minutes is the least that leaves a page room to
#: reconnect after joining.  The upper bound is the one day that draft-uberti-behave-turn-rest
#: recommends.
TURN_TTL_MIN_S = 300
TURN_TTL_MAX_S = 86_400
#: A shorter secret could be guessed offline from any one credential a signed-in user receives.
TURN_SECRET_MIN_CHARS = 16

#: More server processes than this on one machine is a typing error, not a plan.
MAX_WORKERS = 256

#: RFC 7065 TURN URIs: ``turn:`` or ``turns:``, a host name, an IPv4 address or a bracketed IPv6
#: address, an optional port and an optional transport.
_TURN_URL = re.compile(
    r"(?P<scheme>turns?):"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="Setu: hub-and-spoke video consultations. Every flag can also be set in "
        "the environment as SETU_<FLAG> (--redis-url is SETU_REDIS_URL, --room-grace is "
        "SETU_ROOM_GRACE; --allowed-origin is SETU_ALLOWED_ORIGINS, comma-separated).",
    )
    add = parser.add_argument
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, help="HTTP(S) port (default 8080)")
    add("--data-dir", type=Path, help="where Setu keeps its files (default ./data)")
    add(
        "--redis-url",
        "--redis",
        dest="redis_url",
        metavar="URL",
        help="a real Redis: redis://[:password@]host:6379/0 (rediss:// for TLS, or unix://); "
        "behind Sentinel: redis+sentinel://[:password@]host:26379,host:26379/<service>[/<db>]; "
        "a Cluster: redis+cluster://[:password@]host:6379,host:6379 (see docs/deploy.md). "
        "Without it an embedded store keeps nothing across restarts",
    )
    add("--directory", type=Path, help="TOML directory of hubs, spokes and users")
    add(
        "--ice-servers",
        metavar="JSON",
        help='STUN/TURN servers as JSON, e.g. [{"urls": ["turn:turn.example.org:3478"], '
        '"username": "u", "credential": "p"}]; default none',
    )
    add(
        "--turn-url",
        dest="turn_urls",
        action="append",
        metavar="URL",
        help="a TURN server URL with time-limited credentials, e.g. "
        "turns:turn.example.org:443?transport=tcp (repeatable; needs --turn-secret)",
    )
    add(
        "--turn-secret",
        metavar="SECRET",
        help="the TURN server's static-auth-secret (coturn use-auth-secret); prefer "
        "SETU_TURN_SECRET, a command line is visible to every local user",
    )
    add(
        "--turn-ttl",
        dest="turn_ttl_s",
        type=int,
        metavar="SECONDS",
        help=f"how long a client's TURN credentials stay valid (default 3600, "
        f"{TURN_TTL_MIN_S} to {TURN_TTL_MAX_S})",
    )
    add(
        "--tls-cert", type=Path, help="PEM certificate: serve HTTPS (cameras need it off localhost)"
    )
    add("--tls-key", type=Path, help="PEM private key for --tls-cert")
    add("--demo-password", help="password for directory users that have none yet")
    add("--secret-key", help="key that signs session cookies (shared by all nodes)")
    add(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        metavar="ORIGIN",
        help="an extra origin allowed to open the websocket (repeatable)",
    )
    add("--heartbeat", dest="heartbeat_s", type=float, help="websocket ping interval, seconds")
    add(
        "--room-grace",
        dest="room_grace_s",
        type=float,
        help="seconds a room waits for a participant whose link dropped (default 60)",
    )
    add(
        "--drain-timeout",
        dest="drain_timeout_s",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, take no new rooms and let live ones finish for at most this long, then "
        "exit (default 1800; 0 ends them at once)",
    )
    add(
        "--link-tuning",
        choices=["on", "off"],
        help="adapt each browser's video to the links and use loss-tolerant buffers "
        "(default on; off is for comparisons)",
    )
    add(
        "--recording",
        choices=["on", "off"],
        help="record consultations whose patient consented (default on)",
    )
    add(
        "--retention-days",
        type=int,
        help="delete recordings this many days after the consultation (default 0: keep)",
    )
    add("--node-id", help="this server process's id (default random)")
    add(
        "--workers",
        metavar="N",
        help="server processes on this machine, sharing the port: a number, or auto for one "
        "per core (default 1); each is a node with id <node-id>-<k>",
    )
    add(
        "--reuse-port",
        choices=["on", "off"],
        help="listen with SO_REUSEPORT, so that several processes share the port (default off; "
        "each worker of --workers has it on)",
    )
    # Given by the --workers supervisor to each worker; nothing a user sets.
    add("--ready-fd", type=int, help=argparse.SUPPRESS)
    add("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Read settings from command-line flags, falling back to ``SETU_*`` variables."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    values: dict[str, object] = {}
    for action in parser._actions:
        dest = action.dest
        if dest == "help":
            continue
        given = getattr(args, dest, None)
        if given is None:
            env = environ.get(env_name(action))
            if env is None or env == "":
                continue
            given = _from_env(action, env)
        values[dest] = given
    return _make(values)


def env_name(action: argparse.Action) -> str:
    """``--room-grace`` is ``SETU_ROOM_GRACE``; a repeatable flag takes a plural, comma list."""
    name = _ENV_PREFIX + action.option_strings[0].lstrip("-").upper().replace("-", "_")
    return name + "S" if isinstance(action, argparse._AppendAction) else name


def _from_env(action: argparse.Action, raw: str) -> object:
    if isinstance(action, argparse._AppendAction):
        return [o.strip() for o in raw.split(",") if o.strip()]
    convert = action.type
    if convert is None:
        return raw
    try:
        return convert(raw)  # type: ignore[operator]
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{env_name(action)}={raw!r}: {exc}") from exc


def _make(values: dict[str, object]) -> Settings:
    kwargs: dict[str, object] = dict(values)
    if "ice_servers" in kwargs:
        try:
            kwargs["ice_servers"] = _ICE_LIST.validate_python(
                json.loads(str(kwargs["ice_servers"]))
            )
        except (json.JSONDecodeError, ValidationError) as exc:
            raise SettingsError(f"--ice-servers is not a valid list of ICE servers: {exc}") from exc
    if "workers" in kwargs:
        kwargs["workers"] = parse_workers(str(kwargs["workers"]))
    for switch in ("recording", "link_tuning", "reuse_port"):
        if switch in kwargs:
            kwargs[switch] = kwargs[switch] == "on"
    if "allowed_origins" in kwargs:
        kwargs["allowed_origins"] = tuple(kwargs["allowed_origins"])  # type: ignore[arg-type]
    if "turn_urls" in kwargs:
        kwargs["turn_urls"] = tuple(kwargs["turn_urls"])  # type: ignore[arg-type]
    settings = Settings(**kwargs)  # type: ignore[arg-type]
    _check_turn(settings, ttl_given="turn_ttl_s" in kwargs)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("--tls-cert and --tls-key go together")
    if not 0 < settings.port < 65536:
        raise SettingsError(f"--port {settings.port} is not a TCP port")
    if settings.heartbeat_s <= 0 or settings.room_grace_s < 0:
        raise SettingsError("--heartbeat must be positive and --room-grace not negative")
    if not (math.isfinite(settings.drain_timeout_s) and settings.drain_timeout_s >= 0):
        raise SettingsError("--drain-timeout must be a number of seconds, 0 or more")
    if settings.retention_days < 0:
        raise SettingsError("--retention-days must not be negative")
    if settings.ready_fd is not None and settings.ready_fd < 0:
        raise SettingsError("--ready-fd must be a file descriptor")
    if settings.redis_url is not None:
        try:
            parse_store_url(settings.redis_url)
        except InvalidStoreUrl as exc:
            # Not the URL itself: it may carry the store's password.
            raise SettingsError(f"--redis-url: {exc}") from None
    return settings


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parse_workers(raw: str) -> int:
    """``--workers``: a whole number from 1 to :data:`MAX_WORKERS`, or ``auto`` (one per core,
    :func:`usable_cpus`)."""
    text = raw.strip()
    if text.lower() == "auto":
        return usable_cpus()
    if not re.fullmatch(r"[0-9]+", text) or not 1 <= int(text) <= MAX_WORKERS:
        raise SettingsError(
            f"--workers (SETU_WORKERS) {raw!r}: give a number of processes from 1 to "
            f"{MAX_WORKERS}, or auto (one per core)"
        )
    return int(text)


def _check_turn(settings: Settings, *, ttl_given: bool) -> None:
    for url in settings.turn_urls:
        _check_turn_url(url)
    if settings.turn_urls and settings.turn_secret is None:
        raise SettingsError("--turn-url needs --turn-secret (the TURN server's static-auth-secret)")
    if settings.turn_secret is not None:
        if not settings.turn_urls:
            raise SettingsError("--turn-secret needs at least one --turn-url")
        # The secret itself never goes into a message: messages end up in logs.
        if len(settings.turn_secret) < TURN_SECRET_MIN_CHARS:
            raise SettingsError(
                f"--turn-secret must have at least {TURN_SECRET_MIN_CHARS} characters "
                "(generate one with: openssl rand -hex 32)"
            )
        if settings.turn_secret != settings.turn_secret.strip():
            raise SettingsError("--turn-secret must not begin or end with white space")
    if ttl_given and not settings.turn_urls:
        raise SettingsError("--turn-ttl has no effect without --turn-url and --turn-secret")
    if not TURN_TTL_MIN_S <= settings.turn_ttl_s <= TURN_TTL_MAX_S:
        raise SettingsError(
            f"--turn-ttl {settings.turn_ttl_s} must be between {TURN_TTL_MIN_S} and "
            f"{TURN_TTL_MAX_S} seconds"
        )


def _check_turn_url(url: str) -> None:
    if url.startswith(("turn://", "turns://")):
        raise SettingsError(f"--turn-url {url!r}: write turn:host:port, without '//'")
    match = _TURN_URL.fullmatch(url)
    if match is None:
        raise SettingsError(
            f"--turn-url {url!r} is not a TURN URL like turn:turn.example.org:3478 or "
            "turns:turn.example.org:443?transport=tcp"
        )
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise SettingsError(f"--turn-url {url!r}: {port} is not a port")
    if match["scheme"] == "turns" and match["transport"] == "udp":
        raise SettingsError(
            f"--turn-url {url!r}: turns: runs over TLS on TCP; browsers have no TURN over DTLS"
        )
