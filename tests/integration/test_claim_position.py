"""A queue with a backlog is claimed from where the last claim ended (issue 22: a
pinned vacuum horizon must not make every claim walk past all the jobs done since).

What a user depends on: the position is a range of the claim index (no walk from
its head), and no job is starved by it — one that becomes available behind the
position (a higher priority, an older scheduled_at) is claimed by the next full
claim, within RESCAN_EVERY.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from pyriver_async import _claim
from pyriver_async._claim import PlainClaimer
from pyriver_async._driver.columns import ID
from pyriver_async._driver.queries import Queries
from tests._support import db_executor


async def _add(conn: asyncpg.Connection, n: int, *, priority: int = 2, ago: float = 0) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO river_job (args, kind, max_attempts, priority, queue, scheduled_at, state) "
        "SELECT '{}', 'position_job', 25, $2, 'default', now() - make_interval(secs => $3), "
        "'available' FROM generate_series(1, $1) RETURNING id",
        n,
        priority,
        ago,
    )
    return [r[0] for r in rows]


async def test_a_positioned_claim_is_a_range_of_the_claim_index(
    conn: asyncpg.Connection,
) -> None:
    await _add(conn, 2000)
    await conn.execute("ANALYZE river_job")
    q = Queries.for_schema().job_claim_after
    args = q.bind(
        queue="default",
        limit=10,
        client_id="plan",
        kinds=None,
        after_priority=2,
        after_scheduled_at=datetime.now(UTC) - timedelta(hours=1),
        after_id=1000,
    )
    tx = conn.transaction()
    await tx.start()
    try:
        plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {q.sql}", *args))
    finally:
        await tx.rollback()
    text = json.dumps(plan)
    assert "river_job_prioritized_fetching_index" in text
    assert "ROW(priority, scheduled_at, id) >" in text  # an index condition, not a filter
    assert '"Seq Scan"' not in text


async def test_jobs_behind_the_position_are_claimed_within_the_rescan_bound(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    db = db_executor(pool)
    claimer = PlainClaimer("default", None)
    await _add(conn, 300)

    async def claim(limit: int) -> list[int]:
        result = await claimer.claim(db, limit=limit, client_id="c", done=(), running_kinds={})
        return [r[ID] for r in result.rows]

    first = await claim(100)  # a full claim, full: a backlog, so a position
    assert len(first) == 100 and claimer._after is not None
    # Jobs behind the position: a higher priority, and an older scheduled_at.
    urgent = await _add(conn, 3, priority=1)
    older = await _add(conn, 2, priority=2, ago=3600)
    second = await claim(100)  # positioned: it does not see them
    assert not set(second) & set(urgent + older)
    # Once RESCAN_EVERY has passed, the next claim looks from the head again.
    claimer._last_full -= _claim.RESCAN_EVERY
    third = await claim(100)
    assert set(urgent + older) <= set(third)
    rows = await conn.fetch("SELECT id, priority FROM river_job WHERE id = ANY($1)", third)
    assert sorted(r["priority"] for r in rows)[:3] == [1, 1, 1]


async def test_a_positioned_claim_that_comes_up_short_looks_from_the_head(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    db = db_executor(pool)
    claimer = PlainClaimer("default", None)
    await _add(conn, 100)
    first = await claimer.claim(db, limit=100, client_id="c", done=(), running_kinds={})
    assert len(first.rows) == 100 and claimer._after is not None
    retried = await _add(conn, 5, ago=60)  # behind the position: older scheduled_at
    second = await claimer.claim(db, limit=100, client_id="c", done=(), running_kinds={})
    assert {r[ID] for r in second.rows} == set(retried)  # short, so from the head too
    assert claimer._after is None  # no backlog any more
