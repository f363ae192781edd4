"""What every asyncpg executor method stands on: where its connection comes from, the
three ways to run a query, and error translation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

import asyncpg

from ..._errors import TransientDatabaseError
from ..queries import Queries, Query
from .errors import as_library_error

__all__ = ["Base", "Conn", "Observer"]

# A connection of the application (or one the pool lent out): both run queries alike.
Conn = Any
# Told of every error an engine executor raises, translated (the driver watches them
# for a server turned read-only, or a pooler losing prepared statements).
Observer = Callable[[BaseException], None]


class Base:
    """An executor bound to one connection (``conn``) or borrowing one from ``pool``
    per call. ``timeout`` (seconds, None: none) bounds every statement, and the wait
    for a pool connection, of calls that give none of their own. ``observer`` is told
    of every error raised, once translated."""

    __slots__ = ("_acquire_timeout", "_conn", "_observer", "_pool", "_queries", "_timeout")

    def __init__(
        self,
        queries: Queries,
        *,
        conn: Conn | None = None,
        pool: asyncpg.Pool | None = None,
        timeout: float | None = None,
        observer: Observer | None = None,
    ) -> None:
        if (conn is None) == (pool is None):
            raise ValueError("an executor takes a connection or a pool")
        self._queries = queries
        self._conn = conn
        self._pool = pool
        self._timeout = timeout
        self._acquire_timeout = timeout
        self._observer = observer

    @property
    def queries(self) -> Queries:
        return self._queries

    @property
    def connection(self) -> Conn | None:
        """The bound connection (None for a pool executor)."""
        return self._conn

    def _error(self, exc: BaseException) -> BaseException:
        err = as_library_error(exc, self._queries.schema)
        if self._observer is not None:
            self._observer(err)
        return err

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        if self._conn is not None:
            yield self._conn
            return
        pool = self._pool
        assert pool is not None
        try:
            conn = await pool.acquire(timeout=self._acquire_timeout)
        except TimeoutError:
            raise TransientDatabaseError(
                f"no database connection came free within {self._acquire_timeout:g}s "
                f"(a pool of {pool.get_max_size()}, {pool.get_size() - pool.get_idle_size()} "
                "in use): the application or a stalled network holds them"
            ) from None
        try:
            yield conn
        finally:
            await pool.release(conn)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Self]:
        """This executor bound to one connection for the calls in the block."""
        if self._conn is not None:
            yield self
            return
        try:
            async with self._connection() as conn:
                yield type(self)(
                    self._queries, conn=conn, timeout=self._timeout, observer=self._observer
                )
        except Exception as exc:
            raise self._error(exc)

    def in_transaction(self) -> bool:
        return self._conn is not None and bool(self._conn.is_in_transaction())

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        conn = self._conn
        if conn is None:
            raise RuntimeError("transaction() needs a bound executor: use session() first")
        if conn.is_in_transaction():
            yield
            return
        try:
            tx = conn.transaction()
            await tx.start()
        except Exception as exc:
            raise self._error(exc)
        try:
            yield
        except BaseException:
            try:
                await tx.rollback()
            except Exception:  # the connection broke: the server rolls it back
                pass
            raise
        try:
            await tx.commit()
        except Exception as exc:
            raise self._error(exc)

    # -- the three ways to run a query ----------------------------------------------

    async def _fetch(self, q: Query, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        try:
            async with self._connection() as conn:
                return await conn.fetch(q.sql, *args, timeout=timeout or self._timeout)
        except Exception as exc:
            raise self._error(exc)

    async def _fetchrow(self, q: Query, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        try:
            async with self._connection() as conn:
                return await conn.fetchrow(q.sql, *args, timeout=timeout or self._timeout)
        except Exception as exc:
            raise self._error(exc)

    async def _execute(self, q: Query, args: tuple[Any, ...], timeout: float | None = None) -> str:
        try:
            async with self._connection() as conn:
                status: str = await conn.execute(q.sql, *args, timeout=timeout or self._timeout)
                return status
        except Exception as exc:
            raise self._error(exc)


def rowcount(status: str) -> int:
    """The row count of a command tag such as ``DELETE 3``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
