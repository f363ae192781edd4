"""The producer: one per queue. Claims batches of jobs sized to free slots and runs them.

Wake-ups: an insert notification for the queue (debounced by ``fetch_cooldown``), a
slot freed while the last claim came back full (a backlog), and ``poll_interval`` as
the safety net when notifications are lost or the notifier is down.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncpg

from ._aio import wait_event
from ._backoff import reconnect_delays
from ._completer import RETRYABLE_ERRORS, Completer
from ._driver import Driver
from ._executor import CancelReason, Executor, cancelled_outcome

if TYPE_CHECKING:
    from ._client import QueueConfig

__all__ = ["Producer"]

log = logging.getLogger("pyriver_async.producer")


class Producer:
    def __init__(
        self,
        queue: str,
        config: QueueConfig,
        *,
        pool: asyncpg.Pool,
        driver: Driver,
        executor: Executor,
        completer: Completer,
        client_id: str,
        fetch_cooldown: float,
        poll_interval: float,
        max_completer_backlog: int,
    ) -> None:
        self.queue = queue
        self.max_workers = config.max_workers
        self._pool = pool
        self._driver = driver
        self._executor = executor
        self._completer = completer
        self._client_id = client_id
        self._cooldown = fetch_cooldown
        self._poll_interval = poll_interval
        self._max_backlog = max_completer_backlog
        self.running: dict[int, asyncio.Task[None]] = {}
        self.job_names: dict[int, str] = {}
        self.paused = False
        self._wake = asyncio.Event()
        self._notified = False
        self._backlog = False
        self._stopping = False
        self._last_fetch = 0.0
        self._task: asyncio.Task[None] | None = None
        self._acquiring = False
        self._orphans_possible = False
        # (monotonic end time, job id, kind) of recently finished jobs, for the loop
        # monitor: a job that blocked the loop has often returned by the time it looks.
        self.recent_done: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=256)
        self._all_done = asyncio.Event()
        self._all_done.set()
        self.claimed = 0

    # -- signals from other parts -------------------------------------------------

    def notify(self) -> None:
        """An insert (or the scheduler) made jobs available in this queue."""
        self._notified = True
        self._wake.set()

    def set_paused(self, paused: bool) -> None:
        if self.paused != paused:
            log.info("queue %r %s", self.queue, "paused" if paused else "resumed")
        self.paused = paused
        if not paused:
            self.notify()

    def cancel_job(self, job_id: int) -> bool:
        task = self.running.get(job_id)
        if task is None:
            return False
        self._executor.cancel_reasons[job_id] = CancelReason.CANCEL
        task.cancel()
        return True

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pyriver-producer-{self.queue}")

    def stop_fetching(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._acquiring and self._task is not None:
            self._task.cancel()  # waiting for a pool connection the app may hold for ever

    async def wait_fetch_loop(self) -> None:
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def wait_jobs(self) -> None:
        await self._all_done.wait()

    def cancel_running(self) -> None:
        for job_id, task in list(self.running.items()):
            self._executor.cancel_reasons.setdefault(job_id, CancelReason.SHUTDOWN)
            task.cancel()

    # -- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        delays = None
        while not self._stopping:
            try:
                await self._wait_for_reason()
                if self._stopping:
                    break
                await self._fetch()
                delays = None
            except RETRYABLE_ERRORS as exc:
                # The claim may have committed with its reply lost: look for such rows
                # once the database answers again.
                self._orphans_possible = True
                delays = delays or reconnect_delays(0.05, 5.0)
                delay = next(delays)
                log.warning(
                    "queue %r: claiming jobs failed (%s: %s); retrying in %.2fs",
                    self.queue,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await self._sleep_or_stop(delay)
            except asyncpg.PostgresError as exc:
                log.error("queue %r: claim query failed: %s", self.queue, exc)
                await self._sleep_or_stop(self._poll_interval)
            except Exception:
                # A driver state nobody foresaw must not silently end the queue's work.
                self._orphans_possible = True
                delays = delays or reconnect_delays(0.05, 5.0)
                log.exception("queue %r: unexpected error while claiming jobs", self.queue)
                await self._sleep_or_stop(next(delays))

    async def _sleep_or_stop(self, delay: float) -> None:
        self._wake.clear()
        await wait_event(self._wake, delay)

    def _free(self) -> int:
        return self.max_workers - len(self.running)

    async def _wait_for_reason(self) -> None:
        deadline = time.monotonic() + self._poll_interval
        while not self._stopping:
            free = self._free()
            can = free > 0 and not self.paused and self._completer.backlog < self._max_backlog
            if can and (self._backlog or self._notified):
                if self._notified and not self._backlog:
                    # Debounce bursts of notifications: at most one fetch per cooldown.
                    wait = self._last_fetch + self._cooldown - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if can:
                    return
                deadline = time.monotonic() + self._poll_interval
                continue
            self._wake.clear()
            await wait_event(self._wake, remaining)

    async def _fetch(self) -> None:
        limit = self._free()
        if limit <= 0:
            return
        self._notified = False
        self._last_fetch = time.monotonic()
        # Waiting for a connection is the one wait stop() may interrupt: no claim has
        # been sent yet, so nothing is left half done.
        self._acquiring = True
        try:
            conn = await self._pool.acquire()
        finally:
            self._acquiring = False
        try:
            if self._orphans_possible:
                await self._release_orphans(conn)
            rows = await conn.fetch(
                self._driver.sql["job_claim"], self.queue, limit, self._client_id
            )
        finally:
            await self._pool.release(conn)
        self._backlog = len(rows) == limit
        if not rows:
            return
        self.claimed += len(rows)
        self._all_done.clear()
        for rec in rows:
            job_id = rec[0]
            task = asyncio.create_task(self._work(rec), name=f"pyriver-job-{job_id}")
            task.add_done_callback(partial(self._unstarted, rec))
            self.running[job_id] = task
            self.job_names[job_id] = rec[2]

    async def _release_orphans(self, conn: Any) -> None:
        """Give back jobs a claim of ours took whose reply never reached us.

        They are `running` under this client's id but neither run here nor waiting to
        have their outcome written; without this they would wait for the rescuer's
        backstop, since this client is alive and heart-beating.
        """
        mine = list(self.running) + self._completer.unwritten_ids()
        released = await conn.fetchval(
            self._driver.sql["job_release_orphans"], self.queue, self._client_id, mine
        )
        self._orphans_possible = False
        if released:
            log.warning(
                "queue %r: %d claimed jobs never reached this client (a lost reply); "
                "they are available again",
                self.queue,
                released,
            )

    def _unstarted(self, rec: asyncpg.Record, task: asyncio.Task[None]) -> None:
        """A job task cancelled before its first step never runs its body: report it
        as the cancellation asked (cancelled, or given back on shutdown) and free its slot."""
        job_id = rec[0]
        if not task.cancelled() or self.running.get(job_id) is not task:
            return
        reason = self._executor.cancel_reasons.pop(job_id, CancelReason.SHUTDOWN)
        outcome = cancelled_outcome(job_id, rec[6], rec[3], datetime.now(UTC), reason)
        outcome.attempted_at = rec[10]
        self._completer.add(outcome)
        self._release(job_id)

    async def _work(self, rec: asyncpg.Record) -> None:
        job_id = rec[0]
        try:
            outcome = await self._executor.execute(rec)
        except BaseException:
            # Only a BaseException (KeyboardInterrupt...) gets here; the job is left
            # running in the database for the rescuer.
            self._release(job_id)
            raise
        outcome.attempted_at = rec[10]
        self._completer.add(outcome)
        if outcome.state == "available" and outcome.scheduled_at is not None:
            # A short snooze: look again when it becomes claimable.
            delay = (outcome.scheduled_at - datetime.now(UTC)).total_seconds()
            if delay > 0:
                asyncio.get_running_loop().call_later(delay + 0.001, self.notify)
        self._release(job_id)

    def _release(self, job_id: int) -> None:
        self.running.pop(job_id, None)
        kind = self.job_names.pop(job_id, None)
        self.recent_done.append((time.monotonic(), job_id, kind or "?"))
        if not self.running:
            self._all_done.set()
        if self._backlog or self._notified:
            self._wake.set()
