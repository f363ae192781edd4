"""The executor: runs one claimed job under its timeout and turns how it ended into an
:class:`~pyriver_async._outcome.Outcome`.

Whatever the job's code raises becomes the outcome of that attempt, ``SystemExit``
and ``KeyboardInterrupt`` included (a library calling ``sys.exit``, a helper raising
``KeyboardInterrupt``): recorded with the exception and its traceback, retried with
backoff, while the process and its other jobs go on. Only a real Ctrl-C still stops
the process: when the client installed its SIGINT marker (see :mod:`._interrupts`), a
``KeyboardInterrupt`` raised by the signal is let through.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec

from . import _interrupts
from ._backoff import default_retry_delay
from ._context import JobClient, JobContext
from ._driver import JobRow
from ._driver.columns import ATTEMPT, ATTEMPTED_AT, ID, KIND, MAX_ATTEMPTS, QUEUE
from ._errors import JobCancel, JobSnooze
from ._job import Job
from ._outcome import CancelReason, Outcome, attempt_error
from ._rows import job_from_row
from ._timeouts import TimeoutQueue
from ._workers import UNSET, Registration, Workers, to_timeout

__all__ = ["Executor", "Runner", "cancelled_outcome"]

log = logging.getLogger("pyriver_async.executor")


class Runner(Protocol):
    """What runs one job (the producer's slot): its task, and why it was cancelled."""

    task: asyncio.Task[None] | None
    reason: CancelReason | None

    def cancel(self, reason: CancelReason) -> None: ...


def cancelled_outcome(
    job_id: int, attempt: int, queue: str, started: datetime, reason: CancelReason
) -> Outcome:
    """The outcome of a job whose coroutine was cancelled by request or by shutdown."""
    if reason is CancelReason.CANCEL:
        return Outcome.cancelled(
            job_id,
            attempt,
            queue,
            error=attempt_error(started, attempt, "job cancelled by request (client.cancel)"),
        )
    return Outcome.interrupted(job_id, attempt, queue)


class _JobLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[job {extra.get('job_id')} {extra.get('job_kind')}] {msg}", kwargs


job_logger = logging.getLogger("pyriver_async.job")


def job_fields(row_or_job: Job[Any] | JobRow) -> dict[str, Any]:
    """The structured ``extra`` of every log record about one job."""
    if isinstance(row_or_job, Job):
        j = row_or_job
        return {
            "job_id": j.id,
            "job_kind": j.kind,
            "job_queue": j.queue,
            "job_attempt": j.attempt,
            "job_max_attempts": j.max_attempts,
        }
    r = row_or_job
    return {
        "job_id": r[ID],
        "job_kind": r[KIND],
        "job_queue": r[QUEUE],
        "job_attempt": r[ATTEMPT],
        "job_max_attempts": r[MAX_ATTEMPTS],
    }


def _job_logger_factory(row: JobRow) -> Callable[[], logging.LoggerAdapter[logging.Logger]]:
    return lambda: _JobLogger(job_logger, job_fields(row))


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "…"


class Executor:
    """Runs jobs for one client. Holds no queue state: the producer owns the slots."""

    # Distinct timeouts that get a shared timer; a job with yet another timeout (say,
    # computed from its args) gets a timer of its own.
    MAX_TIMEOUT_QUEUES = 64

    def __init__(
        self,
        client: JobClient,
        workers: Workers,
        *,
        job_timeout: timedelta | None,
        retry_policy: Callable[[Job[Any], datetime], datetime] | None,
    ) -> None:
        self._client = client
        self._workers = workers
        self._job_timeout = job_timeout
        self._retry_policy = retry_policy
        self._timeouts: dict[float, TimeoutQueue] = {}

    def close(self) -> None:
        """Cancel the shared timeout timers (the client stopped; its jobs have ended)."""
        for tq in self._timeouts.values():
            tq.close()
        self._timeouts.clear()

    def _failure(
        self,
        row_or_job: Job[Any] | JobRow,
        started: datetime,
        message: str,
        trace: str,
        reg: Registration | None,
    ) -> Outcome:
        job = row_or_job if isinstance(row_or_job, Job) else job_from_row(row_or_job, None)
        error = attempt_error(started, job.attempt, message, trace)
        fields = job_fields(job)
        if job.attempt >= job.max_attempts:
            log.error(
                "job %d (%s, queue %r) discarded after attempt %d/%d: %s",
                job.id,
                job.kind,
                job.queue,
                job.attempt,
                job.max_attempts,
                _first_line(message),
                extra=fields,
            )
            return Outcome.failed(job.id, job.attempt, job.queue, error=error, retry_at=None)
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
        log.warning(
            "job %d (%s, queue %r) failed attempt %d/%d, retrying in %.0fs: %s",
            job.id,
            job.kind,
            job.queue,
            job.attempt,
            job.max_attempts,
            max((retry_at - now).total_seconds(), 0.0),
            _first_line(message),
            extra=fields,
        )
        return Outcome.failed(job.id, job.attempt, job.queue, error=error, retry_at=retry_at)

    def not_started(self, row: JobRow, message: str) -> Outcome:
        """The failed attempt of a claimed job that cannot start (flow control: its
        partition key function failed on it): recorded, retried or discarded as any
        failure would be, without running its worker."""
        reg = self._workers.get(row[KIND])
        return self._failure(row, datetime.now(UTC), message, "", reg)

    def _expire(self, _job_id: int, runner: Runner) -> None:
        task = runner.task
        if task is not None and not task.done():
            runner.cancel(CancelReason.TIMEOUT)

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

    async def execute(self, row: JobRow, runner: Runner) -> Outcome:
        """Run the claimed ``row`` to its end on ``runner``; never raises, except a
        cancellation from outside (the runner's own task was cancelled by its owner
        for another reason than the ones in ``runner.reason``) or a real SIGINT.
        """
        started = datetime.now(UTC)
        job_id: int = row[ID]
        kind: str = row[KIND]
        reg = self._workers.get(kind)
        if reg is None:
            return self._failure(
                row,
                started,
                f"no worker is registered for job kind {kind!r} in this client "
                f"(registered: {', '.join(self._workers.kinds) or 'none'})",
                "",
                None,
            )
        try:
            args = reg.decoder.decode(row[1])
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            return self._failure(
                row,
                started,
                f"args of job kind {kind!r} do not decode into {reg.args_type.__name__}: {exc}",
                "",
                reg,
            )
        try:
            job = job_from_row(row, args)
        except Exception as exc:  # a row another writer shaped oddly
            return self._failure(row, started, f"job row cannot be read: {exc!r}", "", reg)

        timeout = self._timeout_for(reg, job)
        deadline = started + timeout if timeout is not None else None
        ctx = JobContext(self._client, job_id, _job_logger_factory(row), deadline)
        task = runner.task
        assert task is not None
        # A timer cancels the task at the deadline (shared by the jobs with the same
        # timeout; cheaper on the hot path than asyncio.timeout's context manager); the
        # runner's reason tells the cancellations apart.
        expiry: list[Any] | None = None
        tq: TimeoutQueue | None = None
        own_timer: asyncio.TimerHandle | None = None
        if timeout is not None:
            seconds = timeout.total_seconds()
            tq = self._timeouts.get(seconds)
            if tq is None and len(self._timeouts) < self.MAX_TIMEOUT_QUEUES:
                tq = TimeoutQueue(seconds, asyncio.get_running_loop(), self._expire)
                self._timeouts[seconds] = tq
            if tq is not None:
                expiry = tq.add(job_id, runner)
            else:
                own_timer = asyncio.get_running_loop().call_later(
                    seconds, self._expire, job_id, runner
                )
        try:
            await reg.work(ctx, job)
        except JobSnooze as snooze:
            return Outcome.snoozed_for(job_id, job.attempt, job.queue, snooze.delay)
        except JobCancel as cancel:
            return Outcome.cancelled(
                job_id,
                job.attempt,
                job.queue,
                error=attempt_error(started, job.attempt, f"JobCancel: {cancel.reason}"),
            )
        except asyncio.CancelledError:
            reason = runner.reason
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
            if reason is CancelReason.TIMEOUT:
                task.uncancel()  # handled here: the task goes on to report its outcome
                return self._failure(
                    job, started, f"job timed out after {timeout} (worker {reg.name})", "", reg
                )
            return cancelled_outcome(job_id, job.attempt, job.queue, started, reason)
        except Exception as exc:
            return self._failure(
                job, started, f"{type(exc).__name__}: {exc}", traceback.format_exc(), reg
            )
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, GeneratorExit... raised by the job's code:
            # asyncio would let them out of the event loop and end the process, on every
            # retry in every process that claims the job. A failure of this attempt.
            if isinstance(exc, KeyboardInterrupt) and _interrupts.real_sigint_pending():
                raise  # a real Ctrl-C: it means shutdown, not a job failure
            return self._failure(
                job,
                started,
                f"{type(exc).__name__}: {exc} (raised by the job; the process goes on)",
                traceback.format_exc(),
                reg,
            )
        finally:
            if expiry is not None:
                assert tq is not None
                tq.finish(expiry)
            elif own_timer is not None:
                own_timer.cancel()
        return Outcome.completed(job_id, job.attempt, job.queue)

    @staticmethod
    def claim_time(row: JobRow) -> datetime:
        """The claim's attempted_at (with the attempt, it names the claim)."""
        at: datetime = row[ATTEMPTED_AT]
        return at
