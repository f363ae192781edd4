"""What a worker receives beside its job: the job's context, and the client it sees."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from ._args import InsertOpts, JobArgs
from ._driver.connections import ControlConnection, InsertConnection
from ._errors import InvalidOutputError, OutputTooLargeError
from ._insert import InsertResult
from ._insert_params import encode_json
from ._job import Job

__all__ = ["MAX_OUTPUT_BYTES", "JobClient", "JobContext"]

# The largest output a job may record, encoded. River allows 32 MB; ours is smaller
# because the output lives in the job's metadata, which every claim, get and list
# reads and every later update of the row rewrites: a bigger result belongs in a
# table or an object store, with its key recorded as the output.
MAX_OUTPUT_BYTES = 1024 * 1024


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

    async def get(self, job_id: int, *, conn: ControlConnection | None = None) -> Job[Any]: ...

    async def cancel(self, job_id: int, *, conn: ControlConnection | None = None) -> Job[Any]: ...

    @property
    def pool(self) -> Any:
        """The client's asyncpg pool, for a job's own queries."""
        ...


class JobContext:
    """Given to a worker with its job.

    - ``client``: insert follow-up jobs (``await ctx.client.insert(...)``).
    - ``logger``: a logger whose records carry the job's id, kind and attempt.
    - ``deadline``: when the job's timeout cancels it (``None`` without a timeout).
    - ``record_output(value)``: store the job's result with it (see the method).
    - ``cancelled``: for a blocking (``def``) worker running in a thread: True once
      its timeout, ``client.cancel`` or a hard stop asked it to stop; a thread cannot
      be interrupted, so long loops should look at it.
    """

    __slots__ = ("_client", "_logger", "_make_logger", "cancelled", "deadline", "job_id", "output")

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
        #: The JSON text of the recorded output (None: nothing recorded).
        self.output: str | None = None
        self.cancelled = False

    def record_output(self, value: Any) -> None:
        """Store ``value`` as the job's output, written with its outcome in the job's
        ``metadata["output"]`` (the key River uses, so River's tools show it too).

        ``value`` is anything msgspec encodes as JSON (dicts, lists, Structs,
        dataclasses, datetimes...), at most ``MAX_OUTPUT_BYTES`` (1 MiB) encoded.
        Read it back as ``job.output`` (decoded JSON) from ``client.get``,
        ``client.wait`` or the events. A later call replaces an earlier one. Raises
        :class:`OutputTooLargeError` or :class:`InvalidOutputError` at once, so the
        job can decide what to do.
        """
        raw, why = encode_json(value)
        if raw is None:
            raise InvalidOutputError(f"job {self.job_id}: the output cannot be stored: {why}")
        if len(raw) > MAX_OUTPUT_BYTES:
            raise OutputTooLargeError(
                f"job {self.job_id}: the output is {len(raw):,} bytes encoded, over the "
                f"limit of {MAX_OUTPUT_BYTES:,}; store it elsewhere and record its key"
            )
        self.output = raw.decode()

    @property
    def client(self) -> JobClient:
        return self._client

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._logger is None:
            assert self._make_logger is not None
            self._logger = self._make_logger()
        return self._logger
