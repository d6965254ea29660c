"""Audit: the signing key, the hash-chained audit log, signed manifests, the archive of
consultations, retention and ``verify`` (docs/recording.md is the contract)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

from aiohttp import web

from core.appkeys import STORE
from core.nodes import node_key
from core.settings import Settings
from core.store import UNAVAILABLE, Redis

from .archive import (
    ROOM_ID,
    Archive,
    ArchiveQuery,
    ConsultationRecord,
    ConsultationSummary,
    InvalidRoomId,
)
from .keys import AuditError, SigningKey, key_id_of, load_public_keys
from .log import AuditEntry, AuditLog, AuditTrail, canonical_json, iso, parse_iso, read_log
from .manifest import (
    read_manifest,
    read_recording,
    seal_interrupted,
    sha256_file,
    write_json_atomic,
    write_manifest,
)
from .retention import PurgeReceipt, RetentionKeeper, purge_expired
from .verify import Notice, Problem, Report, verify, verify_consultation, verify_log

logger = logging.getLogger(__name__)

SIGNING_KEY = web.AppKey("signing_key", SigningKey)
AUDIT_TRAIL = web.AppKey("audit_trail", AuditTrail)
ARCHIVE = web.AppKey("archive", Archive)

__all__ = [
    "ARCHIVE",
    "AUDIT_TRAIL",
    "ROOM_ID",
    "SIGNING_KEY",
    "Archive",
    "ArchiveQuery",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditTrail",
    "ConsultationRecord",
    "ConsultationSummary",
    "InvalidRoomId",
    "Notice",
    "Problem",
    "PurgeReceipt",
    "Report",
    "RetentionKeeper",
    "SigningKey",
    "canonical_json",
    "iso",
    "key_id_of",
    "load_public_keys",
    "parse_iso",
    "purge_expired",
    "read_log",
    "read_manifest",
    "seal_interrupted",
    "setup",
    "sha256_file",
    "verify",
    "verify_consultation",
    "verify_log",
    "write_json_atomic",
    "write_manifest",
]


def seal_all(
    directories: list[Path], key: SigningKey, log: AuditLog, *, node: str, now: datetime
) -> int:
    """Seal the recordings in ``directories``, which a crash left without a manifest
    (blocking); returns how many."""
    sealed = 0
    for directory in directories:
        try:
            seal_interrupted(directory, key, log, node=node, now=now)
        except (OSError, KeyError, ValueError) as exc:
            logger.error("%s: cannot seal the interrupted recording: %s", directory.name, exc)
        else:
            sealed += 1
    return sealed


async def _leftovers(archive: Archive, store: Redis | None, node: str) -> list[Path]:
    """The unsealed recordings whose node is gone: this node's before a restart, or those of a
    node that died.  Another live node's recordings are running, not left over.  When the store
    cannot tell, a recording of another node is left for the node that reopens its room."""
    leftovers = []
    for directory in await asyncio.to_thread(archive.unsealed):
        marker = await asyncio.to_thread(read_recording, directory)
        holder = str(marker.get("node") or "") if marker else ""
        if holder and holder != node and store is not None:
            try:
                if await store.exists(node_key(holder)):
                    continue
            except UNAVAILABLE:
                continue
        leftovers.append(directory)
    return leftovers


async def signing_key_pem(request: web.Request) -> web.Response:
    """``GET /signing-key.pem``: the public key that signs manifests and the audit log."""
    return web.Response(
        body=request.app[SIGNING_KEY].public_pem,
        content_type="text/plain",
        headers={"Cache-Control": "no-cache"},
    )


def setup(app: web.Application, settings: Settings, clock: Callable[[], datetime]) -> None:
    """Open the key, the log and the archive at start, seal crash leftovers, keep retention."""

    async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
        key = await asyncio.to_thread(SigningKey.load_or_create, settings.data_dir / "keys")
        log = await asyncio.to_thread(AuditLog, settings.data_dir / "audit" / "audit.log", key)
        archive = Archive(settings.data_dir / "consultations")
        trail = AuditTrail(log)
        keeper = RetentionKeeper(archive, trail, settings.retention_days, clock)
        try:
            # Without a store (the audit package on its own) no node can be asked: seal them all.
            leftovers = await _leftovers(archive, app.get(STORE), settings.node_id)
            sealed = await asyncio.to_thread(
                seal_all, leftovers, key, log, node=settings.node_id, now=clock()
            )
            if sealed:
                logger.warning("sealed %d interrupted recordings", sealed)
            keeper.start()
            app[SIGNING_KEY] = key
            app[AUDIT_TRAIL] = trail
            app[ARCHIVE] = archive
            yield
        finally:
            await keeper.close()
            await trail.close()

    app.cleanup_ctx.append(audit_ctx)
    app.router.add_get("/signing-key.pem", signing_key_pem)
