"""The completer: batches job outcomes and writes them with one statement per outcome group.

Workers hand outcomes over without waiting for the database; a flush writes every
plain ``completed`` outcome with one statement and all the others with another.

Nothing is dropped:

- a transient failure (the connection dropped, the server read-only during a
  failover, a statement or lock timeout, a pooler that lost a prepared statement...)
  is retried with backoff until the batch is written, with one log line when the
  episode starts, a reminder every 30 s, and one when it ends;
- an outcome the database refuses for good (a row-level data error) is found by
  halving the batch, and its job is put back at once as ``retryable`` (due now) with
  that error recorded, instead of being left ``running`` until the rescuer's backstop.

Memory stays bounded: producers stop claiming while the backlog is large.
``stop()`` flushes what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from ._backoff import default_retry_delay_for, reconnect_delays
from ._driver import Executor
from ._errors import DatabaseError, MigrationError, TransientDatabaseError
from ._outcome import Outcome, attempt_error

__all__ = ["Completer"]

log = logging.getLogger("pyriver_async.completer")

# While writes keep failing, a reminder at most this often (seconds).
REMIND_EVERY = 30.0


class _Episode:
    """One stretch of failed writes, logged once at its start, then sparingly."""

    __slots__ = ("delays", "failures", "last_log", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_log = self.started
        self.failures = 0
        self.delays: Iterator[float] = reconnect_delays(0.05, 5.0)


class Completer:
    def __init__(
        self,
        executor: Executor,
        *,
        flush_interval: float = 0.002,
        max_batch: int = 1000,
        on_flushed: Callable[[list[Outcome]], None] | None = None,
    ) -> None:
        self._executor = executor
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
        self._episode: _Episode | None = None
        self.flushes = 0
        #: Outcomes the database refused, whose jobs were put back instead.
        self.put_back = 0
        # Called after each flush: a producer whose jobs wait on a limit that only a
        # written outcome releases (a sequence's next job) claims again (flow control).
        self._written: list[Callable[[Sequence[Outcome]], None]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pyriver-completer")

    def on_written(self, callback: Callable[[Sequence[Outcome]], None]) -> None:
        """Call ``callback(outcomes)`` after every flush (flow control: the producer)."""
        self._written.append(callback)

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

    @property
    def failing(self) -> bool:
        """True while writes fail (the database is away or read-only)."""
        return self._episode is not None

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
            written: list[Outcome] = []
            try:
                await self._write_until_done(batch, written)
            finally:
                self._inflight = []
            self.flushes += 1
            for callback in self._written:
                callback(batch)
            if self._on_flushed is not None:
                try:
                    # Only what the database took: hooks, events and waiters report
                    # what happened, never a stale outcome it ignored.
                    self._on_flushed(written)
                except Exception:  # pragma: no cover - a subscriber's bug must not stop us
                    log.exception("completion subscriber failed")

    async def _write_until_done(self, batch: Sequence[Outcome], written: list[Outcome]) -> None:
        """Write ``batch``: retry transient failures; isolate and put back refused rows.
        The outcomes written are added to ``written``, their ``state`` as written."""
        while True:
            try:
                await self._write(batch, written)
            except TransientDatabaseError as exc:
                await self._failed(exc, len(batch))
                continue
            except (DatabaseError, MigrationError) as exc:
                self._recovered()
                await self._refused(batch, exc, written)
                return
            except Exception as exc:
                # Something nobody foresaw: never let it end the completer (every later
                # outcome would be lost); log it and try again.
                log.exception("writing %d job outcomes failed unexpectedly", len(batch))
                await self._failed(exc, len(batch), logged=True)
                continue
            self._recovered()
            return

    async def _failed(self, exc: BaseException, n: int, *, logged: bool = False) -> None:
        ep = self._episode
        if ep is None:
            ep = self._episode = _Episode()
            if not logged:
                log.warning(
                    "writing job outcomes failed (%s); retrying with backoff until the "
                    "database takes them (%d waiting)",
                    exc,
                    n + len(self._pending),
                )
        elif time.monotonic() - ep.last_log >= REMIND_EVERY and not logged:
            ep.last_log = time.monotonic()
            log.warning(
                "job outcomes still cannot be written after %.0fs and %d attempts (%s); %d waiting",
                time.monotonic() - ep.started,
                ep.failures + 1,
                exc,
                n + len(self._pending),
            )
        ep.failures += 1
        await asyncio.sleep(next(ep.delays))

    def _recovered(self) -> None:
        ep, self._episode = self._episode, None
        if ep is not None:
            log.warning(
                "job outcomes written again after %d failed attempts over %.1fs",
                ep.failures,
                time.monotonic() - ep.started,
            )

    async def _refused(
        self, batch: Sequence[Outcome], exc: BaseException, written: list[Outcome]
    ) -> None:
        if len(batch) > 1:
            # Find the rows the database refuses by halving; write the rest.
            mid = len(batch) // 2
            await self._write_until_done(batch[:mid], written)
            await self._write_until_done(batch[mid:], written)
            return
        o = batch[0]
        now = datetime.now(UTC)
        exhausted = 0 < o.max_attempts <= o.attempt
        # The usual backoff, counted on attempts: a job whose every outcome is refused
        # must not loop between claim and refusal.
        retry_at = None if exhausted else now + default_retry_delay_for(o.attempt)
        fallback = Outcome.failed(
            o.job_id,
            o.attempt,
            o.queue,
            error=attempt_error(
                o.attempted_at or now,
                o.attempt,
                f"the outcome {o.state!r} of this attempt could not be written ({exc}); "
                + ("no attempt is left" if exhausted else "the job was put back to run again"),
            ),
            retry_at=retry_at,
        )
        fallback.attempted_at = o.attempted_at
        fallback.job = o.job
        self.put_back += 1
        what = (
            "discarded, no attempt left"
            if retry_at is None
            else f"put back as retryable, due in {(retry_at - now).total_seconds():.0f}s"
        )
        log.error(
            "job %d: its outcome %r cannot be written (%s); it is %s",
            o.job_id,
            o.state,
            exc,
            what,
            extra=_fields(o),
        )
        try:
            await self._write_fallback(fallback, written)
        except (DatabaseError, MigrationError) as again:
            log.error(
                "job %d: not even putting it back can be written (%s); it stays running "
                "until the rescuer takes it (rescue_stuck_jobs_after)",
                o.job_id,
                again,
                extra=_fields(o),
            )

    async def _write_fallback(self, fallback: Outcome, written: list[Outcome]) -> None:
        while True:
            try:
                states = await self._executor.job_set_outcome_many([fallback])
            except TransientDatabaseError as exc:
                await self._failed(exc, 1)
                continue
            self._recovered()
            _took(written, [fallback], states)
            return

    async def _write(self, batch: Sequence[Outcome], written: list[Outcome]) -> None:
        done = [o for o in batch if o.is_plain_completion]
        other = [o for o in batch if not o.is_plain_completion] if len(done) < len(batch) else []
        gone = [o for o in done if o.ephemeral]
        if gone:
            done = [o for o in done if not o.ephemeral]
        groups = [g for g in (done, gone, other) if g]
        if len(groups) > 1:
            async with self._executor.session() as ex:
                await self._write_groups(ex, done, gone, other, written)
        else:
            await self._write_groups(self._executor, done, gone, other, written)

    @staticmethod
    async def _write_groups(
        ex: Executor,
        done: list[Outcome],
        gone: list[Outcome],
        other: list[Outcome],
        written: list[Outcome],
    ) -> None:
        # Each statement is guarded by the claim, so writing a group again after a lost
        # reply changes nothing: the groups need no common transaction. What a group
        # wrote is reported at once, even if a later one fails and the batch is retried.
        if done:
            _completed(written, done, await ex.job_complete_many(done))
        if gone:
            _completed(written, gone, await ex.job_delete_completed_many(gone))
        if other:
            _took(written, other, await ex.job_set_outcome_many(other))


def _completed(written: list[Outcome], done: list[Outcome], ids: list[int]) -> None:
    if len(ids) == len(done):
        written.extend(done)  # the usual case: every one was taken
    elif ids:
        taken = set(ids)
        written.extend(o for o in done if o.job_id in taken)


def _took(written: list[Outcome], outcomes: Sequence[Outcome], states: dict[int, str]) -> None:
    for o in outcomes:
        state = states.get(o.job_id)
        if state is not None:
            o.state = state
            written.append(o)


def _fields(o: Outcome) -> dict[str, object]:
    """The structured ``extra`` of a log record about the job of ``o``."""
    return {"job_id": o.job_id, "job_queue": o.queue, "job_attempt": o.attempt} | (
        {"job_kind": o.job.kind, "job_max_attempts": o.job.max_attempts} if o.job else {}
    )
