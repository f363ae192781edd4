"""The ceiling: the library's own claim / complete / insert SQL driven by bare asyncpg.

No Client, no producer, no executor: one connection claims batches sized to free
slots, W long-lived no-op worker coroutines take the rows, one connection writes
completions in batches (every 5 ms or 1,000 ids, one ``job_complete_many`` per
flush). The queries are read from ``pyriver_async._driver.queries.Queries``, so
they are byte-for-byte the statements the library sends. What this loop reaches is
the practical limit of this database on this machine; every library figure is
reported as a fraction of it, measured in the same invocation.

Measures: drain of N pre-inserted jobs at each worker count; single inserts (own
transaction, and one job per explicit transaction); the unnest insert of 1,000; a
bare COPY of 100,000 rows; insert→start latency with LISTEN/NOTIFY on an idle loop.

    python -m benchmarks.ceiling [--jobs 20000] [--workers 10,100,1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from pyriver_async import JobArgs
from pyriver_async._driver import COPY_COLUMNS as _COPY_COLUMNS
from pyriver_async._driver.asyncpg import AsyncpgExecutor
from pyriver_async._driver.queries import Queries

if __package__ in (None, ""):  # `python benchmarks/ceiling.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    CpuMeter,
    LatencyArgs,
    NoopArgs,
    Progress,
    Results,
    add_common_args,
    bench_sql,
    checkpoint,
    fmt_int,
    fmt_ms,
    int_list,
    latency_summary,
    load_jobs,
    median,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    temp_database,
)

INSERT_CHANNEL = "public.river_insert"
NOOP_KIND = "bench_noop"


# -- the bare engine -------------------------------------------------------------------


class BareEngine:
    """Claim loop + W no-op workers + batched completer on two plain connections."""

    def __init__(
        self,
        claim_conn: asyncpg.Connection,
        done_conn: asyncpg.Connection,
        sql: Queries,
        *,
        workers: int,
        queue: str = "default",
        client_id: str = "ceiling",
        flush_interval: float = 0.005,
        batch: int = 1000,
        drain: bool = True,
        on_start: Callable[[asyncpg.Record, float], None] | None = None,
        on_flush: Callable[[int, float], None] | None = None,
    ) -> None:
        self._claim_conn = claim_conn
        self._done_conn = done_conn
        self._claim = sql.job_claim
        self._complete = sql.job_complete_many
        self.workers = workers
        self.queue = queue
        self.client_id = client_id
        self.flush_interval = flush_interval
        self.batch = batch
        self.drain = drain  # stop claiming when a claim comes back empty
        self.on_start = on_start
        self.on_flush = on_flush
        self._q: asyncio.Queue[asyncpg.Record] = asyncio.Queue()
        self._ids: list[int] = []
        self._attempts: list[int] = []
        self._attempted_at: list[Any] = []
        self.in_flight = 0
        self._wake = asyncio.Event()  # a notification, a freed slot, or stop
        self._flush_wake = asyncio.Event()
        self._backlog = drain
        self._notified = False
        self._stopping = False
        self._claiming_done = False
        self.claims = 0
        self.flushes = 0
        self.completed = 0
        self.t_first_claim = math.nan
        self.t_last_flush = math.nan

    def notify(self) -> None:
        self._notified = True
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        completer = asyncio.create_task(self._completer())
        try:
            await self._claim_loop()
            self._claiming_done = True
            self._flush_wake.set()
            await completer
        finally:
            for t in tasks:
                t.cancel()
            completer.cancel()
            await asyncio.gather(*tasks, completer, return_exceptions=True)

    async def _claim_loop(self) -> None:
        while not self._stopping:
            free = self.workers - self.in_flight
            if free <= 0 or not (self._backlog or self._notified):
                self._wake.clear()
                await self._wake.wait()
                continue
            self._notified = False
            rows = await self._claim_conn.fetch(
                self._claim.sql,
                *self._claim.bind(
                    queue=self.queue, limit=free, client_id=self.client_id, kinds=None
                ),
            )
            if self.claims == 0:
                self.t_first_claim = time.monotonic()
            self.claims += 1
            self.in_flight += len(rows)
            for r in rows:
                self._q.put_nowait(r)
            if self.drain and not rows:
                return
            self._backlog = self.drain or len(rows) == free

    async def _worker(self) -> None:
        q, ids, attempts, claimed_at = self._q, self._ids, self._attempts, self._attempted_at
        while True:
            rec = await q.get()
            if self.on_start is not None:
                self.on_start(rec, time.monotonic())
            # the no-op job: nothing to do
            ids.append(rec[0])
            attempts.append(rec[6])
            claimed_at.append(rec[10])
            self.in_flight -= 1
            self._flush_wake.set()
            self._wake.set()

    async def _completer(self) -> None:
        while True:
            if not self._ids:
                if self._claiming_done and self.in_flight == 0:
                    return
                self._flush_wake.clear()
                await self._flush_wake.wait()
                continue
            if len(self._ids) < self.batch and not (self._claiming_done and self.in_flight == 0):
                await asyncio.sleep(self.flush_interval)
            ids, atts = self._ids[: self.batch], self._attempts[: self.batch]
            ats = self._attempted_at[: self.batch]
            del self._ids[: self.batch], self._attempts[: self.batch]
            del self._attempted_at[: self.batch]
            await self._done_conn.execute(
                self._complete.sql, *self._complete.bind(id=ids, attempt=atts, attempted_at=ats)
            )
            self.flushes += 1
            self.completed += len(ids)
            self.t_last_flush = time.monotonic()
            if self.on_flush is not None:
                self.on_flush(self.completed, self.t_last_flush)


@dataclass
class DrainRun:
    jobs: int
    seconds: float
    claims: int
    flushes: int

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else math.nan


async def drain(
    url: str,
    workers: int,
    *,
    flush_interval: float = 0.005,
    meter: CpuMeter | None = None,
) -> DrainRun:
    """Drain every available job of queue 'default'; timed from the first claim's send
    to the commit of the last completion."""
    sql = bench_sql()
    claim_conn = await asyncpg.connect(url)
    done_conn = await asyncpg.connect(url)
    try:
        eng = BareEngine(claim_conn, done_conn, sql, workers=workers, flush_interval=flush_interval)
        if meter is not None:
            await meter.find_backends(claim_conn)
            meter.start()
        t0 = time.monotonic()
        await eng.run()
        if meter is not None:
            meter.stop()
        return DrainRun(eng.completed, eng.t_last_flush - t0, eng.claims, eng.flushes)
    finally:
        await claim_conn.close()
        await done_conn.close()


# -- inserts ---------------------------------------------------------------------------


class _Captured(Exception):
    pass


class _Recorder:
    """Stands in for a connection: records the first statement the library sends
    (its SQL and bind values) and stops the library there."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def _record(self, sql: str, *args: Any, timeout: float | None = None) -> Any:
        self.calls.append((sql, args))
        raise _Captured

    fetchrow = fetch = execute = fetchval = _record

    def transaction(self) -> Any:
        raise _Captured


async def captured_insert(
    args: JobArgs | None = None, *, many: int = 0
) -> tuple[str, tuple[Any, ...]]:
    """The statement and bind values ``client.insert(args)`` sends (``many``: those of
    ``insert_many`` of that many no-op jobs in one statement). Captured from the
    library before any clock starts, so the ceiling replays exactly what it sends."""
    from pyriver_async._insert import insert_many, insert_one

    rec = _Recorder()
    ex = AsyncpgExecutor(Queries.for_schema("public"), conn=rec)
    try:
        if many:
            await insert_many(ex, [NoopArgs() for _ in range(many)], copy_threshold=10**9)
        else:
            await insert_one(ex, args if args is not None else NoopArgs(), None)
    except _Captured:
        pass
    if len(rec.calls) != 1:
        raise RuntimeError(
            "could not capture the library's insert statement; benchmarks/ceiling.py needs updating"
        )
    return rec.calls[0]


# The library's COPY columns less the id, which a bare COPY leaves to the sequence.
COPY_COLUMNS = _COPY_COLUMNS[1:]


async def insert_single(
    conn: asyncpg.Connection, count: int, stmt: tuple[str, tuple[Any, ...]] | None = None
) -> float:
    """``job_insert`` one job per statement (autocommit); jobs/s. ``stmt``: another
    statement and its bind values to send instead (round2's bare insert)."""
    sql, p = stmt if stmt is not None else await captured_insert()
    t0 = time.perf_counter()
    for _ in range(count):
        await conn.fetchrow(sql, *p)
    return count / (time.perf_counter() - t0)


async def insert_tx(conn: asyncpg.Connection, count: int) -> float:
    """BEGIN; ``job_insert``; COMMIT — one job per explicit transaction; jobs/s."""
    sql, p = await captured_insert()
    t0 = time.perf_counter()
    for _ in range(count):
        async with conn.transaction():
            await conn.fetchrow(sql, *p)
    return count / (time.perf_counter() - t0)


async def insert_unnest(
    conn: asyncpg.Connection,
    calls: int,
    size: int = 1000,
    stmt: tuple[str, tuple[Any, ...]] | None = None,
) -> float:
    """``job_insert_many`` of ``size`` rows per statement; jobs/s. ``stmt``: another
    statement of ``size`` rows and its bind values to send instead."""
    sql, p = stmt if stmt is not None else await captured_insert(many=size)
    t0 = time.perf_counter()
    for _ in range(calls):
        await conn.fetch(sql, *p)
    return calls * size / (time.perf_counter() - t0)


def copy_records(n: int) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC)
    row: tuple[Any, ...] = ("{}", NOOP_KIND, 25, "{}", 1, "default", now, now, "available", [])
    return [row] * n


async def insert_copy(conn: asyncpg.Connection, n: int) -> float:
    """A bare COPY of ``n`` rows (built before the clock starts) in one transaction,
    plus the one NOTIFY of the queue; jobs/s."""
    records = copy_records(n)
    notify = bench_sql().job_notify_queues
    t0 = time.perf_counter()
    async with conn.transaction():
        await conn.copy_records_to_table("river_job", columns=COPY_COLUMNS, records=records)
        await conn.execute(notify.sql, *notify.bind(queues=["default"]))
    return n / (time.perf_counter() - t0)


# -- latency ---------------------------------------------------------------------------


@dataclass
class LatencyRun:
    samples: list[float]  # seconds, insert send → worker start
    missing: int

    def summary(self) -> dict[str, float]:
        return latency_summary(self.samples)


class Pacer:
    """Fires ``fn(i)`` as a task every ``interval`` seconds (absolute schedule, no drift)."""

    def __init__(self, n: int, interval: float, fn: Callable[[int], Any]) -> None:
        self.n = n
        self.interval = interval
        self.fn = fn
        self.tasks: set[asyncio.Task[Any]] = set()
        self.late = 0  # fired more than one interval behind schedule

    async def run(self) -> None:
        t0 = time.monotonic() + 0.01
        for i in range(self.n):
            target = t0 + i * self.interval
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > self.interval:
                self.late += 1
            t = asyncio.create_task(self.fn(i))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)
        if self.tasks:
            await asyncio.gather(*self.tasks)


async def latency(
    url: str,
    n: int,
    interval: float,
    *,
    workers: int = 100,
    inserters: int = 4,
    flush_interval: float = 0.005,
    make_insert: Callable[[int], tuple[str, tuple[Any, ...]]] | None = None,
) -> LatencyRun:
    """Insert one job every ``interval`` s with ``job_insert`` (its NOTIFY included) on
    a few connections; a LISTEN connection wakes the bare claim loop; the worker's
    start time minus the insert's send time is the latency. ``make_insert(i)``: another
    statement (and bind values) inserting job ``i`` with args ``{"n": i}``, its NOTIFY
    included, to send instead."""
    sql = bench_sql()
    if make_insert is not None:
        inserts = [make_insert(i) for i in range(n)]
    else:
        inserts = [await captured_insert(LatencyArgs(n=i)) for i in range(n)]
    listen_conn = await asyncpg.connect(url)
    claim_conn = await asyncpg.connect(url)
    done_conn = await asyncpg.connect(url)
    free_conns: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
    for _ in range(inserters):
        free_conns.put_nowait(await asyncpg.connect(url))
    sent: dict[int, float] = {}
    samples: list[float] = []
    all_started = asyncio.Event()
    decode = msgspec.json.Decoder(dict[str, int]).decode

    def on_start(rec: asyncpg.Record, now: float) -> None:
        i = decode(rec[1])["n"]
        samples.append(now - sent[i])
        if len(samples) >= n:
            all_started.set()

    eng = BareEngine(
        claim_conn,
        done_conn,
        sql,
        workers=workers,
        drain=False,
        flush_interval=flush_interval,
        on_start=on_start,
    )

    def on_notify(_c: Any, _pid: int, _channel: str, _payload: object) -> None:
        eng.notify()

    await listen_conn.add_listener(INSERT_CHANNEL, on_notify)

    async def insert(i: int) -> None:
        conn = await free_conns.get()
        try:
            insert_sql, params = inserts[i]
            sent[i] = time.monotonic()
            await conn.fetchrow(insert_sql, *params)
        finally:
            free_conns.put_nowait(conn)

    runner = asyncio.create_task(eng.run())
    try:
        await asyncio.sleep(0.2)  # idle loop, listener settled
        await Pacer(n, interval, insert).run()
        try:
            await asyncio.wait_for(all_started.wait(), 10.0)
        except TimeoutError:
            pass
        eng.stop()
        await runner
    finally:
        if not runner.done():
            runner.cancel()
        await listen_conn.close()
        await claim_conn.close()
        await done_conn.close()
        while not free_conns.empty():
            await free_conns.get_nowait().close()
    return LatencyRun(samples, n - len(samples))


# -- command line ----------------------------------------------------------------------


async def _main(args: argparse.Namespace, loop: str) -> None:
    worker_counts = int_list(args.workers)
    res = Results("ceiling", vars(args), loop)
    steps = args.runs * (len(worker_counts) + 5)
    prog = Progress("ceiling", steps)
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        try:
            for w in worker_counts:
                key = f"drain_w{w}"
                for r in range(args.runs):
                    prog.step(f"drain {args.jobs:,} jobs, {w} workers, run {r + 1}")
                    await reset_jobs(admin)
                    await load_jobs(admin, args.jobs)
                    await checkpoint(admin)
                    d = await drain(url, w)
                    if d.jobs != args.jobs:
                        res.notes.append(f"{key}: drained {d.jobs} of {args.jobs}")
                    res.add_run(key, round(d.jobs_per_s, 1))
                    prog.advance()
                res.medians[key] = median(res.runs[key])
            for r in range(args.runs):
                await reset_jobs(admin)
                prog.step(f"single insert x{args.single}, run {r + 1}")
                res.add_run("insert_single", round(await insert_single(admin, args.single), 1))
                prog.advance()
                prog.step(f"insert in a transaction x{args.single}, run {r + 1}")
                res.add_run("insert_tx", round(await insert_tx(admin, args.single), 1))
                prog.advance()
                prog.step(f"unnest insert of 1000 x{args.batch_calls}, run {r + 1}")
                res.add_run(
                    "insert_many_1000", round(await insert_unnest(admin, args.batch_calls), 1)
                )
                prog.advance()
                await reset_jobs(admin)
                await checkpoint(admin)
                prog.step(f"COPY of {args.copy_rows:,}, run {r + 1}")
                res.add_run("copy", round(await insert_copy(admin, args.copy_rows), 1))
                prog.advance()
                await reset_jobs(admin)
                prog.step(
                    f"latency, {args.latency_jobs} jobs every {args.interval_ms} ms, run {r + 1}"
                )
                lat = await latency(url, args.latency_jobs, args.interval_ms / 1000.0)
                res.add_run("latency", lat.summary())
                prog.advance()
        finally:
            await admin.close()
    prog.finish()
    for k in ("insert_single", "insert_tx", "insert_many_1000", "copy"):
        res.medians[k] = median(res.runs[k])
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        res.medians[f"latency_{q}"] = median(r[q] for r in res.runs["latency"])
    rows: list[list[object]] = [
        [f"drain, {w} workers (jobs/s)", fmt_int(res.medians[f"drain_w{w}"])] for w in worker_counts
    ]
    rows += [
        ["single insert (jobs/s)", fmt_int(res.medians["insert_single"])],
        ["insert in a transaction (jobs/s)", fmt_int(res.medians["insert_tx"])],
        ["unnest insert of 1000 (jobs/s)", fmt_int(res.medians["insert_many_1000"])],
        [f"COPY of {args.copy_rows:,} (jobs/s)", fmt_int(res.medians["copy"])],
        ["insert→start p50 (ms)", fmt_ms(res.medians["latency_p50_ms"])],
        ["insert→start p95 (ms)", fmt_ms(res.medians["latency_p95_ms"])],
        ["insert→start p99 (ms)", fmt_ms(res.medians["latency_p99_ms"])],
    ]
    print_table(
        f"Ceiling: bare asyncpg, the library's SQL ({loop}; medians of {args.runs})",
        ["figure", "median"],
        rows,
    )
    if not args.no_json:
        print(f"\nresults: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20000)")
    p.add_argument("--workers", default="10,100,1000", help="worker counts (default 10,100,1000)")
    p.add_argument("--single", type=int, default=2000, help="single inserts per run")
    p.add_argument("--batch-calls", type=int, default=20, help="calls of the 1000-row insert")
    p.add_argument("--copy-rows", type=int, default=100_000, help="rows of the COPY")
    p.add_argument("--latency-jobs", type=int, default=1000, help="latency samples per run")
    p.add_argument("--interval-ms", type=float, default=5.0, help="insert interval (ms)")
    add_common_args(p)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
