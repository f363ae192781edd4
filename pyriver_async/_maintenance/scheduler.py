"""The scheduler (leader only): due ``scheduled`` and ``retryable`` jobs become ``available``.

Each statement moves up to ``batch_size`` jobs and wakes the producers of every queue
that received some (one NOTIFY per queue, sent in the same statement), so they start
the jobs at once rather than at their next poll. A full batch is followed by another
at once; a short one ends the pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._driver import Executor
from .service import Service

__all__ = ["ScheduleResult", "Scheduler"]


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """What one pass did: jobs made available, and jobs discarded for a unique conflict."""

    available: int = 0
    discarded: int = 0


class Scheduler(Service):
    name = "scheduler"

    def __init__(
        self,
        executor: Executor,
        *,
        interval: float = 1.0,
        batch_size: int = 10_000,
    ) -> None:
        super().__init__(interval=interval)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._executor = executor
        self.batch_size = batch_size
        self.last_result = ScheduleResult()

    async def run_once(self) -> None:
        self.last_result = await self.schedule()

    async def schedule(self) -> ScheduleResult:
        """Promote every due job now; return the counts."""
        available = discarded = 0
        async with self._executor.session() as ex:
            while True:
                counts = await ex.job_schedule(limit=self.batch_size)
                total, gone = counts.total, counts.discarded
                available += total - gone
                discarded += gone
                if gone:
                    self.log.warning(
                        "discarded %d retryable jobs whose unique key is now held by "
                        "another job (metadata unique_key_conflict = scheduler_discarded)",
                        gone,
                    )
                if total < self.batch_size:
                    break
        if available:
            self.log.debug("made %d jobs available", available)
        return ScheduleResult(available=available, discarded=discarded)
