"""How one attempt of a job ended, as the database should record it.

Built only through the named constructors below (River's ``JobSetStateCompleted`` and
siblings); the completer writes them, the driver turns a batch into one statement.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

__all__ = ["SNOOZE_AVAILABLE_AT_ONCE", "CancelReason", "Outcome", "attempt_error"]

_encode = msgspec.json.encode
# River's rule: a snooze this short makes the job available at once.
SNOOZE_AVAILABLE_AT_ONCE = timedelta(seconds=5)
MAX_ERROR_CHARS = 10_000
MAX_TRACE_CHARS = 20_000


class CancelReason(enum.Enum):
    """Why the engine cancelled a running job's coroutine."""

    CANCEL = "cancel"  # client.cancel(job_id), here or in another process
    TIMEOUT = "timeout"  # the job's timeout
    SHUTDOWN = "shutdown"  # this client's hard stop


def _clean(text: str, limit: int) -> str:
    # jsonb refuses NUL; a lone surrogate (a file name decoded with surrogateescape)
    # cannot be encoded at all; overly long messages bloat every later read of the row.
    text = text.replace("\x00", "\\0")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "…"


def attempt_error(started: datetime, attempt: int, message: str, trace: str = "") -> str:
    """One element of ``river_job.errors`` in River's shape, as JSON text."""
    return _encode(
        {
            "at": started,
            "attempt": attempt,
            "error": _clean(message, MAX_ERROR_CHARS),
            "trace": _clean(trace, MAX_TRACE_CHARS),
        }
    ).decode()


@dataclass(slots=True)
class Outcome:
    """The state one attempt leaves its job in (see the constructors)."""

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
    # The job's max_attempts (0: unknown), for the completer's fallback when the
    # database refuses this outcome.
    max_attempts: int = 0
    # Completed: delete the row instead of keeping it (QueueConfig/InsertOpts ephemeral).
    ephemeral: bool = False
    # For hooks, events and waiters once it is written (never sent to the database):
    # the Job its attempt saw, the exception behind a failure, and the JSON text of
    # what the job recorded with ctx.record_output (also in ``metadata``).
    job: Any = None
    exception: BaseException | None = None
    output: str | None = None

    @classmethod
    def completed(cls, job_id: int, attempt: int, queue: str) -> Outcome:
        return cls(job_id, attempt, "completed", queue)

    @classmethod
    def failed(
        cls,
        job_id: int,
        attempt: int,
        queue: str,
        *,
        error: str,
        retry_at: datetime | None,
    ) -> Outcome:
        """A failed attempt: ``retryable`` at ``retry_at``, or ``discarded`` (None)."""
        if retry_at is None:
            return cls(job_id, attempt, "discarded", queue, error=error)
        return cls(job_id, attempt, "retryable", queue, scheduled_at=retry_at, error=error)

    @classmethod
    def cancelled(cls, job_id: int, attempt: int, queue: str, *, error: str) -> Outcome:
        return cls(job_id, attempt, "cancelled", queue, error=error)

    @classmethod
    def snoozed_for(cls, job_id: int, attempt: int, queue: str, delay: timedelta) -> Outcome:
        """Run again after ``delay``, the attempt given back (``available`` at once when
        the delay is short, as River does; the producer looks again when it is due)."""
        state = "available" if delay <= SNOOZE_AVAILABLE_AT_ONCE else "scheduled"
        return cls(
            job_id,
            attempt,
            state,
            queue,
            scheduled_at=datetime.now(UTC) + delay,
            give_back=1,
            snoozed=True,
        )

    @classmethod
    def interrupted(cls, job_id: int, attempt: int, queue: str) -> Outcome:
        """Interrupted only by this client's shutdown: not the job's fault. It goes back
        to available with its attempt restored and no error (DESIGN §1)."""
        return cls(job_id, attempt, "available", queue, scheduled_at=datetime.now(UTC), give_back=1)

    @property
    def is_plain_completion(self) -> bool:
        """Completed with nothing else to write: the completer's fast statement."""
        return self.state == "completed" and self.error is None and self.metadata is None
