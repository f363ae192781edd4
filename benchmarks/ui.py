"""The web UI's cost: page render times on a big table, and what open tabs take from
a drain.

1. Render: the UI in-process (ASGI, no network), on a table of ``--rows`` jobs (a
   million by default: 80 % completed over a day, the rest spread over the other
   states, 5 queues, 40 kinds). For the overview, two job lists and a job page: p50
   and p95 over ``--requests`` renders, with the UI's cache cleared before each
   (every query runs) and warm (the cache serves repeated views, as with many tabs).
2. Drain: a client works ``--drain-jobs`` no-op jobs (100 workers), alone and then
   with ``pyriver ui`` running in its own process and ``--tabs`` simulated tabs (a
   process of their own: each holds the event stream and re-fetches its page's live
   region on every event, at most every 2 s, as the browser does). The ratio of the
   two drain rates is the UI's cost to the workers.

    python -m benchmarks.ui [--rows 1000000] [--requests 30] [--drain-jobs 20000] [--tabs 5]

Indicative only on a shared machine: medians of one short invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

if __package__ in (None, ""):  # `python benchmarks/ui.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    NoopArgs,
    Results,
    add_common_args,
    fmt_ms,
    load_jobs,
    percentile,
    print_table,
    reset_jobs,
    run_main,
    temp_database,
)
from pyriver_async import Client, QueueConfig, Workers
from pyriver_async.ui import ALLOW_ALL, create_app

LAYOUT = [
    ("completed", 0.80),
    ("available", 0.10),
    ("scheduled", 0.05),
    ("discarded", 0.03),
    ("retryable", 0.01),
    ("running", 0.005),
    ("pending", 0.005),
]


async def build_table(url: str, rows: int) -> None:
    """``rows`` jobs by INSERT ... SELECT per state, the indexes rebuilt after."""
    conn = await asyncpg.connect(url)
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'river_job' "
            "AND indexname <> 'river_job_pkey'"
        )
        for ix in indexes:
            await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
        start = 0
        for state, share in LAYOUT:
            n = int(rows * share)
            final = state in ("completed", "discarded")
            ran = final or state in ("running", "retryable")
            spread = "(g % 86400) * interval '1 second'"
            await conn.execute(
                f"""
                INSERT INTO river_job (state, kind, queue, priority, args, max_attempts, attempt,
                    scheduled_at, attempted_at, finalized_at, errors)
                SELECT '{state}', 'kind_' || (g % 40), 'q' || (g % 5), 1 + (g / 5) % 4,
                    jsonb_build_object('user_id', g % 100000, 'n', g), 25, {int(ran)},
                    now() - interval '25 hours' + {spread},
                    {f"now() - interval '24 hours' + {spread}" if ran else "NULL"},
                    {
                    f"now() - interval '24 hours' + {spread} + interval '40 ms'"
                    if final
                    else "NULL"
                },
                    {
                    "ARRAY[jsonb_build_object('at', now(), 'attempt', 1, 'error', 'boom')]"
                    if state in ("discarded", "retryable")
                    else "NULL"
                }
                FROM generate_series({start + 1}, {start + n}) AS g
                """
            )
            start += n
        for ix in indexes:
            await conn.execute(ix["indexdef"])
        await conn.execute("VACUUM ANALYZE river_job")
    finally:
        await conn.close()


async def render_times(url: str, requests: int, results: Results) -> list[list[object]]:
    client = Client(url, pool_max_size=2)
    ui = create_app(client, authorize=ALLOW_ALL, live=False, sampler=False)
    conn = await asyncpg.connect(url)
    job_id = await conn.fetchval("SELECT max(id) FROM river_job WHERE state = 'discarded'")
    await conn.close()
    pages = {
        "overview": "/",
        "jobs: completed": "/jobs?state=completed",
        "jobs: available in q1": "/jobs?state=available&queue=q1",
        "job": f"/jobs/{job_id}",
    }
    rows: list[list[object]] = []
    transport = httpx.ASGITransport(app=ui)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            for name, path in pages.items():
                for mode in ("uncached", "cached"):
                    times = []
                    for i in range(requests + 2):
                        if mode == "uncached":
                            ui.cache.clear()
                        t0 = time.perf_counter()
                        r = await http.get(path)
                        elapsed = time.perf_counter() - t0
                        assert r.status_code == 200, (path, r.status_code)
                        if i >= 2:  # two to warm the connections and caches of PostgreSQL
                            times.append(elapsed)
                    p50, p95 = percentile(times, 50), percentile(times, 95)
                    results.medians[f"render_{name}_{mode}_p50_ms"] = round(p50 * 1000, 2)
                    results.medians[f"render_{name}_{mode}_p95_ms"] = round(p95 * 1000, 2)
                    results.runs[f"render_{name}_{mode}_s"] = times
                    rows.append([name, mode, fmt_ms(p50 * 1000), fmt_ms(p95 * 1000)])
    finally:
        await ui.aclose()
        await client.close()
    return rows


async def drain(url: str, jobs: int) -> float:
    """Jobs per second of a client working ``jobs`` no-op jobs with 100 workers."""
    workers = Workers()

    @workers.register(NoopArgs)
    async def noop(ctx: Any, job: Any) -> None:
        return None

    conn = await asyncpg.connect(url)
    try:
        await reset_jobs(conn)
        await load_jobs(conn, jobs)
        client = Client(
            url,
            workers=workers,
            queues={"default": QueueConfig(max_workers=100)},
            pool_max_size=6,
            fetch_poll_interval=0.05,
        )
        t0 = time.perf_counter()
        async with client:
            while (
                await conn.fetchval("SELECT count(*) FROM river_job WHERE state = 'completed'")
                < jobs
            ):
                await asyncio.sleep(0.02)
        return jobs / (time.perf_counter() - t0)
    finally:
        await conn.close()


async def tabs(base: str, n: int, seconds: float) -> None:
    """``n`` browser tabs on the jobs list and the overview, for ``seconds``."""

    async def tab(i: int, http: httpx.AsyncClient) -> None:
        path = "/jobs?state=available" if i % 2 else "/"
        last = 0.0
        async with http.stream("GET", base + "/events") as stream:
            async for line in stream.aiter_lines():
                now = time.monotonic()
                if line.startswith("event:") and now - last >= 2.0:
                    last = now
                    await http.get(base + path, headers={"HX-Request": "true"})

    async with httpx.AsyncClient(timeout=30) as http:
        tasks = [asyncio.create_task(tab(i, http)) for i in range(n)]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def drains(url: str, jobs: int, n_tabs: int, results: Results) -> list[list[object]]:
    """Alone, with the UI and its tabs, alone again (the UI stopped): A-B-A."""
    alone = [await drain(url, jobs)]
    env = {**os.environ, "DATABASE_URL": url}
    ui = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pyriver_async.cli",
        "ui",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    procs = [ui]
    try:
        assert ui.stdout is not None
        line = (await ui.stdout.readline()).decode()  # "pyriver ui: http://...:port/ ..."
        base = line.split()[2].rstrip("/")
        tabs_proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.ui", "--tabs-only", base, str(n_tabs), "600", env=env
        )
        procs.append(tabs_proc)
        await asyncio.sleep(2)  # the tabs are connected, the sampler ticks
        with_ui = await drain(url, jobs)
    finally:
        for p in reversed(procs):
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), 10)
    alone.append(await drain(url, jobs))
    a = sum(alone) / len(alone)
    results.medians.update(
        drain_alone_jobs_per_s=round(a),
        drain_with_ui_jobs_per_s=round(with_ui),
        drain_ratio_with_ui=round(with_ui / a, 3),
    )
    results.runs.update(drain_alone=alone, drain_with_ui=[with_ui])
    return [
        ["alone (mean of before and after)", f"{a:,.0f}"],
        [f"with the UI and {n_tabs} tabs", f"{with_ui:,.0f}"],
        ["ratio", f"{with_ui / a:.2f}"],
    ]


async def main(args: argparse.Namespace, loop: str) -> None:
    results = Results("ui", vars(args), loop)
    async with temp_database() as url:
        t0 = time.monotonic()
        await build_table(url, args.rows)
        results.notes.append(f"{args.rows:,} rows built in {time.monotonic() - t0:.0f} s")
        print(results.notes[-1])
        rows = await render_times(url, args.requests, results)
        print_table(f"render time on {args.rows:,} jobs", ["page", "cache", "p50", "p95"], rows)
    async with temp_database() as url:
        rows = await drains(url, args.drain_jobs, args.tabs, results)
        print_table(f"drain of {args.drain_jobs:,} jobs (jobs/s)", ["", "rate"], rows)
    results.notes.append("indicative: one short invocation on a shared machine")
    print("wrote", results.write())


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--drain-jobs", type=int, default=20_000)
    p.add_argument("--tabs", type=int, default=5)
    p.add_argument("--tabs-only", nargs=3, metavar=("URL", "N", "SECONDS"), help=argparse.SUPPRESS)
    add_common_args(p, runs=1)
    args = p.parse_args()
    if args.tabs_only:
        base, n, seconds = args.tabs_only
        asyncio.run(tabs(base, int(n), float(seconds)))
        return
    run_main(lambda loop: main(args, loop), no_uvloop=args.no_uvloop, timeout=1800)


if __name__ == "__main__":
    cli()
