"""The rescuer: running jobs of dead clients come back soon; live clients' jobs stay."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers
from pyriver_async._maintenance.rescuer import Rescuer
from pyriver_async._outcome import Outcome
from tests._support import db_executor, eventually

HOUR = 3600.0


async def add_client(conn: asyncpg.Connection, client_id: str, *, beat_ago: float) -> None:
    await conn.execute(
        "INSERT INTO pyriver_client (id, hostname, pid, heartbeat_at) "
        "VALUES ($1, 'host', 1, now() - make_interval(secs => $2::float8))",
        client_id,
        beat_ago,
    )


async def add_running(
    conn: asyncpg.Connection,
    claimed_by: list[str],
    *,
    running_for: float = 1.0,
    attempt: int = 1,
    max_attempts: int = 25,
    metadata: dict[str, Any] | None = None,
) -> int:
    job_id: int = await conn.fetchval(
        """
        INSERT INTO river_job (state, kind, args, attempt, max_attempts, attempted_at,
            attempted_by, metadata, scheduled_at)
        VALUES ('running', 'rescue_test', '{}', $1, $2,
            now() - make_interval(secs => $3::float8), $4, $5::jsonb, now() - interval '2 hours')
        RETURNING id
        """,
        attempt,
        max_attempts,
        running_for,
        claimed_by,
        json.dumps(metadata or {}),
    )
    return job_id


async def job(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    rec = await conn.fetchrow(
        "SELECT state, attempt, scheduled_at, finalized_at, errors, metadata, now() AS db_now "
        "FROM river_job WHERE id = $1",
        job_id,
    )
    assert rec is not None
    return rec


def rescuer(pool: asyncpg.Pool, *, dead_after: float = 30.0, stuck_after: float = HOUR) -> Rescuer:
    return Rescuer(
        db_executor(pool), dead_client_after=dead_after, rescue_stuck_jobs_after=stuck_after
    )


async def test_job_of_a_client_that_stopped_beating_is_retried_at_once(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "dead-one", beat_ago=60)
    job_id = await add_running(conn, ["older-client", "dead-one"], attempt=2)

    result = await rescuer(pool).rescue()

    assert result.retried == 1
    r = await job(conn, job_id)
    assert r["state"] == "retryable"
    assert r["attempt"] == 2  # unchanged
    assert r["finalized_at"] is None
    assert abs((r["scheduled_at"] - r["db_now"]).total_seconds()) < 1
    [err] = [json.loads(e) for e in r["errors"]]
    assert set(err) == {"at", "attempt", "error", "trace"}
    assert err["attempt"] == 2 and err["trace"] == ""
    assert err["error"].startswith("Stuck job rescued by rescuer: client dead-one stopped")
    datetime.fromisoformat(err["at"])
    assert json.loads(r["metadata"])["river:rescue_count"] == 1


async def test_only_the_claiming_client_counts(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    # An earlier attempt by a dead client does not make the current one stuck.
    await add_client(conn, "dead-one", beat_ago=60)
    await add_client(conn, "alive", beat_ago=0)
    job_id = await add_running(conn, ["dead-one", "alive"])
    result = await rescuer(pool).rescue()
    assert result.retried == 0
    assert (await job(conn, job_id))["state"] == "running"


async def test_job_out_of_attempts_is_discarded(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "dead-one", beat_ago=60)
    job_id = await add_running(conn, ["dead-one"], attempt=3, max_attempts=3)
    result = await rescuer(pool).rescue()
    assert result.discarded == 1
    r = await job(conn, job_id)
    assert r["state"] == "discarded" and r["finalized_at"] is not None
    assert len(r["errors"]) == 1


async def test_job_whose_cancellation_was_asked_ends_cancelled(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "dead-one", beat_ago=60)
    job_id = await add_running(
        conn, ["dead-one"], metadata={"cancel_attempted_at": "2026-01-01T00:00:00Z"}
    )
    result = await rescuer(pool).rescue()
    assert result.cancelled == 1
    r = await job(conn, job_id)
    assert r["state"] == "cancelled" and r["finalized_at"] is not None


async def test_rescue_count_goes_up_on_each_rescue(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "dead-one", beat_ago=60)
    job_id = await add_running(conn, ["dead-one"], metadata={"river:rescue_count": 2, "x": 1})
    await rescuer(pool).rescue()
    meta = json.loads((await job(conn, job_id))["metadata"])
    assert meta == {"river:rescue_count": 3, "x": 1}


async def test_slow_job_of_a_live_client_is_left_alone(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "alive", beat_ago=1)
    job_id = await add_running(conn, ["alive"], running_for=50 * 60)
    result = await rescuer(pool).rescue()
    assert result.retried == 0
    assert (await job(conn, job_id))["state"] == "running"


async def test_job_of_a_client_without_liveness_row_waits_for_the_backstop(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    # A River (Go) client keeps no liveness row: only the job's age can tell.
    young = await add_running(conn, ["river-go-client"], running_for=10 * 60)
    old = await add_running(conn, ["river-go-client"], running_for=HOUR + 60)
    result = await rescuer(pool).rescue()
    assert result.retried == 1
    assert (await job(conn, young))["state"] == "running"
    r = await job(conn, old)
    assert r["state"] == "retryable"
    assert "running for longer than 3600 seconds" in json.loads(r["errors"][0])["error"]


async def test_backstop_applies_whoever_holds_the_job(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "alive", beat_ago=0)
    job_id = await add_running(conn, ["alive"], running_for=120)
    result = await rescuer(pool, stuck_after=60).rescue()
    assert result.retried == 1
    assert (await job(conn, job_id))["state"] == "retryable"


async def test_cleanly_stopped_client_has_its_abandoned_jobs_rescued_at_once(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "stopped", beat_ago=0)
    job_id = await add_running(conn, ["stopped"])
    await db_executor(pool).client_mark_dead(id="stopped")
    result = await rescuer(pool).rescue()
    assert result.retried == 1
    err = json.loads((await job(conn, job_id))["errors"][0])
    assert err["error"] == "Stuck job rescued by rescuer: client stopped stopped"


async def test_many_stuck_jobs_are_rescued_in_batches(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "dead-one", beat_ago=60)
    for _ in range(12):
        await add_running(conn, ["dead-one"])
    one = await db_executor(pool).job_rescue(
        dead_after=30.0, stuck_after=HOUR, limit=5, liveness=True
    )
    assert one.total == 5  # one statement never goes past its batch
    r = Rescuer(db_executor(pool), dead_client_after=30, rescue_stuck_jobs_after=HOUR, batch_size=5)
    result = await r.rescue()
    assert result.retried == 7
    assert await conn.fetchval("SELECT count(*) FROM river_job WHERE state = 'running'") == 0


async def test_old_liveness_rows_are_pruned_once_their_jobs_are_rescued(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "long-gone", beat_ago=3 * HOUR)
    await add_client(conn, "gone-with-job", beat_ago=3 * HOUR)
    await add_client(conn, "recently-dead", beat_ago=120)
    # Held back by the SKIP LOCKED of the rescue: the row must stay while this runs.
    held = await add_running(conn, ["gone-with-job"])
    async with pool.acquire() as other, other.transaction():
        await other.execute("SELECT 1 FROM river_job WHERE id = $1 FOR UPDATE", held)
        result = await rescuer(pool, stuck_after=HOUR).rescue()
    assert result.clients_pruned == 1
    ids = {r[0] for r in await conn.fetch("SELECT id FROM pyriver_client")}
    assert ids == {"gone-with-job", "recently-dead"}
    # Once its job is rescued, that row goes too.
    result = await rescuer(pool, stuck_after=HOUR).rescue()
    assert result.retried == 1 and result.clients_pruned == 1


def _completed(job_id: int, attempt: int, claimed_at: datetime) -> Outcome:
    o = Outcome.completed(job_id, attempt, "default")
    o.attempted_at = claimed_at
    return o


async def test_late_outcome_of_a_rescued_attempt_is_not_recorded(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    db = db_executor(pool)
    await add_client(conn, "dead-one", beat_ago=60)
    job_id = await add_running(conn, ["dead-one"], attempt=1)
    first_claim = await conn.fetchval("SELECT attempted_at FROM river_job WHERE id = $1", job_id)
    await rescuer(pool).rescue()
    # Claimed again (attempt 2), then the first attempt's completion arrives late.
    await conn.execute(
        "UPDATE river_job SET state = 'running', attempt = attempt + 1, attempted_at = now() "
        "WHERE id = $1",
        job_id,
    )
    assert len(await db.job_complete_many([_completed(job_id, 1, first_claim)])) == 0
    assert (await job(conn, job_id))["state"] == "running"
    claimed = await conn.fetchval("SELECT attempted_at FROM river_job WHERE id = $1", job_id)
    assert len(await db.job_complete_many([_completed(job_id, 2, claimed)])) == 1
    assert (await job(conn, job_id))["state"] == "completed"


class Slow(JobArgs, kind="rescue_slow"):
    pass


async def test_long_running_job_of_a_live_client_is_never_rescued(
    db: str, conn: asyncpg.Connection
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    workers = Workers()

    @workers.register(Slow, timeout=None)
    async def slow(ctx: JobContext, j: Job[Slow]) -> None:
        started.set()
        await release.wait()

    client = Client(
        db,
        workers=workers,
        queues={"default": QueueConfig(max_workers=2)},
        heartbeat_interval=0.1,
        dead_client_after=0.6,
        leader_ttl=2,
    )
    async with client:
        res = await client.insert(Slow())
        await asyncio.wait_for(started.wait(), 10)
        await eventually(lambda: client.is_leader)
        m = client._maintenance
        # Many rescuer passes over several dead_client_after periods.
        t0 = time.monotonic()
        runs0 = m.rescuer.runs
        await eventually(lambda: m.rescuer.runs >= runs0 + 8 and time.monotonic() - t0 > 1.5)
        r = await job(conn, res.job.id)
        assert r["state"] == "running" and not r["errors"]
        release.set()
        await eventually(lambda: _state(conn, res.job.id, "completed"))


async def _state(conn: asyncpg.Connection, job_id: int, state: str) -> bool:
    return bool(
        await conn.fetchval("SELECT state = $2 FROM river_job WHERE id = $1", job_id, state)
    )


async def test_abandoned_job_of_a_stopped_client_is_rescued_and_runs_again(
    db: str, conn: asyncpg.Connection
) -> None:
    """A job that ignores cancellation is abandoned at shutdown; the next leader takes
    it back at once, without waiting for dead_client_after."""
    hold = asyncio.Event()
    workers = Workers()

    @workers.register(Slow, timeout=None)
    async def stubborn(ctx: JobContext, j: Job[Slow]) -> None:
        if j.attempt == 1:
            while not hold.is_set():
                try:
                    await hold.wait()
                except asyncio.CancelledError:
                    continue  # ignores cancellation

    settings: dict[str, Any] = dict(
        workers=workers,
        queues={"default": QueueConfig(max_workers=2)},
        heartbeat_interval=0.2,
        dead_client_after=60,
        leader_ttl=2,
        soft_stop_timeout=0.1,
        hard_stop_timeout=0.2,
    )
    first = Client(db, id="first", **settings)
    await first.start()
    try:
        res = await first.insert(Slow())
        await eventually(lambda: _state(conn, res.job.id, "running"))
        await first.stop()
        second = Client(db, id="second", **settings)
        async with second:
            await eventually(lambda: _state(conn, res.job.id, "completed"), timeout=15)
    finally:
        hold.set()
        await first.stop()
    r = await job(conn, res.job.id)
    assert r["attempt"] == 2
    assert json.loads(r["metadata"])["river:rescue_count"] == 1


async def test_rescued_at_is_recorded_in_utc_iso_format(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await add_client(conn, "dead-one", beat_ago=60)
    job_id = await add_running(conn, ["dead-one"])
    before = datetime.now(UTC) - timedelta(seconds=5)
    await rescuer(pool).rescue()
    at = datetime.fromisoformat(json.loads((await job(conn, job_id))["errors"][0])["at"])
    assert at.tzinfo is not None and at > before
