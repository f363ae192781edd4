"""What every asyncpg executor method stands on: where its connection comes from, the
three ways to run a query, and error translation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

import asyncpg

from ..._errors import TransientDatabaseError
from ..queries import Queries, Query
from .errors import as_library_error

__all__ = ["Base", "Conn", "Lease", "Observer", "acquire"]

# A connection of the application (or one the pool lent out): both run queries alike.
Conn = Any
# Told of every error an engine executor raises, translated (the driver watches them
# for a server turned read-only, or a pooler losing prepared statements).
Observer = Callable[[BaseException], None]


async def acquire(pool: asyncpg.Pool, timeout: float | None) -> Conn:
    """A connection from ``pool`` within ``timeout``, or TransientDatabaseError saying why."""
    try:
        return await pool.acquire(timeout=timeout)
    except TimeoutError:
        raise TransientDatabaseError(
            f"no database connection came free within {timeout:g}s "
            f"(a pool of {pool.get_max_size()}, {pool.get_size() - pool.get_idle_size()} "
            "in use): the application or a stalled network holds them"
        ) from None


class Lease:
    """A pool connection kept between calls that come close together.

    Every pool round (acquire, then release with its reset query: asyncpg's default
    `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` is one more round trip)
    costs about as much as a claim or a completion batch. A lease keeps the connection
    after a call and gives it back to the pool ``linger`` seconds after the last one, so
    a busy producer or completer makes one round per burst instead of one per
    statement, and an idle client holds nothing. A call that fails gives its connection
    back at once (the pool knows how to clean or drop it). Concurrent callers each get
    a connection; only one is kept.
    """

    __slots__ = (
        "_closed",
        "_conn",
        "_handle",
        "_last",
        "_linger",
        "_pool",
        "_releasing",
        "_timeout",
    )

    def __init__(self, pool: asyncpg.Pool, *, linger: float, timeout: float | None) -> None:
        self._pool = pool
        self._linger = linger
        self._timeout = timeout
        self._conn: Conn | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._releasing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def take(self) -> Conn:
        self._closed = False  # used again after close(): a client started again
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            return conn
        if conn is not None:
            await self._pool.release(conn)
        return await acquire(self._pool, self._timeout)

    def keep(self, conn: Conn) -> None:
        """After a call that went well: keep ``conn`` for the next one.

        One timer per lease, not one per call: it fires ``linger`` after it was set,
        and sets itself again when calls came meanwhile (``_last``)."""
        if self._conn is not None or self._closed:  # one kept is enough; or closing
            self._release_soon(conn)
            return
        self._conn = conn
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        if self._handle is None:
            self._handle = loop.call_at(self._last + self._linger, self._expire)

    async def give_back(self, conn: Conn) -> None:
        await self._pool.release(conn)

    def _expire(self) -> None:
        self._handle = None
        if self._conn is None:
            return  # in use: the call that has it keeps it again and sets the timer
        due = self._last + self._linger
        loop = asyncio.get_running_loop()
        if loop.time() < due:  # kept again since the timer was set
            self._handle = loop.call_at(due, self._expire)
            return
        conn, self._conn = self._conn, None
        self._release_soon(conn)

    def _release_soon(self, conn: Conn) -> None:
        task = asyncio.get_running_loop().create_task(self._pool.release(conn))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def close(self) -> None:
        """Give the kept connection back now (before the pool closes); a call still
        running gives its connection back when it ends."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)


class Base:
    """An executor bound to one connection (``conn``), borrowing one from ``pool`` per
    call, or keeping one between calls (``lease``). ``timeout`` (seconds, None: none)
    bounds every statement, and the wait for a pool connection, of calls that give
    none of their own. ``observer`` is told of every error raised, once translated."""

    __slots__ = (
        "_acquire_timeout",
        "_conn",
        "_lease",
        "_observer",
        "_pool",
        "_queries",
        "_timeout",
    )

    def __init__(
        self,
        queries: Queries,
        *,
        conn: Conn | None = None,
        pool: asyncpg.Pool | None = None,
        timeout: float | None = None,
        lease: Lease | None = None,
        observer: Observer | None = None,
    ) -> None:
        if (conn is None) == (pool is None and lease is None):
            raise ValueError("an executor takes a connection, a pool or a lease")
        self._queries = queries
        self._conn = conn
        self._pool = pool
        self._lease = lease
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
        lease = self._lease
        if lease is not None:
            conn = await lease.take()
            try:
                yield conn
            except BaseException:
                await lease.give_back(conn)
                raise
            lease.keep(conn)
            return
        pool = self._pool
        assert pool is not None
        conn = await acquire(pool, self._acquire_timeout)
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
        in_body = False
        try:
            async with self._connection() as conn:
                in_body = True
                yield type(self)(
                    self._queries, conn=conn, timeout=self._timeout, observer=self._observer
                )
                in_body = False
        except Exception as exc:
            if in_body:
                # Raised by the caller's block (its own queries translate their
                # errors; anything else, say an insert middleware's refusal, is the
                # caller's and passes as it is).
                raise
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

    async def _run(
        self, method: str, q: Query, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        try:
            conn = self._conn
            if conn is not None:  # bound: no context manager on the hot path (~2 us)
                return await getattr(conn, method)(q.sql, *args, timeout=timeout or self._timeout)
            lease = self._lease
            if lease is not None:  # what _connection() does, inline: the insert's path
                conn = await lease.take()
                try:
                    result = await getattr(conn, method)(
                        q.sql, *args, timeout=timeout or self._timeout
                    )
                except BaseException:
                    await lease.give_back(conn)
                    raise
                lease.keep(conn)
                return result
            async with self._connection() as conn:
                run = getattr(conn, method)
                return await run(q.sql, *args, timeout=timeout or self._timeout)
        except TimeoutError:
            # asyncpg's own statement timeout: it cancelled the statement, and the
            # connection goes on. Like the server's statement_timeout (57014): retry.
            raise TransientDatabaseError(
                f"{q.name} did not answer within {timeout or self._timeout:g}s",
                sqlstate="57014",
            ) from None
        except Exception as exc:
            raise self._error(exc)

    async def _fetch(self, q: Query, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        return await self._run("fetch", q, args, timeout)

    async def _fetchrow(self, q: Query, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        return await self._run("fetchrow", q, args, timeout)

    async def _execute(self, q: Query, args: tuple[Any, ...], timeout: float | None = None) -> str:
        status: str = await self._run("execute", q, args, timeout)
        return status


def rowcount(status: str) -> int:
    """The row count of a command tag such as ``DELETE 3``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
