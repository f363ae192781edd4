"""The asyncpg driver: the pool (the application's, or one made from a DSN), the
executors over it, spare connections for single inserts, and the LISTEN connection.

It watches the errors of the executors it makes (``Base``'s observer):

- a write refused because the server is read-only (SQLSTATE 25006: a primary that
  failed over and became a standby, or was set read-only) makes it recycle the pool:
  every connection is closed when next acquired or released and opened again, so
  that DNS or a proxy can route it to the new primary; then ``on_read_only`` is told
  (the client stops claiming until writes succeed again, see ``_failover.py``);
- a named prepared statement that vanished (SQLSTATE 26000 on ``__asyncpg_stmt_``),
  the mark of a transaction-mode pooler, is logged once with the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from ..._errors import ConfigError, ConnectionLostError, DatabaseError
from ..queries import Queries
from ._base import Lease
from .errors import as_library_error
from .executor import AsyncpgExecutor
from .listener import AsyncpgListener

__all__ = ["AsyncpgDriver", "is_asyncpg_connection", "is_asyncpg_pool", "is_read_only_error"]

log = logging.getLogger("pyriver_async.driver")

# How long a connection stays lent to inserts that follow one another before it goes
# back to the pool (seconds): long enough for a burst, too short to hold a connection
# the engine or the application's other users of the pool need.
INSERT_LINGER = 0.1
# How long closing the driver's own pool waits for connections still in use (seconds).
POOL_CLOSE_TIMEOUT = 10.0
# While writes are refused as read-only, the pool is recycled at most this often (s).
RECYCLE_EVERY = 1.0


def is_read_only_error(exc: BaseException) -> bool:
    """A write refused because the server is read-only (a standby, or read-only mode)."""
    return isinstance(exc, DatabaseError) and exc.sqlstate == "25006"


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
    ``statement_cache_size`` is asyncpg's, for the pool made from a DSN (0: no named
    prepared statements, which a transaction-mode pooler cannot keep; None: asyncpg's
    default). ``listen=False``: no LISTEN connection at all (:meth:`listener` is None).
    """

    def __init__(
        self,
        database: asyncpg.Pool | str,
        *,
        schema: str = "public",
        pool_max_size: int = 10,
        timeout: float | None = 30.0,
        listen_dsn: str | None = None,
        statement_cache_size: int | None = None,
        listen: bool = True,
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
        self._statement_cache_size = statement_cache_size
        self.listen = listen
        self.queries = Queries.for_schema(schema)
        self._lock = asyncio.Lock()
        self._closing = False
        self._leases: list[Lease] = []
        self._insert_lease: Lease | None = None
        self._spare: AsyncpgExecutor | None = None
        #: Told (synchronously) of each error that says the server is read-only, and of
        #: each connection lost under an engine statement.
        self.on_read_only: Callable[[BaseException], None] | None = None
        self.on_connection_lost: Callable[[BaseException], None] | None = None
        self._last_recycle = -RECYCLE_EVERY
        self._recycling: asyncio.Task[None] | None = None
        self._pooler_hint_logged = False
        self.recycles = 0

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
                extra: dict[str, Any] = {}
                if self._statement_cache_size is not None:
                    extra["statement_cache_size"] = self._statement_cache_size
                try:
                    pool = await asyncpg.create_pool(
                        # asyncpg's default reset on release: jobs may use this pool
                        # (ctx.client.pool) and leave session state behind.
                        self._dsn,
                        min_size=1,
                        max_size=self._pool_max_size,
                        **extra,
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
            self.queries,
            pool=self._pool,
            timeout=self._timeout if timeout == -1.0 else timeout,
            observer=self._observe,
        )

    def leased_executor(self, *, linger: float = 1.0) -> AsyncpgExecutor:
        """An executor keeping its connection between calls less than ``linger`` apart
        (a producer's claims, the completer's flushes); see :class:`Lease`."""
        assert self._pool is not None, "open() first"
        lease = Lease(self._pool, linger=linger, timeout=self._timeout)
        self._leases.append(lease)
        return AsyncpgExecutor(
            self.queries, lease=lease, timeout=self._timeout, observer=self._observe
        )

    def bind(self, conn: Any) -> AsyncpgExecutor:
        """An executor on the caller's connection or pool (no timeout of ours)."""
        if isinstance(conn, asyncpg.Pool):
            return AsyncpgExecutor(self.queries, pool=conn)
        return AsyncpgExecutor(self.queries, conn=conn)

    async def spare(self) -> AsyncpgExecutor:
        """The executor for inserts outside any caller's transaction.

        A pool acquire + release costs about as much as the insert itself (measured:
        2,436 inserts/s on a bare connection, 1,865 through the pool; and a release
        sends the pool's reset query). The connection is lent through a :class:`Lease`
        kept ``INSERT_LINGER`` after the last insert, so a burst of inserts makes one
        pool round; it goes back to the pool after that, for the engine and the
        application (the pool is never drained by idle spares). One executor serves
        every insert (made once: ~4 us of Python an insert otherwise).
        """
        ex = self._spare
        if ex is not None and self._pool is not None:
            return ex
        pool = await self.open()
        if self._insert_lease is None:
            self._insert_lease = Lease(pool, linger=INSERT_LINGER, timeout=self._timeout)
            self._leases.append(self._insert_lease)
        self._spare = AsyncpgExecutor(
            self.queries, lease=self._insert_lease, timeout=None, observer=self._observe
        )
        return self._spare

    def listener(self) -> AsyncpgListener | None:
        """The LISTEN connection's driver (None when the client listens to nothing)."""
        if not self.listen:
            return None
        assert self._pool is not None, "open() first"
        # The delivery check sends its NOTIFY from another session, of the pool; with a
        # single connection, held by LISTEN itself, there is none to send it from.
        probe_pool = self._pool if self._listen_dsn is not None or self.pool_size() > 1 else None
        if self._listen_dsn is not None:
            return AsyncpgListener(
                self.queries, dsn=self._listen_dsn, probe_pool=probe_pool, observer=self._observe
            )
        return AsyncpgListener(
            self.queries, pool=self._pool, probe_pool=probe_pool, observer=self._observe
        )

    # -- failover and poolers ----------------------------------------------------------

    def _observe(self, exc: BaseException) -> None:
        if is_read_only_error(exc):
            self.recycle_soon()
            if self.on_read_only is not None:
                self.on_read_only(exc)
        elif isinstance(exc, ConnectionLostError):
            if self.on_connection_lost is not None:
                self.on_connection_lost(exc)
        elif (
            isinstance(exc, DatabaseError)
            and exc.sqlstate == "26000"
            and "__asyncpg_stmt_" in str(exc)
            and not self._pooler_hint_logged
        ):
            self._pooler_hint_logged = True
            log.error(
                "a prepared statement vanished between two uses (%s): the connections go "
                "through a transaction-mode pooler (PgBouncer pool_mode=transaction...). "
                "Give the client pooler='transaction' (or create your asyncpg pool with "
                "statement_cache_size=0), and LISTEN a direct connection "
                "(listen_database_url=...): see docs/operations.md",
                exc,
            )

    def recycle_soon(self) -> None:
        """Recycle the pool's connections in the background, at most once a second."""
        now = time.monotonic()
        if self._pool is None or now - self._last_recycle < RECYCLE_EVERY:
            return
        if self._recycling is not None and not self._recycling.done():
            return
        self._last_recycle = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - errors are raised on the loop
            return
        self._recycling = loop.create_task(self.recycle(), name="pyriver-pool-recycle")

    async def recycle(self) -> None:
        """Close every connection of the pool as soon as it is free (idle ones at their
        next acquire, busy ones when released) and open new ones on demand: after a
        failover they reach whatever the DSN (its DNS name, a proxy) points at now."""
        pool = self._pool
        if pool is None:
            return
        self.recycles += 1
        await pool.expire_connections()
        # Connections kept by leases go back now: released, the pool closes them.
        await self.release_spares()

    async def release_spares(self) -> None:
        """Give back every connection kept between calls (the leases')."""
        for lease in self._leases:
            await lease.close()

    async def close(self) -> None:
        """Give back the leased connections; close the pool when it was made here.

        A connection something still holds (a listener, a call in flight) is given
        POOL_CLOSE_TIMEOUT to come back; then the pool is terminated rather than
        waited on for ever."""
        task, self._recycling = self._recycling, None
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        await self.release_spares()
        # The engine's leases end with the engine (a new start makes new ones); the
        # inserts' lease serves the next insert on the application's pool.
        self._leases = [x for x in self._leases if x is self._insert_lease]
        if self.owns_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            # Leases hold this pool: the next open() makes a new one, and new leases.
            self._leases = []
            self._insert_lease = self._spare = None
            try:
                await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "the pool still had connections in use %ss after closing began; terminated",
                    POOL_CLOSE_TIMEOUT,
                )
                pool.terminate()
