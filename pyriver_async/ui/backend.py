"""What the UI needs from the library's query and control API, written down once.

The UI reads jobs and acts on them only through these public ``Client`` methods
(``client.list``, ``client.retry_many``, ...), so that the CLI, scripts and the UI
share one implementation with River's semantics. :class:`ControlClient` is that
contract as a Protocol; :func:`control` views a ``Client`` through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, cast

from .._job import Job, JobState

__all__ = [
    "ActionResult",
    "ClientInfoLike",
    "ControlClient",
    "JobPageLike",
    "QueueInfoLike",
    "control",
    "job_filter",
]


class JobPageLike(Protocol):
    jobs: list[Job[Any]]
    next_cursor: str | None
    stopped_early: bool
    scanned: int


class ActionResult(Protocol):
    job_id: int
    outcome: Literal["done", "not_found", "refused"]
    reason: str
    job: Job[Any] | None


class QueueInfoLike(Protocol):
    name: str
    paused: bool
    counts: Mapping[JobState, int]
    counts_exact: bool


class QueueUseLike(Protocol):
    max_workers: int
    running: int


class ClientInfoLike(Protocol):
    id: str
    hostname: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: timedelta
    alive: bool
    stopping: bool
    queues: Mapping[str, QueueUseLike]
    is_leader: bool
    metadata: Mapping[str, Any]


class ControlClient(Protocol):
    """The methods of ``pyriver_async.Client`` the UI calls (query and control API)."""

    async def list(
        self,
        filter: Any = None,
        *,
        order: str = "id",
        descending: bool = True,
        limit: int = 100,
        cursor: str | None = None,
        conn: Any = None,
    ) -> JobPageLike: ...

    async def get(self, job_id: int, *, conn: Any = None) -> Job[Any]: ...
    async def retry_many(
        self, ids_or_filter: Any, *, conn: Any = None, limit: int | None = None
    ) -> Sequence[ActionResult]: ...
    async def cancel_many(
        self, ids_or_filter: Any, *, conn: Any = None, limit: int | None = None
    ) -> Sequence[ActionResult]: ...
    async def delete_many(
        self, ids_or_filter: Any, *, conn: Any = None, limit: int | None = None
    ) -> Sequence[ActionResult]: ...
    async def pause(self, queue: str = "*", *, conn: Any = None) -> None: ...
    async def resume(self, queue: str = "*", *, conn: Any = None) -> None: ...
    async def list_clients(self, *, conn: Any = None) -> Sequence[ClientInfoLike]: ...


def control(client: object) -> ControlClient:
    """``client`` seen through the control API's contract."""
    return cast(ControlClient, client)


def job_filter(**fields: Any) -> Any:
    """A ``pyriver_async.JobFilter`` of the given fields (None values left out)."""
    import pyriver_async

    cls = getattr(pyriver_async, "JobFilter", None)
    if cls is None:  # pragma: no cover - the control API is part of the library
        raise RuntimeError("this pyriver_async has no JobFilter (the query API)")
    return cls(**{k: v for k, v in fields.items() if v is not None})
