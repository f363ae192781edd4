"""Drain throughput: N pre-inserted no-op jobs worked by a real Client, against the ceiling.

For each worker count W (``QueueConfig(max_workers=W)``) and each run: empty the
table, insert N available jobs server-side, ANALYZE, CHECKPOINT, then time from
``client.start()`` to the commit of the last completion. The ceiling (bare asyncpg,
same SQL, see ceiling.py) drains the same N jobs at the same W in the same
invocation, runs interleaved, and the table shows library / ceiling.

``--processes 1,2,4`` adds the same drain with several OS processes sharing the
queue (each a Client with ``--process-workers`` workers, or a bare ceiling loop), timed
from the moment all of them are told to go to the last completion any of them wrote,
with lock waits in pg_stat_activity sampled meanwhile.

    python -m benchmarks.throughput [--jobs 20000] [--workers 10,100,1000] [--runs 3]
                                    [--processes 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/throughput.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling
from benchmarks._common import (
    CpuMeter,
    FlushProbe,
    NoopArgs,
    Progress,
    Results,
    StatementCounter,
    add_common_args,
    bench_sql,
    checkpoint,
    fmt_int,
    fmt_ratio,
    int_list,
    load_jobs,
    maintenance_available,
    make_pool,
    median,
    paired_ratio,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    stdin_lines,
    temp_database,
)
from pyriver_async import Client, Job, JobContext, QueueConfig, Workers

REPO_ROOT = Path(__file__).resolve().parent.parent


def noop_workers() -> Workers:
    workers = Workers()

    @workers.register(NoopArgs)
    async def noop(ctx: JobContext, job: Job[NoopArgs]) -> None:
        return None

    return workers


def make_client(
    pool: asyncpg.Pool | str,
    workers: int,
    *,
    queues: dict[str, QueueConfig] | None = None,
    work: Workers | None = None,
    maintenance: bool | None = None,
    **kw: Any,
) -> Client:
    """A Client as a user would configure it: defaults everywhere but the queue size."""
    return Client(
        pool,
        workers=work or noop_workers(),
        queues=queues or {"default": QueueConfig(max_workers=workers)},
        maintenance=maintenance_available() if maintenance is None else maintenance,
        **kw,
    )


@dataclass
class LibraryDrain:
    jobs: int
    seconds: float
    completed_in_db: int
    rows_in_db: int = -1  # every river_job row left (0 when completed jobs are deleted)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else math.nan


async def readme_pool(url: str) -> asyncpg.Pool:
    """The pool README.md's example makes: ``asyncpg.create_pool(url, min_size=1,
    max_size=10)``, asyncpg's defaults otherwise (its reset query on every release)."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
    assert pool is not None
    return pool


async def library_drain(
    url: str,
    n: int,
    workers: int,
    *,
    pool_size: int = 10,
    timeout: float = 300.0,
    meter: CpuMeter | None = None,
    database: str = "bench",
    queues: dict[str, QueueConfig] | None = None,
    statements: StatementCounter | None = None,
) -> LibraryDrain:
    """Drain the ``n`` available jobs of queue 'default' with one Client.

    ``database`` says what the client is given. ``bench`` (the default): a pool made
    beforehand like the one ``Client(dsn)`` makes but with all connections open, so
    the time covers ``client.start()`` through the last completion commit. ``readme``:
    the pool of README.md's example (:func:`readme_pool`: one connection open, the rest
    opened on demand, asyncpg's default reset on release). ``dsn``: ``Client(url)``,
    which makes its own pool inside ``client.start()`` (inside the timed section).
    ``statements``: counts what the client sends from its start to its stop.
    """
    pool: asyncpg.Pool | None = None
    if database == "bench":
        pool = await make_pool(url, pool_size)
    elif database == "readme":
        pool = await readme_pool(url)
    elif database != "dsn":
        raise ValueError(f"database: bench, readme or dsn, not {database!r}")
    try:
        client = make_client(pool if pool is not None else url, workers, queues=queues)
        probe = FlushProbe(target=n)
        probe.attach(client)
        if meter is not None:
            if pool is None:
                raise ValueError("a CPU meter needs the pool open before the start")
            async with pool.acquire() as conn0:
                await meter.find_backends(conn0)
            meter.start()
        with statements if statements is not None else contextlib.nullcontext():
            t0 = time.monotonic()
            await client.start()
            try:
                await asyncio.wait_for(probe.reached.wait(), timeout)
                if meter is not None:
                    meter.stop()
            finally:
                await client.stop()
        seconds = probe.last - t0
        conn = await asyncpg.connect(url)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE state = 'completed') AS done, count(*) AS rows "
                "FROM river_job"
            )
        finally:
            await conn.close()
        assert row is not None
        return LibraryDrain(probe.count, seconds, int(row["done"]), int(row["rows"]))
    finally:
        if pool is not None:
            await pool.close()


# -- several processes -----------------------------------------------------------------


async def _child(args: argparse.Namespace) -> None:
    """One process of a multi-process drain. Speaks lines on stdin/stdout:
    READY → (GO) → ``P <count>`` progress → (STOP) → ``DONE <count> <t_last>``."""
    stdin = await stdin_lines()

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def read_line() -> str:
        return (await stdin.readline()).decode().strip()

    count = 0
    last = math.nan
    workers = int(args.workers)
    if args.child == "library":
        pool = await make_pool(args.url, args.pool_size)
        client = make_client(pool, workers)
        probe = FlushProbe()
        probe.attach(client)
        say("READY")
        if await read_line() != "GO":
            return
        await client.start()
        stop = asyncio.create_task(read_line())
        reported = -1
        while not stop.done():
            if probe.count != reported:
                reported = probe.count
                say(f"P {reported}")
            await asyncio.wait([stop], timeout=0.02)
        await client.stop()
        await pool.close()
        count, last = probe.count, probe.last
    else:
        claim_conn = await asyncpg.connect(args.url)
        done_conn = await asyncpg.connect(args.url)
        state = {"count": 0}

        def on_flush(c: int, _t: float) -> None:
            state["count"] = c

        eng = ceiling.BareEngine(
            claim_conn,
            done_conn,
            bench_sql(),
            workers=workers,
            client_id=f"ceiling-{os.getpid()}",
            on_flush=on_flush,
        )
        say("READY")
        if await read_line() != "GO":
            return
        runner = asyncio.create_task(eng.run())
        stop = asyncio.create_task(read_line())
        reported = -1
        while not stop.done():
            if state["count"] != reported:
                reported = state["count"]
                say(f"P {reported}")
            await asyncio.wait([stop], timeout=0.02)
        eng.stop()
        await runner
        await claim_conn.close()
        await done_conn.close()
        count, last = eng.completed, eng.t_last_flush
    say(f"DONE {count} {last!r}")


@dataclass
class MultiDrain:
    processes: int
    jobs: int
    seconds: float
    per_process: list[int] = field(default_factory=list)
    lock_waiters_max: int = 0
    lock_waiters_mean: float = 0.0
    active_mean: float = 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else math.nan


async def multi_drain(
    url: str,
    n: int,
    processes: int,
    workers: int,
    *,
    engine: str,
    pool_size: int,
    no_uvloop: bool,
    timeout: float = 300.0,
) -> MultiDrain:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        "--child",
        engine,
        "--url",
        url,
        "--workers",
        str(workers),
        "--pool-size",
        str(pool_size),
    ]
    if no_uvloop:
        cmd.append("--no-uvloop")
    procs = [
        await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        for _ in range(processes)
    ]
    admin = await asyncpg.connect(url)
    try:

        async def line(p: asyncio.subprocess.Process) -> str:
            assert p.stdout is not None
            raw = await p.stdout.readline()
            if not raw:
                raise RuntimeError(f"benchmark child {p.pid} ended early (exit {p.returncode})")
            return raw.decode().strip()

        for p in procs:
            got = await asyncio.wait_for(line(p), 60)
            if got != "READY":
                raise RuntimeError(f"benchmark child said {got!r}")
        counts = [0] * processes
        done = asyncio.Event()
        finals: list[tuple[int, float]] = [(0, math.nan)] * processes

        async def follow(i: int, p: asyncio.subprocess.Process) -> None:
            while True:
                msg = await line(p)
                if msg.startswith("P "):
                    counts[i] = int(msg[2:])
                    if sum(counts) >= n:
                        done.set()
                elif msg.startswith("DONE "):
                    _, c, t = msg.split()
                    finals[i] = (int(c), float(t))
                    return

        lock_samples: list[int] = []
        active_samples: list[int] = []

        async def sample_locks() -> None:
            while True:
                row = await admin.fetchrow(
                    "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock') AS locks, "
                    "count(*) FILTER (WHERE state = 'active') AS active "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
                assert row is not None
                lock_samples.append(int(row["locks"]))
                active_samples.append(int(row["active"]))
                await asyncio.sleep(0.05)

        t0 = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"GO\n")
        for p in procs:
            assert p.stdin is not None
            await p.stdin.drain()
        followers = [asyncio.create_task(follow(i, p)) for i, p in enumerate(procs)]
        sampler = asyncio.create_task(sample_locks())
        try:
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except TimeoutError:
                states = await admin.fetch(
                    "SELECT state::text, count(*) AS n FROM river_job GROUP BY 1 ORDER BY 1"
                )
                raise RuntimeError(
                    f"{engine} x{processes}: not drained after {timeout:.0f}s; children "
                    f"reported {counts}; rows by state: "
                    f"{ {r['state']: r['n'] for r in states} }"
                ) from None
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"STOP\n")
                with contextlib.suppress(ConnectionError):
                    await p.stdin.drain()
        await asyncio.wait_for(asyncio.gather(*followers), 60)
        for p in procs:
            await asyncio.wait_for(p.wait(), 30)
        t1 = max(t for c, t in finals if c > 0)
        return MultiDrain(
            processes,
            sum(c for c, _ in finals),
            t1 - t0,
            [c for c, _ in finals],
            max(lock_samples, default=0),
            sum(lock_samples) / len(lock_samples) if lock_samples else 0.0,
            sum(active_samples) / len(active_samples) if active_samples else 0.0,
        )
    finally:
        await admin.close()
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


# -- command line ----------------------------------------------------------------------


async def prepare(admin: asyncpg.Connection, n: int) -> None:
    await reset_jobs(admin)
    await load_jobs(admin, n)
    await checkpoint(admin)


async def _main(args: argparse.Namespace, loop: str) -> None:
    sizes = int_list(args.jobs)
    worker_counts = int_list(args.workers)
    process_counts = int_list(args.processes) if args.processes else []
    res = Results("throughput", vars(args), loop)
    res.settings["maintenance"] = maintenance_available()
    steps = args.runs * (
        2 * len(sizes) * len(worker_counts)
        + len(process_counts) * (1 if args.no_process_ceiling else 2)
    )
    prog = Progress("throughput", steps)
    rows: list[list[object]] = []
    proc_rows: list[list[object]] = []
    cpu_rows: list[list[object]] = []
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        try:
            for n in sizes:
                for w in worker_counts:
                    ck, lk = f"ceiling_n{n}_w{w}", f"library_n{n}_w{w}"
                    for r in range(args.runs):
                        prog.step(f"ceiling: {n:,} jobs, {w} workers, run {r + 1}")
                        await prepare(admin, n)
                        meter = CpuMeter()
                        c = await ceiling.drain(url, w, meter=meter)
                        res.add_run(f"cpu_{ck}", meter.result)
                        res.add_run(ck, round(c.jobs_per_s, 1))
                        prog.advance()
                        prog.step(f"library: {n:,} jobs, {w} workers, run {r + 1}")
                        await prepare(admin, n)
                        meter = CpuMeter()
                        d = await library_drain(
                            url, n, w, pool_size=args.pool_size, timeout=args.timeout, meter=meter
                        )
                        res.add_run(f"cpu_{lk}", meter.result)
                        if d.completed_in_db != n:
                            res.notes.append(
                                f"{lk} run {r + 1}: {d.completed_in_db} of {n} "
                                "completed in the database"
                            )
                        res.add_run(lk, round(d.jobs_per_s, 1))
                        prog.advance()
                    res.medians[ck] = median(res.runs[ck])
                    res.medians[lk] = median(res.runs[lk])
                    res.medians[f"ratio_n{n}_w{w}"] = paired_ratio(res.runs[lk], res.runs[ck])
                    rows.append(
                        [
                            f"{n:,}",
                            w,
                            fmt_int(res.medians[lk]),
                            fmt_int(res.medians[ck]),
                            fmt_ratio(res.medians[f"ratio_n{n}_w{w}"]),
                        ]
                    )
                    cpu_rows.append(
                        [f"{n:,}", w]
                        + [
                            f"{median(x[f] for x in res.runs[f'cpu_{k}']) * 100:.0f}%"
                            for k in (lk, ck)
                            for f in (
                                "python_process_core_share",
                                "postgres_core_share",
                                "others_core_share",
                            )
                        ]
                    )
            n = sizes[0]
            pw = args.process_workers
            for pc in process_counts:
                engines = ["library"] if args.no_process_ceiling else ["library", "ceiling"]
                for r in range(args.runs):
                    for engine in engines:
                        prog.step(
                            f"{engine}: {pc} processes x {pw} workers, {n:,} jobs, run {r + 1}"
                        )
                        await prepare(admin, n)
                        m = await multi_drain(
                            url,
                            n,
                            pc,
                            pw,
                            engine=engine,
                            pool_size=args.pool_size,
                            no_uvloop=args.no_uvloop,
                            timeout=max(60.0, n / 500),
                        )
                        if m.jobs != n:
                            res.notes.append(f"{engine} x{pc} run {r + 1}: {m.jobs} of {n} jobs")
                        res.add_run(
                            f"{engine}_p{pc}",
                            {
                                "jobs_per_s": round(m.jobs_per_s, 1),
                                "per_process": m.per_process,
                                "lock_waiters_max": m.lock_waiters_max,
                                "lock_waiters_mean": round(m.lock_waiters_mean, 2),
                                "active_backends_mean": round(m.active_mean, 2),
                            },
                        )
                        prog.advance()
                lib = median(x["jobs_per_s"] for x in res.runs[f"library_p{pc}"])
                ceil = (
                    median(x["jobs_per_s"] for x in res.runs[f"ceiling_p{pc}"])
                    if not args.no_process_ceiling
                    else math.nan
                )
                locks = max(x["lock_waiters_max"] for x in res.runs[f"library_p{pc}"])
                res.medians[f"library_p{pc}"] = lib
                res.medians[f"ceiling_p{pc}"] = ceil
                pr = (
                    paired_ratio(
                        [x["jobs_per_s"] for x in res.runs[f"library_p{pc}"]],
                        [x["jobs_per_s"] for x in res.runs[f"ceiling_p{pc}"]],
                    )
                    if not args.no_process_ceiling
                    else math.nan
                )
                proc_rows.append([pc, fmt_int(lib), fmt_int(ceil), fmt_ratio(pr), locks])
            res.extra["process_curve"] = {
                str(pc): {
                    "library": res.medians[f"library_p{pc}"],
                    "ceiling": res.medians[f"ceiling_p{pc}"],
                }
                for pc in process_counts
            }
        finally:
            await admin.close()
    prog.finish()
    print_table(
        f"Drain of pre-inserted no-op jobs, one process ({loop}; jobs/s, medians of {args.runs})",
        ["jobs", "workers", "pyriver_async", "ceiling", "of ceiling*"],
        rows,
    )
    print("* median of the per-run ratios (ceiling and library runs alternate)")
    print_table(
        "CPU during those drains (medians, share of one core): the Python process, this "
        "database's PostgreSQL backends, and everything else on the machine",
        [
            "jobs",
            "workers",
            "lib: Python",
            "lib: PG",
            "lib: others",
            "ceil: Python",
            "ceil: PG",
            "ceil: others",
        ],
        cpu_rows,
    )
    if proc_rows:
        print_table(
            f"Drain of {sizes[0]:,} jobs shared by several processes ({args.process_workers} "
            f"workers each; jobs/s, medians of {args.runs})",
            ["processes", "pyriver_async", "ceiling", "of ceiling*", "max lock waiters"],
            proc_rows,
        )
    for note in res.notes:
        print(f"note: {note}")
    if not args.no_json:
        print(f"\nresults: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", default="20000", help="jobs per drain, or a list (default 20000)")
    p.add_argument("--workers", default="10,100,1000", help="max_workers values")
    p.add_argument("--processes", default="", help="process counts, e.g. 1,2,4 (default: none)")
    p.add_argument("--process-workers", type=int, default=100, help="workers per process")
    p.add_argument(
        "--no-process-ceiling",
        action="store_true",
        help="skip the bare loop in the multi-process drains",
    )
    p.add_argument("--pool-size", type=int, default=10, help="connections per client")
    p.add_argument("--child", choices=["library", "ceiling"], help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    add_common_args(p)
    args = p.parse_args(argv)
    if args.child:
        run_main(lambda _loop: _child(args), no_uvloop=args.no_uvloop, timeout=args.timeout)
        return
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
