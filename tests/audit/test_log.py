"""The audit log: one signed hash chain, whoever appends to it and however."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import (
    AuditError,
    AuditLog,
    AuditTrail,
    SigningKey,
    canonical_json,
    iso,
    read_log,
    verify_log,
)
from audit.log import GENESIS, entry_hash

from .conftest import T0


def _keys(key: SigningKey) -> dict[str, Ed25519PublicKey]:
    return {key.key_id: key.public_key}


def _seqs(path: Path) -> list[int]:
    return [int(obj["seq"]) for _, obj in read_log(path) if obj is not None]


def test_canonical_json_sorts_keys_without_spaces_and_keeps_utf8() -> None:
    assert canonical_json({"b": 1, "a": ["x", "ड"]}) == '{"a":["x","ड"],"b":1}'.encode()


def test_iso_is_utc_with_milliseconds() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    at = datetime(2026, 11, 27, 10, 31, 2, 123456, tzinfo=ist)

    assert iso(at) == "2026-11-27T05:01:02.123Z"
    with pytest.raises(ValueError, match="naive"):
        iso(datetime(2026, 11, 27, 5, 1, 2))


def test_a_new_log_starts_with_log_started(log: AuditLog, key: SigningKey) -> None:
    assert log.head() == (0, GENESIS)

    entry = log.append("recording_viewed", at=T0, actor="auditor", subject="bhabua.abc")

    lines = read_log(log.path)
    first, second = (obj for _, obj in lines if obj is not None)
    assert first["kind"] == "log_started"
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert (second["seq"], second["prev"]) == (2, first["hash"])
    assert entry.seq == 2
    assert entry.key_id == key.key_id
    assert entry_hash(second) == second["hash"] == entry.hash
    assert log.head() == (2, entry.hash)
    assert log.path.read_bytes().endswith(b"\n")


def test_a_chain_of_200_appends_verifies(log: AuditLog, key: SigningKey) -> None:
    for i in range(200):
        log.append("recording_played", at=T0 + timedelta(seconds=i), detail={"i": i})

    problems, entries = verify_log(log.path, _keys(key))

    assert problems == []
    assert [e["seq"] for e in entries] == list(range(1, 202))


def test_appends_from_four_threads_form_one_chain(
    data_dir: Path, log: AuditLog, key: SigningKey
) -> None:
    # Two threads share one AuditLog, two have their own (as separate workers would).
    logs = [log, log, AuditLog(log.path, key), AuditLog(log.path, key)]
    start = threading.Barrier(4)

    def work(n: int) -> None:
        start.wait()
        for i in range(50):
            logs[n].append("recording_played", at=T0, actor=f"t{n}", detail={"i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    problems, _ = verify_log(log.path, _keys(key))
    assert problems == []
    assert _seqs(log.path) == list(range(1, 202))


def _append_from_process(keys_dir: str, log_path: str, name: str, count: int) -> None:
    log = AuditLog(Path(log_path), SigningKey.load_or_create(Path(keys_dir)))
    for i in range(count):
        log.append("recording_played", at=datetime.now(UTC), actor=name, detail={"i": i})


def test_appends_from_two_processes_form_one_chain(
    data_dir: Path, log: AuditLog, key: SigningKey
) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_append_from_process,
            args=(str(data_dir / "keys"), str(log.path), f"p{n}", 60),
        )
        for n in range(2)
    ]
    for w in workers:
        w.start()
    for i in range(60):
        log.append("recording_played", at=datetime.now(UTC), actor="parent", detail={"i": i})
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0

    problems, entries = verify_log(log.path, _keys(key))
    assert problems == []
    assert _seqs(log.path) == list(range(1, 182))
    actors = [e["actor"] for e in entries[1:]]
    assert {a: actors.count(a) for a in set(actors)} == {"parent": 60, "p0": 60, "p1": 60}


def test_an_append_after_a_torn_line_continues_the_chain(log: AuditLog, key: SigningKey) -> None:
    log.append("recording_played", at=T0)
    with log.path.open("ab") as f:
        f.write(b'{"seq":3,"at":"2026-11')  # the server died mid-write

    entry = log.append("recording_played", at=T0)

    assert entry.seq == 3
    problems, _ = verify_log(log.path, _keys(key))
    assert [str(p) for p in problems] == ["audit log: line 3 unreadable (not a JSON object)"]


def test_read_log_numbers_lines_and_marks_unreadable_ones(log: AuditLog) -> None:
    log.append("recording_played", at=T0)
    with log.path.open("ab") as f:
        f.write(b"[1, 2]\n\xff\xfe\n")

    lines = read_log(log.path)

    assert [n for n, _ in lines] == [1, 2, 3, 4]
    assert [obj is None for _, obj in lines] == [False, False, True, True]


def test_head_reads_only_the_tail(log: AuditLog) -> None:
    for _ in range(3):
        log.append("recording_played", at=T0, detail={"pad": "x" * 5000})

    seq, digest = log.head()

    assert seq == 4
    assert digest == json.loads(log.path.read_bytes().splitlines()[-1])["hash"]


async def test_the_trail_keeps_the_order_of_100_concurrent_records(log: AuditLog) -> None:
    trail = AuditTrail(log)

    entries = await asyncio.gather(
        *(trail.record("recording_played", at=T0, detail={"i": i}) for i in range(100))
    )

    assert [e.detail["i"] for e in entries] == list(range(100))
    assert [e.seq for e in entries] == list(range(2, 102))
    logged = [obj["detail"].get("i") for _, obj in read_log(log.path) if obj is not None]
    assert logged[1:] == list(range(100))
    await trail.close()


async def test_the_trail_closes_once_and_then_refuses(log: AuditLog) -> None:
    trail = AuditTrail(log)
    pending = asyncio.ensure_future(trail.record("recording_played", at=T0))
    await asyncio.sleep(0)

    await trail.close()
    await trail.close()

    assert (await pending).seq == 2
    assert trail.log is log
    with pytest.raises(AuditError, match="closed"):
        await trail.record("recording_played", at=T0)
