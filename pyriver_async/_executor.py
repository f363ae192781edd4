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
import dataclasses
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

import anyio
import anyio.to_thread
import msgspec

from . import _interrupts
from ._backoff import default_retry_delay
from ._config import QueueConfig
from ._context import JobClient, JobContext
from ._driver import JobRow
from ._driver.columns import ARGS, ATTEMPT, ATTEMPTED_AT, ID, KIND, MAX_ATTEMPTS, QUEUE
from ._errors import (
    InvalidArgsError,
    JobCancel,
    JobSnooze,
    JobTimeoutError,
    UnknownKindError,
)
from ._job import Job
from ._middleware import ErrorHandler, ErrorOverride, WorkMiddleware, compose_work
from ._outcome import CancelReason, Outcome, attempt_error
from ._rows import job_from_row, read_job
from ._timeouts import TimeoutQueue
from ._workers import UNSET, Registration, Workers, to_timeout

__all__ = [
    "ERROR_HANDLER_TIMEOUT",
    "Executor",
    "Runner",
    "cancelled_outcome",
    "job_fields",
    "timeout_error",
]

# How long an async error handler may take before the attempt's outcome is decided
# without it (it holds the job's slot meanwhile).
ERROR_HANDLER_TIMEOUT = 10.0

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


def timeout_error(timeout: timedelta | None, worker: str, note: str = "") -> JobTimeoutError:
    """The error of an attempt its deadline cancelled (the job let the cancellation
    out): the engine's, and :func:`pyriver_async.testing.work_job`'s. A ``TimeoutError``
    the job raises itself before its deadline is a failure like any other."""
    return JobTimeoutError(f"job timed out after {timeout} (worker {worker}){note}")


class Executor:
    """Runs jobs for one client. Holds no queue state: the producer owns the slots.

    Each kind's worker is composed once (work middleware around it, a thread for a
    blocking worker) into the executor's own copy of its registration.
    """

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
        middleware: Sequence[WorkMiddleware] = (),
        error_handler: ErrorHandler | None = None,
        queues: Mapping[str, QueueConfig] | None = None,
    ) -> None:
        self._client = client
        self._workers = workers
        self._job_timeout = job_timeout
        self._retry_policy = retry_policy
        self._timeouts: dict[float, TimeoutQueue] = {}
        self._middleware = list(middleware)
        self._error_handler = error_handler
        self._limiters = {
            name: anyio.CapacityLimiter(cfg.thread_limit) for name, cfg in (queues or {}).items()
        }
        self._regs: dict[str, Registration] = {}
        for kind in workers.kinds:
            reg = workers.get(kind)
            assert reg is not None
            self._compose(reg)

    def close(self) -> None:
        """Cancel the shared timeout timers (the client stopped; its jobs have ended)."""
        for tq in self._timeouts.values():
            tq.close()
        self._timeouts.clear()

    # -- composition, once per kind ---------------------------------------------------

    def _compose(self, reg: Registration) -> Registration:
        work: Callable[[JobContext, Job[Any]], Any] = reg.work
        if reg.blocking:
            work = partial(self._in_thread, reg.work)
        composed = dataclasses.replace(reg, work=compose_work(self._middleware, work))
        self._regs[reg.kind] = composed
        return composed

    def registration(self, kind: str) -> Registration | None:
        """The composed registration of ``kind`` (one registered after start is
        composed on first use)."""
        reg = self._regs.get(kind)
        if reg is None:
            base = self._workers.get(kind)
            if base is None:
                return None
            reg = self._compose(base)
        return reg

    def _limiter(self, queue: str) -> anyio.CapacityLimiter:
        lim = self._limiters.get(queue)
        if lim is None:  # a job worked outside the configured queues (testing helpers)
            lim = self._limiters[queue] = anyio.CapacityLimiter(40)
        return lim

    async def _in_thread(self, fn: Callable[..., Any], ctx: JobContext, job: Job[Any]) -> None:
        """Run a blocking worker in a thread of its queue's limiter.

        A thread cannot be interrupted: when the job is cancelled (timeout,
        ``client.cancel``, hard stop) it is told through ``ctx.cancelled``, and the
        slot (with the limiter's token) stays taken until the thread returns; then the
        cancellation is reported and whatever the thread returned is dropped.
        """
        inner = asyncio.ensure_future(
            anyio.to_thread.run_sync(fn, ctx, job, limiter=self._limiter(job.queue))
        )
        cancelled_at: float | None = None
        while not inner.done():
            try:
                await asyncio.shield(inner)
            except asyncio.CancelledError:
                if cancelled_at is None:
                    cancelled_at = time.monotonic()
                ctx.cancelled = True
            except BaseException:
                pass  # the thread raised: read below
        if cancelled_at is not None:
            if not inner.cancelled():
                inner.exception()  # retrieved: the thread's own end no longer matters
            raise asyncio.CancelledError(
                f"its thread ran on for {time.monotonic() - cancelled_at:.1f}s after that "
                "(a thread cannot be stopped; the slot was held until it returned)"
            )
        result = inner.result()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                "the worker is a plain def that returned an awaitable; declare it "
                "`async def` to run it on the event loop"
            )

    # -- failures --------------------------------------------------------------------

    async def _failure(
        self,
        job: Job[Any],
        started: datetime,
        message: str,
        trace: str,
        reg: Registration | None,
        exc: BaseException,
    ) -> Outcome:
        error = attempt_error(started, job.attempt, message, trace)
        fields = job_fields(job)
        override = None
        if self._error_handler is not None:
            override = await self._call_error_handler(job, exc, fields)
        if job.attempt >= job.max_attempts or (override is not None and override.discard):
            log.error(
                "job %d (%s, queue %r) discarded after attempt %d/%d%s: %s",
                job.id,
                job.kind,
                job.queue,
                job.attempt,
                job.max_attempts,
                " by the error handler" if job.attempt < job.max_attempts else "",
                _first_line(message),
                extra=fields,
            )
            return Outcome.failed(job.id, job.attempt, job.queue, error=error, retry_at=None)
        now = datetime.now(UTC)
        retry_at: datetime | None = override.retry_at if override is not None else None
        if retry_at is None and reg is not None and reg.next_retry is not None:
            try:
                retry_at = reg.next_retry(job)
            except Exception:
                log.exception(
                    "next_retry of worker %s failed; using the default", reg.name, extra=fields
                )
        if retry_at is None and self._retry_policy is not None:
            try:
                retry_at = self._retry_policy(job, now)
            except Exception:
                log.exception("the client's retry policy failed; using the default", extra=fields)
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

    async def _call_error_handler(
        self, job: Job[Any], exc: BaseException, fields: dict[str, Any]
    ) -> ErrorOverride | None:
        handler = self._error_handler
        assert handler is not None
        try:
            result = handler(job, exc)
            if inspect.isawaitable(result):
                async with asyncio.timeout(ERROR_HANDLER_TIMEOUT):
                    result = await result
        except asyncio.CancelledError:
            # The job's slot is being cancelled (a hard stop) while the handler runs:
            # the attempt's outcome is still recorded, with the usual decision.
            log.warning(
                "the error handler of job %d was interrupted; the usual retry applies",
                job.id,
                extra=fields,
            )
            return None
        except TimeoutError:
            log.error(
                "the error handler of job %d took longer than %.0fs; the usual retry applies",
                job.id,
                ERROR_HANDLER_TIMEOUT,
                extra=fields,
            )
            return None
        except BaseException as failure:
            if isinstance(failure, KeyboardInterrupt) and _interrupts.real_sigint_pending():
                raise
            log.error(
                "the error handler failed on job %d; the usual retry applies",
                job.id,
                exc_info=failure,
                extra=fields,
            )
            return None
        if result is None or isinstance(result, ErrorOverride):
            return result
        log.error(
            "the error handler returned %r for job %d, not an ErrorOverride or None; ignored",
            result,
            job.id,
            extra=fields,
        )
        return None

    async def engine_failure(self, row: JobRow, exc: BaseException) -> Outcome:
        """The outcome of an attempt the engine itself could not carry through: a
        failure with a plain message, so that it uses its attempt like any other."""
        message = f"the engine failed running this job: {type(exc).__name__}: {exc!a}"
        return await self._failure(
            job_from_row(row, None), datetime.now(UTC), message, "", None, exc
        )

    async def not_started(self, row: JobRow, message: str, exc: BaseException) -> Outcome:
        """The failed attempt of a claimed job that cannot start (flow control: its
        partition key function failed on it): recorded, retried or discarded as any
        failure would be, without running its worker."""
        reg = self._workers.get(row[KIND])
        return await self._unreadable(row, datetime.now(UTC), message, exc, reg)

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
                log.exception(
                    "timeout() of worker %s failed; using the default",
                    reg.name,
                    extra=job_fields(job),
                )
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
        reg = self._regs.get(kind) or self.registration(kind)
        if reg is None:
            message = (
                f"no worker is registered for job kind {kind!r} in this client "
                f"(registered: {', '.join(self._workers.kinds) or 'none'})"
            )
            return await self._unreadable(row, started, message, UnknownKindError(message), None)
        try:
            args = reg.decoder.decode(row[ARGS])
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            message = (
                f"args of job kind {kind!r} do not decode into {reg.args_type.__name__}: {exc}"
            )
            error = InvalidArgsError(message)
            error.__cause__ = exc
            return await self._unreadable(row, started, message, error, reg)
        try:
            job = job_from_row(row, args)
        except Exception as exc:  # a row another writer shaped oddly
            message = f"job row cannot be read: {exc!r}"
            return await self._unreadable(row, started, message, exc, reg)

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
        outcome: Outcome | None = None
        # (message, trace, exception) of a failed attempt, decided once the timer is off.
        failed: tuple[str, str, BaseException] | None = None
        try:
            await reg.work(ctx, job)
        except JobSnooze as snooze:
            outcome = Outcome.snoozed_for(job_id, job.attempt, job.queue, snooze.delay)
        except JobCancel as cancel:
            outcome = Outcome.cancelled(
                job_id,
                job.attempt,
                job.queue,
                error=attempt_error(started, job.attempt, f"JobCancel: {cancel.reason}"),
            )
            outcome.exception = cancel
        except asyncio.CancelledError as exc:
            reason = runner.reason
            if reason is None and not task.cancelling():
                # The job's own code raised it (it awaited something cancelled): a
                # failure like any other, not a shutdown to give the attempt back for.
                failed = (
                    "CancelledError raised inside the job (its task was not cancelled)",
                    traceback.format_exc(),
                    exc,
                )
            else:
                if reason is None:
                    reason = CancelReason.SHUTDOWN  # the task was cancelled from outside
                note = f"; {exc.args[0]}" if reg.blocking and exc.args else ""
                if reason is CancelReason.TIMEOUT:
                    task.uncancel()  # handled here: the task goes on to report its outcome
                    timed_out = timeout_error(timeout, reg.name, note)
                    failed = (str(timed_out), "", timed_out)
                else:
                    outcome = cancelled_outcome(job_id, job.attempt, job.queue, started, reason)
                    if note and reason is CancelReason.CANCEL:
                        outcome.error = attempt_error(
                            started,
                            job.attempt,
                            f"job cancelled by request (client.cancel){note}",
                        )
        except Exception as exc:
            failed = (f"{type(exc).__name__}: {exc}", traceback.format_exc(), exc)
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, GeneratorExit... raised by the job's code:
            # asyncio would let them out of the event loop and end the process, on every
            # retry in every process that claims the job. A failure of this attempt.
            if isinstance(exc, KeyboardInterrupt) and _interrupts.real_sigint_pending():
                raise  # a real Ctrl-C: it means shutdown, not a job failure
            failed = (
                f"{type(exc).__name__}: {exc} (raised by the job; the process goes on)",
                traceback.format_exc(),
                exc,
            )
        finally:
            if expiry is not None:
                assert tq is not None
                tq.finish(expiry)
            elif own_timer is not None:
                own_timer.cancel()
        if failed is not None:
            outcome = await self._failure(job, started, failed[0], failed[1], reg, failed[2])
            outcome.exception = failed[2]
        elif outcome is None:
            outcome = Outcome.completed(job_id, job.attempt, job.queue)
        outcome.job = job
        output = ctx.output
        if output is not None:
            outcome.output = output
            outcome.metadata = '{"output":' + output + "}"
        return outcome

    async def _unreadable(
        self,
        row: JobRow,
        started: datetime,
        message: str,
        exc: BaseException,
        reg: Registration | None,
    ) -> Outcome:
        """The failure of a job that cannot be run at all (unknown kind, bad args)."""
        job = read_job(row)
        outcome = await self._failure(job, started, message, "", reg, exc)
        outcome.job = job
        outcome.exception = exc
        return outcome

    @staticmethod
    def claim_time(row: JobRow) -> datetime:
        """The claim's attempted_at (with the attempt, it names the claim)."""
        at: datetime = row[ATTEMPTED_AT]
        return at
