"""The LISTEN connection over asyncpg (public asyncpg API only).

It is a connection of the client's pool, held for as long as the notifier runs, or,
with ``dsn``, a connection of its own (for a pool that goes through a
transaction-mode pooler, where LISTEN cannot work).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg

from ..._aio import wait_event
from ..._errors import ConnectionLostError
from ..queries import Queries
from .errors import as_library_error

__all__ = ["AsyncpgListener"]


class AsyncpgListener:
    """``async with listener.connect(): await listener.listen(...)``, then
    ``await listener.wait_lost(5)`` until the connection is gone."""

    def __init__(
        self, queries: Queries, *, pool: asyncpg.Pool | None = None, dsn: str | None = None
    ) -> None:
        if (pool is None) == (dsn is None):
            raise ValueError("a listener takes a pool or a DSN")
        self._queries = queries
        self._pool = pool
        self._dsn = dsn
        self._conn: Any = None
        self._lost = asyncio.Event()
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

    def _error(self, exc: BaseException) -> BaseException:
        return as_library_error(exc, self._queries.schema)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncpgListener]:
        self._lost.clear()
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
            lost = isinstance(exc, ConnectionLostError) or conn.is_closed()
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
        except Exception as exc:
            raise self._error(exc)

    async def wait_lost(self, health_check_interval: float) -> None:
        conn = self._conn
        assert conn is not None, "wait_lost() inside connect()"
        while True:
            if await wait_event(self._lost, health_check_interval):
                raise ConnectionLostError("the LISTEN connection was terminated")
            # A half-open TCP connection would otherwise stay silent forever.
            try:
                await conn.fetchval("SELECT 1", timeout=health_check_interval)
            except Exception as exc:
                raise self._error(exc)
