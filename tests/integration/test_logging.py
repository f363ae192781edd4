"""Logging (issue 19): stdlib logging, structured job fields, no line per job at INFO.

- records a job writes through ``ctx.logger`` and the engine's records about a job
  carry ``job_id``, ``job_kind``, ``job_queue`` and ``job_attempt`` as ``extra``;
- draining many jobs at INFO writes no line per job;
- the notifier says once that it reconnected.
"""

from __future__ import annotations

import logging

import asyncpg
import pytest

from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers
from tests._support import events_for, eventually, next_event


class Logs(JobArgs, kind="log_job"):
    fail: bool = False


def _workers() -> Workers:
    w = Workers()

    @w.register(Logs)
    async def logs(ctx: JobContext, job: Job[Logs]) -> None:
        ctx.logger.info("working on it")
        if job.args.fail:
            raise RuntimeError("nope")

    return w


def _client(pool: asyncpg.Pool) -> Client:
    return Client(
        pool, workers=_workers(), queues={"default": QueueConfig(max_workers=20)}, maintenance=True
    )


FIELDS = ("job_id", "job_kind", "job_queue", "job_attempt")


async def test_job_records_carry_the_job_fields(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(pool)
    with caplog.at_level(logging.INFO):
        async with client, client.subscribe() as events:
            ok = (await client.insert(Logs())).job
            bad = (await client.insert(Logs(fail=True))).job
            await events_for(events, {ok.id, bad.id}, timeout=10)
    mine = [r for r in caplog.records if r.getMessage().endswith("working on it")]
    failed = [r for r in caplog.records if "failed attempt" in r.getMessage()]
    assert len(mine) == 2 and len(failed) == 1
    for r in [*mine, *failed]:
        assert all(hasattr(r, f) for f in FIELDS), r.__dict__
    assert {getattr(r, "job_id") for r in mine} == {ok.id, bad.id}  # noqa: B009
    assert getattr(failed[0], "job_kind") == "log_job"  # noqa: B009
    assert getattr(failed[0], "job_attempt") == 1  # noqa: B009


async def test_a_drain_writes_no_line_per_job_at_info(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    w = Workers()

    @w.register(Logs)
    async def quiet(ctx: JobContext, job: Job[Logs]) -> None:
        return None

    client = Client(
        pool, workers=w, queues={"default": QueueConfig(max_workers=50)}, maintenance=True
    )
    with caplog.at_level(logging.INFO, logger="pyriver_async"):
        async with client, client.subscribe() as events:
            ids = {r.job.id for r in await client.insert_many([Logs() for _ in range(300)])}
            await events_for(events, ids, timeout=30)
    engine = [r for r in caplog.records if r.name.startswith("pyriver_async")]
    # Engine events only (leadership and the like): a handful, not one per job.
    assert len(engine) < 10, [r.getMessage() for r in engine]


async def test_the_notifier_says_once_that_it_reconnected(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client(
        pool, workers=_workers(), queues={"default": QueueConfig(max_workers=2)}, maintenance=False
    )
    with caplog.at_level(logging.INFO, logger="pyriver_async.notifier"):
        async with client, client.subscribe() as events:
            notifier = client.notifier
            assert notifier is not None
            await notifier.connected.wait()
            pid = notifier.connection_pid
            await pool.execute("SELECT pg_terminate_backend($1)", pid)
            await eventually(lambda: notifier.connection_pid not in (None, pid))
            job = (await client.insert(Logs())).job
            await next_event(events, job.id)
    lines = [r.getMessage() for r in caplog.records if r.name == "pyriver_async.notifier"]
    assert sum("connection lost" in m for m in lines) == 1
    assert sum("notifier reconnected after" in m for m in lines) == 1
