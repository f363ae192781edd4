"""pyriver_async beside its Python peers, same machine, same server, same invocation.

Peers (installed by the ``bench`` extra): pgqueuer (asyncpg driver; one
QueueManager with ``batch_size`` 50 and ``max_concurrent_tasks`` 100, the fastest
setting measured for no-op jobs — see ``--pgq-batch``) and procrastinate (async
psycopg; one worker with ``concurrency`` 100). Each system gets its own throwaway
database with its own schema installed; runs of the systems alternate.

Workloads, for each system:
- drain: N pre-inserted no-op jobs (inserted with the system's own bulk API), 100
  concurrent workers, timed until the last job is recorded as done.
- single insert: one job per call, its own transaction; jobs/s.
- batch insert: calls of 1,000 jobs through the system's bulk API; jobs/s.
  (The systems take turns in small blocks for both insert figures, so the background
  load of a shared machine falls on all of them alike.)
- latency: one insert every 5 ms, insert→start p50/p95/p99 on an idle worker.

The drain is the issue's drain workload, 20,000 jobs (throughput.py's smallest N);
until 2026-11-25 it was 10,000, where each system's one-off start-up (its first
statements on fresh backends, ~30 ms here) weighed several percent of the window.
``--full`` runs 5 rounds: the per-run drain ratio moves by ±10 % on this machine.

    python -m benchmarks.compare [--jobs 20000] [--procrastinate-jobs 3000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import math
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/compare.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling
from benchmarks._common import (
    Progress,
    Results,
    add_common_args,
    checkpoint,
    fmt_int,
    fmt_ms,
    latency_summary,
    load_jobs,
    median,
    paired_ratio,
    print_table,
    reset_jobs,
    run_main,
    server_info,
)
from benchmarks.insert import lib_many, lib_single
from benchmarks.latency import library_latency
from benchmarks.throughput import library_drain
from pyriver_async import Client
from pyriver_async._localdb import create_database, drop_database

WORKERS = 100


def _peer(module: str) -> Any:
    """Import a peer library (installed by the ``bench`` extra), typed loosely."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SystemExit(f"{module} is not installed: pip install -e '.[bench]' ({exc})") from None


class System:
    name = ""
    url: str
    admin: asyncpg.Connection

    async def open(self, url: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def reset(self) -> None:
        raise NotImplementedError

    async def load(self, n: int) -> None:
        raise NotImplementedError

    async def drain(self, n: int) -> float:
        raise NotImplementedError

    async def insert_single(self, count: int) -> float:
        raise NotImplementedError

    async def insert_batch(self, calls: int, size: int) -> float:
        raise NotImplementedError

    async def latency(self, n: int, interval: float) -> list[float]:
        raise NotImplementedError


class PyRiver(System):
    name = "pyriver_async"

    async def open(self, url: str) -> None:
        self.url = url
        self.admin = await asyncpg.connect(url)
        self.client = Client(url)

    async def close(self) -> None:
        await self.client.close()
        await self.admin.close()

    async def reset(self) -> None:
        await reset_jobs(self.admin)
        await checkpoint(self.admin)

    async def load(self, n: int) -> None:
        await load_jobs(self.admin, n)

    async def drain(self, n: int) -> float:
        return (await library_drain(self.url, n, WORKERS)).jobs_per_s

    async def insert_single(self, count: int) -> float:
        return await lib_single(self.client, count)

    async def insert_batch(self, calls: int, size: int) -> float:
        return await lib_many(self.client, calls, size)

    async def latency(self, n: int, interval: float) -> list[float]:
        return (await library_latency(self.url, n, interval, workers=WORKERS)).samples


class PgQueuerSystem(System):
    name = "pgqueuer"

    def __init__(self, batch: int) -> None:
        self.batch = batch

    async def open(self, url: str) -> None:
        pgq = _peer("pgqueuer")
        self.url = url
        self.admin = await asyncpg.connect(url)
        self.insert_conn = await asyncpg.connect(url)
        self.queries = pgq.Queries(pgq.AsyncpgDriver(self.insert_conn))
        await self.queries.install()

    async def close(self) -> None:
        await self.insert_conn.close()
        await self.admin.close()

    async def reset(self) -> None:
        await self.admin.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
        await checkpoint(self.admin)

    async def load(self, n: int) -> None:
        for start in range(0, n, 10_000):
            k = min(10_000, n - start)
            await self.queries.enqueue(["noop"] * k, [None] * k, [0] * k)
        await self.admin.execute("ANALYZE pgqueuer")

    def _manager(self, conn: asyncpg.Connection) -> Any:
        pgq = _peer("pgqueuer")
        return pgq.QueueManager(pgq.Queries(pgq.AsyncpgDriver(conn)))

    async def drain(self, n: int) -> float:
        drain_mode = _peer("pgqueuer.types").QueueExecutionMode.drain
        conn = await asyncpg.connect(self.url)
        try:
            qm = self._manager(conn)
            done = [0]

            @qm.entrypoint("noop")  # type: ignore[untyped-decorator]
            async def noop(job: Any) -> None:
                done[0] += 1

            t0 = time.monotonic()
            await qm.run(batch_size=self.batch, mode=drain_mode, max_concurrent_tasks=WORKERS)
            seconds = time.monotonic() - t0
        finally:
            await conn.close()
        return done[0] / seconds

    async def insert_single(self, count: int) -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            await self.queries.enqueue("noop", None, 0)
        return count / (time.perf_counter() - t0)

    async def insert_batch(self, calls: int, size: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            await self.queries.enqueue(["noop"] * size, [None] * size, [0] * size)
        return calls * size / (time.perf_counter() - t0)

    async def latency(self, n: int, interval: float) -> list[float]:
        pgq = _peer("pgqueuer")
        sent: dict[int, float] = {}
        samples: list[float] = []
        all_started = asyncio.Event()
        conn = await asyncpg.connect(self.url)
        pool = await asyncpg.create_pool(self.url, min_size=4, max_size=4)
        assert pool is not None
        try:
            qm = self._manager(conn)

            @qm.entrypoint("lat")  # type: ignore[untyped-decorator]
            async def lat(job: Any) -> None:
                now = time.monotonic()
                assert job.payload is not None
                samples.append(now - sent[int(job.payload)])
                if len(samples) >= n:
                    all_started.set()

            inserter = pgq.Queries(pgq.AsyncpgPoolDriver(pool))

            async def insert(i: int) -> None:
                payload = str(i).encode()
                sent[i] = time.monotonic()
                await inserter.enqueue("lat", payload, 0)

            runner = asyncio.create_task(
                qm.run(
                    batch_size=self.batch,
                    max_concurrent_tasks=WORKERS,
                    dequeue_timeout=timedelta(seconds=30),
                )
            )
            await asyncio.sleep(0.5)
            await ceiling.Pacer(n, interval, insert).run()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_started.wait(), 10.0)
            qm.shutdown.set()
            await asyncio.wait_for(runner, 30)
        finally:
            await pool.close()
            await conn.close()
        return samples


class ProcrastinateSystem(System):
    name = "procrastinate"

    async def open(self, url: str) -> None:
        procrastinate = _peer("procrastinate")
        logging.getLogger("procrastinate").setLevel(logging.ERROR)
        self.url = url
        self.admin = await asyncpg.connect(url)
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=url, min_size=2, max_size=10)
        )
        self.done = 0
        self.sent: dict[int, float] = {}
        self.samples: list[float] = []
        self.expected = 0
        self.all_started = asyncio.Event()

        @self.app.task(name="noop")  # type: ignore[untyped-decorator]
        async def noop() -> None:
            self.done += 1

        @self.app.task(name="lat")  # type: ignore[untyped-decorator]
        async def lat(n: int) -> None:
            now = time.monotonic()
            self.samples.append(now - self.sent[n])
            if len(self.samples) >= self.expected:
                self.all_started.set()

        self.noop: Any = noop
        self.lat: Any = lat
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await self.app.close_async()
        await self.admin.close()

    async def reset(self) -> None:
        await self.admin.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers, "
            "procrastinate_workers CASCADE"
        )
        await checkpoint(self.admin)

    async def load(self, n: int) -> None:
        for start in range(0, n, 5_000):
            k = min(5_000, n - start)
            await self.noop.batch_defer_async(*[{} for _ in range(k)])
        await self.admin.execute("ANALYZE procrastinate_jobs")

    async def drain(self, n: int) -> float:
        self.done = 0
        t0 = time.monotonic()
        await self.app.run_worker_async(
            concurrency=WORKERS, wait=False, install_signal_handlers=False
        )
        return self.done / (time.monotonic() - t0)

    async def insert_single(self, count: int) -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            await self.noop.defer_async()
        return count / (time.perf_counter() - t0)

    async def insert_batch(self, calls: int, size: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            await self.noop.batch_defer_async(*[{} for _ in range(size)])
        return calls * size / (time.perf_counter() - t0)

    async def latency(self, n: int, interval: float) -> list[float]:
        self.sent.clear()
        self.samples = []
        self.expected = n
        self.all_started.clear()

        async def insert(i: int) -> None:
            self.sent[i] = time.monotonic()
            await self.lat.defer_async(n=i)

        runner = asyncio.create_task(
            self.app.run_worker_async(concurrency=WORKERS, wait=True, install_signal_handlers=False)
        )
        await asyncio.sleep(0.5)
        await ceiling.Pacer(n, interval, insert).run()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_started.wait(), 10.0)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 30)
        return list(self.samples)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


async def _main(args: argparse.Namespace, loop: str) -> None:
    interval = args.interval_ms / 1000.0
    systems: list[System] = [PyRiver(), PgQueuerSystem(args.pgq_batch), ProcrastinateSystem()]
    only = set(args.only.split(",")) if args.only else None
    systems = [s for s in systems if only is None or s.name in only]
    res = Results("compare", vars(args), loop)
    res.extra["peer_versions"] = {
        d: _version(d) for d in ("pgqueuer", "procrastinate", "psycopg", "psycopg-pool")
    }
    jobs = {
        s.name: (args.procrastinate_jobs if s.name == "procrastinate" else args.jobs)
        for s in systems
    }
    prog = Progress("compare", args.runs * len(systems) * 4)
    dbs: list[str] = []
    try:
        for s in systems:
            url, dbname = await create_database("pyriver_bench_cmp")
            dbs.append(dbname)
            if s.name == "pyriver_async":
                import pyriver_async

                await pyriver_async.migrate(url)
            await s.open(url)
            if not res.server:
                res.server = await server_info(url)
        blocks = args.blocks
        for r in range(args.runs):
            for s in systems:
                n = jobs[s.name]
                prog.step(f"{s.name}: drain {n:,} jobs, run {r + 1}")
                await s.reset()
                await s.load(n)
                await checkpoint(s.admin)
                res.add_run(f"{s.name}_drain", round(await s.drain(n), 1))
                prog.advance()
            # Inserts: the systems take turns in blocks, so the background load of a
            # shared machine falls on all of them alike.
            prog.step(f"{args.single} single inserts each, in {blocks} turns, run {r + 1}")
            for s in systems:
                await s.reset()
            secs = {s.name: 0.0 for s in systems}
            per = max(args.single // blocks, 1)
            for _ in range(blocks):
                for s in systems:
                    secs[s.name] += per / await s.insert_single(per)
            for s in systems:
                res.add_run(f"{s.name}_single", round(per * blocks / secs[s.name], 1))
                prog.advance()
            prog.step(f"{args.batch_calls} batches of 1000 each, in turns, run {r + 1}")
            for s in systems:
                await s.reset()
            secs = {s.name: 0.0 for s in systems}
            for _ in range(args.batch_calls):
                for s in systems:
                    secs[s.name] += 1000 / await s.insert_batch(1, 1000)
            for s in systems:
                res.add_run(f"{s.name}_batch", round(1000 * args.batch_calls / secs[s.name], 1))
                prog.advance()
            for s in systems:
                prog.step(f"{s.name}: latency, {args.latency_jobs} jobs, run {r + 1}")
                await s.reset()
                lat = await s.latency(args.latency_jobs, interval)
                summary = latency_summary(lat)
                summary["missing"] = args.latency_jobs - len(lat)
                res.add_run(f"{s.name}_latency", summary)
                prog.advance()
    finally:
        for s in systems:
            with contextlib.suppress(Exception):
                await s.close()
        for dbname in dbs:
            await asyncio.shield(drop_database(dbname))
    prog.finish()
    rows: list[list[object]] = []
    base = "pyriver_async"
    for s in systems:
        k = s.name
        m = {
            "drain": median(res.runs[f"{k}_drain"]),
            "single": median(res.runs[f"{k}_single"]),
            "batch": median(res.runs[f"{k}_batch"]),
            "p50": median(x["p50_ms"] for x in res.runs[f"{k}_latency"]),
            "p95": median(x["p95_ms"] for x in res.runs[f"{k}_latency"]),
            "p99": median(x["p99_ms"] for x in res.runs[f"{k}_latency"]),
        }
        for key, v in m.items():
            res.medians[f"{k}_{key}"] = v
        rows.append(
            [
                k,
                fmt_int(m["drain"]),
                fmt_int(m["single"]),
                fmt_int(m["batch"]),
                fmt_ms(m["p50"]),
                fmt_ms(m["p95"]),
                fmt_ms(m["p99"]),
            ]
        )
    ratio_rows: list[list[object]] = []
    if base in jobs:
        for s in systems:
            if s.name == base:
                continue
            k = s.name
            rr: list[object] = [f"{base} / {k}"]
            for key in ("drain", "single", "batch"):
                x = paired_ratio(res.runs[f"{base}_{key}"], res.runs[f"{k}_{key}"])
                res.medians[f"ratio_{k}_{key}"] = x
                rr.append("-" if math.isnan(x) else f"{x:.2f}x")
            for key in ("p50", "p99"):
                # latency: how many times lower ours is
                q = f"{key}_ms"
                x = paired_ratio(
                    [v[q] for v in res.runs[f"{k}_latency"]],
                    [v[q] for v in res.runs[f"{base}_latency"]],
                )
                res.medians[f"ratio_{k}_{key}_lower"] = x
                rr.append("-" if math.isnan(x) else f"{x:.2f}x lower")
            ratio_rows.append(rr)
    print_table(
        f"Peers, {WORKERS} workers, no-op jobs ({loop}; medians of {args.runs}; drains of "
        + ", ".join(f"{jobs[s.name]:,} ({s.name})" for s in systems)
        + ")",
        [
            "system",
            "drain jobs/s",
            "single insert/s",
            "batch insert/s (1000)",
            "p50 ms",
            "p95 ms",
            "p99 ms",
        ],
        rows,
    )
    if ratio_rows:
        print_table(
            "Ratios (medians of the per-run ratios)",
            ["", "drain", "single", "batch", "p50", "p99"],
            ratio_rows,
        )
    if not args.no_json:
        print(f"\nresults: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=20_000, help="drain size (default 20000)")
    p.add_argument(
        "--procrastinate-jobs",
        type=int,
        default=3_000,
        help="drain size for procrastinate, which is slow (default 3000)",
    )
    p.add_argument("--single", type=int, default=1000, help="single inserts per run")
    p.add_argument("--batch-calls", type=int, default=10, help="batch inserts of 1000 per run")
    p.add_argument("--latency-jobs", type=int, default=500, help="latency samples per run")
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--pgq-batch", type=int, default=50, help="pgqueuer batch_size (default 50)")
    p.add_argument("--blocks", type=int, default=5, help="turns of the single-insert figure")
    p.add_argument("--only", default="", help="comma list of systems to run")
    add_common_args(p)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
