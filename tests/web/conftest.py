"""Fixtures of the page tests: signed-in browser sessions against each module's ``client``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import DEMO_PASSWORD

#: ``await login(username)``: a cookie-keeping session signed in as ``username``.
Login = Callable[[str], Any]


@pytest.fixture
async def login(client: TestClient[Any, Any]) -> AsyncIterator[Login]:
    """Signs users in to the module's ``client`` app; closes their sessions afterwards."""
    sessions: list[aiohttp.ClientSession] = []

    async def sign_in(username: str) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)
        resp = await session.post(
            client.make_url("/login"),
            data={"username": username, "password": DEMO_PASSWORD},
            allow_redirects=False,
        )
        assert resp.status == 303
        return session

    yield sign_in
    for session in sessions:
        await session.close()
