"""Shared fixtures: one throwaway database per test run, cleaned before each test.

The database comes from ``DATABASE_URL``, else the machine's server at
127.0.0.1:5432, else an embedded pgserver (see ``pyriver_async._localdb``).
Tests that need a database of their own (migrations, fault tests) make one with
the ``fresh_database`` fixture.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest

import pyriver_async
from pyriver_async import _localdb


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated database shared by the run; dropped at the end."""
    url, name = asyncio.run(_localdb.create_database("pyriver_test"))
    asyncio.run(pyriver_async.migrate(url))
    yield url
    asyncio.run(_localdb.drop_database(name))


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "TRUNCATE river_job, river_queue, river_leader RESTART IDENTITY;"
        "DO $$ BEGIN IF to_regclass('pyriver_client') IS NOT NULL THEN "
        "TRUNCATE pyriver_client; END IF; END $$;"
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    """The shared database URL, with every job/queue/leader row removed first."""
    conn = await asyncpg.connect(database_url)
    try:
        await _reset(conn)
    finally:
        await conn.close()
    yield database_url


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db, min_size=1, max_size=10)
    assert p is not None
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def fresh_database() -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Factory of empty (unmigrated) databases, all dropped after the test."""
    names: list[str] = []

    async def make() -> str:
        url, name = await _localdb.create_database("pyriver_fresh")
        names.append(name)
        return url

    yield make
    for name in names:
        await _localdb.drop_database(name)
