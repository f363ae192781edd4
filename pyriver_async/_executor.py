"""The executor: runs one job under its timeout and turns how it ended into an Outcome."""

from __future__ import annotations

import asyncio
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


class Executor:
    """Runs jobs for one client. Holds no queue state: the producer owns slots."""

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
        # One timer per job that cancels its task (cheaper on the hot path than
        # asyncio.timeout's context manager); the reason tells the cancellations apart.
        expiry = None
        if timeout is not None:
            if task is None:
                task = asyncio.current_task()
            assert task is not None
            expiry = asyncio.get_running_loop().call_later(
                timeout.total_seconds(), self._expire, job_id, task
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
            reason = self.cancel_reasons.pop(job_id, CancelReason.SHUTDOWN)
            if reason == CancelReason.TIMEOUT and task is not None:
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
                expiry.cancel()
            self.cancel_reasons.pop(job_id, None)
        return Outcome(job_id, job.attempt, "completed", job.queue)
