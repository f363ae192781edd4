"""Flow control: what limits cost, and whether they deliver what they promise.

Each figure is an A/B in one invocation (same database, same moment of a shared
machine), run once by default (``--runs`` for more):

- ``global``: a drain of ``--jobs`` no-op jobs (100 workers) with ``global_limit=100``
  against the same drain with no limit (target: >= 0.90).
- ``keys``: the same drain with 1,000 keys each limited to 1 (``partition_by``, jobs
  spread over the keys) against no limit (target: >= 0.75).
- ``kinds``: kind-aware claiming (the default) against claiming every kind, drains and
  the claim's ``EXPLAIN ANALYZE``.
- ``utilisation``: two clients, ``global_limit=N`` of 20 ms jobs; the mean number of
  jobs running (from their claim and completion times in the database) against N.
- ``rate``: a rate limit of R/s worked by two OS processes for ``--rate-seconds``;
  the starts per second delivered (target: R +- 5 %).
- ``locks``: ways to serialise the claims of a queue, alone, by one and by four
  connections: the gate row the claim upserts (the one used), an advisory lock or a
  row lock in a transaction.
- ``backlog``: one flow claim with a key at its cap whose ``--backlog`` jobs sit ahead
  of the others in claim order (what skipping them costs).

    python -m benchmarks.flow                    # all, about 3 minutes
    python -m benchmarks.flow --only global,keys --jobs 20000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks._common import (
    FlushProbe,
    NoopArgs,
    Progress,
    Results,
    add_common_args,
    analyze,
    checkpoint,
    fmt_int,
    fmt_ratio,
    load_jobs,
    make_pool,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    temp_database,
)
from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, RateLimit, Workers

ROOT = Path(__file__).resolve().parent.parent
ALL = ["global", "keys", "kinds", "utilisation", "rate", "locks", "backlog"]


class KeyedNoop(JobArgs, kind="bench_keyed"):
    key: int = 0


class Sleep20(JobArgs, kind="bench_sleep"):
    ms: float = 20.0


def bench_workers() -> Workers:
    w = Workers()

    @w.register(NoopArgs)
    async def noop(ctx: JobContext, job: Job[NoopArgs]) -> None:
        return None

    @w.register(KeyedNoop)
    async def keyed(ctx: JobContext, job: Job[KeyedNoop]) -> None:
        return None

    @w.register(Sleep20, timeout=None)
    async def sleep(ctx: JobContext, job: Job[Sleep20]) -> None:
        await asyncio.sleep(job.args.ms / 1000)

    return w


async def load_keyed(conn: asyncpg.Connection, n: int, keys: int) -> None:
    await conn.execute(
        "INSERT INTO river_job (args, kind, max_attempts, queue, scheduled_at) "
        "SELECT jsonb_build_object('key', g % $2), 'bench_keyed', 25, 'default', "
        "now() - interval '1 second' FROM generate_series(1, $1) g",
        n,
        keys,
    )
    await analyze(conn)


async def prepare(admin: asyncpg.Connection, load: Callable[[], Awaitable[None]]) -> None:
    await reset_jobs(admin)
    await admin.execute("TRUNCATE pyriver_flow_state")
    await load()
    await checkpoint(admin)


@dataclass
class Drain:
    jobs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float("nan")


async def drain(url: str, n: int, cfg: QueueConfig, *, timeout: float) -> Drain:
    """Drain ``n`` available jobs of queue 'default' with one client configured ``cfg``,
    timed from start() to the commit of the last outcome (as benchmarks/throughput)."""
    pool = await make_pool(url, 10)
    try:
        client = Client(pool, workers=bench_workers(), queues={"default": cfg}, maintenance=False)
        probe = FlushProbe(target=n)
        probe.attach(client)
        t0 = time.monotonic()
        await client.start()
        try:
            await asyncio.wait_for(probe.reached.wait(), timeout)
        finally:
            await client.stop()
        return Drain(probe.count, probe.last - t0)
    finally:
        await pool.close()


async def ab_drains(
    res: Results,
    prog: Progress,
    url: str,
    admin: asyncpg.Connection,
    name: str,
    load: Callable[[], Awaitable[None]],
    a: QueueConfig,
    b: QueueConfig,
    args: argparse.Namespace,
) -> tuple[float, float, float]:
    """Alternate drains of ``a`` (the baseline) and ``b``; medians and the ratio b/a."""
    for r in range(args.runs):
        for label, cfg in (("a", a), ("b", b)):
            prog.step(f"{name}: drain {label}, run {r + 1}")
            await prepare(admin, load)
            d = await drain(url, args.jobs, cfg, timeout=args.timeout)
            res.add_run(f"{name}_{label}", round(d.rate, 1))
            prog.advance()
    ra = statistics.median(res.runs[f"{name}_a"])
    rb = statistics.median(res.runs[f"{name}_b"])
    ratios = [y / x for x, y in zip(res.runs[f"{name}_a"], res.runs[f"{name}_b"], strict=True)]
    ratio = statistics.median(ratios)
    res.medians[f"{name}_baseline_jobs_per_s"] = ra
    res.medians[f"{name}_limited_jobs_per_s"] = rb
    res.medians[f"{name}_ratio"] = round(ratio, 3)
    return ra, rb, ratio


async def explain(admin: asyncpg.Connection) -> dict[str, Any]:
    from pyriver_async._driver.queries import Queries

    q = Queries.for_schema("public").job_claim
    await reset_jobs(admin)
    await admin.execute(
        "INSERT INTO river_job (args, kind, max_attempts, queue, scheduled_at) "
        "SELECT '{}', CASE WHEN g % 10 = 0 THEN 'bench_other' ELSE 'bench_noop' END, 25, "
        "'default', now() - interval '1 second' FROM generate_series(1, 100000) g"
    )
    await analyze(admin)
    out: dict[str, Any] = {}
    for label, kinds in (("every_kind", None), ("registered_kinds", ["bench_noop", "bench_keyed"])):
        times: list[float] = []
        plan: list[str] = []
        for _ in range(9):
            tx = admin.transaction()
            await tx.start()
            try:
                rows = await admin.fetch(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + q.sql,
                    *q.bind(queue="default", limit=100, client_id="x", kinds=kinds),
                )
            finally:
                await tx.rollback()  # every run sees the same backlog
            plan = [r[0] for r in rows]
            times.append(float(plan[-1].split(":")[1].split()[0]))
        out[label] = {"execution_ms_median": statistics.median(times), "plan": plan}
    return out


async def utilisation(url: str, admin: asyncpg.Connection, limit: int, jobs: int) -> dict[str, Any]:
    """Two clients (max_workers 50 each) under global_limit=N; 20 ms jobs."""
    await reset_jobs(admin)
    await admin.execute(
        "INSERT INTO river_job (args, kind, max_attempts, queue) "
        "SELECT '{\"ms\": 20}', 'bench_sleep', 25, 'default' FROM generate_series(1, $1)",
        jobs,
    )
    await analyze(admin)
    pools = [await make_pool(url, 6) for _ in range(2)]
    clients = [
        Client(p, workers=bench_workers(), maintenance=False,
               queues={"default": QueueConfig(max_workers=50, global_limit=limit)})
        for p in pools
    ]  # fmt: skip
    try:
        for c in clients:
            await c.start()

        async def left() -> int:
            n: int = await admin.fetchval(
                "SELECT count(*) FROM river_job WHERE state <> 'completed'"
            )
            return n

        while await left():
            await asyncio.sleep(0.1)
    finally:
        for c in clients:
            await c.stop()
        for p in pools:
            await p.close()
    rows = await admin.fetch("SELECT attempted_at, finalized_at FROM river_job")
    start = min(r["attempted_at"] for r in rows)
    end = max(r["finalized_at"] for r in rows)
    span = (end - start).total_seconds()
    # A slot is held from the claim to the written outcome (what the limit counts).
    held = sum((r["finalized_at"] - r["attempted_at"]).total_seconds() for r in rows)
    work = len(rows) * 0.020
    return {
        "limit": limit,
        "jobs": len(rows),
        "seconds": round(span, 2),
        "mean_slots_held": round(held / span, 2),
        "mean_jobs_running": round(work / span, 2),
        "ideal_seconds": round(len(rows) * 0.020 / limit, 2),
    }


# -- rate across two processes -------------------------------------------------------


async def _rate_child(args: argparse.Namespace) -> None:
    client = Client(
        args.url,
        workers=bench_workers(),
        maintenance=False,
        queues={"default": QueueConfig(max_workers=20, rate_limit=RateLimit(int(args.rate)))},
        pool_max_size=4,
    )
    async with client:
        print("ready", flush=True)
        await asyncio.sleep(args.rate_seconds + 2)


async def rate_two_processes(
    url: str, admin: asyncpg.Connection, args: argparse.Namespace
) -> dict[str, Any]:
    await reset_jobs(admin)
    await admin.execute("TRUNCATE pyriver_flow_state")
    await load_jobs(admin, int(args.rate * (args.rate_seconds + 10)))
    cmd = [sys.executable, "-m", "benchmarks.flow", "--child-rate", "--url", url,
           "--rate", str(args.rate), "--rate-seconds", str(args.rate_seconds)]  # fmt: skip
    procs = [
        await asyncio.create_subprocess_exec(
            *cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = await p.stdout.readline()
            if b"ready" not in line:
                raise RuntimeError(f"rate child failed: {line!r}")
        await asyncio.sleep(args.rate_seconds + 1)
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            await asyncio.wait_for(p.wait(), 20)
    starts = [
        r["attempted_at"]
        for r in await admin.fetch(
            "SELECT attempted_at FROM river_job WHERE attempted_at IS NOT NULL ORDER BY 1"
        )
    ]
    burst = int(args.rate)  # RateLimit's default burst: one period's worth
    first = starts[0]
    window = [t for t in starts if (t - first).total_seconds() <= args.rate_seconds]
    steady = (len(window) - burst) / args.rate_seconds
    per_second: dict[int, int] = {}
    for t in window:
        s = int((t - first).total_seconds())
        per_second[s] = per_second.get(s, 0) + 1
    return {
        "rate": args.rate,
        "seconds": args.rate_seconds,
        "starts": len(window),
        "starts_per_s_after_burst": round(steady, 2),
        "starts_per_s_including_burst": round(len(window) / args.rate_seconds, 2),
        "ratio": round(steady / args.rate, 4),
        "per_second": [per_second.get(i, 0) for i in range(int(args.rate_seconds))],
    }


# -- serialisation -------------------------------------------------------------------


async def locks(url: str) -> dict[str, Any]:
    """The ways to serialise a queue's claims, alone, as fast as one and four
    connections can: the gate row the claim statement upserts (what flow_claim does,
    one statement), an advisory lock in a transaction (BEGIN; lock; COMMIT: the lock
    must come before the claim's statement), and a row lock in a transaction."""
    setup = await asyncpg.connect(url)
    await setup.execute(
        "INSERT INTO pyriver_flow_state (name, key, tat) VALUES ('bench', '', now()) "
        "ON CONFLICT DO NOTHING"
    )
    await setup.close()
    gate = (
        "INSERT INTO pyriver_flow_state AS s (name, key, tat, n) VALUES ('bench', '', now(), 1) "
        "ON CONFLICT (name, key) DO UPDATE SET n = s.n + 1"
    )
    ways: dict[str, tuple[str, bool]] = {
        "gate_row_statement": (gate, False),
        "advisory_lock_transaction": ("SELECT pg_advisory_xact_lock(42)", True),
        "row_lock_transaction": (
            "SELECT 1 FROM pyriver_flow_state WHERE name = 'bench' AND key = '' FOR UPDATE",
            True,
        ),
    }
    out: dict[str, Any] = {}
    for conns in (1, 4):
        for label, (sql, in_tx) in ways.items():
            cs = [await asyncpg.connect(url) for _ in range(conns)]
            done = 0

            async def loop(c: asyncpg.Connection, sql: str, in_tx: bool, t_end: float) -> None:
                nonlocal done
                while time.monotonic() < t_end:
                    if in_tx:
                        async with c.transaction():
                            await c.execute(sql)
                    else:
                        await c.execute(sql)
                    done += 1

            t_end = time.monotonic() + 3.0
            await asyncio.gather(*(loop(c, sql, in_tx, t_end) for c in cs))
            for c in cs:
                await c.close()
            out[f"{label}_{conns}_conn_per_s"] = round(done / 3.0)
    out.update(await claim_ways(url))
    return out


async def claim_ways(url: str, rounds: int = 30) -> dict[str, Any]:
    """Whole claims of 100 jobs (then completed, outside the clock), each way: the plain
    claim, the capped claim behind its gate row, and the plain claim inside a
    transaction that takes an advisory lock first."""
    from pyriver_async._claim import FlowClaimer
    from pyriver_async._driver.asyncpg import AsyncpgExecutor
    from pyriver_async._driver.queries import Queries

    q = Queries.for_schema("public")
    conn = await asyncpg.connect(url)
    try:
        await reset_jobs(conn)
        await load_jobs(conn, 200_000)
        ex = AsyncpgExecutor(q, conn=conn, timeout=60)
        capped = FlowClaimer(
            "default", QueueConfig(global_limit=1000), schema="public", kinds=None, sequences=False
        )
        plain_args = q.job_claim.bind(queue="default", limit=100, client_id="b", kinds=None)

        async def plain() -> None:
            await conn.fetch(q.job_claim.sql, *plain_args)

        async def gate() -> None:
            await capped.claim(ex, limit=100, client_id="b", done=(), running_kinds={})

        async def advisory() -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(42)")
                await conn.fetch(q.job_claim.sql, *plain_args)

        ways = {"plain": plain, "gate_row": gate, "advisory_lock_transaction": advisory}
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(rounds):
            for k, f in ways.items():
                t = time.perf_counter()
                await f()
                times[k].append(time.perf_counter() - t)
                await conn.execute(
                    "UPDATE river_job SET state = 'completed', finalized_at = now() "
                    "WHERE state = 'running'"
                )
        return {
            f"claim_100_{k}_ms": round(statistics.median(v[3:]) * 1000, 2) for k, v in times.items()
        }
    finally:
        await conn.close()


async def backlog(url: str, admin: asyncpg.Connection, n: int) -> dict[str, Any]:
    """A key at its cap (partition_limit 1, one running) with ``n`` jobs ahead of 1,000
    jobs of other keys: the time of one flow claim that must look past them."""
    from pyriver_async._claim import FlowClaimer
    from pyriver_async._driver.asyncpg import AsyncpgExecutor
    from pyriver_async._driver.queries import Queries

    await reset_jobs(admin)
    await admin.execute(
        "INSERT INTO river_job (args, kind, max_attempts, queue, scheduled_at, state, "
        "attempt, attempted_at, attempted_by) VALUES ('{\"key\": 0}', 'bench_keyed', 25, "
        "'default', now(), 'running', 1, now(), '{x}')"
    )
    await admin.execute(
        "INSERT INTO river_job (args, kind, max_attempts, queue, scheduled_at) "
        "SELECT '{\"key\": 0}', 'bench_keyed', 25, 'default', "
        "now() - interval '1 hour' + g * interval '1 millisecond' FROM generate_series(1, $1) g",
        n,
    )
    await admin.execute(
        "INSERT INTO river_job (args, kind, max_attempts, queue, scheduled_at) "
        "SELECT jsonb_build_object('key', g), 'bench_keyed', 25, 'default', now() "
        "FROM generate_series(1, 1000) g"
    )
    await analyze(admin)
    await admin.execute("VACUUM river_job")
    claimer = FlowClaimer(
        "default", QueueConfig(partition_by="key", partition_limit=1),
        schema="public", kinds=None, sequences=False,
    )  # fmt: skip
    times = []
    conn = await asyncpg.connect(url)
    try:
        ex = AsyncpgExecutor(Queries.for_schema("public"), conn=conn, timeout=600)
        for _ in range(5):
            tx = conn.transaction()
            await tx.start()
            try:
                t = time.perf_counter()
                got = await claimer.claim(ex, limit=10, client_id="b", done=(), running_kinds={})
                times.append(time.perf_counter() - t)
            finally:
                await tx.rollback()
    finally:
        await conn.close()
    return {
        "blocked_ahead": n,
        "claimed": len(got.rows),
        "claim_ms": round(statistics.median(times) * 1000, 1),
    }


# -- main ------------------------------------------------------------------------------


async def _main(args: argparse.Namespace, loop: str) -> None:
    only = [x for x in args.only.split(",") if x] if args.only else ALL
    res = Results("flow", vars(args), loop)
    prog = Progress("flow", 2 * args.runs * sum(x in only for x in ("global", "keys", "kinds")) + 4)
    rows: list[list[object]] = []
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        try:
            n = args.jobs
            plain = lambda: load_jobs(admin, n)  # noqa: E731
            keyed = lambda: load_keyed(admin, n, 1000)  # noqa: E731
            if "global" in only:
                a, b, r = await ab_drains(
                    res, prog, url, admin, "global", plain,
                    QueueConfig(max_workers=100), QueueConfig(max_workers=100, global_limit=100),
                    args,
                )  # fmt: skip
                rows.append(["global_limit=100", fmt_int(a), fmt_int(b), fmt_ratio(r), ">= 0.90"])
            if "keys" in only:
                a, b, r = await ab_drains(
                    res, prog, url, admin, "keys", keyed,
                    QueueConfig(max_workers=100),
                    QueueConfig(max_workers=100, partition_by="key", partition_limit=1),
                    args,
                )  # fmt: skip
                rows.append(["1,000 keys x 1", fmt_int(a), fmt_int(b), fmt_ratio(r), ">= 0.75"])
            if "kinds" in only:
                a, b, r = await ab_drains(
                    res, prog, url, admin, "kinds", plain,
                    QueueConfig(max_workers=100, registered_kinds_only=False),
                    QueueConfig(max_workers=100),
                    args,
                )  # fmt: skip
                rows.append(["kind-aware claim", fmt_int(a), fmt_int(b), fmt_ratio(r), "~1.0"])
                prog.step("kinds: EXPLAIN ANALYZE")
                res.extra["kinds_explain"] = await explain(admin)
                for label, e in res.extra["kinds_explain"].items():
                    res.medians[f"claim_{label}_ms"] = e["execution_ms_median"]
            if "utilisation" in only:
                prog.step("utilisation: two clients, global_limit=20, 20 ms jobs")
                u = await utilisation(url, admin, 20, args.utilisation_jobs)
                res.extra["utilisation"] = u
                res.medians["utilisation_mean_running"] = u["mean_jobs_running"]
                res.medians["utilisation_mean_slots_held"] = u["mean_slots_held"]
            if "rate" in only:
                prog.step(f"rate: {args.rate:g}/s over {args.rate_seconds:g}s, two processes")
                rt = await rate_two_processes(url, admin, args)
                res.extra["rate"] = rt
                res.medians["rate_ratio"] = rt["ratio"]
            if "locks" in only:
                prog.step("locks: gate row, advisory lock, row lock")
                res.extra["locks"] = await locks(url)
                res.medians.update(res.extra["locks"])
            if "backlog" in only:
                prog.step(f"backlog: {args.backlog:,} blocked jobs ahead")
                res.extra["backlog"] = await backlog(url, admin, args.backlog)
                res.medians["backlog_claim_ms"] = res.extra["backlog"]["claim_ms"]
        finally:
            await admin.close()
    prog.finish()
    if rows:
        print_table("drains (jobs/s)", ["", "baseline", "limited", "ratio", "target"], rows)
    for key in ("utilisation", "rate", "locks", "backlog"):
        if key in res.extra:
            print(f"{key}: {res.extra[key]}")
    for label, e in res.extra.get("kinds_explain", {}).items():
        print(f"claim {label}: {e['execution_ms_median']:.3f} ms (EXPLAIN ANALYZE, median)")
    if not args.no_json:
        print(f"\nresults: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--only", default="", help=f"a comma list of: {','.join(ALL)}")
    p.add_argument("--jobs", type=int, default=20000, help="jobs per drain (default 20000)")
    p.add_argument("--utilisation-jobs", type=int, default=3000)
    p.add_argument("--rate", type=float, default=50.0, help="starts per second (default 50)")
    p.add_argument("--rate-seconds", type=float, default=60.0)
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--child-rate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    add_common_args(p, runs=1)
    args = p.parse_args(argv)
    if args.child_rate:
        run_main(lambda _loop: _rate_child(args), no_uvloop=args.no_uvloop, timeout=args.timeout)
        return
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
