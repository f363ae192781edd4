"""River's two GIN indexes under a drain: ``fastupdate`` and ``gin_pending_list_limit``
(issue 23: "GIN fastupdate / gin_pending_list_limit settings measured").

``river_job_args_index`` and ``river_job_metadata_index`` are GIN indexes on the two
jsonb columns. A job's claim and its completion are non-HOT updates (they change
indexed columns), so each writes a new entry into both GIN indexes, twice per job.
With ``fastupdate`` on (PostgreSQL's default, and River's: its migration sets
nothing) those entries go to each index's pending list, merged into the index proper
when the list passes ``gin_pending_list_limit`` (4 MB by default) or by VACUUM; off,
each entry is inserted into the index at once.

Arms, alternating per round on one database (each sets the storage parameters with
``ALTER INDEX``, then the same drain of ``--jobs`` pre-inserted no-op jobs at 100
workers, timed as benchmarks/throughput times it):

- ``default``: fastupdate on, the 4 MB list (River's catalog as it is);
- ``off``: ``fastupdate = off``;
- ``big_list``: fastupdate on, ``gin_pending_list_limit = 64MB``.

Ratios are medians of per-round ratios to ``default``. Changing these parameters
changes no column, type or index definition, only storage parameters of two indexes;
a user can set them with ``ALTER INDEX`` on their own database.

    python -m benchmarks.gin [--jobs 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics

import asyncpg

from benchmarks._common import (
    Progress,
    Results,
    add_common_args,
    checkpoint,
    fmt_int,
    fmt_ratio,
    load_jobs,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    temp_database,
)
from benchmarks.throughput import library_drain

INDEXES = ("river_job_args_index", "river_job_metadata_index")
ARMS: dict[str, str] = {
    "default": "fastupdate = on, gin_pending_list_limit = 4096",
    "off": "fastupdate = off",
    "big_list": "fastupdate = on, gin_pending_list_limit = 65536",
}


async def configure(admin: asyncpg.Connection, arm: str) -> None:
    for index in INDEXES:
        await admin.execute(f"ALTER INDEX {index} RESET (fastupdate, gin_pending_list_limit)")
        await admin.execute(f"ALTER INDEX {index} SET ({ARMS[arm]})")


async def _main(args: argparse.Namespace, loop: str) -> None:
    res = Results("gin", vars(args), loop)
    prog = Progress("gin", args.runs * len(ARMS))
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        try:
            names = list(ARMS)
            for r in range(args.runs):
                order = names[r % len(names) :] + names[: r % len(names)]
                for arm in order:
                    prog.step(f"{arm}, round {r + 1}")
                    await reset_jobs(admin)
                    await configure(admin, arm)
                    # Empty the pending lists the previous arm left, so each drain
                    # starts from the same index state.
                    await admin.execute("VACUUM river_job")
                    await load_jobs(admin, args.jobs)
                    await checkpoint(admin)
                    d = await library_drain(url, args.jobs, 100, timeout=args.timeout)
                    if d.completed_in_db != args.jobs:
                        raise RuntimeError(f"{arm}: {d.completed_in_db} of {args.jobs} completed")
                    res.add_run(arm, round(d.jobs_per_s, 1))
                    prog.advance()
        finally:
            await admin.close()
    prog.finish()
    base = res.runs["default"]
    rows: list[list[object]] = []
    for arm, setting in ARMS.items():
        runs = res.runs[arm]
        ratio = statistics.median(x / b for x, b in zip(runs, base, strict=True))
        res.medians[arm] = statistics.median(runs)
        res.medians[f"ratio_{arm}"] = ratio
        rows.append([arm, setting, fmt_int(statistics.median(runs)), fmt_ratio(ratio)])
    print_table(
        f"Drain of {args.jobs:,} no-op jobs, 100 workers, River's GIN indexes "
        f"(medians of {args.runs}; ratio: median per-round ratio to default)",
        ["arm", "storage parameters", "jobs/s", "of default"],
        rows,
    )
    if not args.no_json:
        print(f"\nresults: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=20000, help="jobs per drain (default 20000)")
    add_common_args(p, runs=5)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
