"""Every way an application can hand its connection to ``conn=``, behind one test face.

An :class:`Inserter` opens transactions of its library the way an application would
and gives a :class:`Tx`: insert / insert_many with ``conn=`` that library's object, and
``execute`` for the application's own statements. The conformance tests run against
each. Synchronous libraries run in a worker thread (``asyncio.to_thread``), as a Django
or Flask request would, so the test's event loop (and a running Client) keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import psycopg
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from pyriver_async import Client, InsertOpts, InsertResult, JobArgs
from pyriver_async import sync as river_sync

T = TypeVar("T")


class Item(JobArgs, kind="driver_item"):
    """The job of the driver tests."""

    n: int


Items = Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]]


@dataclass
class Tx:
    """One open transaction (or autocommit connection) of some library."""

    insert: Callable[[JobArgs, InsertOpts | None], Any]
    insert_many: Callable[[Items], Any]
    execute: Callable[[str], Any]
    #: The library's own exception types, for ``__cause__`` checks.
    errors: tuple[type[BaseException], ...]


class Inserter:
    """Base: ``transaction()`` commits at the end of the block, rolls back on an error;
    ``autocommit()`` is a connection in autocommit mode (no transaction open)."""

    name = ""
    sync = False

    def __init__(self, url: str, client: Client) -> None:
        self.url = url
        self.client = client
        #: ``time.perf_counter()`` just after the last transaction's commit returned.
        self.committed_at = 0.0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    def autocommit(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    # -- helpers for the async libraries: Tx over ``conn``, awaited directly --------

    def _async_tx(
        self, conn: Any, execute: Callable[[str], Any], errors: tuple[type[BaseException], ...]
    ) -> Tx:
        client = self.client

        async def insert(args: JobArgs, opts: InsertOpts | None = None) -> InsertResult:
            return await client.insert(args, opts, conn=conn)

        async def insert_many(items: Items) -> list[InsertResult]:
            return await client.insert_many(items, conn=conn)

        return Tx(insert, insert_many, execute, errors)


def _committed(commit: Callable[[], None]) -> float:
    commit()
    return time.perf_counter()


def _thread(fn: Callable[..., T]) -> Callable[..., Any]:
    async def run(*args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    return run


def _sync_tx(
    conn: Any, execute: Callable[[str], Any], errors: tuple[type[BaseException], ...], schema: str
) -> Tx:
    def insert(args: JobArgs, opts: InsertOpts | None = None) -> InsertResult:
        return river_sync.insert(args, opts, conn=conn, schema=schema)

    def insert_many(items: Items) -> list[InsertResult]:
        return river_sync.insert_many(items, conn=conn, schema=schema)

    return Tx(_thread(insert), _thread(insert_many), _thread(execute), errors)


# -- asyncpg --------------------------------------------------------------------------


class AsyncpgConnection(Inserter):
    name = "asyncpg-connection"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        conn = await asyncpg.connect(self.url)
        try:
            async with conn.transaction():
                yield self._async_tx(conn, conn.execute, (asyncpg.PostgresError,))
            self.committed_at = time.perf_counter()
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Tx]:
        conn = await asyncpg.connect(self.url)
        try:
            yield self._async_tx(conn, conn.execute, (asyncpg.PostgresError,))
        finally:
            await conn.close()


class AsyncpgPool(Inserter):
    """A connection from the application's pool in a transaction; outside one, the
    pool itself as ``conn=``."""

    name = "asyncpg-pool"
    pool: asyncpg.Pool

    async def open(self) -> None:
        pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4)
        assert pool is not None
        self.pool = pool

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                yield self._async_tx(conn, conn.execute, (asyncpg.PostgresError,))
            self.committed_at = time.perf_counter()

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Tx]:
        yield self._async_tx(self.pool, self.pool.execute, (asyncpg.PostgresError,))


# -- psycopg --------------------------------------------------------------------------


class PsycopgAsync(Inserter):
    """``async with conn.transaction()``, the job inserted through a cursor's connection."""

    name = "psycopg-async"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        conn = await psycopg.AsyncConnection.connect(self.url)
        try:
            async with conn.transaction(), conn.cursor() as cur:
                yield self._async_tx(cur.connection, cur.execute, (psycopg.Error,))
            self.committed_at = time.perf_counter()
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Tx]:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        try:
            yield self._async_tx(conn, conn.execute, (psycopg.Error,))
        finally:
            await conn.close()


class PsycopgSync(Inserter):
    """psycopg's default style: the first statement opens the transaction, commit()
    or rollback() ends it."""

    name = "psycopg-sync"
    sync = True

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        conn: psycopg.Connection[Any] = await asyncio.to_thread(psycopg.connect, self.url)
        try:
            yield _sync_tx(conn, conn.execute, (psycopg.Error,), self.client.schema)
            self.committed_at = await asyncio.to_thread(_committed, conn.commit)
        except BaseException:
            await asyncio.to_thread(conn.rollback)
            raise
        finally:
            await asyncio.to_thread(conn.close)

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Tx]:
        conn: psycopg.Connection[Any] = await asyncio.to_thread(
            lambda: psycopg.connect(self.url, autocommit=True)
        )
        try:
            yield _sync_tx(conn, conn.execute, (psycopg.Error,), self.client.schema)
        finally:
            await asyncio.to_thread(conn.close)


# -- SQLAlchemy -----------------------------------------------------------------------


def sqlalchemy_url(url: str, dialect: str) -> str:
    return url.replace("postgresql://", f"postgresql+{dialect}://", 1)


class SqlalchemyAsync(Inserter):
    """An AsyncSession, committed at the end (``dialect``: asyncpg or psycopg)."""

    sync = False
    dialect = ""
    engine: AsyncEngine

    async def open(self) -> None:
        self.engine = create_async_engine(
            sqlalchemy_url(self.url, self.dialect), pool_size=4, max_overflow=0
        )

    async def close(self) -> None:
        await self.engine.dispose()

    def _session_tx(self, s: AsyncSession) -> Tx:
        async def execute(sql: str) -> None:
            await s.execute(sqlalchemy.text(sql))

        errors = (sqlalchemy.exc.DBAPIError, asyncpg.PostgresError, psycopg.Error)
        return self._async_tx(s, execute, errors)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with AsyncSession(self.engine) as s:
            try:
                yield self._session_tx(s)
            except BaseException:
                await s.rollback()
                raise
            await s.commit()
            self.committed_at = time.perf_counter()

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Tx]:
        engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with AsyncSession(engine) as s:
            yield self._session_tx(s)


class SqlalchemyAsyncpg(SqlalchemyAsync):
    name = "sqlalchemy-async-asyncpg"
    dialect = "asyncpg"


class SqlalchemyAsyncPsycopg(SqlalchemyAsync):
    name = "sqlalchemy-async-psycopg"
    dialect = "psycopg"


class SqlalchemySync(Inserter):
    """A Session on the psycopg dialect, committed at the end."""

    name = "sqlalchemy-sync-psycopg"
    sync = True
    engine: sqlalchemy.Engine

    async def open(self) -> None:
        self.engine = sqlalchemy.create_engine(
            sqlalchemy_url(self.url, "psycopg"), pool_size=4, max_overflow=0
        )

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.dispose)

    def _session_tx(self, s: Session) -> Tx:
        def execute(sql: str) -> None:
            s.execute(sqlalchemy.text(sql))

        errors = (sqlalchemy.exc.DBAPIError, psycopg.Error)
        return _sync_tx(s, execute, errors, self.client.schema)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        s = Session(self.engine)
        try:
            yield self._session_tx(s)
            self.committed_at = await asyncio.to_thread(_committed, s.commit)
        except BaseException:
            await asyncio.to_thread(s.rollback)
            raise
        finally:
            await asyncio.to_thread(s.close)

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Tx]:
        s = Session(self.engine.execution_options(isolation_level="AUTOCOMMIT"))
        try:
            yield self._session_tx(s)
        finally:
            await asyncio.to_thread(s.close)


INSERTERS: tuple[type[Inserter], ...] = (
    AsyncpgConnection,
    AsyncpgPool,
    PsycopgAsync,
    PsycopgSync,
    SqlalchemyAsyncpg,
    SqlalchemyAsyncPsycopg,
    SqlalchemySync,
)
