"""The vacuum horizon: an old transaction is named (pid, application, age) by
``client.horizon_holders()`` and in one warning of the leader, because ending it is
the operator's fix for claims that keep slowing down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pyriver_async import Client, HorizonHolder, Job, JobArgs, JobContext, QueueConfig, Workers
from pyriver_async._maintenance.horizon import HorizonWatch
from tests._support import db_executor

AGE = 1.0  # how old the pinning transaction gets before it is looked for


class Tick(JobArgs, kind="horizon_tick"):
    pass


@pytest.fixture
async def pinned(db: str) -> AsyncIterator[asyncpg.Connection]:
    """A session of another application holding a snapshot, ``AGE`` seconds old."""
    conn = await asyncpg.connect(db, server_settings={"application_name": "nightly_report"})
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await conn.fetchval("SELECT count(*) FROM river_job")
        # It has to be old: the age is the point, and no event makes it older.
        await asyncio.sleep(AGE)
        yield conn
    finally:
        await conn.close()


def _mine(holders: list[HorizonHolder], pid: int) -> HorizonHolder | None:
    return next((h for h in holders if h.kind == "session" and h.pid == pid), None)


async def test_an_old_transaction_is_named_with_its_pid_application_and_age(
    db: str, pinned: asyncpg.Connection
) -> None:
    client = Client(db)
    try:
        holders = await client.horizon_holders(older_than=AGE / 2)
        young = await client.horizon_holders(older_than=3600)
    finally:
        await client.close()
    h = _mine(holders, pinned.get_server_pid())
    assert h is not None, holders
    assert h.application_name == "nightly_report"
    assert h.state == "idle in transaction"
    assert h.age_s is not None and h.age_s >= AGE
    assert "SELECT count(*) FROM river_job" in (h.query or "")
    assert f"pid {h.pid}" in h.describe() and "nightly_report" in h.describe()
    assert _mine(young, pinned.get_server_pid()) is None


async def test_the_watch_warns_once_per_holder_until_it_ends(
    pool: asyncpg.Pool, pinned: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyriver_async.maintenance.horizon")
    watch = HorizonWatch(db_executor(pool), older_than=AGE / 2)
    pid = pinned.get_server_pid()

    await watch.run_once()
    await watch.run_once()

    warnings = [r.getMessage() for r in caplog.records if f"pid {pid}" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "nightly_report" in warnings[0] and f"pg_terminate_backend({pid})" in warnings[0]
    await pinned.execute("ROLLBACK")
    await watch.run_once()
    assert _mine(watch.holders, pid) is None


async def test_the_leader_warns_of_a_pinned_horizon(
    db: str, pinned: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyriver_async.maintenance.horizon")
    workers = Workers()

    @workers.register(Tick)
    async def tick(ctx: JobContext, job: Job[Tick]) -> None:
        return None

    pid = pinned.get_server_pid()
    client = Client(
        db,
        workers=workers,
        queues={"default": QueueConfig(max_workers=2)},
        horizon_warning_after=AGE / 2,
    )
    async with client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        # The watch's first pass runs when this client is elected: look for its line.
        while not any(f"pid {pid}" in r.getMessage() for r in caplog.records):
            assert loop.time() < deadline, "no horizon warning from the leader"
            await asyncio.sleep(0.05)
        assert client.is_leader


async def test_horizon_warning_after_zero_turns_the_watch_off(db: str) -> None:
    workers = Workers()

    @workers.register(Tick)
    async def tick(ctx: JobContext, job: Job[Tick]) -> None:
        return None

    client = Client(
        db, workers=workers, queues={"default": QueueConfig(max_workers=2)}, horizon_warning_after=0
    )
    async with client:
        assert client._maintenance is not None and client._maintenance.horizon is None


def test_the_advice_for_a_prepared_transaction_is_sql_that_runs_for_any_gid() -> None:
    from pyriver_async._maintenance.horizon import _advice

    h = HorizonHolder(
        "prepared_transaction", None, None, "app", None, None, 90.0, 1000, None, "batch 'A'"
    )
    assert _advice(h).endswith("ROLLBACK PREPARED 'batch ''A'''")  # a literal, quote doubled
