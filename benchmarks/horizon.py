"""A pinned vacuum horizon: five drains in a row with one old transaction open, against
five without, for the library and for the bare-SQL loop of the ceiling (same claim
and completion SQL, two plain connections, no Python engine).

Each mode: empty the table, then (pinned) open a separate connection holding
``BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;``, then five batches of: insert
``--jobs`` available jobs server-side, ``VACUUM river_job`` (which, pinned, removes
nothing), drain them with ``--workers`` workers. The client runs without maintenance
so that no VACUUM of its own lands inside a batch.

The figure that matters: each pinned batch's rate over the unpinned rate (the median
of the five unpinned batches of the same engine). Every job leaves its claimed and
finished row versions behind, and while the horizon is pinned VACUUM may remove
none: each claim walks the claim index from its head past every entry of the jobs
done since the pin, checking each against the heap, so the cost of a claim grows
with the work done. These ratios are the baseline the claim redesign (issue 22,
the performance round) is judged against; docs/operations.md keeps the dated
figures.

    python -m benchmarks.horizon [--jobs 20000] [--batches 5] [--workers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/horizon.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling
from benchmarks._common import (
    FlushProbe,
    Progress,
    Results,
    add_common_args,
    checkpoint,
    fmt_int,
    fmt_ratio,
    load_jobs,
    make_pool,
    median,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    temp_database,
)
from benchmarks.throughput import make_client

ENGINES = ("library", "bare_sql")
MODES = ("unpinned", "pinned")


async def _library_drain(url: str, n: int, workers: int, timeout: float) -> float:
    """Jobs per second of one Client draining the ``n`` available jobs."""
    pool = await make_pool(url, 10)
    try:
        client = make_client(pool, workers, maintenance=False)
        probe = FlushProbe(target=n)
        probe.attach(client)
        t0 = time.monotonic()
        await client.start()
        try:
            await asyncio.wait_for(probe.reached.wait(), timeout)
        finally:
            await client.stop()
        return probe.count / (probe.last - t0)
    finally:
        await pool.close()


async def _bare_drain(url: str, workers: int) -> float:
    run = await ceiling.drain(url, workers)
    return run.jobs_per_s


async def _dead(conn: asyncpg.Connection) -> int:
    # The statistics lag by up to a second; good enough for a column of the table.
    n = await conn.fetchval(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'river_job'"
    )
    return int(n or 0)


async def series(
    url: str,
    engine: str,
    pinned: bool,
    *,
    jobs: int,
    batches: int,
    workers: int,
    timeout: float,
    progress: Progress,
) -> list[dict[str, Any]]:
    """One mode: ``batches`` drains in a row, each after a VACUUM; their rates."""
    admin = await asyncpg.connect(url)
    pin: asyncpg.Connection | None = None
    out: list[dict[str, Any]] = []
    try:
        await reset_jobs(admin)
        await admin.execute("VACUUM river_job")
        if pinned:
            pin = await asyncpg.connect(url)
            await pin.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            await pin.fetchval("SELECT 1")  # the snapshot: the horizon stops here
        for b in range(1, batches + 1):
            progress.step(f"{engine} {'pinned' if pinned else 'unpinned'} batch {b}/{batches}")
            await load_jobs(admin, jobs)
            await admin.execute("VACUUM river_job")
            await checkpoint(admin)
            if engine == "library":
                rate = await _library_drain(url, jobs, workers, timeout)
            else:
                rate = await _bare_drain(url, workers)
            out.append({"batch": b, "jobs_per_s": rate, "dead_tuples_after": await _dead(admin)})
            progress.advance()
    finally:
        if pin is not None:
            await pin.execute("ROLLBACK")
            await pin.close()
        await admin.close()
    return out


async def _main(args: argparse.Namespace, loop: str) -> None:
    results = Results(
        "horizon",
        {"jobs": args.jobs, "batches": args.batches, "workers": args.workers},
        loop,
    )
    progress = Progress("horizon", len(ENGINES) * len(MODES) * args.batches)
    async with temp_database() as url:
        results.server = await server_info(url)
        data: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for engine in ENGINES:
            data[engine] = {}
            for mode in MODES:
                data[engine][mode] = await series(
                    url,
                    engine,
                    mode == "pinned",
                    jobs=args.jobs,
                    batches=args.batches,
                    workers=args.workers,
                    timeout=args.timeout,
                    progress=progress,
                )
    progress.finish()
    rows = []
    for engine in ENGINES:
        base = median(r["jobs_per_s"] for r in data[engine]["unpinned"])
        results.medians[f"{engine}_unpinned"] = base
        pinned = data[engine]["pinned"]
        for r in pinned:
            r["ratio_to_unpinned"] = r["jobs_per_s"] / base
        results.medians[f"{engine}_pinned_min_ratio"] = min(r["ratio_to_unpinned"] for r in pinned)
        results.medians[f"{engine}_pinned_last_ratio"] = pinned[-1]["ratio_to_unpinned"]
        results.medians[f"{engine}_pinned_last_over_first"] = (
            pinned[-1]["jobs_per_s"] / pinned[0]["jobs_per_s"]
        )
        for u, p in zip(data[engine]["unpinned"], pinned, strict=True):
            rows.append(
                [
                    engine,
                    p["batch"],
                    fmt_int(u["jobs_per_s"]),
                    fmt_int(p["jobs_per_s"]),
                    fmt_ratio(p["ratio_to_unpinned"]),
                    fmt_int(p["dead_tuples_after"]),
                ]
            )
    results.extra["series"] = data
    print_table(
        f"Pinned vacuum horizon: {args.batches} batches of {args.jobs:,} jobs, "
        f"{args.workers} workers, VACUUM between batches",
        ["engine", "batch", "unpinned jobs/s", "pinned jobs/s", "pinned / unpinned", "dead after"],
        rows,
    )
    print(
        "\nthe target of the claim redesign: every pinned batch >= 0.80 of unpinned; "
        + ", ".join(f"{e}: lowest {results.medians[f'{e}_pinned_min_ratio']:.2f}" for e in ENGINES)
    )
    if not args.no_json:
        print(f"results: {results.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per batch")
    p.add_argument("--batches", type=int, default=5, help="batches per mode")
    p.add_argument("--workers", type=int, default=100, help="max_workers of the drain")
    add_common_args(p, runs=1)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
