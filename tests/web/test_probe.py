"""The pre-call check's uplink measurement endpoint."""

from __future__ import annotations

import os
from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import NURSE
from tests.web.test_pages import client, login  # noqa: F401  (the fixture)


async def test_probe_counts_the_bytes_and_suggests_a_step(client: TestClient[Any, Any]) -> None:  # noqa: F811
    nurse = await login(client, NURSE)
    try:
        body = os.urandom(128 * 1024)
        resp = await nurse.post(client.make_url("/probe"), data=body)
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        result = await resp.json()
        assert result["bytes"] == len(body)
        assert result["seconds"] >= 0
        # Over loopback the link is fast: full video.
        if result["kbps"] is not None:
            assert result["kbps"] > 1000
            assert result["step"] == 0
            assert result["video"] is True
        empty = await (await nurse.post(client.make_url("/probe"), data=b"")).json()
        assert empty["bytes"] == 0
        assert empty["kbps"] is None
        too_big = await nurse.post(client.make_url("/probe"), data=os.urandom(300 * 1024))
        assert too_big.status == 413
        foreign = await nurse.post(
            client.make_url("/probe"), data=b"x", headers={"Origin": "https://evil.example"}
        )
        assert foreign.status == 403
    finally:
        await nurse.close()


async def test_probe_needs_a_signed_in_user(client: TestClient[Any, Any]) -> None:  # noqa: F811
    resp = await client.post("/probe", data=b"x" * 1000)
    assert resp.status == 401
