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

from ._aio import wait_event
from ._backoff import default_retry_delay_for, reconnect_delays
from ._driver import Executor
from ._errors import DatabaseError, MigrationError, TransientDatabaseError
from ._outcome import Outcome, attempt_error

__all__ = ["Completer"]

log = logging.getLogger("pyriver_async.completer")

# While writes keep failing, a reminder at most this often (seconds).
REMIND_EVERY = 30.0
# A lock or statement timeout this many times in a row splits a part of the batch, so
# that the rows another transaction holds do not hold back the others (a timeout under
# mere load costs a few smaller statements).
SPLIT_AFTER = 1
_ROW_WAITS = frozenset({"57014", "55P03"})  # query_canceled, lock_not_available


def _row_level(exc: BaseException) -> bool:
    """A refusal that may be one row's: a data exception or integrity constraint
    (SQLSTATE class 22 or 23), or a value the driver could not encode (no SQLSTATE).
    Anything else the server refused for the statement, whatever its rows."""
    code = getattr(exc, "sqlstate", None)
    return code is None or code[:2] in ("22", "23")


class _Episode:
    """One stretch of failed writes, logged once at its start, then sparingly."""

    __slots__ = ("delays", "failures", "last_log", "rows_only", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_log = self.started
        self.failures = 0
        self.delays: Iterator[float] = reconnect_delays(0.05, 5.0)
        # True while every failure is a row lock or statement timeout: the database
        # answers, only some rows are held (by a caller's open transaction).
        self.rows_only = True


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
        # Outcomes of rows another transaction holds, written on the side (see _hold).
        self._held: list[Outcome] = []
        # Which of them are put-backs (by id(); see _write_fallback): a refusal of one
        # ends there (the rescuer's backstop); it is not a refused outcome to put back.
        self._held_put_backs: set[int] = set()
        self._held_task: asyncio.Task[None] | None = None
        self._retry_now = asyncio.Event()
        #: Called when writes succeed again after failing (producers claim again).
        self.on_recovered: Callable[[], None] | None = None
        self.flushes = 0
        #: Outcomes the database refused, whose jobs were put back instead.
        self.put_back = 0
        # Called after each flush: a producer whose jobs wait on a limit that only a
        # written outcome releases (a sequence's next job) claims again (flow control).
        self._written: list[Callable[[Sequence[Outcome]], None]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pyriver-completer")

    def on_written(self, callback: Callable[[Sequence[Outcome]], None]) -> None:
        """Call ``callback(outcomes)`` with the outcomes each write took (flow control:
        the producer)."""
        self._written.append(callback)

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        self._wakeup.set()

    def unwritten_ids(self) -> list[int]:
        """Ids of jobs whose outcome is not written yet (pending or being written)."""
        return (
            [o.job_id for o in self._inflight]
            + [o.job_id for o in self._pending]
            + [o.job_id for o in self._held]
        )

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._held)

    @property
    def failing(self) -> bool:
        """True while writes fail because the database is away or read-only (not
        while only some rows are locked: claims go on then)."""
        ep = self._episode
        return ep is not None and not ep.rows_only

    def retry_now(self) -> None:
        """Cut the current backoff short (the database takes writes again)."""
        self._retry_now.set()

    async def wait_idle(self) -> None:
        """Until everything added so far is written."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Write every pending outcome, then end the flush loop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._held_task is not None:
            await self._held_task

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._held_task is not None:
            self._held_task.cancel()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if not self._held:
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
            self._report(written)

    def _hold(self, outcome: Outcome, *, put_back: bool = False) -> None:
        """Write ``outcome`` on the side, retried with backoff, while its row is held
        by another transaction (a caller's that cancelled or upserted it and has not
        committed yet), or while putting a refused outcome's job back fails: the
        outcomes after it are written meanwhile, and claims go on."""
        self._held.append(outcome)
        if put_back:
            self._held_put_backs.add(id(outcome))
        if self._held_task is None or self._held_task.done():
            self._held_task = asyncio.create_task(self._write_held(), name="pyriver-held")

    async def _write_held(self) -> None:
        delays = reconnect_delays(0.2, 5.0)
        while self._held:
            await asyncio.sleep(next(delays))
            written: list[Outcome] = []
            for o in list(self._held):
                try:
                    await self._write([o], written)
                except TransientDatabaseError:
                    continue  # still held, or the database away: next round
                except (DatabaseError, MigrationError) as exc:
                    if not _row_level(exc):
                        continue
                    if self._unhold(o):
                        _given_up(o, exc)  # a put-back: not put back in turn
                    else:
                        await self._refused([o], exc, written)
                except Exception:
                    log.exception("writing job %d's outcome failed unexpectedly", o.job_id)
                    continue
                else:
                    self._unhold(o)
            self._report(written)
            if not self._held and not self._pending and not self._inflight:
                self._idle.set()

    def _unhold(self, outcome: Outcome) -> bool:
        """Take ``outcome`` out of the held ones; whether it was a put-back."""
        self._held.remove(outcome)
        if id(outcome) in self._held_put_backs:
            self._held_put_backs.discard(id(outcome))
            return True
        return False

    def _report(self, written: list[Outcome]) -> None:
        """Hand what the database took to hooks, events and waiters (never a stale
        outcome it ignored), and empty ``written``."""
        if not written:
            return
        done = list(written)
        written.clear()
        for callback in self._written:
            callback(done)  # flow control: the next job of a sequence may go now
        if self._on_flushed is not None:
            try:
                self._on_flushed(done)
            except BaseException:  # a subscriber's bug (even a SystemExit) must not stop us
                log.exception("completion subscriber failed")

    async def _write_until_done(self, batch: Sequence[Outcome], written: list[Outcome]) -> None:
        """Write ``batch``: retry transient failures; isolate and put back refused rows.
        The outcomes written are added to ``written``, their ``state`` as written.

        Parts of the batch take turns: a part that keeps meeting a lock or statement
        timeout (rows a caller's open transaction holds) is split, and the other parts
        are written meanwhile instead of waiting behind it.
        """
        parts: list[tuple[Sequence[Outcome], int]] = [(batch, 0)]
        while parts:
            part, timeouts = parts.pop(0)
            try:
                await self._write(part, written)
                if parts:
                    self._report(written)  # the other parts may take a while yet
            except TransientDatabaseError as exc:
                waiting = sum(len(p) for p, _ in parts) + len(part)
                if exc.sqlstate not in _ROW_WAITS:
                    await self._failed(exc, waiting)
                    parts.insert(0, (part, timeouts))  # an outage: the same part again
                    continue
                # Rows held by another transaction: the other parts go first, at once.
                await self._failed(exc, waiting, pause=False)
                if len(part) == 1:
                    self._hold(part[0])  # written on the side; this batch is done
                elif timeouts + 1 >= SPLIT_AFTER:
                    mid = len(part) // 2
                    parts += [(part[:mid], 0), (part[mid:], 0)]
                else:
                    parts.append((part, timeouts + 1))
                continue
            except (DatabaseError, MigrationError) as exc:
                if not _row_level(exc):
                    # A refusal of the statement, not of a row (a permission revoked,
                    # a schema changed): every row would be refused alike. Retry, as
                    # for an outage, until an operator fixes it.
                    await self._failed(exc, len(part))
                    parts.insert(0, (part, timeouts))
                    continue
                await self._refused(part, exc, written)
                continue
            except Exception as exc:
                # Something nobody foresaw: never let it end the completer (every later
                # outcome would be lost); log it and try again.
                log.exception("writing %d job outcomes failed unexpectedly", len(part))
                await self._failed(exc, len(part), logged=True)
                parts.insert(0, (part, timeouts))
                continue
        self._recovered()

    async def _failed(
        self, exc: BaseException, n: int, *, logged: bool = False, pause: bool = True
    ) -> None:
        ep = self._episode
        first = ep is None
        if ep is None:
            ep = self._episode = _Episode()
        if getattr(exc, "sqlstate", None) not in _ROW_WAITS:
            ep.rows_only = False
        if first and not logged:
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
        if pause:
            self._retry_now.clear()
            await wait_event(self._retry_now, next(ep.delays))

    def _recovered(self) -> None:
        ep, self._episode = self._episode, None
        if ep is not None:
            log.warning(
                "job outcomes written again after %d failed attempts over %.1fs",
                ep.failures,
                time.monotonic() - ep.started,
            )
            if self.on_recovered is not None:
                self.on_recovered()

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
            _given_up(fallback, again)

    async def _write_fallback(self, fallback: Outcome, written: list[Outcome]) -> None:
        """Write ``fallback`` (a refused outcome's job put back). Transient failures are
        retried here; a refusal of the statement or an error nobody foresaw (a bug, a
        value the driver cannot send) is logged and the outcome kept, retried on the
        side (``_hold``): it is never lost, and the flush loop goes on. Only a refusal
        of this row itself is raised (the caller logs it; the rescuer's backstop)."""
        while True:
            try:
                states = await self._executor.job_set_outcome_many([fallback])
            except TransientDatabaseError as exc:
                await self._failed(exc, 1)
                continue
            except (DatabaseError, MigrationError) as exc:
                if _row_level(exc):
                    raise
                log.error(
                    "job %d: putting it back cannot be written yet (%s); retrying with backoff",
                    fallback.job_id,
                    exc,
                    extra=_fields(fallback),
                )
                self._hold(fallback, put_back=True)
                return
            except Exception:
                log.exception(
                    "job %d: putting it back failed unexpectedly; retrying with backoff",
                    fallback.job_id,
                    extra=_fields(fallback),
                )
                self._hold(fallback, put_back=True)
                return
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


def _given_up(put_back: Outcome, exc: BaseException) -> None:
    log.error(
        "job %d: not even putting it back can be written (%s); it stays running "
        "until the rescuer takes it (rescue_stuck_jobs_after)",
        put_back.job_id,
        exc,
        extra=_fields(put_back),
    )


def _fields(o: Outcome) -> dict[str, object]:
    """The structured ``extra`` of a log record about the job of ``o``."""
    return {"job_id": o.job_id, "job_queue": o.queue, "job_attempt": o.attempt} | (
        {"job_kind": o.job.kind, "job_max_attempts": o.job.max_attempts} if o.job else {}
    )
