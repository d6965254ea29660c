"""Settings come from flags, then SETU_* variables; bad values are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, load_settings

TURN_SECRET = "0123456789abcdef-turn"
SECRET = ["--turn-secret", TURN_SECRET]


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


def test_turn_from_flags_combines_with_ice_servers() -> None:
    s = load_settings(
        [
            "--ice-servers",
            '[{"urls": ["stun:turn.example.org:3478"]}]',
            "--turn-url",
            "turn:turn.example.org:3478?transport=udp",
            "--turn-url",
            "turns:turn.example.org:443?transport=tcp",
            "--turn-secret",
            TURN_SECRET,
            "--turn-ttl",
            "7200",
        ],
        {},
    )
    assert s.ice_servers[0].urls == ("stun:turn.example.org:3478",)
    assert s.turn_urls == (
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:443?transport=tcp",
    )
    assert (s.turn_secret, s.turn_ttl_s) == (TURN_SECRET, 7200)


def test_turn_from_environment() -> None:
    env = {
        "SETU_TURN_URLS": "turns:turn.example.org:443?transport=tcp, turn:203.0.113.7",
        "SETU_TURN_SECRET": TURN_SECRET,
    }
    s = load_settings([], env)
    assert s.turn_urls == ("turns:turn.example.org:443?transport=tcp", "turn:203.0.113.7")
    assert s.turn_secret == TURN_SECRET
    assert s.turn_ttl_s == 3600
    assert load_settings([], {}).turn_urls == ()


def test_turn_urls_of_every_form_are_accepted() -> None:
    urls = [
        "turn:turn.example.org",
        "turn:turn.example.org:3478?transport=tcp",
        "turns:turn.example.org:443",
        "turn:203.0.113.7:3478?transport=udp",
        "turns:[2001:db8::7]:443?transport=tcp",
    ]
    argv = [a for url in urls for a in ("--turn-url", url)]
    assert load_settings([*argv, "--turn-secret", TURN_SECRET], {}).turn_urls == tuple(urls)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--turn-secret", TURN_SECRET], "needs at least one --turn-url"),
        (["--turn-url", "turns:turn.example.org:443"], "needs --turn-secret"),
        (["--turn-ttl", "600"], "no effect without --turn-url"),
        ([*SECRET, "--turn-url", "turn://turn.example.org:3478"], "without '//'"),
        ([*SECRET, "--turn-url", "stun:turn.example.org:3478"], "not a TURN URL"),
        ([*SECRET, "--turn-url", "https://turn.example.org"], "not a TURN URL"),
        ([*SECRET, "--turn-url", "turn:"], "not a TURN URL"),
        ([*SECRET, "--turn-url", "turn:user@turn.example.org"], "not a TURN URL"),
        ([*SECRET, "--turn-url", "turn:turn.example.org:3478?transport=sctp"], "not a TURN URL"),
        ([*SECRET, "--turn-url", "turn:turn.example.org:70000"], "not a port"),
        ([*SECRET, "--turn-url", "turns:turn.example.org:443?transport=udp"], "no TURN over DTLS"),
    ],
)
def test_bad_turn_settings(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(argv, {})


@pytest.mark.parametrize("ttl", ["299", "86401", "0"])
def test_turn_ttl_is_bounded(ttl: str) -> None:
    argv = ["--turn-url", "turn:turn.example.org", "--turn-secret", TURN_SECRET, "--turn-ttl", ttl]
    with pytest.raises(SettingsError, match="between 300 and 86400 seconds"):
        load_settings(argv, {})


@pytest.mark.parametrize("secret", ["short-secret", " 0123456789abcdef-turn "])
def test_a_bad_turn_secret_is_refused_without_being_repeated(secret: str) -> None:
    with pytest.raises(SettingsError, match="--turn-secret") as err:
        load_settings(["--turn-url", "turn:turn.example.org", "--turn-secret", secret], {})
    assert secret.strip() not in str(err.value)


def test_paths(tmp_path: Path) -> None:
    s = load_settings(["--data-dir", str(tmp_path), "--directory", str(tmp_path / "d.toml")], {})
    assert s.data_dir == tmp_path
    assert s.directory == tmp_path / "d.toml"
