"""The read-only insights queries (sql/insights.sql) over asyncpg, and the small
read-only pool a dashboard uses so that it can never take the workers' connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ..._errors import TransientDatabaseError
from ..queries import Queries
from ._base import Base
from .errors import as_library_error
from .listener import AsyncpgListener

__all__ = ["InsightQueries", "ReadPool", "dsn_of"]

Row = dict[str, Any]


def _rows(records: Sequence[Any]) -> list[Row]:
    return [dict(r) for r in records]


class InsightQueries(Base):
    """One method per query of insights.sql; rows come back as plain dicts."""

    __slots__ = ()

    async def _rows(self, name: str, **params: Any) -> list[Row]:
        q = getattr(self._queries, name)
        return _rows(await self._fetch(q, q.bind(**params)))

    async def _row(self, name: str, **params: Any) -> Row | None:
        rows = await self._rows(name, **params)
        return rows[0] if rows else None

    async def insights_state_counts(self, *, states: Sequence[str], cap: int) -> list[Row]:
        return await self._rows("insights_state_counts", states=list(states), cap=cap)

    async def insights_final_window(self, *, since: datetime) -> list[Row]:
        return await self._rows("insights_final_window", since=since)

    async def insights_estimate(self) -> Row | None:
        return await self._row("insights_estimate", schema=self._queries.schema)

    async def insights_max_id(self) -> int | None:
        row = await self._row("insights_max_id")
        return None if row is None else row["max_id"]

    async def insights_throughput(
        self, *, since: datetime, until: datetime, bin: float
    ) -> list[Row]:
        return await self._rows("insights_throughput", since=since, until=until, bin=bin)

    async def insights_breakdown(
        self, *, since: datetime, until: datetime, bounds: Sequence[float], limit: int
    ) -> list[Row]:
        return await self._rows(
            "insights_breakdown", since=since, until=until, bounds=list(bounds), limit=limit
        )

    async def insights_queue_states(self, *, limit: int) -> list[Row]:
        return await self._rows("insights_queue_states", limit=limit)

    async def insights_queues(self) -> list[Row]:
        return await self._rows("insights_queues")

    async def insights_queue_counts(self, *, queues: Sequence[str], cap: int) -> list[Row]:
        return await self._rows("insights_queue_counts", queues=list(queues), cap=cap)

    async def insights_queue_lag(self, *, queues: Sequence[str]) -> list[Row]:
        return await self._rows("insights_queue_lag", queues=list(queues))

    async def insights_scheduler_lag(self, *, queues: Sequence[str], lag: float) -> list[Row]:
        return await self._rows("insights_scheduler_lag", queues=list(queues), lag=lag)

    async def insights_cleaner_lag(self) -> list[Row]:
        return await self._rows("insights_cleaner_lag")

    async def insights_kinds(self, *, limit: int) -> list[str]:
        return [r["kind"] for r in await self._rows("insights_kinds", limit=limit)]

    async def insights_kind_sample(
        self, *, kind: str, budget: int, max: int, bounds: Sequence[float]
    ) -> list[Row]:
        return await self._rows(
            "insights_kind_sample", kind=kind, budget=budget, max=max, bounds=list(bounds)
        )

    async def insights_claim_order(
        self,
        *,
        queue: str,
        limit: int,
        priority: int | None,
        scheduled_at: datetime | None,
        id: int | None,
    ) -> list[Any]:
        q = self._queries.insights_claim_order
        args = q.bind(queue=queue, limit=limit, priority=priority, scheduled_at=scheduled_at, id=id)
        return list(await self._fetch(q, args))

    async def insights_job_documents(self, *, id: int, max_bytes: int) -> Row | None:
        return await self._row("insights_job_documents", id=id, max_bytes=max_bytes)

    async def insights_job_document_full(self, *, id: int, which: str) -> str | None:
        row = await self._row("insights_job_document_full", id=id, which=which)
        return None if row is None else row["doc"]

    async def insights_unique_conflict(self, *, unique_key: bytes, id: int) -> Row | None:
        return await self._row("insights_unique_conflict", unique_key=unique_key, id=id)

    async def insights_discarded_errors(self, *, since: datetime, limit: int) -> list[Row]:
        return await self._rows("insights_discarded_errors", since=since, limit=limit)

    async def insights_retryable_errors(self, *, limit: int) -> list[Row]:
        return await self._rows("insights_retryable_errors", limit=limit)

    async def insights_periodic_runs(self, *, match: str, limit: int) -> list[Row]:
        return await self._rows("insights_periodic_runs", match=match, limit=limit)

    async def insights_running(self, *, limit: int) -> list[Row]:
        return await self._rows("insights_running", limit=limit)

    async def insights_liveness_table(self) -> bool:
        table = f"{self._queries.qschema}.pyriver_client"
        row = await self._row("insights_liveness_table", table=table)
        return bool(row and row["present"])

    async def insights_clients(self) -> list[Row]:
        return await self._rows("insights_clients")

    async def insights_leader(self) -> Row | None:
        return await self._row("insights_leader")

    async def insights_table_health(self) -> Row | None:
        return await self._row("insights_table_health", schema=self._queries.schema)

    async def insights_old_xmin(self, *, older_than: float) -> list[Row]:
        return await self._rows("insights_old_xmin", older_than=older_than)

    async def insights_server(self) -> Row | None:
        return await self._row("insights_server")

    async def insights_ping(self) -> bool:
        return (await self._row("insights_ping")) is not None


def dsn_of(driver: Any) -> str | None:
    """The DSN an ``AsyncpgDriver`` was made from (None: it was given a pool)."""
    dsn = getattr(driver, "_dsn", None)
    return dsn if isinstance(dsn, str) else None


class ReadPool:
    """A small pool for read-only work (a dashboard), separate from the engine's.

    Made from a DSN, it opens at most ``max_size`` connections named
    ``application_name`` whose sessions default to read-only transactions with
    ``statement_timeout`` and ``lock_timeout`` (seconds) set once per connection.
    Given an application's pool instead, it borrows at most ``max_size`` of its
    connections at a time and sets the same limits on each transaction.

    ``async with pool.read() as conn:`` is one read-only transaction.
    """

    def __init__(
        self,
        source: str | asyncpg.Pool,
        *,
        max_size: int = 4,
        statement_timeout: float = 3.0,
        lock_timeout: float = 1.0,
        application_name: str = "pyriver-ui",
        schema: str = "public",
    ) -> None:
        self._dsn = source if isinstance(source, str) else None
        self._pool: asyncpg.Pool | None = None if isinstance(source, str) else source
        self.owns_pool = self._dsn is not None
        self.max_size = max_size
        self.statement_timeout = statement_timeout
        self.lock_timeout = lock_timeout
        self._application_name = application_name
        self._schema = schema
        self._slots = asyncio.Semaphore(max_size)
        self._lock = asyncio.Lock()

    def _settings(self) -> dict[str, str]:
        return {
            "application_name": self._application_name,
            "default_transaction_read_only": "on",
            "statement_timeout": str(int(self.statement_timeout * 1000)),
            "lock_timeout": str(int(self.lock_timeout * 1000)),
            # Only a guard against a transaction left open by a bug: long enough never
            # to cut one between its statements (a tiny statement_timeout did).
            "idle_in_transaction_session_timeout": "60000",
        }

    async def open(self) -> None:
        if self._pool is not None:
            return
        async with self._lock:
            if self._pool is None:
                try:
                    pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self.max_size,
                        server_settings=self._settings(),
                        max_inactive_connection_lifetime=60.0,
                    )
                except Exception as exc:
                    raise as_library_error(exc, self._schema)
                self._pool = pool

    @contextlib.asynccontextmanager
    async def read(self, *, statement_timeout: float | None = None) -> AsyncIterator[Any]:
        """A connection inside a read-only transaction, for the block.

        The block's own exceptions pass through as they are; the driver's, from
        acquiring, beginning or ending the transaction, are translated.
        """
        await self.open()
        pool = self._pool
        assert pool is not None
        limit = self.statement_timeout if statement_timeout is None else statement_timeout
        async with self._slots:
            try:
                conn = await pool.acquire(timeout=max(limit, 1.0))
            except TimeoutError:
                raise TransientDatabaseError(
                    f"no read connection came free within {max(limit, 1.0):g}s"
                ) from None
            except Exception as exc:
                raise as_library_error(exc, self._schema)
            try:
                tx = conn.transaction(readonly=True)
                try:
                    await tx.start()
                    if not self.owns_pool or statement_timeout is not None:
                        await conn.execute(
                            f"SET LOCAL statement_timeout = {int(limit * 1000)}; "
                            f"SET LOCAL lock_timeout = {int(self.lock_timeout * 1000)}"
                        )
                except Exception as exc:
                    raise as_library_error(exc, self._schema)
                try:
                    yield conn
                except BaseException:
                    with contextlib.suppress(Exception):
                        await tx.rollback()
                    with contextlib.suppress(asyncpg.InterfaceError):
                        if conn.is_in_transaction():
                            # The rollback itself was cancelled: this connection goes.
                            conn.terminate()
                    raise
                try:
                    await tx.commit()
                except Exception as exc:
                    raise as_library_error(exc, self._schema)
            finally:
                await pool.release(conn)

    def listener(self, queries: Queries) -> AsyncpgListener:
        """A LISTEN connection of its own (from the DSN), else one of the pool's."""
        if self._dsn is not None:
            return AsyncpgListener(queries, dsn=self._dsn)
        assert self._pool is not None
        return AsyncpgListener(queries, pool=self._pool)

    async def close(self) -> None:
        if self.owns_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 2.0)
            except TimeoutError:
                pool.terminate()
