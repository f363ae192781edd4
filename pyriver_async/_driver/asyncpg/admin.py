"""Connections for one-off work over asyncpg: migrations (a URL, a connection or a
pool), and the throwaway databases of the demo, tests and benchmarks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import asyncpg

from ..queries import Queries, quote_ident
from .errors import as_library_error
from .executor import AsyncpgExecutor

__all__ = ["Database", "answers", "create_database", "drop_database", "open_executor"]

#: What the migration functions accept: a URL, a connection, or a pool to borrow one from.
Database: TypeAlias = (
    "str | asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any] | asyncpg.Pool[Any]"
)


@contextlib.asynccontextmanager
async def open_executor(database: Database, schema: str) -> AsyncIterator[AsyncpgExecutor]:
    """An executor bound to one connection of ``database`` for the block."""
    queries = Queries.for_schema(schema)
    if isinstance(database, str):
        try:
            conn = await asyncpg.connect(database)
        except Exception as exc:
            raise as_library_error(exc, schema)
        try:
            yield AsyncpgExecutor(queries, conn=conn)
        finally:
            await conn.close()
    elif isinstance(database, asyncpg.Pool):
        async with database.acquire() as pooled:
            yield AsyncpgExecutor(queries, conn=pooled)
    else:
        yield AsyncpgExecutor(queries, conn=database)


async def answers(url: str, timeout: float = 2.0) -> bool:
    """True when a PostgreSQL accepts a connection at ``url``."""
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()
