"""The signing key: made once, kept private, reloaded; trusted public keys."""

from __future__ import annotations

import hashlib
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from audit import AuditError, SigningKey, key_id_of, load_public_keys


def test_key_is_created_once_and_reloaded(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    first = SigningKey.load_or_create(keys_dir)
    again = SigningKey.load_or_create(keys_dir)

    assert again.key_id == first.key_id
    assert stat.S_IMODE((keys_dir / "signing.key").stat().st_mode) == 0o600
    assert (keys_dir / "signing.pub").read_bytes() == first.public_pem
    assert sorted(p.name for p in keys_dir.iterdir()) == ["signing.key", "signing.pub"]


def test_key_id_is_the_start_of_the_sha256_of_the_der_public_key(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path)
    der = key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert key.key_id == hashlib.sha256(der).hexdigest()[:16]
    assert key_id_of(key.public_key) == key.key_id


def test_nodes_starting_together_share_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: SigningKey.load_or_create(tmp_path), range(8)))

    assert {k.key_id for k in keys} == {SigningKey.load_or_create(tmp_path).key_id}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_lost_public_key_file_is_written_again(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path)
    (tmp_path / "signing.pub").unlink()

    SigningKey.load_or_create(tmp_path)

    assert (tmp_path / "signing.pub").read_bytes() == key.public_pem


def test_signatures_verify_with_the_public_key(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path)
    trusted = load_public_keys([tmp_path / "signing.pub"])

    trusted[key.key_id].verify(key.sign(b"manifest bytes"), b"manifest bytes")


def test_load_public_keys_names_a_bad_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pub"
    good.write_bytes(SigningKey.generate().public_pem)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key\n")
    ecdsa = tmp_path / "ecdsa.pub"
    ecdsa.write_bytes(
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    assert len(load_public_keys([good])) == 1
    with pytest.raises(AuditError, match=r"garbage\.pub"):
        load_public_keys([good, garbage])
    with pytest.raises(AuditError, match=r"ecdsa\.pub: not an Ed25519"):
        load_public_keys([ecdsa])
    with pytest.raises(AuditError, match=r"missing\.pub"):
        load_public_keys([tmp_path / "missing.pub"])


def test_a_private_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    (tmp_path / "signing.key").write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(AuditError, match="not an Ed25519 key"):
        SigningKey.load_or_create(tmp_path)
