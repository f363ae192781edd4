"""Which executor serves a ``conn=``: clear errors for what is not accepted, and the
optional libraries imported only by those who use them."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from pyriver_async import Client, ConfigError
from pyriver_async import sync as river_sync
from pyriver_async._driver import COPY_COLUMNS
from pyriver_async._driver.queries import Queries
from pyriver_async.insights import Insights

from ._inserters import Item, sqlalchemy_url


def test_the_copy_statement_names_the_copy_columns_in_order() -> None:
    text = Queries.for_schema("public").job_copy_from_stdin.text
    m = re.search(r"\((.*)\)", text, re.DOTALL)
    assert m is not None
    assert tuple(c.strip() for c in m.group(1).split(",")) == COPY_COLUMNS


async def test_synchronous_objects_are_refused_by_the_async_api(db: str) -> None:
    client = Client(db)
    engine = sqlalchemy.create_engine(sqlalchemy_url(db, "psycopg"), pool_size=1)
    try:
        with psycopg.connect(db) as conn:
            with pytest.raises(ConfigError, match=r"block the event loop.*pyriver_async\.sync"):
                await client.insert(Item(n=1), conn=conn)  # type: ignore[arg-type]
            with pytest.raises(ConfigError, match=r"cur\.connection"):
                await client.insert(Item(n=1), conn=conn.cursor())  # type: ignore[arg-type]
        with Session(engine) as session, pytest.raises(ConfigError, match="block the event loop"):
            await client.insert_many([Item(n=1)], conn=session)  # type: ignore[arg-type]
        for other in (object(), "postgresql://"):
            with pytest.raises(ConfigError, match="psycopg AsyncConnection"):
                await client.insert(Item(n=1), conn=other)  # type: ignore[arg-type]
    finally:
        engine.dispose()


async def test_control_calls_refuse_another_librarys_connection_with_a_clear_error(
    db: str,
) -> None:
    client = Client(db)
    engine = create_async_engine(sqlalchemy_url(db, "psycopg"), pool_size=1)
    try:
        async with await psycopg.AsyncConnection.connect(db) as pconn:
            job = (await client.insert(Item(n=1), conn=pconn)).job  # inserting: fine
            await pconn.commit()
            async with AsyncSession(engine) as session:
                for conn in (pconn, session):
                    calls: list[Callable[[Any], Awaitable[object]]] = [
                        lambda c: client.get(job.id, conn=c),
                        lambda c: client.cancel(job.id, conn=c),
                        lambda c: client.retry_many([job.id], conn=c),
                        lambda c: client.list(conn=c),
                        lambda c: client.pause("default", conn=c),
                        lambda c: Insights(client).max_id(conn=c),
                    ]
                    for call in calls:
                        with pytest.raises(ConfigError, match=r"asyncpg connection or pool"):
                            await call(conn)
        assert (await client.get(job.id)).state.value == "available"  # nothing was done
    finally:
        await engine.dispose()
        await client.close()


async def test_asynchronous_objects_are_refused_by_the_sync_api(db: str) -> None:
    async_engine = create_async_engine(sqlalchemy_url(db, "psycopg"), pool_size=1)
    conn: Any
    try:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            with pytest.raises(ConfigError, match=r"await client\.insert"):
                river_sync.insert(Item(n=1), conn=conn)
        async with AsyncSession(async_engine) as conn:
            with pytest.raises(ConfigError, match=r"await client\.insert"):
                river_sync.insert_many([Item(n=1)], conn=conn)
        with pytest.raises(ConfigError, match="session or connection"):
            engine = sqlalchemy.create_engine(sqlalchemy_url(db, "psycopg"))
            river_sync.insert(Item(n=1), conn=engine)  # type: ignore[arg-type]
        conn = await asyncpg.connect(db)
        try:
            with pytest.raises(ConfigError, match=r"await client\.insert"):
                river_sync.insert(Item(n=1), conn=conn)
        finally:
            await conn.close()
    finally:
        await async_engine.dispose()


def test_an_asyncpg_insert_imports_neither_psycopg_nor_sqlalchemy(db: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import asyncpg
        from pyriver_async import Client, JobArgs
        import pyriver_async.sync

        class Job(JobArgs, kind="driver_import_probe"):
            n: int

        async def main():
            client = Client({db!r})
            await client.insert(Job(n=1))
            await client.insert_many([Job(n=i) for i in range(100)])
            conn = await asyncpg.connect({db!r})
            async with conn.transaction():
                await client.insert(Job(n=2), conn=conn)
                await client.insert_many([Job(n=i) for i in range(100)], conn=conn)
            await conn.close()
            await client.close()

        asyncio.run(main())
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "sqlalchemy")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
