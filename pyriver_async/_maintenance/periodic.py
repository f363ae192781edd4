"""The periodic enqueuer (leader only): inserts the runs of the client's periodic jobs.

The schedules, ids and the catch-up rule are in :mod:`pyriver_async._periodic`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .._driver import Executor
from .._errors import ConfigError, InvalidArgsError, InvalidOptsError
from .._insert import insert_params
from .._insert_params import build_insert_params
from .._periodic import (
    CATCH_UP_WINDOW,
    PeriodicJob,
    PeriodicJobHandle,
    PeriodicJobs,
    as_run,
    utc_text,
)
from .service import Service

__all__ = ["PeriodicEnqueuer"]


@dataclass(slots=True)
class _Entry:
    handle: PeriodicJobHandle
    next_run: datetime
    pending: list[datetime]


class PeriodicEnqueuer(Service):
    """Inserts the runs of a :class:`PeriodicJobs` collection (run by the leader only).

    Each start is a new term: the catch-up rule of the module docstring applies to
    every job present then. It wakes at the next due run, on every change to the
    collection, and at least every ``max_wait`` seconds.
    """

    name = "periodic"

    def __init__(
        self,
        executor: Executor,
        jobs: PeriodicJobs,
        *,
        max_wait: float = 1.0,
        catch_up_window: float = CATCH_UP_WINDOW,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(interval=max_wait)
        self._executor = executor
        self.jobs = jobs
        self.catch_up_window = float(catch_up_window)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._entries: dict[int, _Entry] = {}
        self._first = True
        self._unsubscribe: Callable[[], None] | None = None
        self.inserted = 0  # runs inserted by this enqueuer (duplicates not counted)

    def start(self) -> None:
        if self.running:
            return
        self._entries = {}
        self._first = True
        if self._unsubscribe is None:
            self._unsubscribe = self.jobs._subscribe(self.wake)
        super().start()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await super().stop()

    def next_wait(self) -> float:
        if not self._entries:
            return self.interval
        now = self._clock()
        soonest = min(e.next_run for e in self._entries.values())
        if any(e.pending for e in self._entries.values()):
            return min(self.interval, 0.1)
        return max(0.0, min(self.interval, (soonest - now).total_seconds()))

    async def run_once(self) -> None:
        now = self._clock()
        self._sync(now)
        for entry in self._entries.values():
            if now >= entry.next_run:
                latest = entry.handle.job.schedule.latest_at_or_before(now)
                run_at = latest if latest is not None else entry.next_run
                if run_at not in entry.pending:
                    entry.pending.append(run_at)
                entry.next_run = entry.handle.job.schedule.next_after(now)
        due = [e for e in self._entries.values() if e.pending]
        if not due:
            return
        async with self._executor.session() as ex:
            for entry in due:
                while entry.pending:
                    await self._insert(ex, entry.handle.job, entry.pending[0])
                    entry.pending.pop(0)

    def _sync(self, now: datetime) -> None:
        """Follow additions and removals; the first pass of a term applies the catch-up rule."""
        current = {h.serial: h for h in self.jobs.handles()}
        for serial in [s for s in self._entries if s not in current]:
            del self._entries[serial]
        for serial, handle in current.items():
            if serial in self._entries:
                continue
            job = handle.job
            pending: list[datetime] = []
            if job.run_on_start:
                pending.append(now)
            elif self._first and self.catch_up_window > 0:
                latest = job.schedule.latest_at_or_before(now)
                if latest is not None and (now - latest).total_seconds() <= self.catch_up_window:
                    pending.append(latest)
            self._entries[serial] = _Entry(handle, job.schedule.next_after(now), pending)
        self._first = False

    async def _insert(self, ex: Executor, job: PeriodicJob, run_at: datetime) -> None:
        """Insert one run. Bad args or options are logged and the run is skipped; database
        errors propagate, and the run is tried again on the next pass."""
        try:
            args = job.args_factory()
            job._resolve_id(args)
            params = build_insert_params(args, job.opts)
        except (InvalidArgsError, InvalidOptsError, ConfigError, TypeError, ValueError) as exc:
            self.log.error(
                "periodic job %r: cannot build the run of %s, skipped: %s",
                job.known_id or job.schedule.describe(),
                utc_text(run_at),
                exc,
            )
            return
        except Exception:
            self.log.exception(
                "periodic job %r: its args_factory failed; the run of %s is skipped",
                job.known_id or job.schedule.describe(),
                utc_text(run_at),
            )
            return
        params = as_run(params, job.id, run_at)
        t0 = time.monotonic()
        res = await insert_params(ex, params, timeout=30.0)
        if not res.unique_skipped_as_duplicate:
            self.inserted += 1
            # DEBUG: one line per job would flood INFO for a job run every second.
            self.log.debug(
                "periodic job %r: inserted job %d for the run of %s (%.0f ms)",
                job.id,
                res.job.id,
                utc_text(run_at),
                (time.monotonic() - t0) * 1000,
            )
        else:
            self.log.debug(
                "periodic job %r: the run of %s was already inserted", job.id, utc_text(run_at)
            )
