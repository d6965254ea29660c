"""Accounts: password hashes in the store, signed session cookies, and who may do what.

Passwords are hashed with scrypt (memory-hard) in a worker thread.  The session cookie carries
the username and an expiry, signed with HMAC-SHA256 under a key that every server process
shares through the store.  A cookie is checked on every page, HTTP call and websocket.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from core.directory import Directory, User
from core.store import UNAVAILABLE, Redis, StoreUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

COOKIE_NAME = "setu_session"
SESSION_TTL_S = 12 * 3600
_CREDENTIALS = "auth:credentials"
_COOKIE_KEY = "auth:cookie-key"
_FAILURES = "auth:failures:"
MAX_FAILURES = 5
LOCKOUT_S = 60
#: Threads hashing passwords, and how many sign-ins may wait for one before being refused.
HASH_THREADS = 2
MAX_HASHES_WAITING = 16

# scrypt cost: 32 MiB of memory per hash, about 50-100 ms on one core.
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024


class AuthError(Exception):
    code = "unauthorized"


class LockedOut(AuthError):
    code = "locked_out"


class Busy(AuthError):
    code = "busy"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    salt_b64, digest_b64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"scrypt${_N}${_R}${_P}${salt_b64}${digest_b64}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), maxmem=_MAXMEM
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True)
class NewPassword:
    username: str
    password: str


class Accounts:
    """Checks passwords and session cookies against the directory and the store."""

    def __init__(self, store: Redis, directory: Directory, cookie_key: bytes) -> None:
        self._store = store
        self._directory = directory
        self._key = cookie_key
        self._pool = concurrent.futures.ThreadPoolExecutor(HASH_THREADS, "password-hash")
        self._hashing = 0

    @staticmethod
    async def shared_cookie_key(store: Redis, configured: str | None) -> bytes:
        """The configured key, or one generated once and shared by every node via the store."""
        if configured:
            return hashlib.sha256(configured.encode()).digest()
        await store.set(_COOKIE_KEY, secrets.token_hex(32), nx=True)
        key = await store.get(_COOKIE_KEY)
        if key is None:  # pragma: no cover - set just above
            raise StoreUnavailable("cookie key vanished from the store")
        return bytes.fromhex(str(key))

    async def ensure_passwords(self, demo_password: str | None) -> list[NewPassword]:
        """Give every directory user without a password one; returns those generated now."""
        existing = await self._store.hkeys(_CREDENTIALS)
        created = []
        for user in self._directory.users.values():
            if user.username in existing:
                continue
            password = demo_password or _readable_password()
            encoded = await self._hash(hash_password, password)
            if await self._store.hsetnx(_CREDENTIALS, user.username, encoded):
                created.append(NewPassword(user.username, password))
        return created

    async def set_password(self, username: str, password: str) -> None:
        encoded = await self._hash(hash_password, password)
        await self._store.hset(_CREDENTIALS, username, encoded)

    async def login(self, username: str, password: str) -> User:
        """The user whose password this is; :class:`AuthError` otherwise (never says which part)."""
        user = self._directory.user(username)
        try:
            # Count the attempt before checking it, so that guesses sent in parallel cannot all
            # pass a count read before any of them failed.
            async with self._store.pipeline(transaction=True) as pipe:
                pipe.incr(_FAILURES + username)
                pipe.expire(_FAILURES + username, LOCKOUT_S)
                attempts, _ = await pipe.execute()
            if int(attempts) > MAX_FAILURES:
                raise LockedOut("too many failed attempts; try again in a minute")
            stored = await self._store.hget(_CREDENTIALS, username) if user else None
            encoded = str(stored) if stored is not None else None
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        # Hash even for unknown users so that timing does not reveal who exists.
        ok = await self._hash(verify_password, password, encoded or _DUMMY_HASH)
        if not ok or user is None or encoded is None:
            raise AuthError("wrong username or password")
        with contextlib.suppress(*UNAVAILABLE):
            await self._store.delete(_FAILURES + username)
        return user

    async def _hash(self, func: Callable[..., T], *args: object) -> T:
        """Run a password hash on the accounts' own small pool, refusing when it is swamped:
        each one takes 32 MiB and a tenth of a second, and a flood must not exhaust either."""
        if self._hashing >= MAX_HASHES_WAITING:
            raise Busy("too many sign-ins at once; try again in a moment")
        self._hashing += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)
        finally:
            self._hashing -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def issue_cookie(self, user: User, now: float | None = None) -> str:
        expiry = int((now or time.time()) + SESSION_TTL_S)
        body = f"{user.username}|{expiry}|{secrets.token_hex(8)}"
        return body + "|" + self._sign(body)

    def user_from_cookie(self, value: str | None, now: float | None = None) -> User | None:
        if not value or len(value) > 512:
            return None
        body, sep, signature = value.rpartition("|")
        if not sep or not value.isascii():
            return None
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        try:
            username, expiry, _nonce = body.split("|")
            if int(expiry) < (now or time.time()):
                return None
        except ValueError:
            return None
        return self._directory.user(username)

    def form_token(self, session_cookie: str) -> str:
        """A token bound to one session, that a page's form echoes to prove it came from us.

        Another site can make a browser post with our cookie (SameSite=Lax does not stop
        every case) but cannot read our page, so it cannot know this token.
        """
        return self._sign("form|" + session_cookie)

    def check_form_token(self, session_cookie: str | None, token: str) -> bool:
        if not session_cookie or not token:
            return False
        # As bytes: compare_digest refuses non-ASCII str, and the token comes from a form.
        return hmac.compare_digest(token.encode(), self.form_token(session_cookie).encode())

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _readable_password() -> str:
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(3))


_DUMMY_HASH = hash_password(secrets.token_hex(8))
