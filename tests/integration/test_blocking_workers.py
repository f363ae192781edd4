"""Blocking (plain ``def``) workers run in threads (issue 19).

- they run off the event loop, in threads of their queue's limiter (``max_threads``);
- a timeout or a cancel cannot stop a thread: the job is recorded as timed out (or
  cancelled), saying so, and its slot stays taken until the thread returns;
- the loop-block monitor does not blame them, and still names async jobs that block.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta

import asyncpg
import pytest

from pyriver_async import (
    Client,
    Job,
    JobArgs,
    JobContext,
    QueueConfig,
    Worker,
    Workers,
)
from tests._support import events_for, eventually, next_event


class Blocking(JobArgs, kind="blk_sleep"):
    seconds: float = 0.0


class Ticker(JobArgs, kind="blk_ticker"):
    pass


class Hog(JobArgs, kind="blk_hog"):
    seconds: float = 1.3


threads: dict[str, str] = {}
peak = {"now": 0, "max": 0}
lock = threading.Lock()


class SleepWorker(Worker[Blocking]):
    def work(self, ctx: JobContext, job: Job[Blocking]) -> None:  # type: ignore[override]
        with lock:
            peak["now"] += 1
            peak["max"] = max(peak["max"], peak["now"])
        try:
            threads[str(job.id)] = threading.current_thread().name
            end = time.monotonic() + job.args.seconds
            while time.monotonic() < end:
                time.sleep(0.01)
            ctx.record_output({"cancelled_seen": ctx.cancelled})
        finally:
            with lock:
                peak["now"] -= 1


def _workers(timeout: timedelta | None = timedelta(seconds=0.3)) -> Workers:
    w = Workers()
    w.register(Blocking, SleepWorker(), timeout=timeout)

    @w.register(Ticker)
    async def ticker(ctx: JobContext, job: Job[Ticker]) -> None:
        return None

    @w.register(Hog, timeout=None)
    async def hog(ctx: JobContext, job: Job[Hog]) -> None:
        time.sleep(job.args.seconds)  # noqa: ASYNC251 - blocks the loop on purpose

    return w


def _client(pool: asyncpg.Pool, max_threads: int | None = None) -> Client:
    return Client(
        pool,
        workers=_workers(),
        queues={"default": QueueConfig(max_workers=10, max_threads=max_threads)},
        maintenance=False,
    )


async def test_a_def_worker_runs_in_a_thread_and_the_loop_keeps_going(
    pool: asyncpg.Pool,
) -> None:
    client = _client(pool)
    async with client, client.subscribe() as events:
        slow = (await client.insert(Blocking(seconds=0.25))).job
        await eventually(lambda: slow.id in client.running_jobs)
        # While the thread sleeps, async jobs are claimed and finish.
        tick = (await client.insert(Ticker())).job
        assert (await next_event(events, tick.id)).state == "completed"
        assert slow.id in client.running_jobs
        assert (await next_event(events, slow.id)).state == "completed"
    assert threads[str(slow.id)] != threading.main_thread().name


async def test_max_threads_bounds_blocking_jobs_of_a_queue(pool: asyncpg.Pool) -> None:
    peak["max"] = 0
    client = _client(pool, max_threads=2)
    async with client, client.subscribe() as events:
        # (A job waiting for a thread is already on its clock: 3 rounds of 0.05 s fit
        # in the 0.3 s timeout.)
        ids = [r.job.id for r in await client.insert_many([Blocking(seconds=0.05)] * 6)]
        seen = await events_for(events, set(ids), timeout=10)
    assert {ev.state for ev in seen.values()} == {"completed"}
    assert peak["max"] == 2


async def test_a_thread_past_its_timeout_is_recorded_as_timed_out_and_holds_its_slot(
    pool: asyncpg.Pool,
) -> None:
    client = _client(pool)
    async with client, client.subscribe() as events:
        job = (await client.insert(Blocking(seconds=1.0))).job
        t0 = time.monotonic()
        await eventually(lambda: job.id in client.running_jobs)
        await asyncio.sleep(0.6)  # past the 0.3 s timeout: the thread still runs
        assert job.id in client.running_jobs
        ev = await next_event(events, job.id)
        elapsed = time.monotonic() - t0
    assert ev.state == "retryable"
    assert elapsed >= 0.95  # reported when the thread returned, not at the timeout
    row = await pool.fetchrow(
        "SELECT errors[1] ->> 'error' AS e FROM river_job WHERE id = $1", job.id
    )
    assert row is not None
    assert "timed out after 0:00:00.300000" in row["e"]
    assert "thread ran on for" in row["e"] and "cannot be stopped" in row["e"]
    # What the thread recorded on its way out is kept; it saw the cancellation.
    assert ev.output == {"cancelled_seen": True}


async def test_cancel_reaches_a_thread_only_through_ctx_cancelled(pool: asyncpg.Pool) -> None:
    client = Client(
        pool,
        workers=_workers(timeout=None),
        queues={"default": QueueConfig(max_workers=5)},
        maintenance=False,
    )
    async with client, client.subscribe() as events:
        job = (await client.insert(Blocking(seconds=0.4))).job
        await eventually(lambda: job.id in client.running_jobs)
        await client.cancel(job.id)
        ev = await next_event(events, job.id)
    assert ev.state == "cancelled"
    error = await pool.fetchval("SELECT errors[1] ->> 'error' FROM river_job WHERE id = $1", job.id)
    assert "cancelled by request" in error and "thread ran on" in error


async def test_the_loop_monitor_names_async_blockers_not_threads(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client(
        pool,
        workers=_workers(timeout=None),
        queues={"default": QueueConfig(max_workers=5)},
        maintenance=False,
        job_timeout=None,
    )
    with caplog.at_level(logging.ERROR, logger="pyriver_async.client"):
        async with client, client.subscribe() as events:
            thread_job = (await client.insert(Blocking(seconds=2.5))).job
            await eventually(lambda: thread_job.id in client.running_jobs)
            hog = (await client.insert(Hog())).job
            assert (await next_event(events, hog.id, timeout=15)).state == "completed"
            await eventually(
                lambda: any("event loop was blocked" in r.getMessage() for r in caplog.records)
            )
            assert (await next_event(events, thread_job.id, timeout=15)).state == "completed"
    blocked = [r.getMessage() for r in caplog.records if "event loop was blocked" in r.getMessage()]
    assert any(f"{hog.id} (blk_hog)" in m for m in blocked)
    assert not any(f"{thread_job.id} (blk_sleep)" in m for m in blocked)
