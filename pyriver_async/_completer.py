"""The completer: batches job outcomes and writes them with one statement per outcome group.

Workers hand outcomes over without waiting for the database; a flush writes every
``completed`` outcome with one statement and all the others with another. A failed
flush is retried with backoff (nothing is dropped); ``stop()`` flushes what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ._backoff import reconnect_delays
from ._driver import Driver

__all__ = ["Completer", "Outcome"]

log = logging.getLogger("pyriver_async.completer")

# Errors after which the same write is worth trying again on another connection.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A pooled connection handed out between its backend's termination notice and
    # the EOF is parked in an error state that asyncpg reports this way.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionFailureError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


@dataclass(slots=True)
class Outcome:
    """How one attempt of a job ended, as the database should record it."""

    job_id: int
    attempt: int
    state: str  # completed | retryable | discarded | cancelled | scheduled | available
    queue: str = ""
    scheduled_at: datetime | None = None
    error: str | None = None  # a JSON object in River's errors[] shape
    metadata: str | None = None  # a JSON object merged into metadata
    give_back: int = 0  # 1 when the attempt does not count (snooze, shutdown)
    snoozed: bool = False
    # The claim's attempted_at: with the attempt, it tells this claim from a later one.
    attempted_at: datetime | None = None


class Completer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        driver: Driver,
        *,
        flush_interval: float = 0.002,
        max_batch: int = 1000,
        on_flushed: Callable[[list[Outcome]], None] | None = None,
    ) -> None:
        self._pool = pool
        self._driver = driver
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._pending: list[Outcome] = []
        self._inflight: list[Outcome] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._on_flushed = on_flushed
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pyriver-completer")

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        self._wakeup.set()

    def unwritten_ids(self) -> list[int]:
        """Ids of jobs whose outcome is not written yet (pending or being written)."""
        return [o.job_id for o in self._inflight] + [o.job_id for o in self._pending]

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def wait_idle(self) -> None:
        """Until everything added so far is written."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Write every pending outcome, then end the flush loop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._pending) < self._max_batch and not self._stopping:
                # Let a few more outcomes arrive so that one statement carries them all.
                await asyncio.sleep(self._flush_interval)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._inflight = batch
            try:
                await self._write_with_retry(batch)
            finally:
                self._inflight = []
            self.flushes += 1
            if self._on_flushed is not None:
                try:
                    self._on_flushed(batch)
                except Exception:  # pragma: no cover - a subscriber's bug must not stop us
                    log.exception("completion subscriber failed")

    async def _write_with_retry(self, batch: list[Outcome]) -> None:
        delays = reconnect_delays(0.05, 5.0)
        failures = 0
        while True:
            try:
                await self._write(batch)
                if failures:
                    log.warning("completions written after %d failed attempts", failures)
                return
            except RETRYABLE_ERRORS as exc:
                failures += 1
                delay = next(delays)
                log.warning(
                    "writing %d job completions failed (%s: %s); retrying in %.2fs",
                    len(batch),
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
            except asyncpg.PostgresError as exc:
                if len(batch) == 1:
                    log.error(
                        "job %d: its outcome %r cannot be written (%s); the rescuer will "
                        "retry the job",
                        batch[0].job_id,
                        batch[0].state,
                        exc,
                    )
                    return
                # Find the row the database refuses by halving; write the rest.
                mid = len(batch) // 2
                await self._write_with_retry(batch[:mid])
                await self._write_with_retry(batch[mid:])
                return
            except Exception:
                # Something nobody foresaw: never let it end the completer (every later
                # outcome would be lost); log it and try again.
                failures += 1
                delay = next(delays)
                log.exception(
                    "writing %d job completions failed unexpectedly; retrying in %.2fs",
                    len(batch),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _write(self, batch: list[Outcome]) -> None:
        done = [o for o in batch if o.state == "completed" and o.error is None]
        other = [o for o in batch if not (o.state == "completed" and o.error is None)]
        async with self._pool.acquire() as conn:
            if done:
                await conn.execute(
                    self._driver.sql["job_complete_many"],
                    [o.job_id for o in done],
                    [o.attempt for o in done],
                    [o.attempted_at for o in done],
                )
            if other:
                await conn.execute(
                    self._driver.sql["job_set_outcome_many"],
                    [o.job_id for o in other],
                    [o.attempt for o in other],
                    [o.state for o in other],
                    [o.scheduled_at for o in other],
                    [o.error for o in other],
                    [o.metadata for o in other],
                    [o.give_back for o in other],
                    [o.snoozed for o in other],
                    [o.attempted_at for o in other],
                )
