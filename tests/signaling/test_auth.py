"""Passwords are scrypt hashes; session cookies are signed and expire; guessing is throttled."""

from __future__ import annotations

import pytest

from core.directory import DEMO_DIRECTORY, Directory
from core.store import Redis
from signaling.auth import Accounts, AuthError, LockedOut, hash_password, verify_password


def test_password_hashes() -> None:
    encoded = hash_password("correct horse")
    assert encoded.startswith("scrypt$32768$8$1$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("wrong horse", encoded)
    assert not verify_password("x", "garbage")
    assert hash_password("same") != hash_password("same")  # salted


@pytest.fixture
async def accounts(store: Redis) -> Accounts:
    key = await Accounts.shared_cookie_key(store, None)
    return Accounts(store, Directory.load(DEMO_DIRECTORY), key)


async def test_passwords_are_generated_once(accounts: Accounts) -> None:
    created = await accounts.ensure_passwords(None)
    assert len(created) == 6
    assert len({c.password for c in created}) == 6
    assert await accounts.ensure_passwords(None) == []  # kept, not regenerated
    user = await accounts.login(
        "dr.sharma", next(c.password for c in created if c.username == "dr.sharma")
    )
    assert user.username == "dr.sharma"


async def test_nodes_share_one_cookie_key(store: Redis) -> None:
    assert await Accounts.shared_cookie_key(store, None) == await Accounts.shared_cookie_key(
        store, None
    )


async def test_cookies_are_signed_and_expire(accounts: Accounts) -> None:
    await accounts.ensure_passwords("pw-1")
    user = await accounts.login("nurse.akhlaspur", "pw-1")
    cookie = accounts.issue_cookie(user, now=1000.0)
    assert accounts.user_from_cookie(cookie, now=1001.0) == user
    assert accounts.user_from_cookie(cookie, now=1000.0 + 13 * 3600) is None
    forged = cookie.replace("nurse.akhlaspur", "dr.sharma")
    assert accounts.user_from_cookie(forged, now=1001.0) is None
    assert accounts.user_from_cookie("junk", now=1001.0) is None
    assert accounts.user_from_cookie(None) is None


async def test_wrong_passwords_and_lockout(accounts: Accounts) -> None:
    await accounts.ensure_passwords("pw-1")
    with pytest.raises(AuthError):
        await accounts.login("nobody", "pw-1")
    for _ in range(5):
        with pytest.raises(AuthError):
            await accounts.login("dr.khan", "guess")
    with pytest.raises(LockedOut):
        await accounts.login("dr.khan", "pw-1")
