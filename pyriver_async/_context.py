"""What a worker receives beside its job: the job's context, and the client it sees."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from ._args import InsertOpts, JobArgs
from ._driver.connections import InsertConnection
from ._insert import InsertResult
from ._job import Job

__all__ = ["JobClient", "JobContext"]


class JobClient(Protocol):
    """The client as a worker sees it through ``ctx.client`` (a :class:`Client`)."""

    async def insert(
        self, args: JobArgs, opts: InsertOpts | None = None, *, conn: InsertConnection | None = None
    ) -> InsertResult: ...

    async def insert_many(
        self,
        items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]],
        *,
        conn: InsertConnection | None = None,
    ) -> list[InsertResult]: ...

    async def get(self, job_id: int, *, conn: InsertConnection | None = None) -> Job[Any]: ...

    async def cancel(self, job_id: int, *, conn: InsertConnection | None = None) -> Job[Any]: ...

    @property
    def pool(self) -> Any:
        """The client's asyncpg pool, for a job's own queries."""
        ...


class JobContext:
    """Given to a worker with its job.

    - ``client``: insert follow-up jobs (``await ctx.client.insert(...)``).
    - ``logger``: a logger whose records carry the job's id, kind and attempt.
    - ``deadline``: when the job's timeout cancels it (``None`` without a timeout).
    """

    __slots__ = ("_client", "_logger", "_make_logger", "deadline", "job_id")

    def __init__(
        self,
        client: JobClient,
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
    def client(self) -> JobClient:
        return self._client

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._logger is None:
            assert self._make_logger is not None
            self._logger = self._make_logger()
        return self._logger
