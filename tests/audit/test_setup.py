"""The audit package in an application: key, log, sealing at start, the public key page."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import fakeredis
from aiohttp import web
from cryptography.hazmat.primitives import serialization

import audit
from audit import ARCHIVE, AUDIT_TRAIL, SIGNING_KEY, ArchiveQuery, SigningKey, read_log, verify
from core.appkeys import STORE
from core.nodes import node_key
from core.settings import Settings

from .conftest import T0, make_consultation, make_in_progress

ClientFactory = Callable[[web.Application], Any]


def _app(data_dir: Path, retention_days: int = 0) -> web.Application:
    settings = replace(
        Settings(), data_dir=data_dir, node_id="node-t", retention_days=retention_days
    )
    app = web.Application()
    audit.setup(app, settings, lambda: T0 + timedelta(days=60))
    return app


async def test_start_seals_crash_leftovers_and_serves_the_public_key(
    data_dir: Path, aiohttp_client: ClientFactory
) -> None:
    directory = make_in_progress(data_dir, "sihoriya.crashed1")
    (directory / "spoke-1.webm").write_bytes(b"media" * 10)
    app = _app(data_dir)

    client = await aiohttp_client(app)
    response = await client.get("/signing-key.pem")

    key = app[SIGNING_KEY]
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Cache-Control"] == "no-cache"
    assert await response.read() == key.public_pem
    serialization.load_pem_public_key(key.public_pem)
    assert (directory / "manifest.json").exists()
    summaries = app[ARCHIVE].list(ArchiveQuery())
    assert [(s.room_id, s.state, s.interrupted) for s in summaries] == [
        ("sihoriya.crashed1", "interrupted", True)
    ]
    entry = await app[AUDIT_TRAIL].record("recording_viewed", at=T0, actor="auditor")
    assert entry.key_id == key.key_id
    await client.close()

    kinds = [o["kind"] for _, o in read_log(data_dir / "audit" / "audit.log") if o is not None]
    assert kinds == [
        "log_started",
        "recording_interrupted",
        "consultation_ended",
        "recording_viewed",
    ]
    assert verify(data_dir).ok


async def test_start_runs_retention(data_dir: Path, aiohttp_client: ClientFactory) -> None:
    key = SigningKey.load_or_create(data_dir / "keys")
    log = audit.AuditLog(data_dir / "audit" / "audit.log", key)
    directory = make_consultation(data_dir, key, log, "bhabua.old1")
    app = _app(data_dir, retention_days=30)

    client = await aiohttp_client(app)
    for _ in range(200):
        if (directory / "purged.json").exists() and not (directory / "hub-1.webm").exists():
            break
        await asyncio.sleep(0.01)
    await client.close()

    assert not (directory / "spoke-1.webm").exists()
    assert verify(data_dir).ok


async def test_start_leaves_the_recordings_of_live_nodes_alone(
    data_dir: Path, aiohttp_client: ClientFactory
) -> None:
    """Nodes share the data directory: a recording that another live node is writing is not
    a crash leftover; one of a node whose record has expired is."""
    store = fakeredis.FakeAsyncRedis(decode_responses=True)
    await store.hset(node_key("node-live"), mapping={"id": "node-live"})
    running = make_in_progress(data_dir, "sihoriya.running1")
    orphaned = make_in_progress(data_dir, "sihoriya.orphan1")
    for directory, holder in ((running, "node-live"), (orphaned, "node-dead")):
        marker = json.loads((directory / "recording.json").read_text())
        (directory / "recording.json").write_text(json.dumps({**marker, "node": holder}))
    app = _app(data_dir)
    app[STORE] = store

    client = await aiohttp_client(app)
    await client.close()
    await store.aclose()

    assert not (running / "manifest.json").exists()
    assert (orphaned / "manifest.json").exists()
