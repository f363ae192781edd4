"""Inserts on the caller's psycopg 3 connection, inside the transaction it has open.

The logic is written once, in :class:`_PsycopgBase`, over three primitives (run a
statement, COPY rows, open a transaction of our own) that :class:`PsycopgExecutor`
(``AsyncConnection``) and :class:`PsycopgSyncExecutor` (``Connection``) implement. The
sync one's coroutines call psycopg's blocking API and never suspend: they are only ever
driven by :func:`pyriver_async.sync.run_blocking`, never on an event loop.

The caller's connection is not reconfigured: each statement runs on a cursor of its own
that returns tuples (whatever the connection's row factory) and json/jsonb as their
text, as the rest of the library reads them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Self

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row
from psycopg.types.array import ListDumper
from psycopg.types.string import TextLoader

from ..columns import JOB_COLUMNS
from ..queries import Queries, Query
from ..records import (
    InsertedRow,
    InsertParams,
    NextIds,
    insert_many_values,
    insert_values,
    match_inserted,
)
from ..sqlstate import error_from_sqlstate

__all__ = ["PsycopgExecutor", "PsycopgSyncExecutor", "translated"]

_SKIPPED = len(JOB_COLUMNS)  # job_insert(_many): job columns, then skipped, then ord
_ORD = _SKIPPED + 1
_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


@cache
def _sql(q: Query) -> str:
    return q.pyformat()


@contextlib.contextmanager
def translated(schema: str) -> Iterator[None]:
    """psycopg's errors raised in the block become the library's (by SQLSTATE)."""
    try:
        yield
    except psycopg.Error as exc:
        lost = isinstance(exc, psycopg.OperationalError)
        raise error_from_sqlstate(exc, exc.sqlstate, schema, connection=lost)


def _prepare(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> None:
    # On this cursor only: json and jsonb as their text (the row decoder reads text),
    # and a tuple (a job's tags: `()` when it has none) as an array, not a record.
    adapters = cur.adapters
    adapters.register_loader("json", TextLoader)
    adapters.register_loader("jsonb", TextLoader)
    adapters.register_dumper(tuple, ListDumper)


class _PsycopgBase:
    """The executor's logic; ``_rows``, ``_copy`` and ``_own_transaction`` do the I/O."""

    __slots__ = ("_conn", "_queries")

    def __init__(self, queries: Queries, conn: Any) -> None:
        self._queries = queries
        self._conn = conn

    @property
    def queries(self) -> Queries:
        return self._queries

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Self]:
        yield self  # bound to its connection already

    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status in _IN_TRANSACTION

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        # Outside autocommit, psycopg itself opens a transaction at the first statement
        # (the caller's, which the caller commits): the calls join it. In autocommit
        # mode with none open, the calls get one of their own, committed at the end.
        if not self._conn.autocommit or self.in_transaction():
            yield
            return
        async with self._own_transaction():
            yield

    # -- the primitives -------------------------------------------------------------

    async def _rows(self, q: Query, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _copy(self, q: Query, records: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _own_transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    # -- the queries ----------------------------------------------------------------

    async def job_insert(self, p: InsertParams, *, timeout: float | None = None) -> InsertedRow:
        # ``timeout`` is the engine's, for its own connections; the caller's connection
        # keeps whatever statement_timeout its owner gave it.
        (row,) = await self._rows(self._queries.job_insert, insert_values(p))
        return InsertedRow(row, bool(row[_SKIPPED]))

    async def job_insert_many(self, ps: Sequence[InsertParams]) -> list[InsertedRow]:
        values = insert_many_values(ps, sequence=self._queries.job_sequence)
        rows = await self._rows(self._queries.job_insert_many, values)
        return match_inserted(rows, ps, skipped_at=_SKIPPED, ord_at=_ORD)

    async def job_next_ids(
        self, *, n: int, queues: Sequence[str], first_at: Sequence[datetime | None]
    ) -> NextIds:
        values = {
            "n": n,
            "sequence": self._queries.job_sequence,
            "queues": list(queues),
            "first_at": list(first_at),
        }
        ((ids, now, _),) = await self._rows(self._queries.job_next_ids, values)
        return NextIds(ids=ids or [], now=now)

    async def job_copy(
        self, records: Sequence[tuple[Any, ...]], during: Callable[[], Any] | None = None
    ) -> Any:
        await self._copy(self._queries.job_copy_from_stdin, records)
        return during() if during is not None else None

    async def job_notify_queues(self, *, queues: Sequence[str]) -> None:
        await self._rows(self._queries.job_notify_queues, {"queues": list(queues)})


class PsycopgExecutor(_PsycopgBase):
    """On a ``psycopg.AsyncConnection``."""

    __slots__ = ()

    async def _rows(self, q: Query, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        with translated(self._queries.schema):
            async with self._conn.cursor(row_factory=tuple_row) as cur:
                _prepare(cur)
                await cur.execute(_sql(q), values)
                return await cur.fetchall()  # type: ignore[no-any-return]

    async def _copy(self, q: Query, records: Sequence[tuple[Any, ...]]) -> None:
        with translated(self._queries.schema):
            async with self._conn.cursor() as cur:
                _prepare(cur)
                async with cur.copy(q.text) as copy:
                    for r in records:
                        await copy.write_row(r)

    @contextlib.asynccontextmanager
    async def _own_transaction(self) -> AsyncIterator[None]:
        with translated(self._queries.schema):
            async with self._conn.transaction():
                yield


class PsycopgSyncExecutor(_PsycopgBase):
    """On a ``psycopg.Connection``: coroutines that block, for ``pyriver_async.sync``."""

    __slots__ = ()

    async def _rows(self, q: Query, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        with translated(self._queries.schema), self._conn.cursor(row_factory=tuple_row) as cur:
            _prepare(cur)
            cur.execute(_sql(q), values)
            return cur.fetchall()  # type: ignore[no-any-return]

    async def _copy(self, q: Query, records: Sequence[tuple[Any, ...]]) -> None:
        with translated(self._queries.schema), self._conn.cursor() as cur:
            _prepare(cur)
            with cur.copy(q.text) as copy:
                for r in records:
                    copy.write_row(r)

    @contextlib.asynccontextmanager
    async def _own_transaction(self) -> AsyncIterator[None]:
        with translated(self._queries.schema), self._conn.transaction():
            yield
