"""Queue bookkeeping: every queue a client works has a ``river_queue`` row.

The row is where a pause is persisted and what the UI lists; each client that works a
queue refreshes its ``updated_at``, and the leader's cleaner removes rows that no
client has touched for a day (see :mod:`.cleaner`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .._driver import Executor
from .service import Service

__all__ = ["QueueKeeper"]


class QueueKeeper(Service):
    """Creates this client's queue rows at start, then refreshes them every ``interval``."""

    name = "queues"

    def __init__(
        self,
        executor: Executor,
        queues: Sequence[str],
        *,
        interval: float = 5.0,
    ) -> None:
        super().__init__(interval=interval)
        self._executor = executor
        self.queues = sorted(set(queues))

    async def run_once(self) -> None:
        if not self.queues:
            return
        await self._executor.queue_keep(names=self.queues)
