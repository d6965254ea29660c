"""Settings come from flags, then SETU_* variables; bad values are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, load_settings


def test_defaults_run_on_the_embedded_store() -> None:
    s = load_settings([], {})
    assert s.embedded_store
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.ice_servers == ()


def test_flags_win_over_environment() -> None:
    env = {"SETU_PORT": "9000", "SETU_HOST": "0.0.0.0", "SETU_REDIS_URL": "redis://r:6379/0"}
    s = load_settings(["--port", "9100"], env)
    assert s.port == 9100
    assert s.host == "0.0.0.0"
    assert s.redis_url == "redis://r:6379/0"
    assert not s.embedded_store


def test_ice_servers_and_origins_from_environment() -> None:
    env = {
        "SETU_ICE_SERVERS": '[{"urls": ["turn:turn.example.org:3478"], "username": "u", '
        '"credential": "p"}]',
        "SETU_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "SETU_ROOM_GRACE": "45",
    }
    s = load_settings([], env)
    assert s.ice_servers[0].urls == ("turn:turn.example.org:3478",)
    assert s.allowed_origins == ("https://a.example", "https://b.example")
    assert s.room_grace_s == 45.0


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--ice-servers", "[{}]"], {}, "ICE servers"),
        (["--ice-servers", "not json"], {}, "ICE servers"),
        (["--tls-cert", "c.pem"], {}, "go together"),
        (["--port", "70000"], {}, "not a TCP port"),
        (["--redis-url", "http://x"], {}, "redis://"),
        ([], {"SETU_PORT": "eighty"}, "SETU_PORT"),
        (["--room-grace", "-1"], {}, "room-grace"),
    ],
)
def test_bad_values(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(argv, env)


def test_paths(tmp_path: Path) -> None:
    s = load_settings(["--data-dir", str(tmp_path), "--directory", str(tmp_path / "d.toml")], {})
    assert s.data_dir == tmp_path
    assert s.directory == tmp_path / "d.toml"
