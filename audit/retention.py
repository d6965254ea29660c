"""Retention: delete the media of consultations that ended too long ago, leaving a receipt.

Order of one purge, chosen so that a receipt is never lost and a crash at any point is repaired
by running the purge again:

1. hash the files still on disk and append ``recording_purged`` to the audit log (the receipt);
2. write ``purged.json`` (with the receipt's ``seq``);
3. unlink the files and fsync the directory.

A crash after 1 or 2 leaves the files on disk, so the next run purges them again (a second
receipt, which is harmless); a crash during 3 leaves ``purged.json`` and the receipt in place.
The manifest is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .archive import Archive
from .keys import fsync_dir
from .log import AuditLog, AuditTrail, iso, parse_iso
from .manifest import PURGED, read_manifest, sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class PurgeReceipt:
    """What one purge deleted: each file's name, SHA-256 and size."""

    room_id: str
    files: list[dict[str, Any]]
    at: datetime


def _listed_files(directory: Path, manifest: dict[str, Any]) -> list[Path]:
    files = manifest.get("files")
    if not isinstance(files, list):
        return []
    names = [f.get("name") for f in files if isinstance(f, dict)]
    paths = [directory / n for n in names if isinstance(n, str) and n == Path(n).name]
    return [p for p in paths if p.is_file()]


def purge_one(
    directory: Path, manifest: dict[str, Any], log: AuditLog, *, now: datetime, retention_days: int
) -> PurgeReceipt | None:
    """Purge the listed media of one sealed consultation (blocking); ``None`` if none is left."""
    paths = _listed_files(directory, manifest)
    if not paths:
        return None
    room_id = str(manifest.get("consultation") or directory.name)
    files = []
    for path in paths:
        digest, size = sha256_file(path)
        files.append({"name": path.name, "sha256": digest, "bytes": size})
    entry = log.append(
        "recording_purged",
        at=now,
        subject=room_id,
        detail={
            "files": files,
            "ended_at": manifest.get("ended_at"),
            "retention_days": retention_days,
        },
    )
    write_json_atomic(directory / PURGED, {"at": iso(now), "files": files, "log_seq": entry.seq})
    for path in paths:
        path.unlink(missing_ok=True)
    fsync_dir(directory)
    logger.info("%s: purged %d files (receipt #%d)", room_id, len(files), entry.seq)
    return PurgeReceipt(room_id=room_id, files=files, at=now)


def purge_expired(
    archive: Archive, log: AuditLog, *, now: datetime, retention_days: int
) -> list[PurgeReceipt]:
    """Purge every consultation that ended more than ``retention_days`` ago (0: never; blocking)."""
    if retention_days <= 0:
        return []
    cutoff = now - timedelta(days=retention_days)
    receipts = []
    for directory in archive.directories():
        manifest = read_manifest(directory)
        if manifest is None:
            continue
        try:
            if parse_iso(str(manifest["ended_at"])) >= cutoff:
                continue
            receipt = purge_one(directory, manifest, log, now=now, retention_days=retention_days)
        except (KeyError, ValueError) as exc:
            logger.warning("%s: cannot tell when it ended (%s); kept", directory.name, exc)
            continue
        except OSError as exc:
            logger.error("%s: purge failed: %s", directory.name, exc)
            continue
        if receipt is not None:
            receipts.append(receipt)
    return receipts


class RetentionKeeper:
    """Owns the task that purges at start and then every hour; :meth:`close` is idempotent."""

    def __init__(
        self,
        archive: Archive,
        trail: AuditTrail,
        retention_days: int,
        clock: Callable[[], datetime],
        *,
        interval_s: float = PURGE_INTERVAL_S,
    ) -> None:
        self._archive = archive
        self._trail = trail
        self._retention_days = retention_days
        self._clock = clock
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Future[list[PurgeReceipt]] | None = None
        self._closed = False

    def start(self) -> None:
        """Start purging (nothing to do when retention is 0, which keeps everything)."""
        if self._closed or self._task is not None or self._retention_days <= 0:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def run_once(self) -> list[PurgeReceipt]:
        """One purge now, in a thread (which :meth:`close` waits for)."""
        call = functools.partial(
            purge_expired,
            self._archive,
            self._trail.log,
            now=self._clock(),
            retention_days=self._retention_days,
        )
        running = asyncio.get_running_loop().run_in_executor(None, call)
        self._running = running
        # Shielded: a thread cannot be stopped halfway, so close() waits for it instead.
        return await asyncio.shield(running)

    async def _run(self) -> None:
        while True:
            try:
                receipts = await self.run_once()
            except Exception:
                logger.exception("retention purge failed")
            else:
                if receipts:
                    logger.info("retention purged %d consultations", len(receipts))
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        """Cancel the task and wait for it; idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running, self._running = self._running, None
        if running is not None:
            with contextlib.suppress(Exception):
                await running
