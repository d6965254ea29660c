"""The server's Ed25519 signing key, and the public keys an auditor trusts.

The private key lives in ``keys/signing.key`` (PKCS#8 PEM, mode 0600) and is made on first start;
``keys/signing.pub`` holds its public key. Several nodes may share one data directory and start
together, so the key file is created with a hard link, which fails if another node got there
first: exactly one key ever wins and every node then loads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

logger = logging.getLogger(__name__)

KEY_FILE = "signing.key"
PUBLIC_FILE = "signing.pub"


class AuditError(Exception):
    """A key, log or manifest Setu cannot use, or a request the audit package refuses."""


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key's id: the first 16 hex digits of the SHA-256 of its DER encoding."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def public_pem_of(public_key: Ed25519PublicKey) -> bytes:
    """``public_key`` as SubjectPublicKeyInfo PEM."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` through a temporary file, fsynced, then moved into place.

    With ``replace=False`` an existing ``path`` is left alone (the move is a hard link, which
    fails if the name exists) and ``False`` is returned.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


class SigningKey:
    """The server's Ed25519 private key: signs manifests and audit log entries."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.key_id: str = key_id_of(self.public_key)
        self.public_pem: bytes = public_pem_of(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key that is not stored anywhere (tests, or an auditor's scratch key)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> SigningKey:
        """Load ``keys_dir/signing.key``, creating it (and ``signing.pub``) if missing."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        key_path = keys_dir / KEY_FILE
        if not key_path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            if write_atomic(key_path, pem, 0o600, replace=False):
                logger.info("made a new signing key in %s", key_path)
        key = cls(cls._read_private(key_path))
        pub_path = keys_dir / PUBLIC_FILE
        try:
            current = pub_path.read_bytes()
        except FileNotFoundError:
            current = b""
        if current != key.public_pem:
            write_atomic(pub_path, key.public_pem)
        logger.info("signing key %s loaded", key.key_id)
        return key

    @staticmethod
    def _read_private(path: Path) -> Ed25519PrivateKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise AuditError(f"{path.name}: not a PEM private key ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditError(f"{path.name}: not an Ed25519 key")
        return key

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id})"


def load_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 public keys in the PEM files ``paths``, by key id.

    Raises :class:`AuditError` naming the first file that is missing or holds no such key.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise AuditError(f"{path.name}: cannot read ({exc.strerror})") from exc
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise AuditError(f"{path.name}: not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise AuditError(f"{path.name}: not an Ed25519 public key")
        keys[key_id_of(key)] = key
    return keys
