"""What a worker receives: the job row with its decoded args, and the job's context."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["FINALIZED_STATES", "AttemptError", "Job", "JobState"]

ArgsT = TypeVar("ArgsT")


class JobState(enum.StrEnum):
    """The states of River's ``river_job_state`` enum."""

    AVAILABLE = "available"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    DISCARDED = "discarded"
    PENDING = "pending"
    RETRYABLE = "retryable"
    RUNNING = "running"
    SCHEDULED = "scheduled"


FINALIZED_STATES = frozenset({JobState.CANCELLED, JobState.COMPLETED, JobState.DISCARDED})


class AttemptError(msgspec.Struct, frozen=True):
    """One failed attempt, as stored in ``river_job.errors`` (River's shape)."""

    at: datetime
    attempt: int
    error: str
    trace: str = ""


class Job(msgspec.Struct, Generic[ArgsT]):
    """A job row. ``args`` is the decoded msgspec Struct of the job's kind.

    Build one with keywords; positional arguments follow the fields' order below
    (the engine builds a Job per claimed row that way: four times cheaper).
    """

    id: int
    args: ArgsT
    kind: str
    queue: str
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    scheduled_at: datetime
    created_at: datetime
    attempted_at: datetime | None = None
    finalized_at: datetime | None = None
    attempted_by: list[str] = msgspec.field(default_factory=list)
    errors: list[AttemptError] = msgspec.field(default_factory=list)
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    unique_key: bytes | None = None
    unique_states: int | None = None

    @property
    def output(self) -> Any:
        """What the job recorded with ``ctx.record_output`` (decoded JSON), else None."""
        return self.metadata.get("output")
