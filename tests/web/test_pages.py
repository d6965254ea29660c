"""Pages: who may see what, in which language, with which headers."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from server import create_app
from tests.helpers import DEMO_PASSWORD, DOCTOR, NURSE, make_settings
from web import i18n

AiohttpClient = Any


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(make_settings(None)))  # type: ignore[no-any-return]


async def login(client: TestClient[Any, Any], username: str) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    resp = await session.post(
        client.make_url("/login"),
        data={"username": username, "password": DEMO_PASSWORD},
        allow_redirects=False,
    )
    assert resp.status == 303
    return session


def test_every_string_exists_in_both_languages() -> None:
    for key, texts in i18n.STRINGS.items():
        assert set(texts) == set(i18n.LANGUAGES), key
        assert all(texts.values()), key


def test_language_choice() -> None:
    assert i18n.pick_language("hi", "en-IN") == "hi"
    assert i18n.pick_language(None, "hi-IN,hi;q=0.9,en;q=0.8") == "hi"
    assert i18n.pick_language("fr", "fr-FR") == "en"


async def test_anonymous_users_are_sent_to_login(client: TestClient[Any, Any]) -> None:
    for path in ("/", "/spoke", "/hub", "/home", "/consult/bhabua-sadar.abc"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/login"), path


async def test_login_page_headers_and_languages(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/login")
    assert resp.status == 200
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "Sign in" in await resp.text()
    resp = await client.get("/login", headers={"Accept-Language": "hi-IN"})
    assert "साइन इन करें" in await resp.text()
    resp = await client.get("/lang/hi?next=/login", allow_redirects=False)
    assert resp.status == 303
    assert resp.cookies[i18n.LANG_COOKIE].value == "hi"
    assert (await client.get("/lang/xx", allow_redirects=False)).status == 404


async def test_wrong_password_is_refused_plainly(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/login", data={"username": NURSE, "password": "nope"}, allow_redirects=False
    )
    assert resp.status == 401
    assert "Wrong username or password" in await resp.text()
    assert "setu_session" not in resp.cookies


async def test_session_cookie_is_httponly_and_samesite(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/login", data={"username": NURSE, "password": DEMO_PASSWORD}, allow_redirects=False
    )
    morsel = resp.cookies["setu_session"]
    assert morsel["httponly"]
    assert morsel["samesite"] == "Lax"
    assert resp.headers["Location"] == "/spoke"


async def test_pages_check_roles(client: TestClient[Any, Any]) -> None:
    nurse = await login(client, NURSE)
    assert (await nurse.get(client.make_url("/spoke"))).status == 200
    assert (await nurse.get(client.make_url("/hub"))).status == 403
    assert (await nurse.get(client.make_url("/home"))).status == 403
    doctor = await login(client, DOCTOR)
    hub = await doctor.get(client.make_url("/hub"))
    assert hub.status == 200
    assert "Call next patient" in await hub.text()
    assert (await doctor.get(client.make_url("/spoke"))).status == 403
    auditor = await login(client, "auditor")
    home = await auditor.get(client.make_url("/home"))
    assert home.status == 200
    assert "Sadar Hospital, Bhabua" in await home.text()
    for session in (nurse, doctor, auditor):
        await session.close()


async def test_login_never_redirects_off_site(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/login",
        data={"username": NURSE, "password": DEMO_PASSWORD, "next": "//evil.example/x"},
        allow_redirects=False,
    )
    assert resp.headers["Location"] == "/spoke"


async def test_no_open_redirect_through_next(client: TestClient[Any, Any]) -> None:
    for target in (
        "//evil.example/x",
        "/%09/evil.example/x",
        "/%0A/evil.example",
        "/\\evil",
        "https://evil.example/",
    ):
        resp = await client.get(f"/lang/en?next={target}", allow_redirects=False)
        assert resp.headers["Location"] == "/", target


async def test_a_garbled_cookie_is_just_no_session(client: TestClient[Any, Any]) -> None:
    for cookie in ("a|é", "x" * 600, "nurse.akhlaspur|1|2|3"):
        resp = await client.get("/spoke", cookies={"setu_session": cookie}, allow_redirects=False)
        assert resp.status == 303, cookie
        assert (await client.get("/me", cookies={"setu_session": cookie})).status == 401


async def test_logout(client: TestClient[Any, Any]) -> None:
    nurse = await login(client, NURSE)
    me = await nurse.get(client.make_url("/me"))
    assert (await me.json())["role"] == "nurse"
    resp = await nurse.post(client.make_url("/logout"), allow_redirects=False)
    assert resp.status == 303
    assert (await nurse.get(client.make_url("/spoke"), allow_redirects=False)).status == 303
    # The pages' reconnect logic asks /me, and goes back to sign-in on 401.
    assert (await nurse.get(client.make_url("/me"))).status == 401
    await nurse.close()


async def test_static_modules_and_health(client: TestClient[Any, Any]) -> None:
    for name in ("signal.js", "consult.js", "spoke.js", "hub.js", "i18n.js", "style.css"):
        assert (await client.get(f"/static/{name}")).status == 200, name
    health = await (await client.get("/healthz")).json()
    assert health == {"ok": True, "node": "node-test"}
