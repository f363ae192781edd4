"""Insert throughput through the Client, each figure beside the ceiling's matching one.

- single: ``await client.insert(args)`` in a loop (pool, own transaction) vs the
  library's insert statement sent by bare asyncpg on one connection (autocommit).
- in a transaction: the caller holds a connection and does
  ``async with conn.transaction(): await client.insert(args, conn=conn)`` per job vs
  BEGIN / the same statement / COMMIT on bare asyncpg.
- insert_many of 1,000 vs the library's one-statement (unnest) insert of 1,000 rows on
  bare asyncpg (and a bare COPY of 1,000 for reference: the library may pick COPY at
  this size, see ``pyriver_async._insert.COPY_THRESHOLD``).
- insert_many of 100,000 (COPY path) vs a bare COPY of the same rows.
- single insert through a Client given a plain ``asyncpg.create_pool()`` (default
  reset query on release), to show what that reset costs.
- other libraries (``conn=`` a psycopg ``AsyncConnection``, a SQLAlchemy
  ``AsyncSession`` on asyncpg): one job per transaction of the caller, and
  insert_many of 1,000 in one, each beside the same SQL sent bare through that library
  (psycopg: the insert statement, and a COPY of 1,000; SQLAlchemy: the insert
  statement and the one-statement unnest of 1,000, by ``exec_driver_sql``: SQLAlchemy
  has no COPY).

The table is emptied before each figure. Single, transaction and 1,000-row figures
are measured in alternating blocks (ceiling, library, ceiling, ...) so the noise of a
shared machine falls on both alike; the 100,000-row figures alternate per run.

    python -m benchmarks.insert [--single 2000] [--batch-calls 20] [--copy-rows 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import psycopg
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

if __package__ in (None, ""):  # `python benchmarks/insert.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ceiling
from benchmarks._common import (
    NoopArgs,
    Progress,
    Results,
    add_common_args,
    bench_sql,
    checkpoint,
    fmt_int,
    fmt_ratio,
    median,
    paired_ratio,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    temp_database,
)
from pyriver_async import Client


def copy_threshold() -> int | None:
    try:
        from pyriver_async._insert import COPY_THRESHOLD
    except ImportError:
        return None
    return COPY_THRESHOLD


async def lib_single(client: Client, count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        await client.insert(NoopArgs())
    return count / (time.perf_counter() - t0)


async def lib_tx(client: Client, conn: asyncpg.Connection, count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        async with conn.transaction():
            await client.insert(NoopArgs(), conn=conn)
    return count / (time.perf_counter() - t0)


async def lib_many(client: Client, calls: int, size: int) -> float:
    batches = [[NoopArgs() for _ in range(size)] for _ in range(calls)]
    t0 = time.perf_counter()
    for b in batches:
        await client.insert_many(b)
    return calls * size / (time.perf_counter() - t0)


# -- other libraries: the library through conn=, and the same SQL sent bare --------------


async def lib_tx_other(
    client: Client, conn: psycopg.AsyncConnection | AsyncSession, n: int
) -> float:
    """One job per transaction of the caller's psycopg connection or SQLAlchemy session."""
    t0 = time.perf_counter()
    for _ in range(n):
        if isinstance(conn, AsyncSession):
            async with conn.begin():
                await client.insert(NoopArgs(), conn=conn)
        else:
            async with conn.transaction():
                await client.insert(NoopArgs(), conn=conn)
    return n / (time.perf_counter() - t0)


async def lib_many_other(
    client: Client, conn: psycopg.AsyncConnection | AsyncSession, calls: int, size: int
) -> float:
    batches = [[NoopArgs() for _ in range(size)] for _ in range(calls)]
    t0 = time.perf_counter()
    for b in batches:
        if isinstance(conn, AsyncSession):
            async with conn.begin():
                await client.insert_many(b, conn=conn)
        else:
            async with conn.transaction():
                await client.insert_many(b, conn=conn)
    return calls * size / (time.perf_counter() - t0)


async def psycopg_tx(conn: psycopg.AsyncConnection, n: int) -> float:
    """BEGIN; the library's insert statement through bare psycopg; COMMIT."""
    sql, values = await _named_insert()
    t0 = time.perf_counter()
    for _ in range(n):
        async with conn.transaction():
            await (await conn.execute(sql, values)).fetchone()
    return n / (time.perf_counter() - t0)


async def psycopg_copy(conn: psycopg.AsyncConnection, calls: int, size: int) -> float:
    """A bare COPY of ``size`` rows (and the queue's NOTIFY) per transaction."""
    records = ceiling.copy_records(size)
    columns = ", ".join(ceiling.COPY_COLUMNS)
    notify = bench_sql().job_notify_queues
    t0 = time.perf_counter()
    for _ in range(calls):
        async with conn.transaction(), conn.cursor() as cur:
            async with cur.copy(f"COPY river_job ({columns}) FROM STDIN") as copy:
                for r in records:
                    await copy.write_row(r)
            await cur.execute(notify.pyformat(), {"queues": ["default"]})
    return calls * size / (time.perf_counter() - t0)


async def sqlalchemy_tx(session: AsyncSession, n: int) -> float:
    """The library's insert statement through bare SQLAlchemy (exec_driver_sql)."""
    sql, params = await ceiling.captured_insert()
    t0 = time.perf_counter()
    for _ in range(n):
        async with session.begin():
            await (await session.connection()).exec_driver_sql(sql, params)
    return n / (time.perf_counter() - t0)


async def sqlalchemy_unnest(session: AsyncSession, calls: int, size: int) -> float:
    sql, params = await ceiling.captured_insert(many=size)
    t0 = time.perf_counter()
    for _ in range(calls):
        async with session.begin():
            await (await session.connection()).exec_driver_sql(sql, params)
    return calls * size / (time.perf_counter() - t0)


async def _named_insert() -> tuple[str, dict[str, object]]:
    _, params = await ceiling.captured_insert()
    q = bench_sql().job_insert
    # psycopg sends a tuple as a record: the tags (an empty tuple) go as a list
    values = [list(v) if isinstance(v, tuple) else v for v in params]
    return q.pyformat(), dict(zip(q.params, values, strict=True))


FIGURES = (
    # key, label, ceiling key
    ("single", "single insert", "c_single"),
    ("tx", "insert in caller's transaction", "c_tx"),
    ("many_1000", "insert_many of 1,000", "c_unnest_1000"),
    ("many_copy", "insert_many of {copy} (COPY)", "c_copy"),
    ("single_default_pool", "single insert, plain asyncpg pool", "c_single"),
    ("pg_tx", "psycopg: insert in caller's transaction", "pg_bare_tx"),
    ("pg_many", "psycopg: insert_many of 1,000 (vs bare COPY)", "pg_bare_copy"),
    ("sa_tx", "SQLAlchemy/asyncpg: insert in session transaction", "sa_bare_tx"),
    ("sa_many", "SQLAlchemy/asyncpg: insert_many of 1,000 (vs bare unnest)", "sa_bare_unnest"),
)


async def _main(args: argparse.Namespace, loop: str) -> None:
    res = Results("insert", vars(args) | {"copy_threshold": copy_threshold()}, loop)
    prog = Progress("insert", args.runs * 9)
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        caller = await asyncpg.connect(url)  # the caller's own connection (tx figure)
        client = Client(url)  # insert-only, makes its own pool as a user's would
        plain_pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        assert plain_pool is not None
        plain_client = Client(plain_pool)
        pg = await psycopg.AsyncConnection.connect(url)  # the caller's psycopg connection
        engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
        session = AsyncSession(engine)  # the caller's SQLAlchemy session
        try:
            await lib_single(client, 20)  # warm up: pool, prepared statements
            await lib_single(plain_client, 20)
            await ceiling.insert_single(admin, 20)
            await lib_tx_other(client, pg, 20)
            await lib_tx_other(client, session, 20)

            n1, calls, big, blocks = args.single, args.batch_calls, args.copy_rows, args.blocks

            async def interleaved(
                label: str, parts: dict[str, Callable[[int], Awaitable[float]]], total: int, r: int
            ) -> None:
                """Run each variant's share in ``blocks`` alternating blocks (so the
                machine's background noise falls on all of them alike); jobs/s each."""
                prog.step(f"{label}, run {r + 1}")
                await reset_jobs(admin)
                await checkpoint(admin)
                seconds = dict.fromkeys(parts, 0.0)
                per = max(total // blocks, 1)
                for _ in range(blocks):
                    for key, fn in parts.items():
                        seconds[key] += per / await fn(per)
                for key in parts:
                    res.add_run(key, round(per * blocks / seconds[key], 1))
                prog.advance()

            async def single(r: int) -> None:
                await interleaved(
                    "single inserts",
                    {
                        "c_single": lambda k: ceiling.insert_single(admin, k),
                        "single": lambda k: lib_single(client, k),
                        "single_default_pool": lambda k: lib_single(plain_client, k),
                    },
                    n1,
                    r,
                )

            for r in range(args.runs):
                await single(r)
                await interleaved(
                    "inserts in a transaction",
                    {
                        "c_tx": lambda k: ceiling.insert_tx(admin, k),
                        "tx": lambda k: lib_tx(client, caller, k),
                    },
                    n1,
                    r,
                )
                await interleaved(
                    "batches of 1,000",
                    {
                        "c_unnest_1000": lambda k: ceiling.insert_unnest(admin, k, 1000),
                        "c_copy_1000": lambda k: _copy_many(admin, k, 1000),
                        "many_1000": lambda k: lib_many(client, k, 1000),
                    },
                    calls,
                    r,
                )
                await interleaved(
                    "psycopg, one job per transaction",
                    {
                        "pg_bare_tx": lambda k: psycopg_tx(pg, k),
                        "pg_tx": lambda k: lib_tx_other(client, pg, k),
                    },
                    n1,
                    r,
                )
                await interleaved(
                    "psycopg, batches of 1,000",
                    {
                        "pg_bare_copy": lambda k: psycopg_copy(pg, k, 1000),
                        "pg_many": lambda k: lib_many_other(client, pg, k, 1000),
                    },
                    calls,
                    r,
                )
                await interleaved(
                    "SQLAlchemy, one job per transaction",
                    {
                        "sa_bare_tx": lambda k: sqlalchemy_tx(session, k),
                        "sa_tx": lambda k: lib_tx_other(client, session, k),
                    },
                    n1,
                    r,
                )
                await interleaved(
                    "SQLAlchemy, batches of 1,000",
                    {
                        "sa_bare_unnest": lambda k: sqlalchemy_unnest(session, k, 1000),
                        "sa_many": lambda k: lib_many_other(client, session, k, 1000),
                    },
                    calls,
                    r,
                )
                big_runs: list[tuple[str, str, Callable[[], Awaitable[float]]]] = [
                    ("c_copy", f"bare COPY of {big:,}", lambda: ceiling.insert_copy(admin, big)),
                    ("many_copy", f"insert_many of {big:,}", lambda: lib_many(client, 1, big)),
                ]
                for key, label, fn in big_runs:
                    prog.step(f"{label}, run {r + 1}")
                    await reset_jobs(admin)
                    await checkpoint(admin)
                    res.add_run(key, round(await fn(), 1))
                    prog.advance()
        finally:
            await session.close()
            await engine.dispose()
            await pg.close()
            await client.close()
            await plain_pool.close()
            await caller.close()
            await admin.close()
    prog.finish()
    for k, v in res.runs.items():
        res.medians[k] = median(v)
    rows: list[list[object]] = []
    for key, label, ckey in FIGURES:
        rt = paired_ratio(res.runs[key], res.runs[ckey])
        res.medians[f"ratio_{key}"] = rt
        rows.append(
            [
                label.format(copy=f"{args.copy_rows:,}"),
                fmt_int(res.medians[key]),
                fmt_int(res.medians[ckey]),
                fmt_ratio(rt),
            ]
        )
    rows.append(
        [
            "  (bare COPY of 1,000, for reference)",
            "",
            fmt_int(res.medians["c_copy_1000"]),
            fmt_ratio(paired_ratio(res.runs["many_1000"], res.runs["c_copy_1000"])),
        ]
    )
    print_table(
        f"Inserts ({loop}; jobs/s, medians of {args.runs}; library COPY threshold "
        f"{copy_threshold()})",
        ["", "pyriver_async", "ceiling", "of ceiling*"],
        rows,
    )
    print("* median of the per-run ratios (each run measures both side by side); for the")
    print("  psycopg and SQLAlchemy rows the 'ceiling' is the same SQL sent bare through them")
    if not args.no_json:
        print(f"\nresults: {res.write()}")


async def _copy_many(conn: asyncpg.Connection, calls: int, size: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        await ceiling.insert_copy(conn, size)
    return calls * size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--single", type=int, default=2000, help="single inserts per run")
    p.add_argument("--batch-calls", type=int, default=20, help="insert_many(1000) calls per run")
    p.add_argument("--copy-rows", type=int, default=100_000, help="rows of the big insert_many")
    p.add_argument(
        "--blocks", type=int, default=5, help="alternating blocks per figure and run (default 5)"
    )
    add_common_args(p)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
