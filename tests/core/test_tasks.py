"""The task owner: every task it spawned has ended when close() returns."""

from __future__ import annotations

import asyncio
import contextlib

from core.tasks import RECANCEL_S, TaskOwner


async def test_close_ends_a_task_that_swallows_its_first_cancellation() -> None:
    """As a store loop does when redis-py turns a cancellation into a connection error."""
    owner = TaskOwner("test")
    cancelled = 0

    async def stubborn() -> None:
        nonlocal cancelled
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled += 1
                if cancelled > 1:
                    raise

    task = owner.spawn(stubborn(), "stubborn")
    assert task is not None
    await asyncio.sleep(0)
    async with asyncio.timeout(RECANCEL_S * 4):
        await owner.close()
    assert task.cancelled()
    assert cancelled == 2
    # Closed for good: nothing more is spawned.
    coro = asyncio.sleep(0)
    assert owner.spawn(coro, "late") is None
    with contextlib.suppress(RuntimeError):
        coro.close()
