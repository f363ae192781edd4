"""Drills for issue 16: no job outcome is dropped when the database refuses its write
for a while, and no job's exception ends its worker process.

Each drill inflicts the fault on a throwaway cluster of its own, then checks what a
user depends on from the database alone: every job ends in its final state, none is
left ``running`` for the rescuer (``rescue_stuck_jobs_after`` stays at its default,
one hour). The server log is checked too, so that a drill cannot pass because its
fault never happened.

They failed on the code before issue 16 (outcomes dropped on 25006 and 57014, the
process ended by a job's SystemExit); the README's Guarantees point at them.
"""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path

import asyncpg
import pytest

from pyriver_async import Client, InsertOpts, Job, JobArgs, JobContext, QueueConfig, Workers

from ._cluster import PgCluster
from ._worker_proc import MpRaise, MpSleep, WorkerProc, WorkerProcs, create_side_table

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


class Nap(JobArgs, kind="drill_nap"):
    ms: int = 50


class Gate(JobArgs, kind="drill_gate"):
    n: int = 0


async def _states(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM river_job GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def _until_all_completed(
    conn: asyncpg.Connection, total: int, timeout: float, what: str
) -> None:
    """Poll the job table (the outcome is written by the client under test: no event
    of ours tells when) until all ``total`` jobs are ``completed``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (states := await _states(conn)) != {"completed": total}:
        if loop.time() > deadline:
            raise AssertionError(f"{timeout}s {what}, the {total} jobs are {states}")
        await asyncio.sleep(0.1)


async def test_read_only_flip_mid_drain_loses_no_outcome(
    pg_cluster: PgCluster, cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    total, hold = 2000, 5.0
    runs: collections.Counter[int] = collections.Counter()
    workers = Workers()

    @workers.register(Nap)
    async def nap(ctx: JobContext, job: Job[Nap]) -> None:
        runs[job.id] += 1
        await asyncio.sleep(job.args.ms / 1000)

    client = Client(
        cluster_url,
        workers=workers,
        queues={"default": QueueConfig(max_workers=100)},
        fetch_poll_interval=0.2,
    )
    admin = await asyncpg.connect(cluster_url)
    sub = client.subscribe()
    third = asyncio.Event()

    async def count_completions() -> None:
        done = 0
        async for ev in sub:
            if ev.state == "completed":
                done += 1
                if done >= total // 3:
                    third.set()

    counter = asyncio.create_task(count_completions())
    try:
        async with client:
            ids = {r.job.id for r in await client.insert_many([Nap() for _ in range(total)])}
            await asyncio.wait_for(third.wait(), 30)

            await pg_cluster.set_read_only(True)
            await asyncio.sleep(hold)  # the fault lasts this long
            await pg_cluster.set_read_only(False)

            await _until_all_completed(admin, total, 15, "after the database became writable")
    finally:
        sub.close()
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        await admin.close()

    # The fault reached the outcome writes (the completion statement is a data-modifying
    # WITH, which PostgreSQL names SELECT in the refusal), and they went in after it.
    assert "in a read-only transaction" in pg_cluster.log_text()
    assert any(
        r.name == "pyriver_async.completer" and "written again after" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    # Nothing was rescued or given back: every job ran once and was recorded once.
    assert set(runs) == ids
    assert max(runs.values()) == 1, collections.Counter(runs.values())


async def test_completion_statement_timeout_loses_no_outcome(
    pg_cluster: PgCluster, cluster_url: str
) -> None:
    total, wave, locked_n, hold = 100, 20, 10, 2.5
    started = 0
    first_wave = asyncio.Event()
    go = asyncio.Event()
    workers = Workers()

    @workers.register(Gate)
    async def gate(ctx: JobContext, job: Job[Gate]) -> None:
        nonlocal started
        started += 1
        if started >= wave:
            first_wave.set()
        await go.wait()

    # Every statement of the client's pool is cancelled after 200 ms.
    pool = await asyncpg.create_pool(
        cluster_url, min_size=1, max_size=10, server_settings={"statement_timeout": "200"}
    )
    assert pool is not None
    client = Client(
        pool,
        workers=workers,
        queues={"default": QueueConfig(max_workers=wave)},
        fetch_poll_interval=0.2,
    )
    locker = await asyncpg.connect(cluster_url)
    try:
        async with client:
            await client.insert_many([Gate(n=i) for i in range(total)])
            await asyncio.wait_for(first_wave.wait(), 15)

            # Row locks on half the running jobs: their completion UPDATE waits for
            # them and is cancelled by the timeout, while the other jobs go on.
            tx = locker.transaction()
            await tx.start()
            locked = await locker.fetch(
                "SELECT id FROM river_job WHERE state = 'running' ORDER BY id LIMIT $1 FOR UPDATE",
                locked_n,
            )
            assert len(locked) == locked_n
            go.set()
            await asyncio.sleep(hold)  # the locks are held this long
            await tx.rollback()

            await _until_all_completed(locker, total, 10, "after the row locks went")
    finally:
        await locker.close()
        await pool.close()

    assert "canceling statement due to statement timeout" in pg_cluster.log_text()


async def test_base_exceptions_in_jobs_leave_the_worker_process_working(
    cluster_url: str, tmp_path: Path
) -> None:
    normal_n = 200
    await create_side_table(cluster_url)
    admin = await asyncpg.connect(cluster_url)
    inserter = Client(cluster_url)
    try:
        async with WorkerProcs(cluster_url, tmp_path) as procs:
            proc = await procs.start("drill", "--heartbeat", "0.5", "--max-workers", "20")
            await proc.wait_ready()
            jobs: list[tuple[JobArgs, InsertOpts]] = [
                (MpSleep(seconds=0.01), InsertOpts(queue="mp")) for _ in range(normal_n)
            ]
            # Two bad jobs among the normal ones, with one attempt each (then discarded).
            jobs.insert(50, (MpRaise(exc="SystemExit"), InsertOpts(queue="mp", max_attempts=1)))
            jobs.insert(
                120, (MpRaise(exc="KeyboardInterrupt"), InsertOpts(queue="mp", max_attempts=1))
            )
            results = await inserter.insert_many(jobs)
            bad = {results[50].job.id: "SystemExit", results[120].job.id: "KeyboardInterrupt"}
            normal = {r.job.id for r in results} - set(bad)

            await _until_settled(admin, proc, normal_n + len(bad), timeout=20)

            rows = await admin.fetch(
                "SELECT id, state, errors, finalized_at FROM river_job WHERE id = ANY($1)",
                list(bad),
            )
            for r in rows:
                assert r["state"] == "discarded", (bad[r["id"]], r["state"])
                [err] = [json.loads(e) for e in r["errors"]]
                assert bad[r["id"]] in err["error"], err
            assert await _states(admin) == {"completed": normal_n, "discarded": 2}
            done = await admin.fetch("SELECT job_id FROM mp_done")
            assert sorted(d["job_id"] for d in done) == sorted(normal)

            # Still alive, and still heart-beating after the bad jobs ended.
            last_bad = max(r["finalized_at"] for r in rows)
            await _until_heartbeat_after(admin, proc, "drill", last_bad, timeout=5)

            assert await proc.terminate(15) == 0
            assert "stopped drill" in proc.output()
    finally:
        await inserter.close()
        await admin.close()


async def _until_settled(
    conn: asyncpg.Connection, proc: WorkerProc, total: int, timeout: float
) -> None:
    """Until ``total`` jobs are finalized; fails at once if the process exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if proc.proc.returncode is not None:
            raise AssertionError(
                f"the worker process exited with {proc.proc.returncode}:\n{proc.output()[-3000:]}"
            )
        n = await conn.fetchval("SELECT count(*) FROM river_job WHERE finalized_at IS NOT NULL")
        if n == total:
            return
        if loop.time() > deadline:
            raise AssertionError(
                f"{n} of {total} jobs finalized in {timeout}s: {await _states(conn)}"
            )
        await asyncio.sleep(0.05)


async def _until_heartbeat_after(
    conn: asyncpg.Connection, proc: WorkerProc, client_id: str, after: object, timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await conn.fetchval(
        "SELECT heartbeat_at > $2 FROM pyriver_client WHERE id = $1", client_id, after
    ):
        assert proc.proc.returncode is None, f"exited with {proc.proc.returncode}"
        assert loop.time() < deadline, f"no heartbeat from {client_id} in {timeout}s"
        await asyncio.sleep(0.1)
