"""Time-limited TURN credentials, as coturn's ``use-auth-secret`` checks them.

The scheme is the one of draft-uberti-behave-turn-rest ("A REST API for access to TURN
services"): Setu and the TURN server share a secret; the username is ``<expiry>:<user id>``, with
the expiry in Unix seconds, and the password is ``base64(HMAC-SHA1(secret, username))``.  The
TURN server recomputes the password from the username and refuses a username whose expiry has
passed, so nothing has to be stored or revoked: a credential simply stops working.

The credentials are secrets while they are valid: nothing here logs them, nor the shared secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field

from .settings import IceServer, Settings


@dataclass(frozen=True)
class TurnCredential:
    """One TURN username and password, valid until ``expires_at`` (Unix seconds)."""

    username: str
    password: str = field(repr=False)
    expires_at: int


def turn_credential(secret: str, user_id: str, expires_at: int) -> TurnCredential:
    """The credential of ``user_id`` that the TURN server accepts until ``expires_at``."""
    if not user_id:
        raise ValueError("a TURN credential needs a user id")
    username = f"{expires_at}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires_at)


def client_ice_servers(
    settings: Settings, user_id: str, now: float | None = None
) -> tuple[IceServer, ...]:
    """The ICE servers for one client's peer connection.

    The static ``--ice-servers``, then, when a TURN server with time-limited credentials is
    configured, one entry with all of its ``--turn-url`` URLs and a credential for ``user_id``
    valid for ``--turn-ttl`` seconds from ``now`` (Unix seconds; the current time by default).
    Call it for every join: a client that comes back gets a fresh credential.
    """
    if not settings.turn_urls or settings.turn_secret is None:
        return settings.ice_servers
    moment = time.time() if now is None else now
    credential = turn_credential(settings.turn_secret, user_id, int(moment) + settings.turn_ttl_s)
    turn = IceServer(
        urls=settings.turn_urls, username=credential.username, credential=credential.password
    )
    return (*settings.ice_servers, turn)
