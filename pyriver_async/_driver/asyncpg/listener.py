"""The LISTEN connection over asyncpg (public asyncpg API only).

It is a connection of the client's pool, held for as long as the notifier runs, or,
with ``dsn``, a connection of its own (for a pool that goes through a
transaction-mode pooler, where LISTEN cannot work).

Once listening, :meth:`AsyncpgListener.listen` checks that the connection can hear
what the engine sends, since a LISTEN that hears nothing fails silently:

- the server must accept writes: a LISTEN on a primary turned read-only (during a
  failover) would hear none of the new primary's notifications. It raises
  ``TransientDatabaseError`` (SQLSTATE 25006), as a LISTEN on a standby does;
- a NOTIFY sent from another session (of ``probe_pool``) must arrive within
  ``probe_timeout``. Through a transaction-mode pooler it never does (the LISTEN ran
  on a server connection that the pooler lends to other clients, and PgBouncer drops
  notifications arriving while no client is linked to it): it raises
  :class:`ListenUnavailableError`, which names the fix. Sent from the listening
  session itself, the notification would come back whatever the pooler (PostgreSQL
  delivers a session's own notifications before its ReadyForQuery), so it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg

from ..._aio import wait_event
from ..._errors import ConnectionLostError, ListenUnavailableError, TransientDatabaseError
from ..queries import Queries, quote_literal
from .errors import as_library_error

__all__ = ["AsyncpgListener"]

# How long the delivery check waits for its own notification (seconds). Across two
# sessions of one server it takes about a millisecond.
PROBE_TIMEOUT = 5.0

_READ_ONLY_SQL = "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool"


class AsyncpgListener:
    """``async with listener.connect(): await listener.listen(...)``, then
    ``await listener.wait_lost(5)`` until the connection is gone."""

    def __init__(
        self,
        queries: Queries,
        *,
        pool: asyncpg.Pool | None = None,
        dsn: str | None = None,
        probe_pool: asyncpg.Pool | None = None,
        probe_timeout: float = PROBE_TIMEOUT,
        observer: Callable[[BaseException], None] | None = None,
    ) -> None:
        if (pool is None) == (dsn is None):
            raise ValueError("a listener takes a pool or a DSN")
        self._queries = queries
        self._pool = pool
        self._dsn = dsn
        self._probe_pool = probe_pool
        self._probe_timeout = probe_timeout
        self._observer = observer
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._dropped = False
        self._channels: list[tuple[str, Any]] = []

    @property
    def backend_pid(self) -> int | None:
        conn = self._conn
        if conn is None:
            return None
        try:
            return None if conn.is_closed() else int(conn.get_server_pid())
        except asyncpg.InterfaceError:  # released meanwhile
            return None

    def _terminated(self, _conn: Any) -> None:
        self._lost.set()

    def drop(self) -> None:
        """Give up the connection now (:meth:`wait_lost` raises), so that the next one
        is opened afresh: after a failover it reaches the new primary."""
        if self._conn is not None:
            self._dropped = True
            self._lost.set()

    def _error(self, exc: BaseException) -> BaseException:
        err = as_library_error(exc, self._queries.schema)
        if self._observer is not None:
            self._observer(err)
        return err

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncpgListener]:
        self._lost.clear()
        self._dropped = False
        self._channels = []
        conn: Any
        try:
            if self._pool is not None:
                conn = await self._pool.acquire()
            else:
                conn = await asyncpg.connect(self._dsn)
        except Exception as exc:
            raise self._error(exc)
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        lost = False
        try:
            yield self
        except BaseException as exc:
            # Whatever failed (lost, read-only, hearing nothing), the connection is not
            # worth keeping: closed, not cleaned and handed back.
            lost = isinstance(exc, Exception) or conn.is_closed()
            raise
        finally:
            self._conn = None
            await self._close(conn, lost)

    async def _close(self, conn: Any, lost: bool) -> None:
        try:
            conn.remove_termination_listener(self._terminated)
            gone = lost or conn.is_closed()
        except asyncpg.InterfaceError:
            # A pooled connection whose backend died was already taken back by the
            # pool (its proxy detached): nothing of it is left to clean.
            gone = True
        if gone:
            # Nothing to UNLISTEN on a dead connection: close it so the pool drops it
            # instead of taking back a connection with listeners.
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
        else:
            try:
                async with asyncio.timeout(1):
                    for channel, callback in self._channels:
                        await conn.remove_listener(channel, callback)
            except BaseException:
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
                raise
        if self._pool is not None:
            await self._pool.release(conn)  # a no-op for a detached proxy
        elif not conn.is_closed():
            await conn.close()

    async def listen(self, channels: Sequence[str], on_message: Callable[[str, str], None]) -> None:
        conn = self._conn
        assert conn is not None, "listen() inside connect()"

        def dispatch(_conn: Any, _pid: int, channel: str, payload: object) -> None:
            if isinstance(payload, str):
                on_message(channel, payload)

        try:
            for ch in channels:
                await conn.add_listener(ch, dispatch)
                self._channels.append((ch, dispatch))
            read_only = await conn.fetchval(_READ_ONLY_SQL)
        except Exception as exc:
            raise self._error(exc)
        if read_only:
            raise self._error(
                TransientDatabaseError(
                    "the LISTEN connection reached a read-only server (a standby, or a "
                    "primary being failed over): it would hear no new notifications",
                    sqlstate="25006",
                )
            )
        if self._probe_pool is not None:
            await self._check_delivery(conn)

    async def _check_delivery(self, conn: Any) -> None:
        """A NOTIFY from another session must reach this one (see the module docstring)."""
        channel = f"pyriver_probe_{uuid.uuid4().hex}"
        arrived = asyncio.Event()

        def heard(_conn: Any, _pid: int, _channel: str, _payload: object) -> None:
            arrived.set()

        pool = self._probe_pool
        assert pool is not None
        try:
            await conn.add_listener(channel, heard)
            try:
                # A simple query (no parameters): nothing to prepare, whatever the pooler.
                await pool.execute(f"SELECT pg_notify({quote_literal(channel)}, 'probe')")
                got = await wait_event(arrived, self._probe_timeout)
            finally:
                await conn.remove_listener(channel, heard)
        except Exception as exc:
            raise self._error(exc)
        if not got:
            raise ListenUnavailableError(
                f"LISTEN receives no notifications on this connection (one sent from "
                f"another session did not arrive in {self._probe_timeout:g}s): it goes "
                "through a transaction-mode pooler (PgBouncer pool_mode=transaction "
                "drops them), or reaches another database than the pool. Give the client "
                "a direct connection for LISTEN: Client(..., listen_database_url="
                "'postgresql://...'), or pooler='transaction' without one to poll "
                "instead (see docs/operations.md)"
            )

    async def wait_lost(self, health_check_interval: float) -> None:
        conn = self._conn
        assert conn is not None, "wait_lost() inside connect()"
        while True:
            if await wait_event(self._lost, health_check_interval):
                if self._dropped:
                    raise ConnectionLostError("the LISTEN connection was given up to reconnect")
                raise ConnectionLostError("the LISTEN connection was terminated")
            # A half-open TCP connection would otherwise stay silent forever.
            try:
                await conn.fetchval("SELECT 1", timeout=health_check_interval)
            except Exception as exc:
                raise self._error(exc)
