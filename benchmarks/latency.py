"""Insert→start latency at a steady arrival rate, idle and busy, against the ceiling.

One job is inserted every ``--interval-ms`` (default 5 ms, absolute schedule) with
``client.insert`` from its own coroutine, which notes the monotonic time just before
the call; the worker notes the time on its first line; the difference is the
latency (same process, same clock). It includes the insert's own round trip and
commit, the NOTIFY, the wake-up, the claim and the hand-off to a worker.

- idle: the client has nothing else to do.
- busy: the same client is meanwhile draining a backlog of no-op jobs in another
  queue ("bulk", same max_workers) — only samples taken while that backlog lasted count.
- ceiling: ceiling.latency (bare LISTEN + claim loop, same SQL) on an idle loop.

    python -m benchmarks.latency [--jobs 1000] [--interval-ms 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/latency.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling
from benchmarks._common import (
    LatencyArgs,
    NoopArgs,
    Progress,
    Results,
    add_common_args,
    checkpoint,
    fmt_ms,
    fmt_ratio,
    latency_summary,
    load_jobs,
    make_pool,
    median,
    paired_ratio,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    temp_database,
)
from benchmarks.throughput import make_client, readme_pool
from pyriver_async import Job, JobContext, QueueConfig, Workers


@dataclass
class LibraryLatency:
    samples: list[float]
    missing: int
    busy_samples: int
    backlog_done: int
    backlog_rate: float  # bulk jobs/s while sampling
    late_inserts: int

    def summary(self) -> dict[str, float]:
        return latency_summary(self.samples)


async def library_latency(
    url: str,
    n: int,
    interval: float,
    *,
    workers: int = 100,
    backlog: int = 0,
    pool_size: int = 10,
    database: str = "bench",
) -> LibraryLatency:
    """``backlog`` > 0: that many no-op jobs wait in queue 'bulk' (already loaded) and
    the client drains them while the latency jobs arrive in queue 'default'.
    ``database``: what the client is given, as in ``throughput.library_drain``
    (``bench``, ``readme`` or ``dsn``)."""
    sent: dict[int, float] = {}
    samples: list[float] = []
    busy_flags: list[bool] = []
    all_started = asyncio.Event()
    bulk = {"done": 0}
    work = Workers()

    @work.register(LatencyArgs)
    async def measure(ctx: JobContext, job: Job[LatencyArgs]) -> None:
        now = time.monotonic()
        samples.append(now - sent[job.args.n])
        busy_flags.append(bulk["done"] < backlog)
        if len(samples) >= n:
            all_started.set()

    @work.register(NoopArgs)
    async def noop(ctx: JobContext, job: Job[NoopArgs]) -> None:
        bulk["done"] += 1

    queues = {"default": QueueConfig(max_workers=workers)}
    if backlog:
        queues["bulk"] = QueueConfig(max_workers=workers)
    pool: asyncpg.Pool | None = None
    if database == "bench":
        pool = await make_pool(url, pool_size)
    elif database == "readme":
        pool = await readme_pool(url)
    elif database != "dsn":
        raise ValueError(f"database: bench, readme or dsn, not {database!r}")
    try:
        client = make_client(pool if pool is not None else url, workers, queues=queues, work=work)

        async def insert(i: int) -> None:
            args = LatencyArgs(n=i)
            sent[i] = time.monotonic()
            await client.insert(args)

        async with client:
            if backlog:
                while bulk["done"] == 0:  # draining has begun
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.1)
            else:
                await asyncio.sleep(0.3)  # idle: let start-up work settle
            b0, t0 = bulk["done"], time.monotonic()
            pacer = ceiling.Pacer(n, interval, insert)
            await pacer.run()
            b1, t1 = bulk["done"], time.monotonic()
            try:
                await asyncio.wait_for(all_started.wait(), 10.0)
            except TimeoutError:
                pass
    finally:
        if pool is not None:
            await pool.close()
    kept = [s for s, busy in zip(samples, busy_flags, strict=True) if busy or not backlog]
    return LibraryLatency(
        kept,
        n - len(samples),
        sum(busy_flags),
        bulk["done"],
        (b1 - b0) / (t1 - t0) if backlog else math.nan,
        pacer.late,
    )


async def _main(args: argparse.Namespace, loop: str) -> None:
    interval = args.interval_ms / 1000.0
    backlog = args.backlog or max(20_000, int(args.jobs * interval * 25_000))
    res = Results("latency", vars(args) | {"backlog_effective": backlog}, loop)
    prog = Progress("latency", args.runs * 3)
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        try:
            for r in range(args.runs):
                await reset_jobs(admin)
                await checkpoint(admin)
                prog.step(f"ceiling, {args.jobs} jobs every {args.interval_ms} ms, run {r + 1}")
                c = await ceiling.latency(url, args.jobs, interval, workers=args.workers)
                res.add_run("ceiling", c.summary() | {"missing": c.missing})
                prog.advance()
                await reset_jobs(admin)
                await checkpoint(admin)
                prog.step(f"library idle, run {r + 1}")
                idle = await library_latency(
                    url, args.jobs, interval, workers=args.workers, pool_size=args.pool_size
                )
                res.add_run(
                    "idle",
                    idle.summary() | {"missing": idle.missing, "late_inserts": idle.late_inserts},
                )
                prog.advance()
                await reset_jobs(admin)
                prog.step(f"library busy (loading {backlog:,} backlog jobs), run {r + 1}")
                await load_jobs(admin, backlog, queue="bulk")
                await checkpoint(admin)
                prog.step(f"library busy, run {r + 1}")
                busy = await library_latency(
                    url,
                    args.jobs,
                    interval,
                    workers=args.workers,
                    backlog=backlog,
                    pool_size=args.pool_size,
                )
                res.add_run(
                    "busy",
                    busy.summary()
                    | {
                        "missing": busy.missing,
                        "busy_samples": busy.busy_samples,
                        "backlog_jobs_per_s": round(busy.backlog_rate, 1),
                        "late_inserts": busy.late_inserts,
                    },
                )
                if busy.busy_samples < 0.9 * args.jobs:
                    res.notes.append(
                        f"busy run {r + 1}: the backlog ran out; {busy.busy_samples} of "
                        f"{args.jobs} samples were taken while busy (raise --backlog)"
                    )
                prog.advance()
        finally:
            await admin.close()
    prog.finish()
    rows: list[list[object]] = []
    for key in ("ceiling", "idle", "busy"):
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            res.medians[f"{key}_{q}"] = median(x[q] for x in res.runs[key])
    for key, label in (
        ("ceiling", "ceiling, idle"),
        ("idle", "pyriver_async, idle"),
        ("busy", "pyriver_async, busy"),
    ):
        row: list[object] = [label]
        row += [fmt_ms(res.medians[f"{key}_{q}"]) for q in ("p50_ms", "p95_ms", "p99_ms")]
        for q in ("p50_ms", "p99_ms"):
            rt = paired_ratio([x[q] for x in res.runs[key]], [x[q] for x in res.runs["ceiling"]])
            res.medians[f"ratio_{key}_{q}"] = rt
            row.append(fmt_ratio(rt, "x"))
        rows.append(row)
    res.medians["busy_backlog_jobs_per_s"] = median(
        x["backlog_jobs_per_s"] for x in res.runs["busy"]
    )
    print_table(
        f"Insert→start latency, one insert every {args.interval_ms} ms, {args.jobs} jobs "
        f"({loop}; ms, medians of {args.runs} runs)",
        ["", "p50", "p95", "p99", "p50 / ceiling*", "p99 / ceiling*"],
        rows,
    )
    print("* median of the per-run ratios (each run measures ceiling, idle and busy in turn)")
    print(
        f"busy: the client drained the backlog at "
        f"{res.medians['busy_backlog_jobs_per_s']:,.0f} jobs/s meanwhile"
    )
    for note in res.notes:
        print(f"note: {note}")
    if not args.no_json:
        print(f"\nresults: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=1000, help="latency samples per run")
    p.add_argument("--interval-ms", type=float, default=5.0, help="insert interval (ms)")
    p.add_argument("--workers", type=int, default=100, help="max_workers of each queue")
    p.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="no-op jobs for the busy case (default: enough to last the run)",
    )
    p.add_argument("--pool-size", type=int, default=10, help="connections of the client")
    add_common_args(p)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
