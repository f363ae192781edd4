"""The job joins the transaction the library opens by itself: psycopg outside
autocommit, SQLAlchemy's autobegin (the AsyncSession trap), whatever statement comes first."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from pyriver_async import Client, InsertBatch, InsertResult, Middleware
from pyriver_async import sync as river_sync
from pyriver_async._middleware import InsertNext

from ._inserters import Item, sqlalchemy_url
from .conftest import Listener


async def count(admin: asyncpg.Connection) -> int:
    n = await admin.fetchval("SELECT count(*) FROM river_job")
    assert isinstance(n, int)
    return n


@pytest.mark.parametrize("dialect", ["asyncpg", "psycopg"])
async def test_async_session_insert_first_then_rollback_leaves_no_job(
    db: str, admin: asyncpg.Connection, listener: Listener, dialect: str
) -> None:
    """The trap: on asyncpg, a job sent straight to the session's driver connection as
    the transaction's first statement committed on its own and survived the rollback."""
    client = Client(db)
    engine = create_async_engine(sqlalchemy_url(db, dialect), pool_size=2, max_overflow=0)
    try:
        async with AsyncSession(engine) as session:
            await client.insert(Item(n=1), conn=session)  # the session's first statement
            await session.execute(sqlalchemy.text("SELECT 1"))
            await session.rollback()
        assert await count(admin) == 0
        async with engine.connect() as conn:  # the same with an AsyncConnection
            await client.insert(Item(n=2), conn=conn)
            await conn.rollback()
        assert await count(admin) == 0
        # And committed, job first, it is there, and its wake-up arrives alone.
        async with AsyncSession(engine) as session:
            await client.insert(Item(n=3), conn=session)
            await session.commit()
        await listener.wait_for("default")
        assert listener.queues == ["default"]
        assert await count(admin) == 1
    finally:
        await engine.dispose()


def test_sync_session_insert_first_then_rollback_leaves_no_job(db: str) -> None:
    engine = sqlalchemy.create_engine(sqlalchemy_url(db, "psycopg"), pool_size=2, max_overflow=0)
    try:
        with Session(engine) as session:
            river_sync.insert(Item(n=1), conn=session)
            session.rollback()
        with engine.connect() as conn:
            river_sync.insert(Item(n=2), conn=conn)
            conn.rollback()
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT count(*) FROM river_job")).scalar() == 0
        with Session(engine) as session:
            river_sync.insert(Item(n=3), conn=session)
            session.commit()
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT count(*) FROM river_job")).scalar() == 1
    finally:
        engine.dispose()


async def test_psycopg_outside_autocommit_the_insert_opens_the_transaction_the_caller_ends(
    db: str, admin: asyncpg.Connection
) -> None:
    client = Client(db)
    async with await psycopg.AsyncConnection.connect(db) as conn:
        await client.insert_many([Item(n=i) for i in range(100)], conn=conn)  # COPY first
        await client.insert(Item(n=1), conn=conn)
        assert conn.info.transaction_status is psycopg.pq.TransactionStatus.INTRANS
        assert await count(admin) == 0
        await conn.rollback()
        assert await count(admin) == 0
        await client.insert(Item(n=2), conn=conn)
        await conn.commit()
    assert await count(admin) == 1


def test_sync_psycopg_outside_autocommit_the_insert_joins_the_implicit_transaction(
    db: str,
) -> None:
    with psycopg.connect(db) as conn, psycopg.connect(db, autocommit=True) as other:
        river_sync.insert_many([Item(n=i) for i in range(100)], conn=conn)
        river_sync.insert(Item(n=1), conn=conn)
        assert other.execute("SELECT count(*) FROM river_job").fetchone() == (0,)
        conn.rollback()
        river_sync.insert(Item(n=2), conn=conn)
        conn.execute("SELECT 1")  # the application's own statements, same transaction
        conn.commit()
        assert other.execute("SELECT count(*) FROM river_job").fetchone() == (1,)


async def test_the_caller_s_connection_keeps_its_own_settings(db: str) -> None:
    """Loaders and row factory are set per cursor: the connection still decodes jsonb
    to Python values and returns dict rows afterwards, as its owner configured."""
    client = Client(db)
    async with await psycopg.AsyncConnection.connect(db, row_factory=psycopg.rows.dict_row) as conn:
        res = await client.insert(Item(n=5), conn=conn)
        await client.insert_many([Item(n=i) for i in range(100)], conn=conn)
        assert res.job.args == Item(n=5)
        cur = await conn.execute("SELECT args FROM river_job WHERE id = %s", [res.job.id])
        assert await cur.fetchone() == {"args": {"n": 5}}


async def test_in_transaction_is_whether_a_transaction_was_open_when_the_insert_began(
    db: str, admin: asyncpg.Connection
) -> None:
    """What Client.insert's docstring and inserting-from-other-libraries.md promise:
    ``batch.in_transaction`` is True only when a transaction is open on ``conn`` as
    the insert starts. False is either autocommit (committed before the call returns)
    or the transaction psycopg / SQLAlchemy open by themselves at the first statement,
    which the job joins and the caller ends."""
    seen: list[bool] = []

    class Watch(Middleware):
        async def insert(self, batch: InsertBatch, call_next: InsertNext) -> list[InsertResult]:
            seen.append(batch.in_transaction)
            return await call_next()

    client = Client(db, middleware=[Watch()])
    async with await psycopg.AsyncConnection.connect(db) as conn:  # outside autocommit
        await client.insert(Item(n=1), conn=conn)
        assert seen.pop() is False and await count(admin) == 0  # joined, not committed
        await client.insert(Item(n=2), conn=conn)
        assert seen.pop() is True  # the transaction the first insert opened
        await conn.commit()
        assert await count(admin) == 2
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await client.insert(Item(n=3), conn=conn)
        assert seen.pop() is False and await count(admin) == 3  # committed at once
        async with conn.transaction():
            await client.insert(Item(n=4), conn=conn)
            assert seen.pop() is True and await count(admin) == 3
        assert await count(admin) == 4
    engine = create_async_engine(sqlalchemy_url(db, "psycopg"), pool_size=1, max_overflow=0)
    try:
        async with AsyncSession(engine) as session:  # before its autobegin
            await client.insert(Item(n=5), conn=session)
            assert seen.pop() is False and await count(admin) == 4  # joined, not committed
            await session.commit()
        assert await count(admin) == 5
        async with AsyncSession(engine) as session, session.begin():
            await client.insert(Item(n=6), conn=session)
            assert seen.pop() is True
        auto = engine.execution_options(isolation_level="AUTOCOMMIT")
        async with auto.connect() as aconn:
            await client.insert(Item(n=7), conn=aconn)
            assert seen.pop() is False and await count(admin) == 7  # committed at once
    finally:
        await engine.dispose()
        await client.close()
