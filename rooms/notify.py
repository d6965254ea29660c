"""Telling patients their turn is near, outside the browser (an SMS gateway plugs in here).

Setu's default notifier only logs.  A deployment that sends SMS implements :class:`Notifier`
(one async method) and passes it to the service keeper; the keeper calls it at most once per
token, whichever server process sees the token near the head of the queue first.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .waiting_room import Token

logger = logging.getLogger(__name__)


class Notifier(Protocol):
    async def turn_near(self, token: Token, position: int) -> None:
        """``token`` is ``position`` places from being called."""


class LogNotifier:
    """Writes the notice to the log (the patient's phone, if given, is masked)."""

    async def turn_near(self, token: Token, position: int) -> None:
        phone = token.patient.phone
        masked = f"…{phone[-3:]}" if phone else "no phone"
        logger.info("turn near: token %s (%s) at position %d", token.id, masked, position)
