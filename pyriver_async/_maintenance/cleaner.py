"""The cleaner (leader only): deletes finalized jobs after their retention, and stale queues.

``completed``, ``cancelled`` and ``discarded`` jobs are deleted once their
``finalized_at`` is older than that state's retention (0 keeps them for ever). Each
statement deletes at most ``batch_size`` rows chosen by id, and the pass goes on
until a batch comes back short, so no statement holds many locks for long.

It also deletes ``river_queue`` rows that no client has refreshed for
``queue_retention`` (a day): queues nobody works any more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .._driver import Executor
from .service import Service

__all__ = ["CleanResult", "Cleaner"]

FINALIZED_STATES = ("completed", "cancelled", "discarded")
# The longest a busy queue may hold the cleaner off (seconds).
MAX_DEFERRAL = 300.0


@dataclass(frozen=True, slots=True)
class CleanResult:
    """What one pass deleted: jobs per state, and queue rows."""

    jobs: Mapping[str, int] = field(default_factory=dict)
    queues: int = 0


class Cleaner(Service):
    name = "cleaner"

    def __init__(
        self,
        executor: Executor,
        *,
        retention: Mapping[str, float | None],
        queue_retention: float = 86400.0,
        interval: float = 30.0,
        batch_size: int = 1000,
        busy: Callable[[], bool] | None = None,
        max_deferral: float = MAX_DEFERRAL,
    ) -> None:
        super().__init__(interval=interval)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        unknown = set(retention) - set(FINALIZED_STATES)
        if unknown:
            raise ValueError(f"retention for unknown states {sorted(unknown)}")
        self._executor = executor
        self.retention = {s: float(retention.get(s) or 0.0) for s in FINALIZED_STATES}
        self.queue_retention = float(queue_retention)
        self.batch_size = batch_size
        self.last_result = CleanResult()
        # While this process's producers report a backlog, passes wait (up to
        # max_deferral): the cleaner's DELETEs compete with the claims for the same
        # index pages and the database's one core, and nothing is late for waiting.
        self.busy = busy
        self.max_deferral = max_deferral
        self.deferred = 0
        self._last_clean = time.monotonic()

    async def run_once(self) -> None:
        recent = time.monotonic() - self._last_clean < self.max_deferral
        if recent and self.busy is not None and self.busy():
            self.deferred += 1
            return
        self.last_result = await self.clean()
        self._last_clean = time.monotonic()

    async def clean(self) -> CleanResult:
        """Delete everything past its retention now; return the counts."""
        jobs: dict[str, int] = {}
        queues = 0
        async with self._executor.session() as ex:
            for state in FINALIZED_STATES:
                keep = self.retention[state]
                if keep <= 0:
                    continue
                jobs[state] = 0
                while True:
                    n = await ex.job_clean(state=state, older_than=keep, limit=self.batch_size)
                    jobs[state] += n
                    if n < self.batch_size:
                        break
            if self.queue_retention > 0:
                while True:
                    n = await ex.queue_clean(older_than=self.queue_retention, limit=self.batch_size)
                    queues += n
                    if n < self.batch_size:
                        break
        deleted = sum(jobs.values())
        if deleted or queues:
            self.log.info(
                "deleted %d finalized jobs (%s) and %d stale queues",
                deleted,
                ", ".join(f"{s}: {n}" for s, n in jobs.items() if n),
                queues,
            )
        return CleanResult(jobs=jobs, queues=queues)
