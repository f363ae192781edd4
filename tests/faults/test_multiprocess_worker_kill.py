"""A worker process SIGKILLed while it holds running jobs: every job still completes once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import asyncpg
import pytest

from pyriver_async import Client, InsertOpts
from tests._support import eventually

from ._worker_proc import MpSleep, WorkerProcs, scratch_database

pytestmark = pytest.mark.faults

DEAD_CLIENT_AFTER = 3.0
JOBS = 6


async def test_jobs_of_a_killed_worker_are_rescued_by_liveness_and_complete_once(
    tmp_path: Path,
) -> None:
    settings = (
        "--heartbeat", "0.5",
        "--dead-client-after", str(DEAD_CLIENT_AFTER),
        # The age backstop is far away: only liveness can rescue these jobs in time.
        "--rescue-after", "3600",
        "--leader-ttl", "2",
    )  # fmt: skip
    async with scratch_database() as dsn, WorkerProcs(dsn, tmp_path) as procs:
        conn = await asyncpg.connect(dsn)
        inserter = Client(dsn)
        try:
            doomed = await procs.start("doomed", *settings)
            await doomed.wait_ready()
            results = await inserter.insert_many(
                [(MpSleep(seconds=2.0), InsertOpts(queue="mp")) for _ in range(JOBS)]
            )
            ids = [r.job.id for r in results]

            async def all_held_by_doomed() -> bool:
                n: int = await conn.fetchval(
                    "SELECT count(*) FROM river_job WHERE state = 'running' "
                    "AND attempted_by[cardinality(attempted_by)] = 'doomed'"
                )
                return n == JOBS

            await eventually(all_held_by_doomed)
            survivor = await procs.start("survivor", *settings)
            await survivor.wait_ready()

            await doomed.kill()
            killed_at = time.monotonic()

            async def first_rescue() -> bool:
                n: int = await conn.fetchval(
                    "SELECT count(*) FROM river_job WHERE metadata ? 'river:rescue_count'"
                )
                return n > 0

            await eventually(first_rescue, timeout=DEAD_CLIENT_AFTER + 10)
            rescued_after = time.monotonic() - killed_at
            # The row was at most a heartbeat old at the kill; the survivor must first
            # take over leadership (ttl 2 s), then see the heartbeat grow stale.
            assert rescued_after <= DEAD_CLIENT_AFTER + 4, f"rescued after {rescued_after:.1f}s"

            async def all_completed() -> bool:
                n: int = await conn.fetchval(
                    "SELECT count(*) FROM river_job WHERE state = 'completed'"
                )
                return n == JOBS

            await eventually(all_completed, timeout=20)

            rows = await conn.fetch(
                "SELECT id, attempt, attempted_by, errors, metadata FROM river_job ORDER BY id"
            )
            done = await conn.fetch("SELECT job_id, attempt, client FROM mp_done")
        finally:
            await inserter.close()
            await conn.close()

    # Each job ran to its end exactly once: in the survivor, on its second attempt.
    assert sorted(r["job_id"] for r in done) == sorted(ids)
    assert {(r["attempt"], r["client"]) for r in done} == {(2, "survivor")}
    for r in rows:
        assert r["attempt"] == 2
        assert list(r["attempted_by"]) == ["doomed", "survivor"]
        [err] = [json.loads(e) for e in r["errors"]]
        assert err["attempt"] == 1
        assert err["error"].startswith("Stuck job rescued by rescuer: client doomed stopped")
        assert json.loads(r["metadata"])["river:rescue_count"] == 1
