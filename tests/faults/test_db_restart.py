"""The database goes away under a working client: a PostgreSQL restart, and every
backend of the client terminated. The client logs, reconnects by itself and goes on;
no inserted job is lost and no completion is lost."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import pyriver_async
from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers
from pyriver_async._driver.queries import Queries
from pyriver_async._errors import TransientDatabaseError

from ._cluster import PgCluster

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

# What a failed insert may raise while the server is away (the caller would retry).
# asyncpg raises InternalClientError when the pool hands out a connection whose
# backend has just sent its termination notice and asyncpg has not yet seen the EOF.
# What an insert may raise while the database is away: the library's own type, never a
# raw driver error (and the test's own wait_for timeout).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (TransientDatabaseError, TimeoutError)


class Tick(JobArgs, kind="fault_tick"):
    n: int = 0


async def _wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def _run_through_fault(
    url: str, fault: Callable[[], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    """Insert and work jobs continuously; inflict ``fault`` in the middle; check that work
    resumed by itself and that every job whose insert returned ends completed."""
    caplog.set_level(logging.INFO, logger="pyriver_async")
    calls: collections.Counter[int] = collections.Counter()
    workers = Workers()

    @workers.register(Tick)
    async def tick(ctx: JobContext, job: Job[Tick]) -> None:
        calls[job.id] += 1
        await asyncio.sleep(0.002)

    client = Client(
        url,
        workers=workers,
        queues={"default": QueueConfig(max_workers=20)},
        # The rescuer covers the one case a client cannot: a claim committed whose reply
        # was lost with the connection. Jobs take 2 ms, so 5 s rescues nothing else.
        maintenance=True,
        rescue_stuck_jobs_after=5,
        fetch_poll_interval=0.2,
        pool_max_size=8,
    )
    inserted: set[int] = set()
    failed_inserts = 0
    completed: set[int] = set()
    stop_inserting = asyncio.Event()

    async def insert_continuously() -> None:
        nonlocal failed_inserts
        n = 0
        while not stop_inserting.is_set():
            try:
                res = await asyncio.wait_for(
                    client.insert_many([Tick(n=n + i) for i in range(10)]), 10
                )
                inserted.update(r.job.id for r in res)
            except CONNECTION_ERRORS:
                failed_inserts += 1
                await asyncio.sleep(0.05)
            n += 10
            await asyncio.sleep(0.005)

    async def collect(sub: pyriver_async.Subscription) -> None:
        async for ev in sub:
            if ev.state == "completed":
                completed.add(ev.job_id)

    tasks: list[asyncio.Task[None]] = []
    try:
        async with client:
            sub = client.subscribe()
            collector = asyncio.create_task(collect(sub))
            inserter = asyncio.create_task(insert_continuously())
            tasks += [collector, inserter]
            assert client.notifier is not None
            await asyncio.wait_for(client.notifier.connected.wait(), 10)
            listen_pid = client.notifier.connection_pid
            await _wait_until(lambda: len(completed) >= 300, 20, "work before the fault")

            await fault()
            inserted_at_fault = len(inserted)
            completed_at_fault = len(completed)

            # Resumes with no help: new inserts go in and get worked, and the notifier is
            # back on a new connection.
            await _wait_until(
                lambda: len(inserted) >= inserted_at_fault + 300, 15, "inserts after the fault"
            )
            await _wait_until(
                lambda: len(completed) >= completed_at_fault + 300, 15, "work after the fault"
            )
            await asyncio.wait_for(client.notifier.connected.wait(), 15)
            assert client.notifier.connection_pid not in (None, listen_pid)
            assert client.notifier.reconnects >= 1

            stop_inserting.set()
            await inserter
            await _wait_until(lambda: inserted <= completed, 30, "every inserted job to complete")
            sub.close()
            await collector

    finally:
        # Never leave a task behind: one that fails later, unretrieved, is logged from
        # the garbage collector in the middle of whatever runs then.
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    conn = await asyncpg.connect(url)
    try:
        states = await conn.fetch(
            "SELECT id, state, metadata ? 'river:rescue_count' AS rescued FROM river_job"
        )
    finally:
        await conn.close()
    by_state = collections.Counter(r["state"] for r in states)
    # Every job in the table, including any whose insert committed but reported a
    # failure, ran and has its completion recorded.
    assert by_state == {"completed": len(states)}, (by_state, f"{failed_inserts} failed inserts")
    assert inserted <= {r["id"] for r in states}
    assert set(calls) == {r["id"] for r in states}
    # At least once; more than once only for a job the rescuer took back.
    ran_again = {job_id for job_id, n in calls.items() if n > 1}
    assert ran_again <= {r["id"] for r in states if r["rescued"]}
    # It said what happened.
    assert "notifier connection lost" in caplog.text


# Until asyncpg.InternalClientError is survived (see the two tests below, which show it
# deterministically), these fail in most runs but not all: hence not strict.
async def test_client_rides_out_a_postgres_restart(
    pg_cluster: PgCluster, cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def restart() -> None:
        await pg_cluster.arestart("fast")

    await _run_through_fault(cluster_url, restart, caplog)


async def test_client_rides_out_termination_of_all_its_backends(
    fresh_database: Callable[[], Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    url = await fresh_database()
    await pyriver_async.migrate(url)
    admin = await asyncpg.connect(url)

    async def terminate_all() -> None:
        # Three rounds, so that the reconnected connections are terminated too.
        for _ in range(3):
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            assert killed >= 1
            await asyncio.sleep(0.3)

    try:
        await _run_through_fault(url, terminate_all, caplog)
    finally:
        await admin.close()


def _fail_once(monkeypatch: pytest.MonkeyPatch, method: str, sql: str) -> list[str]:
    """Make the first ``method`` call running ``sql`` raise what asyncpg raises when the
    pool hands out a connection whose backend has just sent its termination notice
    (seen in the tests above: asyncpg leaves it in its error-consuming state until the
    EOF arrives)."""
    original = getattr(asyncpg.connection.Connection, method)
    fired: list[str] = []

    async def flaky(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if query == sql and not fired:
            fired.append(query)
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, method, flaky)
    return fired


async def _one_job_completes(db: str) -> None:
    workers = Workers()

    @workers.register(Tick)
    async def tick(ctx: JobContext, job: Job[Tick]) -> None:
        pass

    pool = await asyncpg.create_pool(db, min_size=1, max_size=4)
    assert pool is not None
    client = Client(
        pool,
        workers=workers,
        queues={"default": QueueConfig(max_workers=2)},
        maintenance=False,
        fetch_poll_interval=0.2,
    )
    try:
        await client.start()
        sub = client.subscribe()
        res = await client.insert(Tick())
        ev = await sub.get(5)
        assert (ev.job_id, ev.state) == (res.job.id, "completed")
        await asyncio.wait_for(client.stop(), 10)
    finally:
        # When a client task died, stop() re-raises its error: take it here, so that no
        # task is left with an exception nobody retrieved.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.stop_and_cancel(), 10)
        pool.terminate()


async def test_completer_survives_an_unexpected_driver_error(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fired = _fail_once(monkeypatch, "fetch", Queries.for_schema().job_complete_many.sql)
    await _one_job_completes(db)
    assert fired


async def test_producer_survives_an_unexpected_driver_error(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fired = _fail_once(monkeypatch, "fetch", Queries.for_schema().job_claim.sql)
    await _one_job_completes(db)
    assert fired
