"""Misbehaving jobs: one that blocks the event loop, one that ignores cancellation.
The client says so in its log, keeps working, and still stops within its timeouts."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pytest

from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers
from tests._support import events_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


class Quick(JobArgs, kind="fault_quick"):
    n: int = 0


class Blocker(JobArgs, kind="fault_blocker"):
    seconds: float = 2.0


class Stubborn(JobArgs, kind="fault_stubborn"):
    pass


class Polite(JobArgs, kind="fault_polite"):
    pass


async def _run_blocker(db: str) -> tuple[int, float]:
    """Work one job that blocks the loop for 2 s among 20 quick ones, then one more quick
    job. Returns the blocker's id and how long that last job took."""
    workers = Workers()

    @workers.register(Quick)
    async def quick(ctx: JobContext, job: Job[Quick]) -> None:
        await asyncio.sleep(0.001)

    @workers.register(Blocker)
    async def blocker(ctx: JobContext, job: Job[Blocker]) -> None:
        time.sleep(job.args.seconds)  # noqa: ASYNC251 - the fault under test

    client = Client(
        db,
        workers=workers,
        queues={"default": QueueConfig(max_workers=10)},
        maintenance=False,
        fetch_poll_interval=0.2,
    )
    loop = asyncio.get_running_loop()
    async with client:
        sub = client.subscribe()
        results = await client.insert_many([Blocker(seconds=2.0), *(Quick(n=i) for i in range(20))])
        events = await events_for(sub, {r.job.id for r in results}, timeout=20)
        assert {ev.state for ev in events.values()} == {"completed"}
        t0 = loop.time()
        res = await client.insert(Quick(n=99))
        await events_for(sub, {res.job.id}, timeout=5)
        return results[0].job.id, loop.time() - t0


def _blocked_messages(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "event loop was blocked" in r.getMessage()]


async def test_job_blocking_the_event_loop_is_logged_and_the_client_carries_on(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyriver_async")
    _, last_job_took = await _run_blocker(db)
    # Still responsive afterwards: a new job goes through promptly.
    assert last_job_took < 1.0
    blocked = _blocked_messages(caplog)
    assert len(blocked) == 1, caplog.text
    assert blocked[0].levelno >= logging.WARNING
    assert (
        "blocked for 1." in blocked[0].getMessage() or "blocked for 2." in blocked[0].getMessage()
    )


async def test_the_blocked_loop_log_names_the_job_that_blocked(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyriver_async")
    blocker_id, _ = await _run_blocker(db)
    message = _blocked_messages(caplog)[0].getMessage()
    assert f"{blocker_id} (fault_blocker)" in message, message


async def test_job_ignoring_cancellation_is_abandoned_and_shutdown_keeps_its_deadline(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyriver_async")
    workers = Workers()
    stubborn_started = asyncio.Event()
    polite_started = asyncio.Event()
    finish = asyncio.Event()

    @workers.register(Quick)
    async def quick(ctx: JobContext, job: Job[Quick]) -> None:
        pass

    @workers.register(Stubborn, timeout=None)
    async def stubborn(ctx: JobContext, job: Job[Stubborn]) -> None:
        stubborn_started.set()
        while not finish.is_set():
            try:
                await finish.wait()
            except asyncio.CancelledError:
                continue  # swallows every cancellation: the fault under test

    @workers.register(Polite, timeout=None)
    async def polite(ctx: JobContext, job: Job[Polite]) -> None:
        polite_started.set()
        await asyncio.Event().wait()  # runs until cancelled, and lets itself be

    soft, hard = 0.5, 1.0
    client = Client(
        db,
        workers=workers,
        queues={"default": QueueConfig(max_workers=10)},
        maintenance=False,
        fetch_poll_interval=0.2,
        soft_stop_timeout=soft,
        hard_stop_timeout=hard,
    )
    loop = asyncio.get_running_loop()
    try:
        await client.start()
        sub = client.subscribe()
        quick_res = await client.insert_many([Quick(n=i) for i in range(10)])
        await events_for(sub, {r.job.id for r in quick_res}, timeout=10)
        stubborn_id = (await client.insert(Stubborn())).job.id
        polite_id = (await client.insert(Polite())).job.id
        await asyncio.wait_for(stubborn_started.wait(), 10)
        await asyncio.wait_for(polite_started.wait(), 10)

        t0 = loop.time()
        await asyncio.wait_for(client.stop(), soft + hard + 5)
        took = loop.time() - t0
        # Soft wait, then hard wait, then the last flush: nothing waits on the stubborn job.
        assert took < soft + hard + 1.0, took
    finally:
        finish.set()
        await client.stop_and_cancel()

    msgs = [r.getMessage() for r in caplog.records if "ignores cancellation" in r.getMessage()]
    assert len(msgs) == 1, caplog.text
    assert str(stubborn_id) in msgs[0] and "fault_stubborn" in msgs[0]
    conn = await asyncpg.connect(db)
    try:
        rows = {
            r["id"]: r for r in await conn.fetch("SELECT id, state, attempt, errors FROM river_job")
        }
    finally:
        await conn.close()
    # The abandoned job is left running for the rescuer; the polite one went back to
    # available with its attempt given back; the finished ones are recorded.
    assert rows[stubborn_id]["state"] == "running"
    assert rows[polite_id]["state"] == "available"
    assert rows[polite_id]["attempt"] == 0 and not rows[polite_id]["errors"]
    assert all(rows[r.job.id]["state"] == "completed" for r in quick_res)
