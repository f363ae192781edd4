"""The application and the client share a small pool, and the application takes every
connection for a while: the client waits, then finishes everything; it never deadlocks
and loses no job."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pyriver_async import Client, ConfigError, Job, JobArgs, JobContext, QueueConfig, Workers

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

POOL_SIZE = 3


class Parent(JobArgs, kind="fault_parent"):
    n: int = 0


class Child(JobArgs, kind="fault_child"):
    n: int = 0


@pytest.fixture
async def small_pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(db, min_size=POOL_SIZE, max_size=POOL_SIZE)
    assert pool is not None
    try:
        yield pool
    finally:
        pool.terminate()


def _workers(calls: collections.Counter[int]) -> Workers:
    workers = Workers()

    # Jobs use the shared pool as application code does: a parent inserts a child
    # through the client (one connection from the pool), a child reads through the pool.
    @workers.register(Parent)
    async def parent(ctx: JobContext, job: Job[Parent]) -> None:
        calls[job.id] += 1
        await ctx.client.insert(Child(n=job.args.n))

    @workers.register(Child)
    async def child(ctx: JobContext, job: Job[Child]) -> None:
        calls[job.id] += 1
        async with ctx.client.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    return workers


@contextlib.asynccontextmanager
async def _hold_every_free_connection(pool: asyncpg.Pool) -> AsyncIterator[int]:
    """Take every connection the pool can give (the client's LISTEN connection is
    already out), until the block ends; yields how many were taken."""
    held: list[asyncpg.pool.PoolConnectionProxy] = []
    try:
        while True:
            try:
                held.append(await pool.acquire(timeout=0.5))
            except TimeoutError:
                break
        yield len(held)
    finally:
        for conn in held:
            await pool.release(conn)


async def _count(conn: asyncpg.Connection, state: str) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM river_job WHERE state = $1", state)
    return n


async def _wait_all_completed(conn: asyncpg.Connection, total: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (done := await _count(conn, "completed")) < total:
        if loop.time() > deadline:
            raise AssertionError(f"{done} of {total} jobs completed after {timeout}s")
        await asyncio.sleep(0.05)


async def test_client_sharing_an_exhausted_pool_waits_and_loses_nothing(
    small_pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    calls: collections.Counter[int] = collections.Counter()
    client = Client(
        small_pool,
        workers=_workers(calls),
        queues={"default": QueueConfig(max_workers=10)},
        maintenance=False,
        fetch_poll_interval=0.2,
    )
    async with client:
        await client.insert_many([Parent(n=i) for i in range(100)])
        await _wait_all_completed(conn, 50, 20)

        async with _hold_every_free_connection(small_pool) as taken:
            assert taken == POOL_SIZE - 1  # all but the LISTEN connection
            # The application goes on inserting (on a connection of its own).
            for i in range(100, 150):
                await client.insert(Parent(n=i), conn=conn)
            await asyncio.sleep(2.0)
        await _wait_all_completed(conn, 300, 30)

    states = collections.Counter(
        r["state"] for r in await conn.fetch("SELECT state FROM river_job")
    )
    assert states == {"completed": 300}
    assert len(calls) == 300 and max(calls.values()) == 1


async def test_shutdown_while_the_application_holds_the_pool_keeps_its_deadline(
    small_pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    calls: collections.Counter[int] = collections.Counter()
    soft, hard = 0.5, 0.5
    client = Client(
        small_pool,
        workers=_workers(calls),
        queues={"default": QueueConfig(max_workers=10)},
        maintenance=False,
        fetch_poll_interval=0.2,
        soft_stop_timeout=soft,
        hard_stop_timeout=hard,
    )
    loop = asyncio.get_running_loop()
    await client.start()
    try:
        await client.insert_many([Parent(n=i) for i in range(20)])
        await _wait_all_completed(conn, 40, 20)
        async with _hold_every_free_connection(small_pool):
            # Work arrives that the client cannot claim without a connection.
            await client.insert(Parent(n=99), conn=conn)
            await asyncio.sleep(0.5)
            t0 = loop.time()
            stopping = asyncio.ensure_future(client.stop())
            # Soft and hard waits, then at most 5 s to write the last outcomes.
            done, _ = await asyncio.wait([stopping], timeout=soft + hard + 5.0 + 1.0)
            took = loop.time() - t0
        await stopping  # ends once the pool is released, in any case
        assert done, f"stop() was still waiting after {took:.1f}s"
    finally:
        await client.stop_and_cancel()


async def test_a_pool_with_no_connection_to_spare_for_the_notifier_is_refused_or_works(
    db: str, conn: asyncpg.Connection
) -> None:
    pool = await asyncpg.create_pool(db, min_size=1, max_size=1)
    assert pool is not None
    calls: collections.Counter[int] = collections.Counter()
    client = Client(
        pool,
        workers=_workers(calls),
        queues={"default": QueueConfig(max_workers=2)},
        maintenance=False,
        fetch_poll_interval=0.2,
    )
    try:
        try:
            await client.start()
        except ConfigError:
            return  # refused up front with a clear error: fine
        res = await client.insert(Parent(n=1), conn=conn)
        await _wait_all_completed(conn, 2, 5)
        assert calls[res.job.id] == 1
    finally:
        pool.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.stop_and_cancel(), 10)


async def test_a_heartbeat_that_cannot_get_a_connection_says_what_fails(
    small_pool: asyncpg.Pool, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # Every wait of the engine on the database is bounded: a heartbeat stuck behind a
    # pool the application holds (or a partitioned network) gives up and says why,
    # instead of waiting for ever without a word.
    caplog.set_level(logging.WARNING, logger="pyriver_async")
    client = Client(
        small_pool,
        workers=_workers(collections.Counter()),
        queues={"default": QueueConfig(max_workers=2)},
        heartbeat_interval=1.0,
        dead_client_after=3.0,
    )
    async with client:
        await asyncio.sleep(0.2)  # the first beat
        async with _hold_every_free_connection(small_pool):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while not any("has written no heartbeat" in r.getMessage() for r in caplog.records):
                assert loop.time() < deadline, "the heartbeat never said it was failing"
                await asyncio.sleep(0.1)
    failures = [r.getMessage() for r in caplog.records if r.name.endswith(".heartbeat")]
    assert any(
        "heartbeat failed" in m and "no database connection came free within 5s" in m
        for m in failures
    ), failures
