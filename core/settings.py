"""One frozen :class:`Settings`, read once in ``main()`` from flags and the environment.

Every flag has an environment variable (``SETU_<NAME>``); a flag given on the command line wins.
Packages receive the settings object; none of them reads the environment.
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .directory import DEMO_DIRECTORY


class SettingsError(Exception):
    """A flag or environment variable has a value Setu cannot use."""


class IceServer(BaseModel):
    """One entry of ``RTCConfiguration.iceServers``, as browsers and aiortc take it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: tuple[str, ...] = Field(min_length=1)
    username: str | None = None
    credential: str | None = None


_ICE_LIST = TypeAdapter(tuple[IceServer, ...])


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    #: ``redis://`` or ``rediss://`` URL of a real Redis; ``None`` runs the embedded store.
    redis_url: str | None = None
    directory: Path = DEMO_DIRECTORY
    ice_servers: tuple[IceServer, ...] = ()
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
    room_grace_s: float = 20.0
    #: Bound on each websocket's outgoing queue; a client that lets it fill is disconnected.
    outbox_size: int = 256
    #: Record consultations whose patient consented (``--recording off`` never records).
    recording: bool = True
    #: Days after which recordings are deleted (with a receipt in the audit log); 0 keeps them.
    retention_days: int = 0
    node_id: str = field(default_factory=lambda: "node-" + secrets.token_hex(3))
    log_level: str = "INFO"

    @property
    def embedded_store(self) -> bool:
        return self.redis_url is None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


_ENV_PREFIX = "SETU_"


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
        help="a real Redis (redis://host:6379/0); without it an embedded store keeps nothing "
        "across restarts",
    )
    add("--directory", type=Path, help="TOML directory of hubs, spokes and users")
    add(
        "--ice-servers",
        metavar="JSON",
        help='STUN/TURN servers as JSON, e.g. [{"urls": ["turn:turn.example.org:3478"], '
        '"username": "u", "credential": "p"}]; default none',
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
        help="seconds a room waits for a participant whose link dropped (default 20)",
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
    if "recording" in kwargs:
        kwargs["recording"] = kwargs["recording"] == "on"
    if "allowed_origins" in kwargs:
        kwargs["allowed_origins"] = tuple(kwargs["allowed_origins"])  # type: ignore[arg-type]
    settings = Settings(**kwargs)  # type: ignore[arg-type]
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("--tls-cert and --tls-key go together")
    if not 0 < settings.port < 65536:
        raise SettingsError(f"--port {settings.port} is not a TCP port")
    if settings.heartbeat_s <= 0 or settings.room_grace_s < 0:
        raise SettingsError("--heartbeat must be positive and --room-grace not negative")
    if settings.retention_days < 0:
        raise SettingsError("--retention-days must not be negative")
    if settings.redis_url is not None and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise SettingsError(f"--redis-url {settings.redis_url!r} is not a redis:// URL")
    return settings
