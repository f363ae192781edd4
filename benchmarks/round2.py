"""Round two of the performance work (issue 23): pyriver_async on the path a user
takes, beside a bare-SQL reference loop, River's full schema, pgqueuer and awa-pg,
all in one invocation.

The workload is the issue's: drains of N (20,000) pre-inserted no-op jobs at 100
workers; single inserts (one job per call, its own transaction); batches of 1,000;
idle insert→start latency (one insert every 5 ms). Rows:

1. ``bare3`` — the reference: the bare loop of ceiling.py (one claim connection
   running the library's ``job_claim``, 100 no-op worker coroutines, one completion
   connection running ``job_complete_many`` every 5 ms or 1,000 ids) on a River-shaped
   table carrying River's three non-GIN indexes. The table is River's own
   (``pyriver_async.migrate`` on a database of its own: same columns, types,
   defaults, constraints), with four of its seven indexes dropped. The three kept
   are the ones a queue's own work reads: ``river_job_pkey`` (the claim's
   ``id = ANY(...)`` and every completion by id), ``river_job_prioritized_fetching_index``
   (the claim's ordered scan) and ``river_job_state_and_finalized_at_index`` (the
   cleaner's deletion of finalized jobs after their retention). Dropped: the two GIN
   indexes (``river_job_args_index``, ``river_job_metadata_index``: the UI's
   containment filters), ``river_job_kind`` (the UI's listing by kind) and
   ``river_job_unique_idx`` (unique jobs only; partial, so it holds no entry for
   these jobs, but it is also the insert's ``ON CONFLICT`` arbiter). Without the
   unique index the library's insert statement cannot run, so rows 1 and 2 insert
   with plain SQL of their own: ``INSERT ... RETURNING id`` with the queue's
   ``pg_notify`` in the same statement (single), ``INSERT ... SELECT FROM unnest``
   with one ``pg_notify`` (batch), on one held connection.
2. ``bare7`` — the same loop and the same SQL on River's full seven-index schema
   (today's ceiling; ceiling.py's own inserts replay the library's statement, see
   insert.py for that comparison).
3. ``user_pool`` — pyriver_async as README.md shows it: ``asyncpg.create_pool(url,
   min_size=1, max_size=10)`` (asyncpg's defaults otherwise: its reset query on every
   release), ``Client(pool, workers=..., queues={"default": QueueConfig(max_workers=100)})``,
   every other setting at its default. The subject of the issue's targets.
4. ``own_pool`` — the same with ``Client(dsn)``: the client makes its pool (inside
   ``client.start()``, so inside the timed drain).
5. ``ephemeral`` — row 3 with ephemeral jobs (deleted at completion instead of
   updated), found as a field ``ephemeral`` of ``QueueConfig`` (per queue) or of
   ``InsertOpts`` (per insert; the drain's jobs are then inserted with it). Drain
   only. Skipped, with a note, while the option does not exist.
6. ``pgqueuer`` — pgqueuer 1.6 driven by compare.py's driver code (asyncpg driver,
   ``batch_size`` 50, ``max_concurrent_tasks`` 100).
7. ``awa`` — awa-pg (Rust runtime, Python SDK) as its README and getting-started
   page show it: ``awa.migrate(url)``, ``AsyncClient(url)`` (its pool of 10),
   ``@client.task(Args, queue=...)``, ``await client.start([(queue, 100)])``,
   ``client.insert`` for single inserts and ``client.insert_many_copy`` (its bulk
   API) for batches and the drain's load. ``migrate`` leaves awa on its canonical
   storage engine (``awa.jobs_hot``), which is what a user following those pages
   runs; the queue-storage engine needs an explicit ``install_queue_storage``. A drain
   is timed from ``client.start()`` to the first poll of ``awa.jobs_hot`` that shows
   all N jobs completed (polled every 2 ms once every handler has returned, so the
   polls add no load while it drains; awa's completions are batched after the
   handler returns). Between runs awa's job tables are emptied with ``TRUNCATE``, as
   awa's own benchmark script does.

Each row gets its own throwaway database (dropped at the end, also on a timeout or
Ctrl-C). Per round the drains run one system after the other (the order rotates
by one system each round); single and batch inserts take turns in small blocks;
latency runs per system. Figures are medians over rounds; ratios are medians of
the per-round ratios to row 1 (each pair saw the same moment of a shared machine).

Statements per drain (rows 1-5): the bare loop counts its own claims and flushes;
for the library a client-side probe (``_common.StatementCounter``) counts what
asyncpg sends from ``client.start()`` to ``client.stop()``, by the library's query
name, plus asyncpg's pool reset queries. Reported per 20,000 jobs: claims,
completion statements, reset round trips, everything else, jobs per claim and jobs
per claim-or-completion statement (the issue's "58 jobs per statement").

    python -m benchmarks.round2 [--jobs 20000] [--runs 3] [--only bare3,user_pool]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/round2.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling
from benchmarks._common import (
    NoopArgs,
    Progress,
    Results,
    StatementCounter,
    add_common_args,
    bench_sql,
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
from benchmarks.compare import PgQueuerSystem, _peer
from benchmarks.insert import lib_many, lib_single
from benchmarks.latency import library_latency
from benchmarks.throughput import library_drain, readme_pool
from pyriver_async import Client, InsertOpts, QueueConfig
from pyriver_async import migrate as pyriver_migrate
from pyriver_async._localdb import create_database, drop_database

WORKERS = 100
PER = 20_000  # statement counts are given per this many jobs

# River's seven indexes on river_job, and the three the reference table keeps.
SEVEN_INDEXES = (
    "river_job_args_index",
    "river_job_kind",
    "river_job_metadata_index",
    "river_job_pkey",
    "river_job_prioritized_fetching_index",
    "river_job_state_and_finalized_at_index",
    "river_job_unique_idx",
)
THREE_INDEXES = (
    "river_job_pkey",
    "river_job_prioritized_fetching_index",
    "river_job_state_and_finalized_at_index",
)

# The bare rows' inserts: plain SQL on River's columns, the wake-up in the same
# statement (the library's statements need the unique index, which row 1 lacks).
BARE_INSERT = """
WITH j AS (
    INSERT INTO river_job (args, kind, max_attempts, priority, queue, scheduled_at, state)
    VALUES ($1::jsonb, $2::text, 25, 1, $3::text, now(), 'available')
    RETURNING id, queue
)
SELECT j.id, pg_notify($4::text, json_build_object('queue', j.queue)::text) FROM j
"""
BARE_INSERT_MANY = """
WITH j AS (
    INSERT INTO river_job (args, kind, max_attempts, priority, queue, scheduled_at, state)
    SELECT u.a, u.k, 25, 1, u.q, now(), 'available'
    FROM unnest($1::jsonb[], $2::text[], $3::text[]) AS u(a, k, q)
    RETURNING id, queue
),
n AS (
    SELECT count(pg_notify($4::text, json_build_object('queue', d.queue)::text)) AS n
    FROM (SELECT DISTINCT queue FROM j) AS d
)
SELECT j.id FROM j CROSS JOIN n
"""


def bare_insert(args: str = "{}", kind: str = "bench_noop") -> tuple[str, tuple[Any, ...]]:
    return BARE_INSERT, (args, kind, "default", bench_sql().insert_channel)


def bare_insert_many(size: int) -> tuple[str, tuple[Any, ...]]:
    return BARE_INSERT_MANY, (
        ["{}"] * size,
        ["bench_noop"] * size,
        ["default"] * size,
        bench_sql().insert_channel,
    )


def bare_latency_insert(i: int) -> tuple[str, tuple[Any, ...]]:
    return bare_insert(json.dumps({"n": i}), "bench_latency")


def ephemeral_option() -> str | None:
    """Where the library takes ephemeral jobs: ``queue`` (a ``QueueConfig`` field),
    ``insert`` (an ``InsertOpts`` field), or None while the option does not exist."""
    for cls, where in ((QueueConfig, "queue"), (InsertOpts, "insert")):
        names = (
            {f.name for f in dataclasses.fields(cls)}
            if dataclasses.is_dataclass(cls)
            else set(dir(cls))
        )
        if "ephemeral" in names:
            return where
    return None


def _missing(module: str, dist: str) -> str | None:
    """Why a peer's row is skipped when its package is absent (None when present)."""
    if importlib.util.find_spec(module) is None:
        return f"not measured: {dist} is not installed (pip install -e '.[bench]')"
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class DrainOut:
    jobs_per_s: float
    statements: dict[str, float] | None = None  # StatementCounter.summary()
    by_name: dict[str, int] | None = None  # raw counts, by query name
    problem: str | None = None  # the run is suspect: what the check found


class Row:
    """One system of the table. Figures it cannot give are left out of ``figures``."""

    key = ""
    label = ""
    number = 0  # its row in the table (1-7), kept when --only picks rows
    figures: tuple[str, ...] = ("drain", "single", "batch", "latency")
    skip: str | None = None  # why the whole row is not measured
    url = ""
    admin: asyncpg.Connection

    async def open(self, url: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def reset(self) -> None:
        raise NotImplementedError

    async def load(self, n: int) -> None:
        raise NotImplementedError

    async def drain(self, n: int) -> DrainOut:
        raise NotImplementedError

    async def insert_single(self, count: int) -> float:
        raise NotImplementedError

    async def insert_batch(self, size: int) -> float:
        raise NotImplementedError

    async def latency(self, n: int, interval: float) -> list[float]:
        raise NotImplementedError

    def notes(self) -> list[str]:
        return []


async def river_indexes(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'river_job' "
        "ORDER BY indexname"
    )
    return [str(r["indexname"]) for r in rows]


class BareRow(Row):
    """The bare loop (ceiling.BareEngine) on River's table with 3 or 7 indexes."""

    def __init__(self, indexes: int) -> None:
        self.indexes = indexes
        self.key = f"bare{indexes}"
        self.label = (
            "bare-SQL loop, 3 indexes" if indexes == 3 else "bare-SQL loop, River's 7 indexes"
        )

    async def open(self, url: str) -> None:
        self.url = url
        await pyriver_migrate(url)
        self.admin = await asyncpg.connect(url)
        self.conn = await asyncpg.connect(url)  # the inserting connection, held
        want = THREE_INDEXES if self.indexes == 3 else SEVEN_INDEXES
        for name in sorted(set(await river_indexes(self.admin)) - set(want)):
            await self.admin.execute(f'DROP INDEX "{name}"')
        have = tuple(await river_indexes(self.admin))
        if have != want:
            raise RuntimeError(f"{self.key}: river_job has indexes {have}, expected {want}")

    async def close(self) -> None:
        await self.conn.close()
        await self.admin.close()

    async def reset(self) -> None:
        await reset_jobs(self.admin)
        await checkpoint(self.admin)

    async def load(self, n: int) -> None:
        await load_jobs(self.admin, n)

    async def drain(self, n: int) -> DrainOut:
        d = await ceiling.drain(self.url, WORKERS)
        scale = PER / d.jobs if d.jobs else math.nan
        work = d.claims + d.flushes
        stats = {
            "claims": d.claims * scale,
            "completions": d.flushes * scale,
            "resets": 0.0,
            "others": 0.0,
            "total": work * scale,
            "jobs_per_claim": d.jobs / d.claims if d.claims else math.nan,
            "jobs_per_statement": d.jobs / work if work else math.nan,
        }
        problem = None if d.jobs == n else f"completed {d.jobs} of {n}"
        return DrainOut(d.jobs_per_s, stats, None, problem)

    async def insert_single(self, count: int) -> float:
        return await ceiling.insert_single(self.conn, count, stmt=bare_insert())

    async def insert_batch(self, size: int) -> float:
        return await ceiling.insert_unnest(self.conn, 1, size, stmt=bare_insert_many(size))

    async def latency(self, n: int, interval: float) -> list[float]:
        run = await ceiling.latency(
            self.url, n, interval, workers=WORKERS, make_insert=bare_latency_insert
        )
        return run.samples


class PyRiverRow(Row):
    """pyriver_async with the README's pool (``readme``) or ``Client(dsn)`` (``dsn``);
    ``ephemeral``: completed jobs deleted (drain only)."""

    def __init__(self, database: str, *, ephemeral: bool = False) -> None:
        self.database = database
        self.ephemeral = ephemeral
        self.where = ephemeral_option() if ephemeral else None
        if ephemeral:
            self.key, self.label = "ephemeral", "pyriver_async, user pool, ephemeral jobs"
            self.figures = ("drain",)
            if self.where is None:
                self.skip = (
                    "not measured: this pyriver_async has no ephemeral jobs yet "
                    "(no field `ephemeral` on QueueConfig or InsertOpts)"
                )
        elif database == "readme":
            self.key, self.label = "user_pool", "pyriver_async, user pool (README)"
        else:
            self.key, self.label = "own_pool", "pyriver_async, Client(dsn)"
        self.pool: asyncpg.Pool | None = None

    async def open(self, url: str) -> None:
        self.url = url
        await pyriver_migrate(url)
        self.admin = await asyncpg.connect(url)
        # The inserting side: an application's client (insert-only), made as the
        # README makes it, kept for the whole invocation and warmed up.
        if self.database == "readme":
            self.pool = await readme_pool(url)
            self.client = Client(self.pool)
        else:
            self.client = Client(url)
        if "single" in self.figures:
            await lib_single(self.client, 20)

    async def close(self) -> None:
        await self.client.close()
        if self.pool is not None:
            await self.pool.close()
        await self.admin.close()

    async def reset(self) -> None:
        await reset_jobs(self.admin)
        await checkpoint(self.admin)

    def _queues(self) -> dict[str, QueueConfig] | None:
        if self.where != "queue":
            return None
        cfg = cast(Any, dataclasses.replace)(QueueConfig(max_workers=WORKERS), ephemeral=True)
        return {"default": cfg}

    async def load(self, n: int) -> None:
        if self.where != "insert":
            await load_jobs(self.admin, n)
            return
        opts = cast(Any, dataclasses.replace)(InsertOpts(), ephemeral=True)
        for start in range(0, n, 5_000):
            k = min(5_000, n - start)
            await self.client.insert_many([(NoopArgs(), opts) for _ in range(k)])
        await self.admin.execute("ANALYZE river_job")

    async def drain(self, n: int) -> DrainOut:
        counter = StatementCounter()
        d = await library_drain(
            self.url,
            n,
            WORKERS,
            database=self.database,
            queues=self._queues(),
            statements=counter,
        )
        problem = None
        if d.jobs != n:
            problem = f"{d.jobs} outcomes written for {n} jobs"
        elif self.ephemeral and d.rows_in_db != 0:
            problem = f"{d.rows_in_db} rows left in river_job (ephemeral jobs are deleted)"
        elif not self.ephemeral and d.completed_in_db != n:
            problem = f"{d.completed_in_db} of {n} jobs completed in the database"
        return DrainOut(d.jobs_per_s, counter.summary(d.jobs, PER), dict(counter.counts), problem)

    async def insert_single(self, count: int) -> float:
        return await lib_single(self.client, count)

    async def insert_batch(self, size: int) -> float:
        return await lib_many(self.client, 1, size)

    async def latency(self, n: int, interval: float) -> list[float]:
        run = await library_latency(self.url, n, interval, workers=WORKERS, database=self.database)
        return run.samples

    def notes(self) -> list[str]:
        if self.ephemeral and self.where is not None:
            return [f"ephemeral: taken as the `ephemeral` field of the {self.where} options"]
        return []


class PgQueuerRow(Row):
    """pgqueuer through compare.py's driver code."""

    key, label = "pgqueuer", "pgqueuer"

    def __init__(self, batch: int) -> None:
        self.sys = PgQueuerSystem(batch)
        self.skip = _missing("pgqueuer", "pgqueuer")

    async def open(self, url: str) -> None:
        self.url = url
        await self.sys.open(url)
        self.admin = self.sys.admin

    async def close(self) -> None:
        await self.sys.close()

    async def reset(self) -> None:
        await self.sys.reset()

    async def load(self, n: int) -> None:
        await self.sys.load(n)

    async def drain(self, n: int) -> DrainOut:
        rate = await self.sys.drain(n)
        left = await self.admin.fetchval("SELECT count(*) FROM pgqueuer")
        return DrainOut(rate, problem=f"{left} jobs left in pgqueuer" if left else None)

    async def insert_single(self, count: int) -> float:
        return await self.sys.insert_single(count)

    async def insert_batch(self, size: int) -> float:
        return await self.sys.insert_batch(1, size)

    async def latency(self, n: int, interval: float) -> list[float]:
        return await self.sys.latency(n, interval)

    def notes(self) -> list[str]:
        return [
            f"pgqueuer {_version('pgqueuer')}: asyncpg driver, batch_size {self.sys.batch}, "
            f"max_concurrent_tasks {WORKERS} (compare.py's settings)"
        ]


@dataclass
class AwaNoop:
    """awa's no-op job (awa derives its kind from the class name)."""


@dataclass
class AwaLatency:
    """awa's latency job: its sequence number."""

    n: int


class AwaRow(Row):
    """awa-pg as its README shows it: AsyncClient, @client.task, start, insert."""

    key, label = "awa", "awa-pg"
    queue = "default"

    def __init__(self) -> None:
        self.engine = "?"
        self.bulk_api = "insert_many_copy"
        self.skip = _missing("awa", "awa-pg")

    async def open(self, url: str) -> None:
        self.awa = _peer("awa")
        self.url = url
        await self.awa.migrate(url)
        self.client: Any = self.awa.AsyncClient(url)  # the application's (inserts)
        status = json.loads(await self.client.storage_status())
        self.engine = str(status.get("active_engine"))
        if self.engine != "canonical":
            await self.client.close()
            raise RuntimeError(
                f"awa's active storage engine is {self.engine!r}: this harness reads "
                "completions from awa.jobs_hot, which only the canonical engine writes"
            )
        self.admin = await asyncpg.connect(url)
        await lib_awa_single(self.client, 20)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
        await self.admin.close()

    async def reset(self) -> None:
        await self.admin.execute("TRUNCATE awa.jobs_hot, awa.scheduled_jobs")
        await checkpoint(self.admin)

    async def load(self, n: int) -> None:
        for start in range(0, n, 5_000):
            k = min(5_000, n - start)
            await self.client.insert_many_copy([AwaNoop() for _ in range(k)], queue=self.queue)
        await self.admin.execute("ANALYZE awa.jobs_hot")

    async def _completed(self) -> int:
        n = await self.admin.fetchval(
            "SELECT count(*) FROM awa.jobs_hot WHERE queue = $1 AND state = 'completed'",
            self.queue,
        )
        return int(n)

    async def drain(self, n: int) -> DrainOut:
        worker: Any = self.awa.AsyncClient(self.url)
        done = [0]
        all_ran = asyncio.Event()

        @worker.task(AwaNoop, queue=self.queue)  # type: ignore[untyped-decorator]
        async def noop(job: Any) -> None:
            done[0] += 1
            if done[0] >= n:
                all_ran.set()

        try:
            t0 = time.monotonic()
            await worker.start([(self.queue, WORKERS)])
            await asyncio.wait_for(all_ran.wait(), 300)
            # Every handler has returned; awa writes completions in batches after
            # that: poll until the database shows all of them (the send time of the
            # first poll that sees them is the end, within one poll interval).
            deadline = time.monotonic() + 60
            while True:
                sent = time.monotonic()
                if await self._completed() >= n:
                    break
                if sent > deadline:
                    raise TimeoutError("awa: completions not written within 60 s")
                await asyncio.sleep(0.002)
            seconds = sent - t0
        finally:
            with contextlib.suppress(Exception):
                await worker.shutdown()
            with contextlib.suppress(Exception):
                await worker.close()
        problem = None if done[0] == n else f"{done[0]} handler calls for {n} jobs"
        return DrainOut(n / seconds, problem=problem)

    async def insert_single(self, count: int) -> float:
        return await lib_awa_single(self.client, count)

    async def insert_batch(self, size: int) -> float:
        jobs = [AwaNoop() for _ in range(size)]
        t0 = time.perf_counter()
        await self.client.insert_many_copy(jobs, queue=self.queue)
        return size / (time.perf_counter() - t0)

    async def latency(self, n: int, interval: float) -> list[float]:
        worker: Any = self.awa.AsyncClient(self.url)
        sent: dict[int, float] = {}
        samples: list[float] = []
        all_started = asyncio.Event()

        @worker.task(AwaLatency, queue="lat")  # type: ignore[untyped-decorator]
        async def lat(job: Any) -> None:
            now = time.monotonic()
            samples.append(now - sent[int(job.args.n)])
            if len(samples) >= n:
                all_started.set()

        async def insert(i: int) -> None:
            args = AwaLatency(n=i)
            sent[i] = time.monotonic()
            await self.client.insert(args, queue="lat")

        try:
            await worker.start([("lat", WORKERS)])
            await asyncio.sleep(0.5)  # idle: let its start-up settle
            await ceiling.Pacer(n, interval, insert).run()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_started.wait(), 10.0)
        finally:
            with contextlib.suppress(Exception):
                await worker.shutdown()
            with contextlib.suppress(Exception):
                await worker.close()
        return samples

    def notes(self) -> list[str]:
        return [
            f"awa-pg {_version('awa-pg')}: storage engine {self.engine!r} (what "
            "`awa.migrate` leaves), AsyncClient pool of 10 (its default), "
            f"batches through {self.bulk_api}, {WORKERS} workers, default poll interval"
        ]


async def lib_awa_single(client: Any, count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        await client.insert(AwaNoop(), queue=AwaRow.queue)
    return count / (time.perf_counter() - t0)


def make_rows(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = [
        BareRow(3),
        BareRow(7),
        PyRiverRow("readme"),
        PyRiverRow("dsn"),
        PyRiverRow("readme", ephemeral=True),
        PgQueuerRow(args.pgq_batch),
        AwaRow(),
    ]
    for i, row in enumerate(rows, 1):
        row.number = i
    if args.only:
        wanted = {k for k in args.only.split(",") if k}
        unknown = wanted - {r.key for r in rows}
        if unknown:
            raise SystemExit(f"--only: unknown row(s) {', '.join(sorted(unknown))}")
        rows = [r for r in rows if r.key in wanted]
    return rows


# -- the rounds ------------------------------------------------------------------------


class Failures:
    """What went wrong per row and figure: the row's figure is then left out."""

    def __init__(self, res: Results) -> None:
        self.res = res
        self.failed: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def guard(self, row: Row, figure: str) -> AsyncIterator[None]:
        """Run the block; an error is noted (and printed) instead of raised."""
        try:
            yield
        except Exception as exc:
            text = f"{row.key} {figure}: {type(exc).__name__}: {exc}"
            self.res.notes.append(text)
            print(f"\n!! {text}", file=sys.stderr)
            if figure == "open":
                row.skip = f"could not be measured: {type(exc).__name__}: {exc}"


def _rotate(rows: Sequence[Row], r: int) -> list[Row]:
    k = r % len(rows) if rows else 0
    return list(rows[k:]) + list(rows[:k])


async def _main(args: argparse.Namespace, loop: str) -> None:
    interval = args.interval_ms / 1000.0
    n = args.jobs
    rows = make_rows(args)
    res = Results("round2", vars(args), loop)
    res.extra["indexes"] = {"bare3": list(THREE_INDEXES), "bare7": list(SEVEN_INDEXES)}
    res.extra["peer_versions"] = {d: _version(d) for d in ("pgqueuer", "awa-pg")}
    fail = Failures(res)
    dbs: list[str] = []
    opened: list[Row] = []
    try:
        for row in rows:
            if row.skip:
                continue
            url, dbname = await create_database("pyriver_bench_r2")
            dbs.append(dbname)
            async with fail.guard(row, "open"):
                await row.open(url)
                opened.append(row)
            if not res.server:
                res.server = await server_info(url)
        live = [r for r in rows if r in opened]
        steps = args.runs * sum(len(r.figures) for r in live)
        prog = Progress("round2", steps)
        for r in range(args.runs):
            for row in _rotate([x for x in live if "drain" in x.figures], r):
                prog.step(f"{row.key}: drain {n:,} jobs, round {r + 1}")
                async with fail.guard(row, f"drain, round {r + 1}"):
                    await row.reset()
                    await row.load(n)
                    await checkpoint(row.admin)
                    out = await row.drain(n)
                    if out.problem:
                        res.notes.append(f"{row.key} drain, round {r + 1}: {out.problem}")
                    res.add_run(f"{row.key}_drain", round(out.jobs_per_s, 1))
                    if out.statements is not None:
                        res.add_run(f"{row.key}_statements", out.statements)
                    if out.by_name is not None:
                        res.add_run(f"{row.key}_statements_by_name", out.by_name)
                prog.advance()
            # Inserts: the systems take turns in blocks, so the background load of a
            # shared machine falls on all of them alike.
            single = [x for x in live if "single" in x.figures]
            prog.step(f"{args.single} single inserts each, in {args.blocks} turns, round {r + 1}")
            for row in single:
                await row.reset()
            secs = dict.fromkeys((x.key for x in single), 0.0)
            per = max(args.single // args.blocks, 1)
            bad: set[str] = set()
            for _ in range(args.blocks):
                for row in single:
                    if row.key in bad:
                        continue
                    async with fail.guard(row, f"single insert, round {r + 1}"):
                        secs[row.key] += per / await row.insert_single(per)
                        continue
                    bad.add(row.key)
            for row in single:
                if row.key not in bad:
                    res.add_run(f"{row.key}_single", round(per * args.blocks / secs[row.key], 1))
                prog.advance()
            batch = [x for x in live if "batch" in x.figures]
            prog.step(f"{args.batch_calls} batches of 1,000 each, in turns, round {r + 1}")
            for row in batch:
                await row.reset()
            secs = dict.fromkeys((x.key for x in batch), 0.0)
            bad = set()
            for _ in range(args.batch_calls):
                for row in batch:
                    if row.key in bad:
                        continue
                    async with fail.guard(row, f"batch insert, round {r + 1}"):
                        secs[row.key] += 1000 / await row.insert_batch(1000)
                        continue
                    bad.add(row.key)
            for row in batch:
                if row.key not in bad:
                    res.add_run(
                        f"{row.key}_batch", round(1000 * args.batch_calls / secs[row.key], 1)
                    )
                prog.advance()
            for row in _rotate([x for x in live if "latency" in x.figures], r):
                prog.step(f"{row.key}: latency, {args.latency_jobs} jobs, round {r + 1}")
                async with fail.guard(row, f"latency, round {r + 1}"):
                    await row.reset()
                    lat = await row.latency(args.latency_jobs, interval)
                    summary = latency_summary(lat)
                    summary["missing"] = args.latency_jobs - len(lat)
                    res.add_run(f"{row.key}_latency", summary)
                prog.advance()
        prog.finish()
    finally:
        for row in opened:
            with contextlib.suppress(Exception):
                await row.close()
        for dbname in dbs:
            await asyncio.shield(drop_database(dbname))
    for row in rows:
        if not row.skip:
            res.notes.extend(row.notes())
    report(res, rows, args)
    if not args.no_json:
        print(f"\nresults: {res.write()}")


# -- the report ------------------------------------------------------------------------

# (label, numerator row, denominator row, figure, bound, higher is better)
TARGETS: tuple[tuple[str, str, str, str, float, bool], ...] = (
    ("drain, user pool / bare 3-index loop", "user_pool", "bare3", "drain", 0.70, True),
    ("drain, user pool / pgqueuer", "user_pool", "pgqueuer", "drain", 2.5, True),
    ("single insert, user pool / bare loop", "user_pool", "bare3", "single", 0.80, True),
    ("batch of 1,000, user pool / bare loop", "user_pool", "bare3", "batch", 0.75, True),
    ("p99 insert→start, user pool / bare loop", "user_pool", "bare3", "p99", 2.5, False),
    ("drain, ephemeral jobs / bare loop", "ephemeral", "bare3", "drain", 0.85, True),
)


def _series(res: Results, key: str, figure: str) -> list[float]:
    if figure in ("p50", "p99"):
        return [float(x[f"{figure}_ms"]) for x in res.runs.get(f"{key}_latency", [])]
    return [float(x) for x in res.runs.get(f"{key}_{figure}", [])]


def _paired(res: Results, a: str, b: str, figure: str) -> float:
    xs, ys = _series(res, a, figure), _series(res, b, figure)
    if not xs or not ys or len(xs) != len(ys):
        # a run of one of them failed: runs no longer pair up, compare the medians
        return median(xs) / median(ys) if xs and ys and median(ys) else math.nan
    return paired_ratio(xs, ys)


def report(res: Results, rows: list[Row], args: argparse.Namespace) -> None:
    base = "bare3"
    table: list[list[object]] = []
    for row in rows:
        if row.skip:
            table.append([row.number, row.label, "skipped", "(see notes)", "", ""])
            res.notes.append(f"row {row.number} ({row.key}): {row.skip}")
            continue
        cells: list[object] = [row.number, row.label]
        for figure in ("drain", "single", "batch", "p99"):
            xs = _series(res, row.key, figure)
            m = median(xs)
            res.medians[f"{row.key}_{figure}"] = m
            if figure == "p99":
                res.medians[f"{row.key}_p50"] = median(_series(res, row.key, "p50"))
            rt = _paired(res, row.key, base, figure) if row.key != base else 1.0
            if not xs:
                cells.append("-")
                continue
            res.medians[f"ratio_{row.key}_{figure}"] = rt
            text = fmt_ms(m) if figure == "p99" else fmt_int(m)
            cells.append(f"{text} ({rt:.2f})" if not math.isnan(rt) else text)
        table.append(cells)
    print_table(
        f"Round two: {args.jobs:,} no-op jobs, {WORKERS} workers ({res.settings['event_loop']}; "
        f"medians of {args.runs}; in brackets: median per-round ratio to row 1, the bare "
        "3-index loop)",
        ["#", "system", "drain jobs/s", "single insert/s", "batch of 1,000 /s", "p99 ms"],
        table,
    )
    # targets
    targets: list[dict[str, Any]] = []
    trows: list[list[object]] = []
    keys = {r.key: r for r in rows}
    for label, a, b, figure, bound, higher in TARGETS:
        ra, rb = keys.get(a), keys.get(b)
        value = _paired(res, a, b, figure) if ra and rb else math.nan
        if ra is not None and ra.skip:
            verdict = "not measured (see notes)"
        elif math.isnan(value):
            verdict = "not measured"
        else:
            verdict = "met" if (value >= bound if higher else value <= bound) else "not met"
        targets.append(
            {"target": label, "value": value, "bound": bound, "higher": higher, "verdict": verdict}
        )
        trows.append(
            [
                label,
                "-" if math.isnan(value) else f"{value:.2f}",
                f"{'>=' if higher else '<='} {bound:g}",
                verdict,
            ]
        )
    res.extra["targets"] = targets
    print_table("Issue 23's targets", ["target", "value", "bound", "verdict"], trows)
    # statements
    srows: list[list[object]] = []
    stats_out: dict[str, dict[str, float]] = {}
    for row in rows:
        runs = res.runs.get(f"{row.key}_statements")
        if not runs:
            continue
        sm = {k: median(float(x[k]) for x in runs) for k in runs[0]}
        stats_out[row.key] = sm
        srows.append(
            [
                row.label,
                fmt_int(sm["claims"]),
                fmt_int(sm["completions"]),
                fmt_int(sm["resets"]),
                fmt_int(sm["others"]),
                fmt_int(sm["total"]),
                f"{sm['jobs_per_claim']:.1f}",
                f"{sm['jobs_per_statement']:.1f}",
            ]
        )
    if srows:
        res.extra["statements_per_20k"] = stats_out
        print_table(
            f"Statements per {PER:,} jobs drained (medians; library rows: counted client-side "
            "from client.start() to client.stop())",
            [
                "system",
                "claims",
                "completions",
                "pool resets",
                "other",
                "total",
                "jobs/claim",
                "jobs per claim-or-completion",
            ],
            srows,
        )
    if res.notes:
        print("\nNotes:")
        for note in res.notes:
            print(f"- {note}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20000)")
    p.add_argument("--single", type=int, default=1000, help="single inserts per round")
    p.add_argument("--batch-calls", type=int, default=10, help="batches of 1000 per round")
    p.add_argument("--latency-jobs", type=int, default=500, help="latency samples per round")
    p.add_argument("--interval-ms", type=float, default=5.0, help="insert interval (ms)")
    p.add_argument("--pgq-batch", type=int, default=50, help="pgqueuer batch_size (default 50)")
    p.add_argument("--blocks", type=int, default=5, help="turns of the single-insert figure")
    p.add_argument(
        "--only",
        default="",
        help="comma list of rows: bare3, bare7, user_pool, own_pool, ephemeral, pgqueuer, awa",
    )
    add_common_args(p)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
