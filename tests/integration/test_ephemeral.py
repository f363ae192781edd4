"""Ephemeral jobs: deleted when they complete (fewer writes per job), kept when they
fail, per insert or for a whole queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from pyriver_async import (
    Client,
    InsertOpts,
    InvalidOptsError,
    Job,
    JobArgs,
    JobContext,
    QueueConfig,
    Workers,
)
from tests._support import events_for, next_event


class Ok(JobArgs, kind="ephemeral_ok"):
    n: int = 0


class Bad(JobArgs, kind="ephemeral_bad"):
    pass


def _workers() -> Workers:
    w = Workers()

    @w.register(Ok)
    async def ok(ctx: JobContext, job: Job[Ok]) -> None:
        return None

    @w.register(Bad)
    async def bad(ctx: JobContext, job: Job[Bad]) -> None:
        raise RuntimeError("kept for inspection")

    return w


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[Client]:
    c = Client(
        pool,
        workers=_workers(),
        queues={"default": QueueConfig(max_workers=5), "fleeting": QueueConfig(ephemeral=True)},
        maintenance=False,
    )
    async with c:
        yield c


async def _exists(pool: asyncpg.Pool, job_id: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM river_job WHERE id = $1", job_id))


async def test_an_ephemeral_job_is_deleted_when_it_completes(
    pool: asyncpg.Pool, client: Client
) -> None:
    sub = client.subscribe()
    gone = await client.insert(Ok(n=1), InsertOpts(ephemeral=True))
    kept = await client.insert(Ok(n=2))
    events = await events_for(sub, {gone.job.id, kept.job.id}, timeout=10)
    assert {ev.state for ev in events.values()} == {"completed"}
    assert not await _exists(pool, gone.job.id)
    assert await _exists(pool, kept.job.id)


async def test_a_failing_ephemeral_job_is_kept(pool: asyncpg.Pool, client: Client) -> None:
    sub = client.subscribe()
    res = await client.insert(Bad(), InsertOpts(ephemeral=True, max_attempts=1))
    assert (await next_event(sub, res.job.id)).state == "discarded"
    row = await pool.fetchrow("SELECT state, errors FROM river_job WHERE id = $1", res.job.id)
    assert row is not None and row["state"] == "discarded" and len(row["errors"]) == 1


async def test_every_job_of_an_ephemeral_queue_is_deleted_when_it_completes(
    pool: asyncpg.Pool, client: Client
) -> None:
    sub = client.subscribe()
    results = await client.insert_many([(Ok(n=i), InsertOpts(queue="fleeting")) for i in range(60)])
    events = await events_for(sub, {r.job.id for r in results}, timeout=10)
    assert {ev.state for ev in events.values()} == {"completed"}
    n = await pool.fetchval("SELECT count(*) FROM river_job WHERE queue = 'fleeting'")
    assert n == 0


def test_ephemeral_must_be_a_bool() -> None:
    with pytest.raises(InvalidOptsError):
        InsertOpts(ephemeral="yes")  # type: ignore[arg-type]
