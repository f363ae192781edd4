"""Soak: many jobs through one long-running Client; memory and connections must stay flat.

A feeder (a separate bare connection) keeps a backlog of no-op jobs topped up with
server-side inserts plus one wake-up NOTIFY, so the client process holds nothing
but the client. Every ``--sample-interval`` seconds: RSS of this process, open
file descriptors, asyncio tasks, connections of this database in pg_stat_activity,
the pool's size, jobs completed and the rate over the interval. The curve goes to
the results file. Targets: RSS after all jobs within 10% of RSS after the first
100,000 (``--milestone``); connections constant. The table and index sizes and the
dead tuples left (autovacuum is off on the bench server) are reported at the end.

    python -m benchmarks.soak [--jobs 1000000] [--sample-interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/soak.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    FlushProbe,
    Progress,
    Results,
    add_common_args,
    analyze,
    checkpoint,
    make_pool,
    print_table,
    run_main,
    server_info,
    table_stats,
    temp_database,
)
from benchmarks.throughput import make_client


def rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


FEED_SQL = """
    INSERT INTO river_job (args, kind, max_attempts, metadata, priority, queue, scheduled_at,
        state)
    SELECT '{}'::jsonb, 'bench_noop', 25, '{}'::jsonb, 1, 'default', now(), 'available'
    FROM generate_series(1, $1::int)
"""


async def _main(args: argparse.Namespace, loop: str) -> None:
    total = args.jobs
    if args.milestone >= total:  # a short run: the first tenth is the reference
        args.milestone = max(total // 10, 1)
    res = Results("soak", vars(args), loop)
    prog = Progress("soak")
    curve: list[dict[str, Any]] = []
    milestones: dict[str, dict[str, Any]] = {}
    async with temp_database() as url:
        res.server = await server_info(url)
        feeder = await asyncpg.connect(url)
        watcher = await asyncpg.connect(url)
        pool = await make_pool(url, args.pool_size)
        try:
            first = min(total, args.backlog)
            await feeder.execute(FEED_SQL, first)
            await analyze(feeder)
            await checkpoint(feeder)
            fed = first
            client = make_client(pool, args.workers)
            probe = FlushProbe(target=total)
            probe.attach(client)
            notify = "SELECT pg_notify('public.river_insert', '{\"queue\":\"default\"}')"

            async def feed() -> None:
                nonlocal fed
                while fed < total:
                    if fed - probe.count < args.backlog // 2:
                        k = min(args.chunk, total - fed)
                        await feeder.execute(FEED_SQL, k)
                        await feeder.execute(notify)
                        fed += k
                    else:
                        await asyncio.sleep(0.05)

            async def sample(kind: str) -> dict[str, Any]:
                conns = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                )
                return {
                    "t_s": round(time.monotonic() - t0, 2),
                    "kind": kind,
                    "completed": probe.count,
                    "rss_mb": round(rss_mb(), 1),
                    "open_fds": open_fds(),
                    "asyncio_tasks": len(asyncio.all_tasks()),
                    # minus the feeder's and the watcher's connections
                    "db_connections": int(conns) - 2,
                    "pool_size": pool.get_size(),
                }

            t0 = time.monotonic()
            await client.start()
            feeder_task = asyncio.create_task(feed())
            next_sample = t0
            last_count, last_t = 0, t0
            try:
                while not probe.reached.is_set():
                    now = time.monotonic()
                    if now - t0 > args.timeout - 30:
                        res.notes.append("stopped early: time limit")
                        break
                    if now >= next_sample:
                        s = await sample("interval")
                        rate = (probe.count - last_count) / max(now - last_t, 1e-9)
                        s["jobs_per_s"] = round(rate)
                        last_count, last_t = probe.count, now
                        curve.append(s)
                        next_sample += args.sample_interval
                        prog.step(
                            f"{probe.count:,} of {total:,} jobs, RSS {s['rss_mb']} MB, "
                            f"{s['db_connections']} connections, {s['jobs_per_s']:,} jobs/s"
                        )
                    if "milestone" not in milestones and probe.count >= args.milestone:
                        milestones["milestone"] = await sample("milestone")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(probe.reached.wait(), 0.2)
                seconds = (probe.last - t0) if probe.reached.is_set() else time.monotonic() - t0
                milestones["end"] = await sample("end")
                curve.append(milestones["end"])
            finally:
                feeder_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder_task
                await client.stop()
            res.extra["after"] = await table_stats(watcher)
            res.extra["curve"] = curve
            res.extra["milestones"] = milestones
        finally:
            await pool.close()
            await feeder.close()
            await watcher.close()
    prog.finish()
    mid = milestones.get("milestone", {})
    end = milestones["end"]
    res.medians["jobs"] = probe.count
    res.medians["seconds"] = round(seconds, 1)
    res.medians["jobs_per_s"] = round(probe.count / seconds, 1) if seconds else math.nan
    res.medians["rss_mb_at_milestone"] = mid.get("rss_mb", math.nan)
    res.medians["rss_mb_at_end"] = end["rss_mb"]
    res.medians["rss_growth"] = (end["rss_mb"] / mid["rss_mb"] - 1.0) if mid else math.nan
    conns = sorted({c["db_connections"] for c in curve})
    res.medians["db_connections_seen"] = conns
    print_table(
        f"Soak: {probe.count:,} jobs through one client in {seconds:.0f}s "
        f"({res.medians['jobs_per_s']:,.0f} jobs/s; {loop})",
        ["t (s)", "completed", "jobs/s", "RSS MB", "fds", "tasks", "db conns", "pool"],
        [
            [
                c["t_s"],
                f"{c['completed']:,}",
                f"{c.get('jobs_per_s', ''):,}" if isinstance(c.get("jobs_per_s"), int) else "",
                c["rss_mb"],
                c["open_fds"],
                c["asyncio_tasks"],
                c["db_connections"],
                c["pool_size"],
            ]
            for c in curve
        ],
    )
    after = res.extra["after"]
    growth = res.medians["rss_growth"]
    print(
        f"\nRSS after {args.milestone:,} jobs: {mid.get('rss_mb', math.nan)} MB; after "
        f"{probe.count:,}: {end['rss_mb']} MB ({growth * 100:+.1f}%; target within ±10%)"
    )
    print(f"database connections seen: {conns} (target: constant)")
    print(
        f"river_job after the run: table {after.get('table_bytes', 0) / 2**20:.0f} MiB, "
        f"indexes {after.get('indexes_bytes', 0) / 2**20:.0f} MiB, "
        f"{after.get('rows', 0):,} rows, {after.get('n_dead_tup', 0):,} dead tuples"
    )
    for note in res.notes:
        print(f"note: {note}")
    if not args.no_json:
        print(f"results: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=1_000_000, help="jobs to work (default 1000000)")
    p.add_argument(
        "--milestone", type=int, default=100_000, help="RSS here is the reference (default 100000)"
    )
    p.add_argument("--sample-interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--backlog", type=int, default=50_000, help="jobs kept waiting")
    p.add_argument("--chunk", type=int, default=10_000, help="jobs per feeder insert")
    p.add_argument("--workers", type=int, default=100)
    p.add_argument("--pool-size", type=int, default=10)
    add_common_args(p, runs=1)
    p.set_defaults(timeout=1800.0)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
