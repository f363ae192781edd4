"""The scheduler: due scheduled/retryable jobs become available, with wake-ups, in batches."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
import pytest

from pyriver_async._maintenance.scheduler import Scheduler
from tests._support import db_executor, eventually

# Unique states without `retryable` (River's default 245 minus 32): a retryable job
# with such a mask leaves the unique index and must re-enter it to become available.
MASK_WITHOUT_RETRYABLE = 245 - 32


async def add_job(
    conn: asyncpg.Connection,
    *,
    state: str = "scheduled",
    queue: str = "default",
    due_in: float = -1.0,
    unique_key: bytes | None = None,
    unique_states: int | None = None,
    priority: int = 1,
) -> int:
    """A job row written directly, scheduled ``due_in`` seconds from now."""
    job_id: int = await conn.fetchval(
        """
        INSERT INTO river_job (state, queue, kind, args, max_attempts, priority, scheduled_at,
            unique_key, unique_states, attempt)
        VALUES ($1::river_job_state, $2, 'sched_test', '{}', 25, $3,
            now() + make_interval(secs => $4::float8), $5, $6::int::bit(8),
            CASE WHEN $1 = 'retryable' THEN 1 ELSE 0 END)
        RETURNING id
        """,
        state,
        queue,
        priority,
        due_in,
        unique_key,
        unique_states,
    )
    return job_id


async def states(conn: asyncpg.Connection) -> dict[int, str]:
    return {r["id"]: r["state"] for r in await conn.fetch("SELECT id, state FROM river_job")}


class Listener:
    """Collects the insert-channel notifications of a test."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.messages.append(str(payload))


async def test_due_jobs_become_available_with_one_wakeup_per_queue(
    pool: asyncpg.Pool, conn: asyncpg.Connection, db: str
) -> None:
    due_a = [await add_job(conn, queue="qa") for _ in range(3)]
    due_b = await add_job(conn, state="retryable", queue="qb")
    later = await add_job(conn, queue="qa", due_in=3600)
    later_retry = await add_job(conn, state="retryable", queue="qb", due_in=3600)
    listener = Listener()
    listen = await asyncpg.connect(db)
    await listen.add_listener("public.river_insert", listener)
    try:
        result = await Scheduler(db_executor(pool)).schedule()
        await eventually(lambda: _true(len(listener.messages) >= 2))
        # One more round trip on the listening connection flushes any stragglers.
        await listen.fetchval("SELECT 1")
    finally:
        await listen.close()

    assert result.available == 4 and result.discarded == 0
    s = await states(conn)
    assert all(s[i] == "available" for i in [*due_a, due_b])
    assert s[later] == "scheduled" and s[later_retry] == "retryable"
    assert sorted(json.loads(m)["queue"] for m in listener.messages) == ["qa", "qb"]


async def _true(value: bool) -> bool:
    return value


async def test_a_pass_loops_over_full_batches(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    ids = [await add_job(conn) for _ in range(23)]
    one = await db_executor(pool).job_schedule(limit=5)
    assert one.total == 5  # one statement never goes past its batch
    result = await Scheduler(db_executor(pool), batch_size=5).schedule()
    assert result.available == 18
    s = await states(conn)
    assert {s[i] for i in ids} == {"available"}


async def test_retryable_job_whose_unique_key_is_taken_is_discarded_and_others_proceed(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    key = b"k" * 32
    holder = await add_job(
        conn, state="available", due_in=-5, unique_key=key, unique_states=MASK_WITHOUT_RETRYABLE
    )
    loser = await add_job(
        conn, state="retryable", unique_key=key, unique_states=MASK_WITHOUT_RETRYABLE
    )
    bystander = await add_job(conn)

    result = await Scheduler(db_executor(pool)).schedule()

    assert result.discarded == 1
    row = await conn.fetchrow(
        "SELECT state, finalized_at, metadata ->> 'unique_key_conflict' AS why "
        "FROM river_job WHERE id = $1",
        loser,
    )
    assert row is not None
    assert row["state"] == "discarded"
    assert row["finalized_at"] is not None
    assert row["why"] == "scheduler_discarded"
    s = await states(conn)
    assert s[holder] == "available" and s[bystander] == "available"
    # And the next pass has nothing left to trip on.
    again = await Scheduler(db_executor(pool)).schedule()
    assert again.available == 0 and again.discarded == 0


async def test_of_several_jobs_returning_with_one_key_only_the_first_gets_in(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    key = b"r" * 32
    first = await add_job(
        conn, state="retryable", due_in=-10, unique_key=key, unique_states=MASK_WITHOUT_RETRYABLE
    )
    second = await add_job(
        conn, state="retryable", due_in=-5, unique_key=key, unique_states=MASK_WITHOUT_RETRYABLE
    )
    result = await Scheduler(db_executor(pool)).schedule()
    s = await states(conn)
    assert (s[first], s[second]) == ("available", "discarded")
    assert result.available == 1 and result.discarded == 1


async def test_scheduled_job_keeps_its_key_against_a_returning_retryable_one(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    key = b"s" * 32
    # The retryable job sorts first, but the scheduled one already holds the key.
    retry = await add_job(
        conn, state="retryable", due_in=-10, unique_key=key, unique_states=MASK_WITHOUT_RETRYABLE
    )
    sched = await add_job(
        conn, state="scheduled", due_in=-5, unique_key=key, unique_states=MASK_WITHOUT_RETRYABLE
    )
    await Scheduler(db_executor(pool)).schedule()
    s = await states(conn)
    assert (s[sched], s[retry]) == ("available", "discarded")


async def test_unique_jobs_with_retryable_in_their_states_are_promoted(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    job = await add_job(conn, state="retryable", unique_key=b"d" * 32, unique_states=245)
    result = await Scheduler(db_executor(pool)).schedule()
    assert result.available == 1
    assert (await states(conn))[job] == "available"


async def test_running_service_promotes_jobs_as_they_fall_due(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    scheduler = Scheduler(db_executor(pool), interval=0.05)
    scheduler.start()
    try:
        job = await add_job(conn, due_in=0.3)
        await eventually(lambda: _state_is(conn, job, "available"))
    finally:
        await scheduler.stop()
    assert not scheduler.running


async def _state_is(conn: asyncpg.Connection, job_id: int, state: str) -> bool:
    return bool(
        await conn.fetchval("SELECT state = $2 FROM river_job WHERE id = $1", job_id, state)
    )


class FlakyScheduler(Scheduler):
    """Fails its first passes the way a lost connection does."""

    def __init__(self, *args: Any, fail: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.to_fail = fail

    async def run_once(self) -> None:
        if self.to_fail > 0:
            self.to_fail -= 1
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
        await super().run_once()


async def test_service_survives_database_errors(
    pool: asyncpg.Pool, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    job = await add_job(conn)
    scheduler = FlakyScheduler(db_executor(pool), interval=0.05, fail=3)
    with caplog.at_level(logging.WARNING, logger="pyriver_async.maintenance.scheduler"):
        scheduler.start()
        try:
            await eventually(lambda: _state_is(conn, job, "available"))
        finally:
            await scheduler.stop()
    assert scheduler.failures == 3
    assert any("trying again" in r.getMessage() for r in caplog.records)


async def test_service_recovers_when_its_connections_are_terminated(
    db: str, conn: asyncpg.Connection
) -> None:
    p = await asyncpg.create_pool(db + "?application_name=sched_kill", min_size=2, max_size=2)
    assert p is not None
    scheduler = Scheduler(db_executor(p), interval=0.05)
    scheduler.start()
    try:
        await eventually(lambda: _true(scheduler.runs >= 2))
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'sched_kill'"
        )
        job = await add_job(conn)
        await eventually(lambda: _state_is(conn, job, "available"))
    finally:
        await scheduler.stop()
        await p.close()


async def test_a_short_batch_takes_each_queues_most_urgent_due_jobs_first(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    # Within a queue, a batch smaller than what is due takes the lowest priority number
    # first, then the earliest due; the next batch takes the rest, never a future job.
    urgent = [
        await add_job(conn, queue="qa", priority=1, due_in=-1),
        await add_job(conn, queue="qa", priority=2, due_in=-9),
    ]
    later = [
        await add_job(conn, queue="qa", priority=2, due_in=-3),
        await add_job(conn, queue="qa", priority=3, due_in=-20),
    ]
    future = await add_job(conn, queue="qa", priority=1, due_in=600)

    first = await db_executor(pool).job_schedule(limit=2)

    assert first.total == 2
    s = await states(conn)
    assert [s[i] for i in urgent] == ["available", "available"]
    assert [s[i] for i in later] == ["scheduled", "scheduled"]
    rest = await db_executor(pool).job_schedule(limit=10)
    assert rest.total == 2
    s = await states(conn)
    assert [s[i] for i in later] == ["available", "available"]
    assert s[future] == "scheduled"


async def test_a_pass_takes_due_jobs_of_every_queue_and_both_states(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    due = [
        await add_job(conn, queue="qa", priority=4, due_in=-1),
        await add_job(conn, state="retryable", queue="qc", priority=1, due_in=-2),
        await add_job(conn, queue="qb", priority=2, due_in=-9),
        await add_job(conn, state="retryable", queue="qb", priority=4, due_in=-1),
    ]
    future = [await add_job(conn, queue=q, priority=1, due_in=600) for q in ("qa", "qb", "qc")]

    result = await Scheduler(db_executor(pool), batch_size=1).schedule()

    assert result.available == 4
    s = await states(conn)
    assert {s[i] for i in due} == {"available"}
    assert {s[i] for i in future} == {"scheduled"}


async def test_a_pass_reads_no_waiting_job_that_is_not_due(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """A million jobs scheduled in the future cost a sequential scan per pass (134 ms,
    every second) before the pick went by queue and priority through the index; now a
    pass reads only the index's first entries of each (state, queue, priority)."""
    await conn.execute(
        """
        INSERT INTO river_job (args, kind, max_attempts, priority, queue, scheduled_at, state)
        SELECT '{}', 'sched_test', 25, 1 + g % 4, 'q' || g % 3,
            now() + interval '1 hour' + g * interval '1 ms', 'scheduled'
        FROM generate_series(1, 100000) AS g
        """
    )
    due = await add_job(conn, queue="q1", priority=2, due_in=-1)
    await conn.execute("ANALYZE river_job")
    q = db_executor(pool).queries.job_schedule
    batch = Scheduler(db_executor(pool)).batch_size
    plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + q.sql, batch))[0]

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    scans = [n for n in nodes(plan["Plan"]) if n.get("Relation Name") == "river_job"]
    assert scans and not [n for n in scans if n["Node Type"] == "Seq Scan"], scans
    # Every row it read was a due job or the boundary of a range: far fewer than 100k.
    assert sum(n.get("Actual Rows", 0) * n.get("Actual Loops", 1) for n in scans) < 100
    assert (await states(conn))[due] == "available"


async def test_a_pass_beside_a_backlog_is_not_jit_compiled(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """With PostgreSQL's default jit = on, a pass costed over jit_above_cost is JIT
    compiled, each second: a sort of every pick the planner guessed (about 200 queues
    times a batch each) was, beside 20,000 available jobs, and the compile took
    hundreds of ms of CPU a pass while workers drained them."""
    await conn.execute(
        """
        INSERT INTO river_job (args, kind, max_attempts, priority, queue, state)
        SELECT '{}', 'sched_test', 25, 1, 'default', 'available'
        FROM generate_series(1, 20000) AS g
        """
    )
    await conn.execute("ANALYZE river_job")
    q = db_executor(pool).queries.job_schedule
    batch = Scheduler(db_executor(pool)).batch_size
    await conn.execute("SET jit = on")
    plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + q.sql, batch))[0]
    jit_above = float(await conn.fetchval("SELECT current_setting('jit_above_cost')"))
    assert plan["Plan"]["Total Cost"] < jit_above / 10, plan["Plan"]["Total Cost"]
    assert "JIT" not in plan, plan["JIT"]
