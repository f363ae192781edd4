"""The cleaner: finalized jobs past their retention and stale queues are deleted, in batches."""

from __future__ import annotations

from typing import Any

import asyncpg

from pyriver_async._driver.asyncpg import AsyncpgExecutor
from pyriver_async._driver.queries import Queries
from pyriver_async._maintenance.cleaner import Cleaner
from tests._support import db_executor, eventually

DAY = 86400.0


async def add_finalized(conn: asyncpg.Connection, state: str, age: float, n: int = 1) -> list[int]:
    rows = await conn.fetch(
        """
        INSERT INTO river_job (state, kind, args, max_attempts, finalized_at)
        SELECT $1::river_job_state, 'clean_test', '{}', 25,
            now() - make_interval(secs => $2::float8)
        FROM generate_series(1, $3)
        RETURNING id
        """,
        state,
        age,
        n,
    )
    return [r[0] for r in rows]


async def remaining(conn: asyncpg.Connection) -> set[int]:
    return {r[0] for r in await conn.fetch("SELECT id FROM river_job")}


def cleaner(pool: asyncpg.Pool, **kwargs: Any) -> Cleaner:
    kwargs.setdefault("retention", {"completed": DAY, "cancelled": DAY, "discarded": 7 * DAY})
    return Cleaner(db_executor(pool), **kwargs)


async def test_finalized_jobs_are_deleted_after_their_state_retention(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    old_completed = await add_finalized(conn, "completed", 2 * DAY)
    new_completed = await add_finalized(conn, "completed", 60)
    old_cancelled = await add_finalized(conn, "cancelled", 2 * DAY)
    discarded_2d = await add_finalized(conn, "discarded", 2 * DAY)
    discarded_8d = await add_finalized(conn, "discarded", 8 * DAY)
    running = await conn.fetchval(
        "INSERT INTO river_job (state, kind, args, max_attempts, attempted_at) "
        "VALUES ('running', 'clean_test', '{}', 25, now() - interval '30 days') RETURNING id"
    )

    result = await cleaner(pool).clean()

    assert result.jobs == {"completed": 1, "cancelled": 1, "discarded": 1}
    assert set(old_completed + old_cancelled + discarded_8d).isdisjoint(await remaining(conn))
    assert await remaining(conn) == {*new_completed, *discarded_2d, running}


async def test_zero_retention_keeps_that_state_for_ever(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    kept = await add_finalized(conn, "cancelled", 365 * DAY)
    gone = await add_finalized(conn, "completed", 2 * DAY)
    result = await cleaner(
        pool, retention={"completed": DAY, "cancelled": 0, "discarded": 0}
    ).clean()
    assert "cancelled" not in result.jobs
    assert await remaining(conn) == set(kept)
    assert set(gone).isdisjoint(await remaining(conn))


async def test_deletes_in_bounded_batches_until_a_short_one(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_finalized(conn, "completed", 2 * DAY, n=23)
    statements: list[int] = []

    class Counting(AsyncpgExecutor):
        async def job_clean(self, *, state: str, older_than: float, limit: int) -> int:
            n = await super().job_clean(state=state, older_than=older_than, limit=limit)
            statements.append(n)
            return n

    ex = Counting(Queries.for_schema(), pool=pool)
    c = Cleaner(ex, retention={"completed": DAY}, batch_size=5, queue_retention=0)
    result = await c.clean()
    assert result.jobs["completed"] == 23
    assert statements == [5, 5, 5, 5, 3]
    assert await remaining(conn) == set()


async def test_stale_queues_are_deleted_and_live_ones_kept(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO river_queue (name, created_at, updated_at) VALUES "
        "('stale', now() - interval '3 days', now() - interval '25 hours'), "
        "('fresh', now() - interval '3 days', now() - interval '1 hour')"
    )
    result = await cleaner(pool).clean()
    assert result.queues == 1
    assert [r[0] for r in await conn.fetch("SELECT name FROM river_queue")] == ["fresh"]


async def test_running_service_cleans_on_its_interval(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    svc = cleaner(pool, interval=0.05)
    svc.start()
    try:
        await add_finalized(conn, "completed", 2 * DAY, n=3)

        async def all_gone() -> bool:
            return await remaining(conn) == set()

        await eventually(all_gone)
    finally:
        await svc.stop()


async def test_a_busy_queue_holds_the_cleaner_off_but_not_for_ever(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_finalized(conn, "completed", 2 * DAY, n=3)
    busy = True
    c = Cleaner(db_executor(pool), retention={"completed": DAY}, busy=lambda: busy)
    await c.run_once()
    assert c.deferred == 1 and c.last_result.jobs == {}  # a backlog: nothing deleted yet
    busy = False
    await c.run_once()
    assert c.last_result.jobs["completed"] == 3
    # However busy, a pass runs once max_deferral has passed since the last one.
    await add_finalized(conn, "completed", 2 * DAY, n=2)
    busy, c.max_deferral = True, 0.0
    await c.run_once()
    assert c.last_result.jobs["completed"] == 2
