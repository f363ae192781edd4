"""Through PgBouncer in transaction mode against straight to PostgreSQL: single inserts
and a drain (short and indicative: one invocation, medians of ``--runs``).

The pooler is Debian's pgbouncer (the fault tests' helper starts one of our own in
front of the benchmark's server, ``pool_mode=transaction``, 10 server connections).
Through it the client runs as docs/operations.md says: ``pooler="transaction"`` (no
named prepared statements, so each statement is parsed again: one more round trip)
and LISTEN on a direct connection (``listen_database_url``).

    python -m benchmarks.pooler [--single 1000] [--jobs 10000] [--workers 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/pooler.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    FlushProbe,
    NoopArgs,
    Progress,
    Results,
    add_common_args,
    fmt_int,
    fmt_ratio,
    load_jobs,
    median,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    temp_database,
)
from benchmarks.throughput import noop_workers
from pyriver_async import Client, QueueConfig
from tests.faults._pgbouncer import PgBouncer, ensure_binary


async def single(url: str, n: int, *, pooler: str | None) -> float:
    """Inserts per second, one after the other, each in its own transaction."""
    client = Client(url, pooler=pooler)
    try:
        await client.insert(NoopArgs())  # the pool and its first connection
        t0 = time.perf_counter()
        for _ in range(n):
            await client.insert(NoopArgs())
        return n / (time.perf_counter() - t0)
    finally:
        await client.close()


async def drain(
    url: str, n: int, workers: int, *, direct: str, pooler: str | None, timeout: float
) -> float:
    """Jobs per second of one client draining ``n`` available jobs."""
    client = Client(
        url,
        workers=noop_workers(),
        queues={"default": QueueConfig(max_workers=workers)},
        maintenance=False,
        pooler=pooler,
        listen_database_url=direct if pooler else None,
    )
    probe = FlushProbe(target=n)
    probe.attach(client)
    t0 = time.monotonic()
    await client.start()
    try:
        await asyncio.wait_for(probe.reached.wait(), timeout)
    finally:
        await client.close()
    return probe.count / (probe.last - t0)


async def _main(args: argparse.Namespace, loop: str) -> None:
    binary, why = ensure_binary()
    if binary is None:
        raise SystemExit(f"no pgbouncer: {why}")
    res = Results("pooler", vars(args), loop)
    prog = Progress("pooler", args.runs * 4)
    async with temp_database() as url:
        res.server = await server_info(url)
        parts = urlsplit(url)
        bouncer = PgBouncer(
            parts.hostname or "127.0.0.1",
            parts.port or 5432,
            pool_mode="transaction",
            pool_size=10,
            binary=binary,
        )
        await asyncio.to_thread(bouncer.start)
        try:
            through = bouncer.url(parts.path.lstrip("/"), parts.username or "postgres")
            admin = await asyncpg.connect(url)
            try:
                for r in range(args.runs):
                    for name, target, pooler in (
                        ("direct", url, None),
                        ("pgbouncer", through, "transaction"),
                    ):
                        prog.step(f"run {r + 1}: single inserts, {name}")
                        res.add_run(
                            f"single_{name}", await single(target, args.single, pooler=pooler)
                        )
                        prog.advance()
                        prog.step(f"run {r + 1}: drain, {name}")
                        await reset_jobs(admin)
                        await load_jobs(admin, args.jobs)
                        rate = await drain(
                            target,
                            args.jobs,
                            args.workers,
                            direct=url,
                            pooler=pooler,
                            timeout=args.timeout,
                        )
                        res.add_run(f"drain_{name}", rate)
                        prog.advance()
            finally:
                await admin.close()
        finally:
            await asyncio.to_thread(bouncer.stop)
    prog.finish()
    rows = []
    for what, label in (("single", "single insert"), ("drain", f"drain, {args.workers} workers")):
        direct, through_ = median(res.runs[f"{what}_direct"]), median(res.runs[f"{what}_pgbouncer"])
        res.medians[f"{what}_direct"] = direct
        res.medians[f"{what}_pgbouncer"] = through_
        res.medians[f"ratio_{what}"] = through_ / direct
        rows.append([label, fmt_int(direct), fmt_int(through_), fmt_ratio(through_ / direct)])
    print_table(
        f"PgBouncer (transaction mode) against direct, medians of {args.runs} runs",
        ["", "direct /s", "pgbouncer /s", "pgbouncer / direct"],
        rows,
    )
    if not args.no_json:
        print(f"results: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--single", type=int, default=1000, help="single inserts per run")
    p.add_argument("--jobs", type=int, default=10_000, help="jobs per drain")
    p.add_argument("--workers", type=int, default=100, help="max_workers of the drain")
    add_common_args(p)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
