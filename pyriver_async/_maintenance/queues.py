"""Queue bookkeeping: every queue a client works has a ``river_queue`` row.

The row is where a pause is persisted and what the UI lists; each client that works a
queue refreshes its ``updated_at``, and the leader's cleaner removes rows that no
client has touched for a day (see :mod:`.cleaner`).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .._driver import Driver
from .service import Service

__all__ = ["QueueKeeper"]


class QueueKeeper(Service):
    """Creates this client's queue rows at start, then refreshes them every ``interval``."""

    name = "queues"

    def __init__(
        self,
        pool: asyncpg.Pool,
        driver: Driver,
        queues: Sequence[str],
        *,
        interval: float = 5.0,
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self._driver = driver
        self.queues = sorted(set(queues))

    async def run_once(self) -> None:
        if not self.queues:
            return
        async with self._pool.acquire() as conn:
            await conn.execute(self._driver.sql["maint_queue_keep"], self.queues)
