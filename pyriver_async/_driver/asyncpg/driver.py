"""The asyncpg driver: the pool (the application's, or one made from a DSN), the
executors over it, spare connections for single inserts, and the LISTEN connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from ..._errors import ConfigError
from ..queries import Queries
from ._base import Lease
from .errors import as_library_error
from .executor import AsyncpgExecutor
from .listener import AsyncpgListener

__all__ = ["AsyncpgDriver", "is_asyncpg_connection", "is_asyncpg_pool"]

# How long a connection stays lent to inserts that follow one another before it goes
# back to the pool (seconds): long enough for a burst, too short to hold a connection
# the engine or the application's other users of the pool need.
INSERT_LINGER = 0.1
# How long closing the driver's own pool waits for connections still in use (seconds).
POOL_CLOSE_TIMEOUT = 10.0

log = logging.getLogger("pyriver_async.driver")


def is_asyncpg_pool(obj: object) -> bool:
    return isinstance(obj, asyncpg.Pool)


def is_asyncpg_connection(obj: object) -> bool:
    return isinstance(obj, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy)


class AsyncpgDriver:
    """The engine's way to the database, for one schema.

    ``database`` is an ``asyncpg.Pool`` (the application's; never closed here) or a
    DSN, from which :meth:`open` makes a pool of ``pool_max_size`` that :meth:`close`
    closes. ``timeout`` bounds the engine's statements and its waits for a pool
    connection (None: unbounded). ``listen_dsn`` gives the LISTEN connection a DSN of
    its own (e.g. straight to PostgreSQL when the pool goes through PgBouncer).
    """

    def __init__(
        self,
        database: asyncpg.Pool | str,
        *,
        schema: str = "public",
        pool_max_size: int = 10,
        timeout: float | None = 30.0,
        listen_dsn: str | None = None,
    ) -> None:
        if isinstance(database, str):
            self._dsn: str | None = database
            self._pool: asyncpg.Pool | None = None
        elif isinstance(database, asyncpg.Pool):
            self._dsn = None
            self._pool = database
        else:
            raise ConfigError(
                f"Client() takes an asyncpg.Pool or a DSN string, got {type(database).__name__}"
            )
        self.owns_pool = self._pool is None
        self._pool_max_size = pool_max_size
        self._timeout = timeout
        self._listen_dsn = listen_dsn
        self.queries = Queries.for_schema(schema)
        self._lock = asyncio.Lock()
        self._closing = False
        self._leases: list[Lease] = []
        self._insert_lease: Lease | None = None

    @property
    def pool(self) -> asyncpg.Pool | None:
        return self._pool

    async def open(self) -> asyncpg.Pool:
        """The pool, made on first use from the DSN."""
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                assert self._dsn is not None
                try:
                    pool = await asyncpg.create_pool(
                        # asyncpg's default reset on release: jobs may use this pool
                        # (ctx.client.pool) and leave session state behind.
                        self._dsn,
                        min_size=1,
                        max_size=self._pool_max_size,
                    )
                except Exception as exc:
                    raise as_library_error(exc, self.queries.schema)
                assert pool is not None
                self._pool = pool
        return self._pool

    def pool_size(self) -> int:
        return self._pool.get_max_size() if self._pool is not None else self._pool_max_size

    def executor(self, *, timeout: float | None = -1.0) -> AsyncpgExecutor:
        """An executor borrowing from the pool per call (the engine's)."""
        assert self._pool is not None, "open() first"
        return AsyncpgExecutor(
            self.queries, pool=self._pool, timeout=self._timeout if timeout == -1.0 else timeout
        )

    def leased_executor(self, *, linger: float = 1.0) -> AsyncpgExecutor:
        """An executor keeping its connection between calls less than ``linger`` apart
        (a producer's claims, the completer's flushes); see :class:`Lease`."""
        assert self._pool is not None, "open() first"
        lease = Lease(self._pool, linger=linger, timeout=self._timeout)
        self._leases.append(lease)
        return AsyncpgExecutor(self.queries, lease=lease, timeout=self._timeout)

    def bind(self, conn: Any) -> AsyncpgExecutor:
        """An executor on the caller's connection or pool (no timeout of ours)."""
        if isinstance(conn, asyncpg.Pool):
            return AsyncpgExecutor(self.queries, pool=conn)
        return AsyncpgExecutor(self.queries, conn=conn)

    @contextlib.asynccontextmanager
    async def spare(self) -> AsyncIterator[AsyncpgExecutor]:
        """An executor for one insert outside any caller's transaction.

        A pool acquire + release costs about as much as the insert itself (measured:
        2,436 inserts/s on a bare connection, 1,865 through the pool; and a release
        sends the pool's reset query). The connection is lent through a :class:`Lease`
        kept ``INSERT_LINGER`` after the last insert, so a burst of inserts makes one
        pool round; it goes back to the pool after that, for the engine and the
        application (the pool is never drained by idle spares).
        """
        pool = await self.open()
        if self._insert_lease is None:
            self._insert_lease = Lease(pool, linger=INSERT_LINGER, timeout=self._timeout)
            self._leases.append(self._insert_lease)
        yield AsyncpgExecutor(self.queries, lease=self._insert_lease, timeout=None)

    def listener(self) -> AsyncpgListener:
        if self._listen_dsn is not None:
            return AsyncpgListener(self.queries, dsn=self._listen_dsn)
        assert self._pool is not None, "open() first"
        return AsyncpgListener(self.queries, pool=self._pool)

    async def release_spares(self) -> None:
        """Give back every connection kept between calls (the leases')."""
        for lease in self._leases:
            await lease.close()

    async def close(self) -> None:
        """Give back the leased connections; close the pool when it was made here.

        A connection something still holds (a listener, a call in flight) is given
        POOL_CLOSE_TIMEOUT to come back; then the pool is terminated rather than
        waited on for ever."""
        await self.release_spares()
        if self.owns_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "the pool still had connections in use %ss after closing began; terminated",
                    POOL_CLOSE_TIMEOUT,
                )
                pool.terminate()
