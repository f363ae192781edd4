"""Inserts under a SQLAlchemy session or connection, inside its transaction.

The statements go to the DBAPI connection underneath (asyncpg or psycopg), through the
executor of that driver, so that they are the library's own (the same SQL, COPY, error
translation). First, SQLAlchemy is made to begin its transaction, as it would for its
own next statement, so that the jobs join the transaction the session commits or rolls
back whatever statement came first. That takes care on asyncpg: SQLAlchemy's asyncpg
adapter sends BEGIN only before the first statement it runs itself, so a job inserted
first, straight on the asyncpg connection, would commit on its own and survive the
session's rollback. There a statement is run through SQLAlchemy first.

As in the psycopg driver, the logic is written once (:class:`_SqlalchemyBase`); the
sync executor's coroutines block and never suspend (see ``pyriver_async.sync``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Self

import msgspec
import sqlalchemy.exc

from ..._errors import ConfigError
from .. import InsertExecutor
from ..queries import Queries
from ..records import InsertedRow, InsertParams, NextIds
from ..sqlstate import error_from_sqlstate

__all__ = ["SqlalchemyExecutor", "SqlalchemySyncExecutor"]

_encode = msgspec.json.encode


def _library(obj: object) -> str:
    return type(obj).__module__.partition(".")[0]


@contextlib.contextmanager
def _translated(schema: str) -> Iterator[None]:
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        lost = exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.OperationalError)
        raise error_from_sqlstate(exc, getattr(exc.orig, "sqlstate", None), schema, connection=lost)


def _driver_executor(driver: Any, queries: Queries, *, sync: bool) -> InsertExecutor:
    library = _library(driver)
    if library == "psycopg":
        from ..psycopg import insert_executor

        return insert_executor(driver, queries, sync=sync)
    if library == "asyncpg" and not sync:
        from ..asyncpg import AsyncpgExecutor

        return AsyncpgExecutor(queries, conn=driver)
    raise ConfigError(
        "pyriver_async inserts through SQLAlchemy's postgresql+asyncpg and "
        "postgresql+psycopg dialects; this session's database connection is "
        f"{type(driver).__module__}.{type(driver).__qualname__}"
    )


class _SqlalchemyBase:
    """Bound on first use (``_begin``) to the driver connection under ``target``."""

    __slots__ = ("_inner", "_is_session", "_queries", "_target")

    def __init__(self, queries: Queries, target: Any, *, is_session: bool) -> None:
        self._queries = queries
        self._target = target
        self._is_session = is_session
        self._inner: InsertExecutor | None = None

    @property
    def queries(self) -> Queries:
        return self._queries

    async def _begin(self) -> Any:
        """Begin SQLAlchemy's transaction (when none is); the driver connection."""
        raise NotImplementedError

    _sync = False

    async def _bound(self) -> InsertExecutor:
        if self._inner is None:
            with _translated(self._queries.schema):
                driver = await self._begin()
            self._inner = _driver_executor(driver, self._queries, sync=self._sync)
        return self._inner

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Self]:
        await self._bound()
        yield self

    def in_transaction(self) -> bool:
        return bool(self._target.in_transaction())

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with (await self._bound()).transaction():
            yield

    async def job_insert(self, p: InsertParams, *, timeout: float | None = None) -> InsertedRow:
        return await (await self._bound()).job_insert(p, timeout=timeout)

    async def job_insert_many(self, ps: Sequence[InsertParams]) -> list[InsertedRow]:
        return await (await self._bound()).job_insert_many(ps)

    async def job_next_ids(
        self, *, n: int, queues: Sequence[str], first_at: Sequence[datetime | None]
    ) -> NextIds:
        return await (await self._bound()).job_next_ids(n=n, queues=queues, first_at=first_at)

    async def job_copy(
        self, records: Sequence[tuple[Any, ...]], during: Callable[[], Any] | None = None
    ) -> Any:
        return await (await self._bound()).job_copy(records, during)

    async def job_notify_queues(self, *, queues: Sequence[str]) -> None:
        await (await self._bound()).job_notify_queues(queues=queues)


class SqlalchemyExecutor(_SqlalchemyBase):
    """Under an ``AsyncSession`` or an ``AsyncConnection``."""

    __slots__ = ()

    async def _begin(self) -> Any:
        target = self._target
        conn = await target.connection() if self._is_session else target
        if not conn.in_transaction():
            await conn.begin()  # what SQLAlchemy's autobegin does before a statement
        driver = (await conn.get_raw_connection()).driver_connection
        if _library(driver) == "asyncpg" and not driver.is_in_transaction():
            # The adapter's BEGIN comes with its first statement (none in autocommit).
            await conn.exec_driver_sql("SELECT 1")
        return driver


class SqlalchemySyncExecutor(_SqlalchemyBase):
    """Under a ``Session`` or a ``Connection``: coroutines that block."""

    __slots__ = ()
    _sync = True

    async def _begin(self) -> Any:
        target = self._target
        conn = target.connection() if self._is_session else target
        if not conn.in_transaction():
            conn.begin()
        return conn.connection.driver_connection
