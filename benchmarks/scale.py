"""Does the claim slow down as the table grows? Three drains of the same size compared.

1. clean: N available jobs in an empty table (the throughput.py drain).
2. history: the same N jobs in a table that also holds ``--rows`` completed jobs.
3. backlog: the first N jobs of a ``--rows``-job backlog (all available).

Each round drains history, clean, backlog, clean: each big drain is compared with
the clean drain that follows it seconds later, and the ratio printed (the target is
≥ 80%) is the median of those per-round ratios. For each scenario
the claim's plan (EXPLAIN ANALYZE of one claim, rolled back) and the table's and
indexes' sizes are kept in the results file.

    python -m benchmarks.scale [--jobs 20000] [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/scale.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    FlushProbe,
    Progress,
    Results,
    add_common_args,
    bench_sql,
    checkpoint,
    fmt_int,
    fmt_ratio,
    load_jobs,
    make_pool,
    median,
    paired_ratio,
    print_table,
    ratio,
    reset_jobs,
    run_main,
    server_info,
    table_stats,
    temp_database,
)
from benchmarks.throughput import LibraryDrain, library_drain, make_client


async def claim_plan(conn: asyncpg.Connection, limit: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of one claim of ``limit`` jobs, rolled back."""
    claim = bench_sql().job_claim
    tr = conn.transaction()
    await tr.start()
    try:
        rows = await conn.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) {claim.sql}",
            *claim.bind(queue="default", limit=limit, client_id="scale-explain", kinds=None),
        )
    finally:
        await tr.rollback()
    lines = [r[0] for r in rows]
    exec_ms = next(
        (ln.split(":")[1].strip() for ln in lines if ln.startswith("Execution Time")), None
    )
    return {
        "execution_time": exec_ms,
        "uses_fetch_index": any("prioritized_fetching" in ln for ln in lines),
        "plan": lines,
    }


async def index_reads(conn: asyncpg.Connection) -> dict[str, int]:
    """Index tuples read so far, per index of river_job (cumulative statistics)."""
    rows = await conn.fetch(
        "SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes WHERE relname = 'river_job'"
    )
    return {r["indexrelname"]: int(r["idx_tup_read"]) for r in rows}


async def measured(
    res: Results, key: str, admin: asyncpg.Connection, n: int, drain: Awaitable[float]
) -> None:
    """Run one drain; keep its jobs/s and the index tuples it read per job."""
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    before = await index_reads(admin)
    rate = await drain
    await asyncio.sleep(0.3)  # the pool's backends have exited and flushed their stats
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    after = await index_reads(admin)
    res.add_run(key, round(rate, 1))
    res.add_run(
        f"{key}_index_tuples_read_per_job",
        {k: round((after[k] - before.get(k, 0)) / n, 2) for k in after},
    )


async def first_n_of_backlog(
    url: str, n: int, workers: int, pool_size: int, timeout: float
) -> float:
    """jobs/s until ``n`` jobs are completed (the rest of the backlog stays)."""
    pool = await make_pool(url, pool_size)
    try:
        client = make_client(pool, workers)
        probe = FlushProbe(target=n)
        probe.attach(client)
        t0 = time.monotonic()
        await client.start()
        try:
            await asyncio.wait_for(probe.reached.wait(), timeout)
        finally:
            await client.stop_and_cancel()
        return probe.count / (probe.last - t0)
    finally:
        await pool.close()


async def _rate(drain: Awaitable[LibraryDrain]) -> float:
    return (await drain).jobs_per_s


async def _main(args: argparse.Namespace, loop: str) -> None:
    n, big, w = args.jobs, args.rows, args.workers
    res = Results("scale", vars(args), loop)
    prog = Progress("scale", args.runs * 4)
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        try:

            async def clean(r: int, after: str) -> None:
                # A clean drain right after each big one, so each ratio compares
                # drains a few seconds apart (the machine's load drifts over minutes).
                prog.step(f"clean: {n:,} jobs, after {after}, run {r + 1}")
                await reset_jobs(admin)
                await load_jobs(admin, n)
                await checkpoint(admin)
                if r == 0 and "clean_plan" not in res.extra:
                    res.extra["clean_plan"] = await claim_plan(admin, w)
                    res.extra["clean_sizes"] = await table_stats(admin)
                await measured(res, "clean", admin, n, _rate(library_drain(url, n, w)))
                res.add_run(f"clean_after_{after}", res.runs["clean"][-1])
                prog.advance()

            for r in range(args.runs):
                prog.step(f"history: {n:,} jobs beside {big:,} completed, run {r + 1} (loading)")
                await reset_jobs(admin)
                await load_jobs(admin, big, state="completed")
                await load_jobs(admin, n)
                await checkpoint(admin)
                if r == 0:
                    res.extra["history_plan"] = await claim_plan(admin, w)
                    res.extra["history_sizes"] = await table_stats(admin)
                prog.step(f"history: {n:,} jobs beside {big:,} completed, run {r + 1}")
                await measured(res, "history", admin, n, _rate(library_drain(url, n, w)))
                prog.advance()
                await clean(r, "history")

                prog.step(f"backlog: first {n:,} of {big:,}, run {r + 1} (loading)")
                await reset_jobs(admin)
                await load_jobs(admin, big)
                await checkpoint(admin)
                if r == 0:
                    res.extra["backlog_plan"] = await claim_plan(admin, w)
                    res.extra["backlog_sizes"] = await table_stats(admin)
                prog.step(f"backlog: first {n:,} of {big:,}, run {r + 1}")
                await measured(
                    res,
                    "backlog",
                    admin,
                    n,
                    first_n_of_backlog(url, n, w, args.pool_size, args.timeout),
                )
                prog.advance()
                await clean(r, "backlog")
            res.extra["sizes_after_last_backlog_run"] = await table_stats(admin)
        finally:
            await admin.close()
    prog.finish()
    for k in ("clean", "history", "backlog"):
        res.medians[k] = median(res.runs[k])
    # Median of the per-run ratios, each big drain against the clean drain run right
    # after it (as the other benchmarks pair library and ceiling runs); the ratio of
    # the medians is kept beside it.
    for k in ("history", "backlog"):
        res.medians[f"ratio_{k}"] = paired_ratio(res.runs[k], res.runs[f"clean_after_{k}"])
        res.medians[f"ratio_{k}_of_medians"] = ratio(res.medians[k], res.medians["clean"])
    rows: list[list[object]] = [
        [
            f"clean table, {n:,} jobs",
            fmt_int(res.medians["clean"]),
            "",
            res.extra["clean_plan"]["execution_time"],
        ],
        [
            f"{n:,} jobs beside {big:,} completed",
            fmt_int(res.medians["history"]),
            fmt_ratio(res.medians["ratio_history"]),
            res.extra["history_plan"]["execution_time"],
        ],
        [
            f"first {n:,} of a {big:,} backlog",
            fmt_int(res.medians["backlog"]),
            fmt_ratio(res.medians["ratio_backlog"]),
            res.extra["backlog_plan"]["execution_time"],
        ],
    ]
    print_table(
        f"Drain as the table grows ({w} workers; {loop}; jobs/s, medians of {args.runs})",
        ["scenario", "jobs/s", "of clean", f"one claim of {w} (EXPLAIN ANALYZE)"],
        rows,
    )
    for key in ("clean", "history", "backlog"):
        sz = res.extra[f"{key}_sizes"]
        reads = [
            x.get("river_job_prioritized_fetching_index", math.nan)
            for x in res.runs[f"{key}_index_tuples_read_per_job"]
        ]
        print(
            f"{key}: table {sz.get('table_bytes', 0) / 2**20:.1f} MiB, indexes "
            f"{sz.get('indexes_bytes', 0) / 2**20:.1f} MiB; claim uses the fetch index: "
            f"{res.extra[f'{key}_plan']['uses_fetch_index']}; fetch-index tuples read per "
            f"job, each run: {', '.join(f'{x:.1f}' for x in reads)}"
        )
    print(
        "runs (jobs/s): "
        + "; ".join(
            f"{k}: {', '.join(fmt_int(x) for x in res.runs[k])}"
            for k in ("clean", "history", "backlog")
        )
    )
    if not args.no_json:
        print(f"\nresults: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20000)")
    p.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="completed rows / backlog size (default 1000000)",
    )
    p.add_argument("--workers", type=int, default=100)
    p.add_argument("--pool-size", type=int, default=10)
    add_common_args(p)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
