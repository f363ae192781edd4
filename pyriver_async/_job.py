"""What a worker receives: the job row with its decoded args, and the job's context."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["AttemptError", "Job", "JobContext", "JobState"]

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


class JobContext:
    """Given to a worker with its job.

    - ``client``: insert follow-up jobs (``await ctx.client.insert(...)``).
    - ``logger``: a logger whose records carry the job's id, kind and attempt.
    - ``deadline``: when the job's timeout cancels it (``None`` without a timeout).
    """

    __slots__ = ("_client", "_logger", "_make_logger", "deadline", "job_id")

    def __init__(
        self,
        client: Client,
        job_id: int,
        logger: logging.LoggerAdapter[logging.Logger]
        | Callable[[], logging.LoggerAdapter[logging.Logger]],
        deadline: datetime | None,
    ) -> None:
        self._client = client
        self.job_id = job_id
        # Most jobs never log: the adapter is made on first use.
        if isinstance(logger, logging.LoggerAdapter):
            self._logger: logging.LoggerAdapter[logging.Logger] | None = logger
            self._make_logger = None
        else:
            self._logger = None
            self._make_logger = logger
        self.deadline = deadline

    @property
    def client(self) -> Client:
        return self._client

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._logger is None:
            assert self._make_logger is not None
            self._logger = self._make_logger()
        return self._logger
