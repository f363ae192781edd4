"""pyriver_async.testing: asserting inserts inside a test's transaction, working one job
inline without a database, and draining a client's queues with real rows."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from pyriver_async import (
    Client,
    ConfigError,
    InsertOpts,
    Job,
    JobArgs,
    JobCancel,
    JobContext,
    JobSnooze,
    JobState,
    JobTimeoutError,
    QueueConfig,
    UnknownKindError,
    Workers,
)
from pyriver_async.testing import (
    drain,
    inserted_jobs,
    require_inserted,
    require_not_inserted,
    work_job,
)


class Welcome(JobArgs, kind="helpers_welcome"):
    user_id: int
    lang: str = "en"


class Steps(JobArgs, kind="helpers_steps"):
    how: str
    seconds: float = 0.0


class FollowUp(JobArgs, kind="helpers_follow_up"):
    parent: int


workers = Workers()


@workers.register(Steps, timeout=1)
async def steps(ctx: JobContext, job: Job[Steps]) -> None:
    if job.args.how == "fail":
        raise ValueError("broken")
    if job.args.how == "snooze":
        raise JobSnooze(30)
    if job.args.how == "cancel":
        raise JobCancel("not needed")
    if job.args.how == "follow":
        await ctx.client.insert(FollowUp(parent=job.id))
    if job.args.how == "own_timeout":  # a call of its own that timed out, well in time
        await asyncio.wait_for(asyncio.Event().wait(), 0.01)
    await asyncio.sleep(job.args.seconds)


@workers.register(FollowUp)
async def follow_up(ctx: JobContext, job: Job[FollowUp]) -> None:
    pass


async def test_require_inserted_sees_the_tests_own_transaction(
    conn: asyncpg.Connection, db: str
) -> None:
    client = Client(db)
    tx = conn.transaction()
    await tx.start()
    try:
        await client.insert(
            Welcome(user_id=7), InsertOpts(queue="mail", tags=["a", "b"]), conn=conn
        )
        await client.insert(Welcome(user_id=8, lang="fr"), conn=conn)
        job = await require_inserted(conn, Welcome, {"user_id": 7}, queue="mail", tags=["b", "a"])
        assert job.args == Welcome(user_id=7)
        assert (await require_inserted(conn, "helpers_welcome", Welcome(user_id=8, lang="fr"))).id
        await require_inserted(conn, Welcome(user_id=7))
        with pytest.raises(AssertionError, match='"user_id":8'):
            await require_inserted(conn, Welcome, {"user_id": 9})
        with pytest.raises(AssertionError):
            await require_inserted(conn, Welcome, {"user_id": 7}, queue="default")
        await require_not_inserted(conn, Welcome, {"user_id": 9})
        with pytest.raises(AssertionError, match="was inserted"):
            await require_not_inserted(conn, Welcome, {"lang": "fr"})
        assert [j.args.user_id for j in await inserted_jobs(conn, Welcome)] == [7, 8]
    finally:
        await tx.rollback()
    assert await inserted_jobs(conn) == []
    await client.close()


async def test_work_job_reports_each_outcome_without_a_database() -> None:
    ok = await work_job(workers, Steps(how="ok"))
    assert ok.outcome == "completed" and ok.job.args == Steps(how="ok")
    failed = await work_job(workers, Steps(how="fail"))
    assert failed.outcome == "error" and isinstance(failed.error, ValueError)
    assert not failed.timed_out
    snoozed = await work_job(workers, Steps(how="snooze"))
    assert snoozed.outcome == "snooze" and snoozed.snooze == timedelta(seconds=30)
    cancelled = await work_job(workers, Steps(how="cancel"))
    assert cancelled.outcome == "cancel" and cancelled.cancel_reason == "not needed"
    slow = await work_job(workers, Steps(how="ok", seconds=5))  # the worker's timeout is 1 s
    assert slow.outcome == "error" and slow.timed_out and isinstance(slow.error, TimeoutError)
    no_client = await work_job(workers, Steps(how="follow"))
    assert no_client.outcome == "error" and isinstance(no_client.error, ConfigError)
    with pytest.raises(UnknownKindError):
        await work_job(workers, Welcome(user_id=1))
    attempt = await work_job(workers, Steps(how="ok"), attempt=3, max_attempts=3)
    assert attempt.job.attempt == 3


async def test_work_job_tells_a_timeout_as_the_engine_does(
    db: str, conn: asyncpg.Connection
) -> None:
    slow = await work_job(workers, Steps(how="ok", seconds=5))  # the worker's timeout is 1 s
    own = await work_job(workers, Steps(how="own_timeout"))
    assert slow.timed_out and isinstance(slow.error, JobTimeoutError)
    assert not own.timed_out and type(own.error) is TimeoutError
    # The engine, on the same jobs: the attempt error it records says the same.
    client = Client(
        db, workers=workers, queues={"default": QueueConfig(max_workers=2)}, pool_max_size=3
    )
    try:
        ids = [
            (await client.insert(Steps(how=how, seconds=s))).job.id
            for how, s in (("ok", 5.0), ("own_timeout", 0.0))
        ]
        await drain(client)
        errors = {
            r["id"]: r["error"]
            for r in await conn.fetch(
                "SELECT id, errors[1]::jsonb ->> 'error' AS error FROM river_job"
                " WHERE id = ANY($1::bigint[])",
                ids,
            )
        }
    finally:
        await client.close()
    assert errors[ids[0]] == str(slow.error)
    assert errors[ids[1]].startswith("TimeoutError")


async def test_drain_works_every_available_job_once_with_real_rows(
    db: str, conn: asyncpg.Connection
) -> None:
    client = Client(
        db, workers=workers, queues={"default": QueueConfig(max_workers=3)}, pool_max_size=3
    )
    try:
        jobs = [
            (await client.insert(Steps(how=how))).job.id
            for how in ("ok", "fail", "snooze", "cancel", "follow", "ok")
        ]
        events = await drain(client)
        by_id = {e.job_id: e.state for e in events}
        assert by_id[jobs[0]] == by_id[jobs[5]] == JobState.COMPLETED
        assert by_id[jobs[1]] == JobState.RETRYABLE
        assert by_id[jobs[2]] == JobState.SCHEDULED
        assert by_id[jobs[3]] == JobState.CANCELLED
        follow = await conn.fetchval("SELECT id FROM river_job WHERE kind = 'helpers_follow_up'")
        assert by_id[follow] == JobState.COMPLETED  # a job a drained job inserted
        rows = await conn.fetch("SELECT id, state::text AS state FROM river_job")
        states = {r["id"]: r["state"] for r in rows}
        assert states[jobs[1]] == "retryable" and states[follow] == "completed"
        assert await drain(client) == []  # nothing available any more
        with pytest.raises(ConfigError):
            await drain(Client(db))
    finally:
        await client.close()
