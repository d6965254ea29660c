"""An owner for background tasks: whoever spawns a task can cancel and await it later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)

#: How long :meth:`TaskOwner.close` waits before cancelling a task that is still running again.
RECANCEL_S = 0.5


class TaskOwner:
    """Keeps the tasks it spawns; :meth:`close` cancels and awaits them all (idempotent)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Run ``coro`` as a task owned by this object; ``None`` once the owner is closed."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task and wait until each has ended.

        A task can swallow its cancellation: redis-py, cancelled in the middle of a command,
        may raise a connection error instead, which a store loop takes for an outage and
        carries on.  So a task still running after :data:`RECANCEL_S` is cancelled again.
        """
        self._closed = True
        current = asyncio.current_task()
        pending = {t for t in self._tasks if t is not current}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
            for task in pending:
                logger.debug(
                    "task %s ignored its cancellation; cancelling it again", task.get_name()
                )
