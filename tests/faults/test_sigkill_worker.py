"""SIGKILL a worker process in the middle of 5,000 jobs, start a new one: nothing is lost,
nothing is recorded twice, and the killed attempts are visible as rescued."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import pyriver_async
from pyriver_async import Client

from ._proc import SIDE_TABLE_DDL, FaultRecord
from .conftest import WorkerProcesses

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

TOTAL = 5000
# The worker processes: short heartbeats so that a dead one is noticed in seconds, and
# an age-based rescue far away so that only the liveness check can rescue.
PROC_ARGS = (
    "--max-workers=20",
    "--job-ms=3",
    "--poll=0.2",
    "--heartbeat=0.5",
    "--dead-client-after=3",
    "--rescue-after=600",
    "--leader-ttl=2",
)


async def _wait_for(
    conn: asyncpg.Connection, sql: str, done: Callable[[int], bool], timeout: float, what: str
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value: int = await conn.fetchval(sql)
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: still {value} after {timeout}s")
        await asyncio.sleep(0.02)


async def test_sigkilled_worker_jobs_are_rescued_and_each_completes_exactly_once(
    fresh_database: Callable[[], Awaitable[str]], worker_processes: WorkerProcesses
) -> None:
    url = await fresh_database()
    await pyriver_async.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SIDE_TABLE_DDL)
        inserter = Client(url)
        try:
            ids = {
                r.job.id
                for r in await inserter.insert_many([FaultRecord(n=i) for i in range(TOTAL)])
            }
        finally:
            await inserter.close()
        assert len(ids) == TOTAL

        first = worker_processes.start(url, *PROC_ARGS)
        first_id = await first.wait_ready()
        await _wait_for(
            conn, "SELECT count(*) FROM fault_side", lambda n: n >= 1500, 30, "side rows"
        )
        first.kill()
        assert await first.wait(10) == -9

        # What the killed process left behind: jobs it had claimed and not finished
        # (or finished without writing the outcome). They must be rescued.
        orphans = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM river_job "
                "WHERE state = 'running' AND attempted_by[cardinality(attempted_by)] = $1",
                first_id,
            )
        }
        assert orphans, "the kill found no job running: it did not happen mid-work"
        remaining = await conn.fetchval("SELECT count(*) FROM river_job WHERE state <> 'completed'")
        assert remaining > len(orphans), "the kill came too late to leave available jobs"

        second = worker_processes.start(url, *PROC_ARGS)
        second_id = await second.wait_ready()
        await _wait_for(
            conn,
            "SELECT count(*) FROM river_job WHERE state = 'completed'",
            lambda n: n == TOTAL,
            60,
            "completed jobs",
        )
        second.terminate()
        assert await second.wait(20) == 0, second.text()

        rows = await conn.fetch(
            "SELECT id, state, attempt, attempted_by, errors, "
            "(metadata ->> 'river:rescue_count')::int AS rescues FROM river_job"
        )
        side = await conn.fetch("SELECT job_id, attempt, pid FROM fault_side")
    finally:
        await conn.close()

    assert {r["id"] for r in rows} == ids
    assert collections.Counter(r["state"] for r in rows) == {"completed": TOTAL}

    # No attempt ran twice (no job was ever claimed by two processes at once).
    runs = collections.Counter((s["job_id"], s["attempt"]) for s in side)
    assert [k for k, n in runs.items() if n > 1] == []

    by_job: dict[int, list[asyncpg.Record]] = collections.defaultdict(list)
    for s in side:
        by_job[s["job_id"]].append(s)
    second_pid = second.pid
    for r in rows:
        attempts = sorted(s["attempt"] for s in by_job[r["id"]])
        # The attempt whose completion was recorded ran its side effect exactly once.
        assert attempts.count(r["attempt"]) == 1, (r["id"], attempts, r["attempt"])
        if r["id"] in orphans:
            # Killed while running: rescued once (attempt kept), then run again by the
            # new process, which recorded the completion.
            assert r["rescues"] == 1, dict(r)
            assert r["attempt"] == 2, dict(r)
            assert len(r["errors"]) == 1 and "rescued" in r["errors"][0].lower(), dict(r)
            assert r["attempted_by"][-1] == second_id, dict(r)
            final = next(s for s in by_job[r["id"]] if s["attempt"] == 2)
            assert final["pid"] == second_pid
            assert set(attempts) <= {1, 2}
        else:
            # Never interrupted: one attempt, one side effect, no error, no rescue.
            assert r["rescues"] is None and not r["errors"], dict(r)
            assert attempts == [1] and r["attempt"] == 1, (r["id"], attempts)
