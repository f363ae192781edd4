"""The executor: runs one job under its timeout and turns how it ended into an Outcome."""

from __future__ import annotations

import asyncio
import collections
import logging
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from ._backoff import default_retry_delay
from ._codec import job_from_record
from ._completer import Outcome
from ._errors import JobCancel, JobSnooze
from ._job import Job, JobContext
from ._workers import UNSET, Registration, Workers, to_timeout

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["CancelReason", "Executor"]

log = logging.getLogger("pyriver_async.executor")

_encode = msgspec.json.encode
# River's rule: a snooze this short makes the job available at once.
SNOOZE_AVAILABLE_AT_ONCE = timedelta(seconds=5)
MAX_ERROR_CHARS = 10_000
MAX_TRACE_CHARS = 20_000


class CancelReason:
    CANCEL = "cancel"  # client.cancel(job_id)
    TIMEOUT = "timeout"  # the job's timeout
    SHUTDOWN = "shutdown"  # the client's hard stop


def _clean(text: str, limit: int) -> str:
    # jsonb refuses NUL; overly long messages bloat every later read of the row.
    text = text.replace("\x00", "\\0")
    return text if len(text) <= limit else text[:limit] + "…"


def cancelled_outcome(
    job_id: int, attempt: int, queue: str, started: datetime, reason: str
) -> Outcome:
    """The outcome of a job whose coroutine was cancelled by request or by shutdown."""
    if reason == CancelReason.CANCEL:
        err = _encode(
            {
                "at": started,
                "attempt": attempt,
                "error": "job cancelled by request (client.cancel)",
                "trace": "",
            }
        ).decode()
        return Outcome(job_id, attempt, "cancelled", queue, error=err)
    # Interrupted only by this client's shutdown: not the job's fault. It goes back to
    # available with its attempt restored and no error (DESIGN §1).
    return Outcome(job_id, attempt, "available", queue, scheduled_at=datetime.now(UTC), give_back=1)


class _JobLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[job {extra.get('job_id')} {extra.get('job_kind')}] {msg}", kwargs


job_logger = logging.getLogger("pyriver_async.job")


def _job_logger_factory(
    job_id: int, kind: str, attempt: int
) -> Callable[[], logging.LoggerAdapter[logging.Logger]]:
    return lambda: _JobLogger(
        job_logger, {"job_id": job_id, "job_kind": kind, "job_attempt": attempt}
    )


class _TimeoutQueue:
    """The running jobs that share one timeout, expired by a single loop timer.

    Arming and cancelling a timer per job cost ~2 us with uvloop, a sixth of the
    engine's CPU per no-op job. Jobs with the same timeout expire in the order they
    started, so they wait in a FIFO of ``[deadline, job_id, task]`` entries with one
    timer armed at the head's deadline; a job that ends blanks its entry (task None),
    and blank entries are dropped from the head as they come, or all at once when
    they outnumber the live ones (a long job at the head holds the others back).
    """

    __slots__ = ("entries", "expire", "live", "loop", "seconds", "timer")

    def __init__(
        self,
        seconds: float,
        loop: asyncio.AbstractEventLoop,
        expire: Callable[[int, asyncio.Task[Any]], None],
    ) -> None:
        self.seconds = seconds
        self.loop = loop
        self.expire = expire
        self.entries: collections.deque[list[Any]] = collections.deque()
        self.live = 0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, job_id: int, task: asyncio.Task[Any]) -> list[Any]:
        entry: list[Any] = [self.loop.time() + self.seconds, job_id, task]
        self.entries.append(entry)
        self.live += 1
        if self.timer is None:
            self.timer = self.loop.call_at(entry[0], self._fire)
        return entry

    def finish(self, entry: list[Any]) -> None:
        if entry[2] is None:
            return  # expired: _fire took it off
        entry[2] = None
        self.live -= 1
        entries = self.entries
        while entries and entries[0][2] is None:
            entries.popleft()
        # The timer stays armed when the last job ends (a no-op job ends in the step it
        # started: cancelling would cost a timer per job again); it fires once, finds
        # nothing, and is not re-armed. close() cancels it.
        if len(entries) > 2 * self.live + 1024:
            self.entries = collections.deque(e for e in entries if e[2] is not None)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fire(self) -> None:
        self.timer = None
        entries = self.entries
        now = self.loop.time()
        while entries:
            entry = entries[0]
            task = entry[2]
            if task is not None:
                if entry[0] > now:
                    break
                entry[2] = None
                self.live -= 1
                self.expire(entry[1], task)
            entries.popleft()
        if entries:
            self.timer = self.loop.call_at(entries[0][0], self._fire)


class Executor:
    """Runs jobs for one client. Holds no queue state: the producer owns slots."""

    # Distinct timeouts that get a shared timer; a job with yet another timeout (say,
    # computed from its args) gets a timer of its own.
    MAX_TIMEOUT_QUEUES = 64

    def __init__(
        self,
        client: Client,
        workers: Workers,
        *,
        job_timeout: timedelta | None,
        retry_policy: Callable[[Job[Any], datetime], datetime] | None,
    ) -> None:
        self._client = client
        self._workers = workers
        self._job_timeout = job_timeout
        self._retry_policy = retry_policy
        self.cancel_reasons: dict[int, str] = {}
        self._timeouts: dict[float, _TimeoutQueue] = {}

    def close(self) -> None:
        """Cancel the shared timeout timers (the client stopped; its jobs have ended)."""
        for tq in self._timeouts.values():
            tq.close()
        self._timeouts.clear()

    def _failure(
        self,
        rec_or_job: Job[Any] | asyncpg.Record,
        started: datetime,
        message: str,
        trace: str,
        reg: Registration | None,
    ) -> Outcome:
        job = rec_or_job if isinstance(rec_or_job, Job) else job_from_record(rec_or_job, None)
        error = _encode(
            {
                "at": started,
                "attempt": job.attempt,
                "error": _clean(message, MAX_ERROR_CHARS),
                "trace": _clean(trace, MAX_TRACE_CHARS),
            }
        ).decode()
        if job.attempt >= job.max_attempts:
            return Outcome(job.id, job.attempt, "discarded", job.queue, error=error)
        now = datetime.now(UTC)
        retry_at: datetime | None = None
        if reg is not None and reg.next_retry is not None:
            try:
                retry_at = reg.next_retry(job)
            except Exception:
                log.exception("next_retry of worker %s failed; using the default", reg.name)
        if retry_at is None and self._retry_policy is not None:
            try:
                retry_at = self._retry_policy(job, now)
            except Exception:
                log.exception("the client's retry policy failed; using the default")
        if retry_at is None:
            retry_at = now + default_retry_delay(job)
        return Outcome(
            job.id, job.attempt, "retryable", job.queue, scheduled_at=retry_at, error=error
        )

    def _expire(self, job_id: int, task: asyncio.Task[Any]) -> None:
        if not task.done():
            self.cancel_reasons.setdefault(job_id, CancelReason.TIMEOUT)
            task.cancel()

    def _timeout_for(self, reg: Registration, job: Job[Any]) -> timedelta | None:
        if reg.timeout is not None:
            try:
                t = reg.timeout(job)
                if t is not UNSET:
                    return to_timeout(t, f"{reg.name}.timeout()")
            except Exception:
                log.exception("timeout() of worker %s failed; using the default", reg.name)
        if reg.default_timeout is not UNSET:
            dt: timedelta | None = reg.default_timeout
            return dt
        return self._job_timeout

    async def execute(self, rec: asyncpg.Record, task: asyncio.Task[Any] | None = None) -> Outcome:
        """Run the claimed row ``rec`` to its end; never raises (except BaseExceptions).

        ``task`` is the task running it (default: the current one), which the job's
        timeout cancels.
        """
        started = datetime.now(UTC)
        job_id: int = rec[0]
        kind: str = rec[2]
        reg = self._workers.get(kind)
        if reg is None:
            return self._failure(
                rec,
                started,
                f"no worker is registered for job kind {kind!r} in this client "
                f"(registered: {', '.join(self._workers.kinds) or 'none'})",
                "",
                None,
            )
        try:
            args = reg.decoder.decode(rec[1])
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            return self._failure(
                rec,
                started,
                f"args of job kind {kind!r} do not decode into {reg.args_type.__name__}: {exc}",
                "",
                reg,
            )
        try:
            job = job_from_record(rec, args)
        except Exception as exc:  # a row another writer shaped oddly
            return self._failure(rec, started, f"job row cannot be read: {exc!r}", "", reg)

        timeout = self._timeout_for(reg, job)
        deadline = started + timeout if timeout is not None else None
        ctx = JobContext(
            self._client, job_id, _job_logger_factory(job_id, kind, job.attempt), deadline
        )
        if task is None:
            task = asyncio.current_task()
        assert task is not None
        # A timer cancels the task at the deadline (shared by the jobs with the same
        # timeout; cheaper on the hot path than asyncio.timeout's context manager); the
        # reason tells the cancellations apart.
        expiry: list[Any] | None = None
        own_timer: asyncio.TimerHandle | None = None
        if timeout is not None:
            seconds = timeout.total_seconds()
            tq = self._timeouts.get(seconds)
            if tq is None and len(self._timeouts) < self.MAX_TIMEOUT_QUEUES:
                tq = _TimeoutQueue(seconds, asyncio.get_running_loop(), self._expire)
                self._timeouts[seconds] = tq
            if tq is not None:
                expiry = tq.add(job_id, task)
            else:
                own_timer = asyncio.get_running_loop().call_later(
                    seconds, self._expire, job_id, task
                )
        try:
            await reg.work(ctx, job)
        except JobSnooze as snooze:
            if snooze.delay <= SNOOZE_AVAILABLE_AT_ONCE:
                # River's rule: a short snooze skips the scheduler. The job is available
                # now but not claimable before scheduled_at; the producer sets a timer.
                return Outcome(
                    job_id,
                    job.attempt,
                    "available",
                    job.queue,
                    scheduled_at=datetime.now(UTC) + snooze.delay,
                    give_back=1,
                    snoozed=True,
                )
            return Outcome(
                job_id,
                job.attempt,
                "scheduled",
                job.queue,
                scheduled_at=datetime.now(UTC) + snooze.delay,
                give_back=1,
                snoozed=True,
            )
        except JobCancel as cancel:
            err = _encode(
                {
                    "at": started,
                    "attempt": job.attempt,
                    "error": _clean(f"JobCancel: {cancel.reason}", MAX_ERROR_CHARS),
                    "trace": "",
                }
            ).decode()
            return Outcome(job_id, job.attempt, "cancelled", job.queue, error=err)
        except asyncio.CancelledError:
            reason = self.cancel_reasons.pop(job_id, None)
            if reason is None:
                if not task.cancelling():
                    # The job's own code raised it (it awaited something cancelled): a
                    # failure like any other, not a shutdown to give the attempt back for.
                    return self._failure(
                        job,
                        started,
                        "CancelledError raised inside the job (its task was not cancelled)",
                        traceback.format_exc(),
                        reg,
                    )
                reason = CancelReason.SHUTDOWN  # the task was cancelled from outside
            if reason == CancelReason.TIMEOUT:
                task.uncancel()  # handled here: the task goes on to report its outcome
                return self._failure(
                    job, started, f"job timed out after {timeout} (worker {reg.name})", "", reg
                )
            return cancelled_outcome(job_id, job.attempt, job.queue, started, reason)
        except Exception as exc:
            return self._failure(
                job, started, f"{type(exc).__name__}: {exc}", traceback.format_exc(), reg
            )
        finally:
            if expiry is not None:
                tq.finish(expiry)  # type: ignore[union-attr]
            elif own_timer is not None:
                own_timer.cancel()
            self.cancel_reasons.pop(job_id, None)
        return Outcome(job_id, job.attempt, "completed", job.queue)
