"""``server.py verify``: check the audit log and the consultations, and name what was changed.

The log is checked in four passes over its readable entries (see :func:`verify_log`); each
consultation against its manifest, its signature and the log (see :func:`verify_consultation`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .archive import Archive
from .keys import AuditError, load_public_keys
from .log import GENESIS, entry_hash, read_log
from .manifest import MANIFEST, OWN_FILES, RECORDING, SIGNATURE, sha256_file

LOG = "audit log"
_FIELDS = {"seq": int, "at": str, "kind": str, "prev": str, "key_id": str, "hash": str, "sig": str}


@dataclass(frozen=True)
class Problem:
    """Something altered, removed, inserted, reordered, replaced, unreadable or unsigned."""

    subject: str  # "audit log" or a consultation id
    what: str  # "entry 17", "entries 21 and 22", "spoke-1.webm", "manifest"
    how: str
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.subject}: {self.what} {self.how}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class Notice:
    """Something worth saying that is not tampering (files purged by retention, say)."""

    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


@dataclass
class Report:
    """What :func:`verify` found."""

    problems: list[Problem] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    consultations: int = 0
    entries: int = 0

    @property
    def ok(self) -> bool:
        """Whether nothing was found altered, removed, inserted, reordered or replaced."""
        return not self.problems


@dataclass(eq=False)  # hashed by identity: two lines may hold equal entries
class _Entry:
    line: int
    obj: dict[str, Any]
    status: str  # "ok", "edited" (hash does not match content), "unsigned" (signature fails)

    @property
    def seq(self) -> int:
        return int(self.obj["seq"])

    @property
    def hash(self) -> str:
        return str(self.obj["hash"])


def _signed(data: bytes, sig: str, key: Ed25519PublicKey | None) -> bool:
    if key is None:
        return False
    try:
        key.verify(base64.b64decode(sig.strip(), validate=True), data)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _names(seqs: Sequence[int]) -> str:
    seqs = sorted(seqs)
    if len(seqs) == 1:
        return f"entry {seqs[0]}"
    return "entries " + ", ".join(map(str, seqs[:-1])) + f" and {seqs[-1]}"


def verify_log(
    path: Path, keys: Mapping[str, Ed25519PublicKey]
) -> tuple[list[Problem], list[dict[str, Any]]]:
    """The problems of the log at ``path`` and its intact (trusted, in place) entries.

    1. Each line must be a JSON object with the entry fields (else *unreadable*); its hash must
       match its content (else it was edited) and its signature must verify with the trusted
       key it names (else its hash was recomputed, or it was not written by Setu).
    2. A failing entry is *inserted* if the good entries around it link to each other directly
       (the next one's ``prev`` is the previous one's hash and its seq the next number), or if
       it repeats the seq of a good entry; otherwise it is an *altered* entry in its place.
       Of two identical good entries, the one that does not follow its ``prev`` is a copy.
    3. Entries still in place are compared with their seq order: each cycle of the permutation
       from file order to seq order names entries that were *reordered* (a swap is a 2-cycle,
       so both swapped entries are named, however far apart).
    4. In seq order, a missing number is an entry *removed* (unless unreadable lines stand in
       its place), and a ``prev`` that does not match the previous hash, where no alteration
       explains it, is an entry *replaced*. Entries cut from the end of the log leave no trace
       here; consultations whose ``consultation_ended`` entry is gone are caught by
       :func:`verify_consultation`.
    """
    return _check_log(read_log(path), keys)


def _check_log(
    lines: Sequence[tuple[int, dict[str, Any] | None]], keys: Mapping[str, Ed25519PublicKey]
) -> tuple[list[Problem], list[dict[str, Any]]]:
    problems: list[Problem] = []
    entries: list[_Entry] = []
    unreadable: list[int] = []
    for line, obj in lines:
        bad = [k for k, t in _FIELDS.items() if obj is None or type(obj.get(k)) is not t]
        if obj is None or bad:
            why = "not a JSON object" if obj is None else "missing " + ", ".join(bad)
            problems.append(Problem(LOG, f"line {line}", "unreadable", why))
            unreadable.append(line)
            continue
        if entry_hash(obj) != obj["hash"]:
            status = "edited"
        elif _signed(obj["hash"].encode(), obj["sig"], keys.get(obj["key_id"])):
            status = "ok"
        else:
            status = "unsigned"
        entries.append(_Entry(line, obj, status))
    if entries and all(e.status != "ok" and e.obj["key_id"] not in keys for e in entries):
        named = ", ".join(sorted({str(e.obj["key_id"]) for e in entries}))
        why = f"none is signed by a trusted key: {named}"
        return [*problems, Problem(LOG, "every entry", "unsigned", why)], []
    inserted = _inserted(entries)
    for e in entries:
        if e in inserted:
            problems.append(Problem(LOG, f"entry at line {e.line}", "inserted", inserted[e]))
        elif e.status == "edited":
            why = "its hash does not match its content"
            problems.append(Problem(LOG, f"entry {e.seq}", "altered", why))
        elif e.status == "unsigned":
            kid = e.obj["key_id"]
            why = (
                "its signature does not match: its hash was recomputed"
                if kid in keys
                else f"signed by an unknown key {kid}"
            )
            problems.append(Problem(LOG, f"entry {e.seq}", "altered", why))
    placed = [e for e in entries if e not in inserted]
    problems += _reordered(placed)
    problems += _chain_breaks(placed, unreadable)
    return problems, [e.obj for e in placed if e.status == "ok"]


_START = _Entry(0, {"seq": 0, "hash": GENESIS, "prev": ""}, "ok")


def _inserted(entries: list[_Entry]) -> dict[_Entry, str]:
    """Pass 2: the entries that were added to the log, and why each is taken for one."""
    inserted: dict[_Entry, str] = {}
    by_hash: dict[str, list[int]] = {}
    for k, e in enumerate(entries):
        if e.status == "ok":
            by_hash.setdefault(e.hash, []).append(k)
    for same in by_hash.values():
        # Keep the copy that follows the entry its prev names (else the first one).
        fits = [k for k in same if (entries[k - 1] if k else _START).hash == entries[k].obj["prev"]]
        keep = (fits or same)[0]
        for k in same:
            if k != keep:
                inserted[entries[k]] = f"a copy of entry {entries[k].seq}"
    good_seqs = {e.seq for e in entries if e.status == "ok" and e not in inserted}
    i = 0
    while i < len(entries):
        if entries[i].status == "ok":
            i += 1
            continue
        j = i
        while j < len(entries) and entries[j].status != "ok":
            j += 1
        before = next((e for e in reversed(entries[:i]) if e not in inserted), _START)
        after = entries[j] if j < len(entries) else None
        linked = (
            after is not None and after.obj["prev"] == before.hash and after.seq == before.seq + 1
        )
        for e in entries[i:j]:
            claimed = after is not None and after.obj["prev"] == e.hash
            if not claimed and (linked or e.seq in good_seqs):
                inserted[e] = (
                    "its hash does not match its content"
                    if e.status == "edited"
                    else "not signed by a trusted key"
                )
        i = j
    return inserted


def _reordered(placed: list[_Entry]) -> list[Problem]:
    """Pass 3: the cycles of the permutation that sorts ``placed`` (file order) by seq."""
    target = {e: k for k, e in enumerate(sorted(placed, key=lambda e: (e.seq, e.line)))}
    problems: list[Problem] = []
    seen: set[int] = set()
    for k, e in enumerate(placed):
        if target[e] == k or k in seen:
            continue
        cycle, m = [], k
        while m not in seen:
            seen.add(m)
            cycle.append(placed[m].seq)
            m = target[placed[m]]
        problems.append(Problem(LOG, _names(cycle), "reordered"))
    return problems


def _chain_breaks(placed: list[_Entry], unreadable: list[int]) -> list[Problem]:
    """Pass 4: removed and replaced entries, walking ``placed`` in seq order."""
    problems: list[Problem] = []
    prev = _START
    for e in sorted(placed, key=lambda e: (e.seq, e.line)):
        gap = e.seq - prev.seq - 1
        if gap > 0:
            if sum(1 for n in unreadable if prev.line < n < e.line) < gap:
                first, last = prev.seq + 1, e.seq - 1
                what = f"entry {first}" if gap == 1 else f"entries {first} to {last}"
                where = f"follows entry {prev.seq}" if prev.seq else "starts the log"
                problems.append(Problem(LOG, what, "removed", f"entry {e.seq} {where}"))
        elif gap < 0:
            why = f"a second entry {e.seq}"
            problems.append(Problem(LOG, f"entry at line {e.line}", "inserted", why))
        elif e.obj["prev"] != prev.hash and e.status == "ok" and prev.status != "unsigned":
            why = f"its prev is not the hash of entry {prev.seq}" if prev.seq else "a new chain"
            problems.append(Problem(LOG, f"entry {e.seq}", "replaced", why))
        prev = e
    return problems


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _detail(entry: Mapping[str, Any]) -> dict[str, Any]:
    detail = entry.get("detail")
    return detail if isinstance(detail, dict) else {}


def _file_list(value: Any) -> list[dict[str, Any]]:
    return [f for f in value if isinstance(f, dict)] if isinstance(value, list) else []


def verify_consultation(
    directory: Path, keys: Mapping[str, Ed25519PublicKey], entries: Sequence[Mapping[str, Any]]
) -> tuple[list[Problem], list[Notice]]:
    """Check one consultation directory against its manifest and the intact log ``entries``.

    The manifest must be signed by a trusted key and its SHA-256 must be the one a
    ``consultation_ended`` entry recorded (else it was *replaced*; with no such entry it was
    *inserted*). Files are checked against the manifest, or against the log's list when the
    manifest cannot be trusted. A missing file is *removed* unless a ``recording_purged``
    receipt for it exists; any file the list does not name is *inserted*.
    """
    cid = directory.name
    mine = [e for e in entries if e.get("subject") == cid]
    ended = [e for e in mine if e.get("kind") == "consultation_ended"]
    purges = [e for e in mine if e.get("kind") == "recording_purged"]
    problems: list[Problem] = []
    notices: list[Notice] = []
    logged = _file_list(_detail(ended[-1]).get("files")) if ended else []
    files, source = logged, "the audit log"
    hashes = [_detail(e).get("manifest_sha256") for e in ended]
    problems.extend(_check_superseded(directory, keys, hashes))
    try:
        data = (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        if (directory / RECORDING).exists():
            # Recording now (or a crash not yet sealed): an earlier life may have ended.
            notices.append(Notice(cid, "not sealed yet (recording.json without a manifest)"))
            return problems, notices
        if ended:
            problems.append(Problem(cid, "manifest", "removed", "the audit log records its end"))
        else:
            if any(directory.iterdir()):
                problems.append(Problem(cid, "manifest", "removed", "files without a manifest"))
            return problems, notices
    else:
        manifest = _json_object(data)
        replaced = []
        try:
            sig = (directory / SIGNATURE).read_text("ascii")
        except (OSError, UnicodeDecodeError):
            problems.append(Problem(cid, "manifest", "unsigned", "manifest.sig is missing"))
        else:
            kid = str(manifest.get("key_id")) if manifest else None
            if kid is None:
                replaced.append("it is not a JSON object")
            elif kid not in keys:
                replaced.append(f"signed by an unknown key {kid}")
            elif not _signed(data, sig, keys[kid]):
                replaced.append("its signature does not match")
        sha = hashlib.sha256(data).hexdigest()
        if not ended:
            problems.append(Problem(cid, "manifest", "inserted", "the audit log never recorded it"))
        elif sha != hashes[-1]:
            # The manifest in place must be the last one the log recorded for this
            # consultation (a re-opened consultation writes a new one and sets the old aside).
            replaced.append("its SHA-256 differs from the audit log")
        if replaced:
            problems.append(Problem(cid, "manifest", "replaced", "; ".join(replaced)))
        if manifest is not None and (not ended or not replaced):
            files, source = _file_list(manifest.get("files")), "the manifest"
    listed = {str(f.get("name")) for f in files}
    purged: dict[str, list[str]] = {}
    for f in files:
        name = str(f.get("name"))
        path = directory / name
        if name != Path(name).name or not path.is_file():
            receipt = next(
                (
                    (str(p.get("at", ""))[:10], r)
                    for p in reversed(purges)
                    for r in _file_list(_detail(p).get("files"))
                    if r.get("name") == name
                ),
                None,
            )
            if receipt is None:
                problems.append(Problem(cid, name, "removed", f"listed in {source}, not on disk"))
            elif receipt[1].get("sha256") != f.get("sha256"):
                why = f"purged on {receipt[0]}, but its SHA-256 then differed from {source}"
                problems.append(Problem(cid, name, "altered", why))
            else:
                purged.setdefault(receipt[0], []).append(name)
            continue
        digest, size = sha256_file(path)
        if digest != f.get("sha256") or size != f.get("bytes"):
            problems.append(Problem(cid, name, "altered", f"SHA-256 differs from {source}"))
    for day, names in sorted(purged.items()):
        notices.append(Notice(cid, f"{', '.join(names)} purged by retention on {day}"))
    for path in sorted(directory.iterdir()):
        if _SUPERSEDED.match(path.name):
            continue
        if path.name not in OWN_FILES and path.name not in listed:
            problems.append(Problem(cid, path.name, "inserted", f"on disk, not in {source}"))
    return problems, notices


_SUPERSEDED = re.compile(r"^manifest-[0-9]+\.(json|sig)$")


def _check_superseded(
    directory: Path, keys: Mapping[str, Ed25519PublicKey], hashes: Sequence[object]
) -> list[Problem]:
    """Manifests of a consultation's earlier lives (``manifest-<n>.json``, set aside when it
    was re-opened after its server died): each signed and recorded by the log, in order."""
    problems = []
    cid = directory.name
    for n, path in enumerate(sorted(directory.glob("manifest-*.json"), key=_number), start=1):
        name = path.name
        data = path.read_bytes()
        manifest = _json_object(data)
        sig_path = path.with_suffix(".sig")
        kid = str(manifest.get("key_id")) if manifest else ""
        try:
            signed = _signed(data, sig_path.read_text("ascii"), keys.get(kid))
        except (OSError, UnicodeDecodeError):
            signed = False
        if not signed:
            problems.append(Problem(cid, name, "replaced", "its signature does not match"))
        elif len(hashes) < n + 1 or hashlib.sha256(data).hexdigest() != hashes[n - 1]:
            problems.append(
                Problem(cid, name, "replaced", "its SHA-256 differs from the audit log")
            )
    return problems


def _number(path: Path) -> int:
    digits = path.stem.partition("-")[2]
    return int(digits) if digits.isdigit() else 0


def _locate(path: Path) -> tuple[Path | None, list[Path]]:
    """(the data directory, the consultation directories to check) for ``path``."""
    path = path.resolve()
    if any((path / name).is_dir() for name in ("audit", "consultations", "keys")):
        return path, list(Archive(path / "consultations").directories())
    if path.parent.parent.name == "consultations":
        return path.parent.parent.parent, [path]
    if (path / MANIFEST).exists() or (path / RECORDING).exists():
        return None, [path]
    raise AuditError(f"{path}: neither a data directory nor a consultation directory")


def verify(path: Path, *, log: Path | None = None, key_files: Sequence[Path] = ()) -> Report:
    """Check ``path``: a data directory (everything) or one consultation's directory.

    ``log`` defaults to the data directory's ``audit/audit.log`` and ``key_files`` to its
    ``keys/*.pub``. Raises :class:`AuditError` when there is nothing to check against.
    """
    data_dir, directories = _locate(path)
    if not key_files and data_dir is not None:
        key_files = sorted((data_dir / "keys").glob("*.pub"))
    keys = load_public_keys(key_files)
    if not keys:
        raise AuditError("no trusted public key: pass --key FILE")
    explicit = log is not None
    if log is None:
        if data_dir is None:
            raise AuditError(f"{path}: cannot tell where the audit log is: pass --log FILE")
        log = data_dir / "audit" / "audit.log"
    report = Report(consultations=len(directories))
    entries: list[dict[str, Any]] = []
    if log.is_file():
        lines = read_log(log)
        problems, entries = _check_log(lines, keys)
        report.problems.extend(problems)
        report.entries = len(lines)
    elif explicit:
        raise AuditError(f"{log}: no such file")
    elif directories:
        report.problems.append(Problem(LOG, "audit/audit.log", "removed", "the file is missing"))
    for directory in directories:
        problems, notices = verify_consultation(directory, keys, entries)
        report.problems.extend(problems)
        report.notices.extend(notices)
    if data_dir is not None and path.resolve() == data_dir:
        names = {d.name for d in directories}
        for e in entries:
            subject = e.get("subject")
            if e.get("kind") == "consultation_ended" and subject not in names:
                why = "the audit log records it, its directory is missing"
                report.problems.append(Problem(str(subject), "consultation", "removed", why))
                names.add(str(subject))
    return report


def main(argv: Sequence[str]) -> int:
    """``server.py verify PATH [--log FILE] [--key FILE ...]``; exit 0 ok, 1 problems, 2 usage."""
    parser = argparse.ArgumentParser(
        prog="server.py verify",
        description="Check the audit log, the manifests and the recordings (docs/recording.md).",
    )
    parser.add_argument("path", type=Path, help="the data directory or one consultation's")
    parser.add_argument("--log", type=Path, help="the audit log (default: the data directory's)")
    parser.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        help="a trusted public key (PEM; repeatable; default: the data directory's keys/*.pub)",
    )
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if not args.path.exists():
        print(f"verify: {args.path}: no such file or directory", file=sys.stderr)
        return 2
    try:
        report = verify(args.path, log=args.log, key_files=args.key)
    except AuditError as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(problem)
    for notice in report.notices:
        print(notice)
    if not report.ok:
        print(f"verify: {len(report.problems)} problems found", file=sys.stderr)
        return 1
    print(f"ok: {report.consultations} consultations, {report.entries} log entries checked")
    return 0
