"""Rows this library did not write: the job fails with a clear recorded error, the
client keeps working."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers
from tests._support import next_event


class Order(JobArgs, kind="foreign_order"):
    order_id: int
    currency: str


worked: list[int] = []
workers = Workers()


@workers.register(Order)
async def handle(ctx: JobContext, job: Job[Order]) -> None:
    worked.append(job.id)


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[Client]:
    worked.clear()
    c = Client(
        pool,
        workers=workers,
        # Claims every kind, as River does: these tests are about rows it cannot work.
        queues={"default": QueueConfig(max_workers=5, registered_kinds_only=False)},
        maintenance=False,
        fetch_poll_interval=0.1,
    )
    async with c:
        yield c


async def insert_raw(
    pool: asyncpg.Pool, args: str, kind: str = "foreign_order", **cols: str
) -> int:
    extra = "".join(f", {k}" for k in cols)
    values = "".join(f", {v}" for v in cols.values())
    job_id: int = await pool.fetchval(
        f"INSERT INTO river_job (args, kind, max_attempts{extra}) "
        f"VALUES ($1::jsonb, $2, 3{values}) RETURNING id",
        args,
        kind,
    )
    return job_id


async def test_args_from_an_older_schema_fail_with_a_named_error(
    pool: asyncpg.Pool, client: Client
) -> None:
    sub = client.subscribe()
    old = await insert_raw(pool, '{"order_id": 1}')  # `currency` did not exist yet
    assert (await next_event(sub, old)).state == "retryable"
    job = await client.get(old)
    assert "foreign_order" in job.errors[0].error and "currency" in job.errors[0].error
    good = await insert_raw(pool, '{"order_id": 2, "currency": "EUR"}')
    assert (await next_event(sub, good)).state == "completed"


@pytest.mark.parametrize(
    "cols",
    [
        {"metadata": "'[1, 2]'::jsonb"},  # metadata of the wrong shape
        {"metadata": "'\"text\"'::jsonb"},
        {"errors": 'ARRAY[\'{"not": "an error"}\'::jsonb]'},  # foreign error entries
        {"errors": "ARRAY['42'::jsonb]"},
        {"tags": "NULL"},  # NULLs where we expect values
        {"attempted_by": "NULL"},
        {"errors": "NULL"},
    ],
    ids=lambda c: next(iter(c.items()))[0] + ":" + next(iter(c.values()))[:12],
)
async def test_oddly_shaped_columns_do_not_stop_the_job(
    pool: asyncpg.Pool, client: Client, cols: dict[str, str]
) -> None:
    sub = client.subscribe()
    if "tags" in cols:
        await pool.execute("ALTER TABLE river_job ALTER COLUMN tags DROP NOT NULL")
    try:
        job_id = await insert_raw(pool, '{"order_id": 3, "currency": "USD"}', **cols)
        assert (await next_event(sub, job_id)).state == "completed"
        assert job_id in worked
    finally:
        if "tags" in cols:
            await pool.execute("UPDATE river_job SET tags = '{}' WHERE tags IS NULL")
            await pool.execute("ALTER TABLE river_job ALTER COLUMN tags SET NOT NULL")


async def test_args_that_are_not_an_object_fail_clearly(pool: asyncpg.Pool, client: Client) -> None:
    sub = client.subscribe()
    job_id = await insert_raw(pool, '"just a string"')
    assert (await next_event(sub, job_id)).state == "retryable"
    job = await client.get(job_id)
    assert "foreign_order" in job.errors[0].error


async def test_a_kind_nobody_registered_is_recorded_and_others_continue(
    pool: asyncpg.Pool, client: Client
) -> None:
    sub = client.subscribe()
    stray = await insert_raw(pool, "{}", kind="written_by_a_go_service")
    assert (await next_event(sub, stray)).state == "retryable"
    job = await client.get(stray)
    assert "written_by_a_go_service" in job.errors[0].error
    assert job.args == {}
    good = await insert_raw(pool, '{"order_id": 4, "currency": "JPY"}')
    assert (await next_event(sub, good)).state == "completed"
