"""``pyriver bench``: drain and latency benchmarks against the configured database.

It works in a schema of its own (by default a new ``pyriver_bench_<random>``, migrated
first and dropped at the end), so it never touches the application's jobs:

- drain: ``--jobs`` no-op jobs inserted (COPY), then worked by one client with
  ``--workers`` workers; jobs per second from ``start()`` to the last outcome written;
- latency: ``--latency-jobs`` jobs inserted one at a time every ``--interval-ms`` into
  an idle client; the time from just before ``insert`` to the job's first line
  (insert, commit, NOTIFY, wake-up, claim, hand-off), as percentiles.

With ``rich`` installed (``pip install 'pyriver-async[cli]'``) it shows a live progress
bar and a table; without, plain lines. ``--json`` prints the results for scripts.
The numbers are one run on whatever else the machine is doing: compare runs made
side by side, as ``benchmarks/`` in the repository does against a ceiling.
"""

from __future__ import annotations

__all__ = ["register"]

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

from pyriver_async import Client, InsertOpts, Job, JobArgs, JobContext, QueueConfig, Workers
from pyriver_async._driver.asyncpg.admin import open_executor
from pyriver_async._migrate import migrate

from ._common import CommandError, add_connection_options, connection, print_json, print_table, run


class BenchNoop(JobArgs, kind="pyriver_bench_noop"):
    pass


class BenchLatency(JobArgs, kind="pyriver_bench_latency"):
    seq: int


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="drain and latency benchmarks in a throwaway schema",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    p.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (default 20,000)")
    p.add_argument("--workers", type=int, default=100, help="max_workers (default 100)")
    p.add_argument("--latency-jobs", type=int, default=300, help="latency samples (default 300)")
    p.add_argument("--interval-ms", type=float, default=5.0, help="between inserts (default 5)")
    p.add_argument("--only", choices=["drain", "latency"], help="run one benchmark only")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_connection_options(p)
    p.set_defaults(handler=_bench)


class _Bar(Protocol):
    def advance(self, n: int = 1) -> None: ...


class _PlainBar:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self._shown = label, total, 0, -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        tenth = self.done * 10 // max(self.total, 1)
        if tenth != self._shown:
            self._shown = tenth
            print(f"{self.label}: {self.done}/{self.total}", file=sys.stderr, flush=True)


class _RichBar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextlib.contextmanager
def _bar(label: str, total: int, quiet: bool) -> Iterator[_Bar]:
    try:
        from rich.progress import Progress
    except ImportError:
        yield _PlainBar(label, total) if not quiet else _Quiet()
        return
    with Progress(transient=False, disable=quiet) as progress:
        yield _RichBar(progress, progress.add_task(label, total=total))


class _Quiet:
    def advance(self, n: int = 1) -> None:
        pass


@contextlib.asynccontextmanager
async def _schema(url: str, requested: str | None) -> AsyncIterator[str]:
    """The schema to bench in, migrated; dropped at the end when made here."""
    schema = requested or f"pyriver_bench_{uuid.uuid4().hex[:8]}"
    await migrate(url, schema=schema)
    if requested:
        probe = Client(url, schema=schema, pool_max_size=1)
        try:
            if (await probe.list(limit=1)).jobs:
                raise CommandError(f"schema {schema!r} has jobs: bench in an empty schema")
        finally:
            await probe.close()
    try:
        yield schema
    finally:
        if not requested:
            async with open_executor(url, schema) as ex:
                await ex.schema_drop()


async def _drain(url: str, schema: str, n: int, workers_n: int, quiet: bool) -> dict[str, Any]:
    workers = Workers()

    @workers.register(BenchNoop)
    async def noop(ctx: JobContext, job: Job[BenchNoop]) -> None:
        pass

    client = Client(
        url,
        schema=schema,
        workers=workers,
        queues={"bench_drain": QueueConfig(max_workers=workers_n)},
        pool_max_size=4,
    )
    opts = InsertOpts(queue="bench_drain")
    with _bar("inserting", n, quiet) as bar:
        for i in range(0, n, 5000):
            batch = [(BenchNoop(), opts) for _ in range(min(5000, n - i))]
            await client.insert_many(batch)
            bar.advance(len(batch))
    sub = client.subscribe(maxsize=n + 10)
    done = 0
    t0 = time.monotonic()
    with _bar("draining", n, quiet) as bar:
        await client.start()
        async for _ev in sub:
            done += 1
            bar.advance()
            if done >= n:
                break
    elapsed = time.monotonic() - t0
    await client.close()
    return {"jobs": n, "workers": workers_n, "seconds": elapsed, "jobs_per_s": n / elapsed}


async def _latency(url: str, schema: str, n: int, interval: float, quiet: bool) -> dict[str, Any]:
    sent: dict[int, float] = {}
    samples: list[float] = []
    all_done = asyncio.Event()
    workers = Workers()
    bar_ref: list[_Bar] = []

    @workers.register(BenchLatency)
    async def measure(ctx: JobContext, job: Job[BenchLatency]) -> None:
        samples.append(time.monotonic() - sent[job.args.seq])
        bar_ref[0].advance()
        if len(samples) >= n:
            all_done.set()

    client = Client(
        url,
        schema=schema,
        workers=workers,
        queues={"bench_latency": QueueConfig(max_workers=100)},
        pool_max_size=4,
    )
    opts = InsertOpts(queue="bench_latency")
    async with client:
        with _bar("latency", n, quiet) as bar:
            bar_ref.append(bar)
            start = time.monotonic()
            for i in range(n):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[i] = time.monotonic()
                await client.insert(BenchLatency(seq=i), opts)
            await asyncio.wait_for(all_done.wait(), 60)
    ms = sorted(s * 1000 for s in samples)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p / 100 * len(ms)))]

    return {
        "jobs": n,
        "interval_ms": interval * 1000,
        "p50_ms": statistics.median(ms),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": ms[-1],
    }


def _summary(results: dict[str, dict[str, Any]]) -> None:
    rows: list[list[str]] = []
    if "drain" in results:
        d = results["drain"]
        rows.append(
            [
                "drain",
                f"{d['jobs']:,} jobs, {d['workers']} workers",
                f"{d['jobs_per_s']:,.0f} jobs/s",
            ]
        )
    if "latency" in results:
        lat = results["latency"]
        rows.append(
            [
                "insert→start latency",
                f"{lat['jobs']} jobs, one every {lat['interval_ms']:g} ms",
                f"p50 {lat['p50_ms']:.2f} / p90 {lat['p90_ms']:.2f} / "
                f"p99 {lat['p99_ms']:.2f} / max {lat['max_ms']:.2f} ms",
            ]
        )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print_table(["BENCHMARK", "SETUP", "RESULT"], rows)
        return
    table = Table(title="pyriver bench")
    for h in ("benchmark", "setup", "result"):
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def _bench(args: argparse.Namespace) -> int:
    async def main() -> int:
        url, _ = connection(args)
        for name in ("jobs", "workers", "latency_jobs"):
            if getattr(args, name) < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be 1 or more", 2)
        if args.interval_ms < 0:
            raise CommandError("--interval-ms must not be negative", 2)
        results: dict[str, dict[str, Any]] = {}
        quiet = args.json
        async with _schema(url, getattr(args, "schema", None)) as schema:
            if args.only in (None, "drain"):
                results["drain"] = await _drain(url, schema, args.jobs, args.workers, quiet)
            if args.only in (None, "latency"):
                results["latency"] = await _latency(
                    url, schema, args.latency_jobs, args.interval_ms / 1000, quiet
                )
        if args.json:
            print_json(results)
        else:
            _summary(results)
        return 0

    return run(main)
