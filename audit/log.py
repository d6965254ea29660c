"""The audit log: one signed, hash-chained JSON object per line (see docs/recording.md).

Each entry's ``hash`` is the SHA-256 of its canonical JSON without ``hash`` and ``sig``, its
``prev`` is the previous entry's ``hash`` and its ``sig`` is the Ed25519 signature of the
``hash`` text. Entries are appended, never rewritten.

Locking: :class:`AuditLog` holds a :class:`threading.Lock` (threads of this process) and then an
exclusive ``flock`` on the file (other processes and nodes sharing the data directory) from
reading the last entry to the ``fsync`` of the new one, so every append sees the true tail and
the chain has no forks.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .keys import AuditError, SigningKey, fsync_dir

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
_TAIL_BLOCK = 8192


def canonical_json(obj: object) -> bytes:
    """``obj`` as canonical JSON: keys sorted, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def iso(dt: datetime) -> str:
    """``dt`` in UTC with milliseconds (``2026-11-27T05:01:02.123Z``); refuses naive ones."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("naive datetime: audit times must carry a time zone")
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """The aware datetime written by :func:`iso`."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return dt


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash an entry must carry: SHA-256 of its canonical JSON without ``hash`` and ``sig``."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log."""

    seq: int
    at: str
    kind: str
    actor: str | None
    source: str | None
    subject: str | None
    detail: dict[str, Any]
    prev: str
    key_id: str
    hash: str
    sig: str

    def to_json(self) -> dict[str, Any]:
        """The entry as the JSON object of its line."""
        return asdict(self)


def _last_entry(fd: int) -> tuple[int, str] | None:
    """(seq, hash) of the last readable entry of the open log, reading blocks from its end."""
    end = os.lseek(fd, 0, os.SEEK_END)
    pos = end
    tail = b""
    while pos > 0:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        tail = os.pread(fd, step, pos) + tail
        lines = tail.split(b"\n")
        # Unless we reached the start, the first piece may be the end of a longer line.
        complete = lines if pos == 0 else lines[1:]
        for line in reversed(complete):
            found = _seq_and_hash(line)
            if found is not None:
                return found
        tail = lines[0] if pos > 0 else b""
    return None


def _seq_and_hash(line: bytes) -> tuple[int, str] | None:
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    seq, digest = obj.get("seq"), obj.get("hash")
    if type(seq) is not int or not isinstance(digest, str):
        return None
    return seq, digest


class AuditLog:
    """The audit log file; a blocking API, safe across threads and processes."""

    def __init__(self, path: Path, key: SigningKey) -> None:
        self.path = path
        self.key = key
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _entry(
        self,
        seq: int,
        prev: str,
        kind: str,
        at: datetime,
        actor: str | None,
        source: str | None,
        subject: str | None,
        detail: Mapping[str, Any] | None,
    ) -> AuditEntry:
        body: dict[str, Any] = {
            "seq": seq,
            "at": iso(at),
            "kind": kind,
            "actor": actor,
            "source": source,
            "subject": subject,
            "detail": dict(detail or {}),
            "prev": prev,
            "key_id": self.key.key_id,
        }
        digest = entry_hash(body)
        sig = base64.b64encode(self.key.sign(digest.encode())).decode()
        return AuditEntry(**body, hash=digest, sig=sig)

    def append(
        self,
        kind: str,
        *,
        at: datetime,
        actor: str | None = None,
        source: str | None = None,
        subject: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one signed entry and ``fsync`` it; a new log first gets ``log_started``."""
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                end = os.lseek(fd, 0, os.SEEK_END)
                last = _last_entry(fd)
                seq, prev = last if last is not None else (0, GENESIS)
                entries = []
                if last is None:
                    entries.append(
                        self._entry(1, GENESIS, "log_started", at, None, None, None, None)
                    )
                    seq, prev = 1, entries[0].hash
                entry = self._entry(seq + 1, prev, kind, at, actor, source, subject, detail)
                entries.append(entry)
                data = b"".join(canonical_json(e.to_json()) + b"\n" for e in entries)
                if end > 0 and os.pread(fd, 1, end - 1) != b"\n":
                    # A torn last line (a crash mid-write) stays on a line of its own.
                    data = b"\n" + data
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
                if end == 0:
                    fsync_dir(self.path.parent)  # the new file's name must survive a crash too
            finally:
                os.close(fd)  # also releases the flock
        logger.debug("audit %s #%d %s", kind, entry.seq, subject)
        return entry

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; ``(0, "0" * 64)`` for an empty or missing log."""
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return 0, GENESIS
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                last = _last_entry(fd)
            finally:
                os.close(fd)
        return last if last is not None else (0, GENESIS)


def read_log(path: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """Every line of the log as (line number from 1, its object or ``None`` if unreadable)."""
    out: list[tuple[int, dict[str, Any] | None]] = []
    with path.open("rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line.decode("utf-8"))
        except ValueError:
            obj = None
        out.append((number, obj if isinstance(obj, dict) else None))
    return out


class AuditTrail:
    """The application's asynchronous view of the log.

    Appends run on one dedicated thread, in the order :meth:`record` was called, so the event
    loop never waits on the disk and entries keep their order.
    """

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-log")
        self._closing: asyncio.Future[None] | None = None

    @property
    def log(self) -> AuditLog:
        """The blocking log underneath (for work that already runs in a thread)."""
        return self._log

    async def record(
        self,
        kind: str,
        *,
        at: datetime,
        actor: str | None = None,
        source: str | None = None,
        subject: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append an entry on the log's thread; raises :class:`AuditError` once closed."""
        if self._closing is not None:
            raise AuditError("the audit trail is closed")
        call = functools.partial(
            self._log.append,
            kind,
            at=at,
            actor=actor,
            source=source,
            subject=subject,
            detail=detail,
        )
        # Submitted now, before any await, so the thread sees calls in their order.
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        """Refuse new entries and wait for the queued ones; idempotent."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().run_in_executor(
                None, functools.partial(self._executor.shutdown, wait=True)
            )
        await asyncio.shield(self._closing)
