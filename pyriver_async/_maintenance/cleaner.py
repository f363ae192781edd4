"""The cleaner (leader only): deletes finalized jobs after their retention, and stale queues.

``completed``, ``cancelled`` and ``discarded`` jobs are deleted once their
``finalized_at`` is older than that state's retention (0 keeps them for ever). Each
statement deletes at most ``batch_size`` rows chosen by id, and the pass goes on
until a batch comes back short, so no statement holds many locks for long.

It also deletes ``river_queue`` rows that no client has refreshed for
``queue_retention`` (a day): queues nobody works any more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .._driver import Driver
from .service import Service, rowcount

__all__ = ["CleanResult", "Cleaner"]

FINALIZED_STATES = ("completed", "cancelled", "discarded")


@dataclass(frozen=True, slots=True)
class CleanResult:
    """What one pass deleted: jobs per state, and queue rows."""

    jobs: Mapping[str, int] = field(default_factory=dict)
    queues: int = 0


class Cleaner(Service):
    name = "cleaner"

    def __init__(
        self,
        pool: asyncpg.Pool,
        driver: Driver,
        *,
        retention: Mapping[str, float | None],
        queue_retention: float = 86400.0,
        interval: float = 30.0,
        batch_size: int = 1000,
        statement_timeout: float = 30.0,
    ) -> None:
        super().__init__(interval=interval)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        unknown = set(retention) - set(FINALIZED_STATES)
        if unknown:
            raise ValueError(f"retention for unknown states {sorted(unknown)}")
        self._pool = pool
        self._driver = driver
        self.retention = {s: float(retention.get(s) or 0.0) for s in FINALIZED_STATES}
        self.queue_retention = float(queue_retention)
        self.batch_size = batch_size
        self.statement_timeout = statement_timeout
        self.last_result = CleanResult()

    async def run_once(self) -> None:
        self.last_result = await self.clean()

    async def clean(self) -> CleanResult:
        """Delete everything past its retention now; return the counts."""
        jobs: dict[str, int] = {}
        async with self._pool.acquire() as conn:
            for state in FINALIZED_STATES:
                keep = self.retention[state]
                if keep <= 0:
                    continue
                jobs[state] = await self._delete_batches(
                    conn, self._driver.sql["maint_clean_jobs"], state, keep
                )
            queues = 0
            if self.queue_retention > 0:
                queues = await self._delete_batches(
                    conn, self._driver.sql["maint_clean_queues"], self.queue_retention
                )
        deleted = sum(jobs.values())
        if deleted or queues:
            self.log.info(
                "deleted %d finalized jobs (%s) and %d stale queues",
                deleted,
                ", ".join(f"{s}: {n}" for s, n in jobs.items() if n),
                queues,
            )
        return CleanResult(jobs=jobs, queues=queues)

    async def _delete_batches(self, conn: Any, sql: str, *args: object) -> int:
        total = 0
        while True:
            status = await conn.execute(sql, *args, self.batch_size, timeout=self.statement_timeout)
            n = rowcount(status)
            total += n
            if n < self.batch_size:
                return total
