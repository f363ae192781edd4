"""The pyriver_async demo: migrate a throwaway database, insert a mix of jobs, work them.

Run it with `make demo`. It uses DATABASE_URL when set, else the PostgreSQL on
127.0.0.1:5432, else an embedded throwaway PostgreSQL (pgserver). It creates its own
database and drops it at the end, so it never touches your data.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from pyriver_async import (
    Client,
    InsertOpts,
    Job,
    JobArgs,
    JobContext,
    JobSnooze,
    QueueConfig,
    UniqueOpts,
    Workers,
    migrate,
)
from pyriver_async._localdb import create_database, drop_database


class SendEmail(JobArgs, kind="demo_send_email"):
    user_id: int
    subject: str


class ChargeCard(JobArgs, kind="demo_charge_card"):
    order_id: int
    fail_times: int = 2  # a flaky payment provider: fails this many times, then succeeds


class BuildReport(JobArgs, kind="demo_build_report"):
    name: str


class WaitForStock(JobArgs, kind="demo_wait_for_stock"):
    sku: str


class ImportFeed(JobArgs, kind="demo_import_feed"):
    url: str


workers = Workers()


@workers.register(SendEmail)
async def send_email(ctx: JobContext, job: Job[SendEmail]) -> None:
    await asyncio.sleep(random.uniform(0.05, 0.3))  # talking to the mail server


@workers.register(ChargeCard)
async def charge_card(ctx: JobContext, job: Job[ChargeCard]) -> None:
    if job.attempt <= job.args.fail_times:
        raise ConnectionError(f"payment provider timed out (attempt {job.attempt})")


@workers.register(BuildReport)
async def build_report(ctx: JobContext, job: Job[BuildReport]) -> None:
    await asyncio.sleep(0.2)


@workers.register(WaitForStock)
async def wait_for_stock(ctx: JobContext, job: Job[WaitForStock]) -> None:
    if not job.metadata.get("snoozes"):
        raise JobSnooze(timedelta(seconds=2))  # not in stock yet: look again later


@workers.register(ImportFeed)
async def import_feed(ctx: JobContext, job: Job[ImportFeed]) -> None:
    raise ValueError(f"feed {job.args.url} is not valid XML")


def show_rows(title: str, rows: list[asyncpg.Record]) -> None:
    print(f"\n{title}")
    print(f"  {'id':>3}  {'kind':<20} {'queue':<8} {'state':<10} {'att':>3}  scheduled_at")
    for r in rows:
        print(
            f"  {r['id']:>3}  {r['kind']:<20} {r['queue']:<8} {r['state']:<10} "
            f"{r['attempt']:>3}  {r['scheduled_at']:%H:%M:%S.%f}"[:-3]
        )


async def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    url, dbname = await create_database("pyriver_demo")
    print(f"Database: a throwaway database {dbname!r}")
    try:
        result = await migrate(url)
        print("Migrated:", ", ".join(f"{line} {v:03d}" for line, v, _ in result.applied))
        pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
        assert pool is not None
        client = Client(
            pool,
            workers=workers,
            queues={"default": QueueConfig(max_workers=10), "reports": QueueConfig(max_workers=2)},
            # Short retries so the demo shows a job failing, retrying and succeeding.
            retry_policy=lambda job, now: now + timedelta(seconds=1),
        )

        # Insert atomically with "business" writes, as a web handler would.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
            await conn.execute("INSERT INTO orders VALUES (42)")
            await client.insert(ChargeCard(order_id=42), conn=conn)
        await client.insert_many([SendEmail(user_id=i, subject="Welcome") for i in range(1, 6)])
        await client.insert(
            BuildReport(name="daily"),
            InsertOpts(queue="reports", scheduled_at=datetime.now(UTC) + timedelta(seconds=3)),
        )
        await client.insert(WaitForStock(sku="ABC-1"))
        await client.insert(ImportFeed(url="https://example.com/feed"), InsertOpts(max_attempts=2))
        unique = InsertOpts(unique=UniqueOpts(by_args=True, by_period=timedelta(hours=1)))
        first = await client.insert(SendEmail(user_id=99, subject="Digest"), unique)
        again = await client.insert(SendEmail(user_id=99, subject="Digest"), unique)
        print(
            f"Unique job inserted twice: same id {first.job.id} == {again.job.id}, "
            f"second skipped as duplicate: {again.unique_skipped_as_duplicate}"
        )
        show_rows("Inserted jobs:", await pool.fetch("SELECT * FROM river_job ORDER BY id"))

        total = await pool.fetchval("SELECT count(*) FROM river_job")
        print("\nWorking them (events as they happen):")
        finals = {"completed", "discarded", "cancelled"}
        async with client:
            events = client.subscribe()
            finished: dict[int, str] = {}
            t0 = asyncio.get_running_loop().time()
            while len(finished) < total:
                ev = await events.get(timeout=30)
                kind = await pool.fetchval("SELECT kind FROM river_job WHERE id = $1", ev.job_id)
                elapsed = asyncio.get_running_loop().time() - t0
                note = " (snoozed: runs again at once)" if kind == "demo_wait_for_stock" else ""
                print(
                    f"  +{elapsed:5.2f}s  job {ev.job_id:>2} {kind:<20} attempt {ev.attempt} "
                    f"-> {ev.state}{note if ev.state != 'completed' else ''}"
                )
                if ev.state in finals:
                    finished[ev.job_id] = ev.state
            print("\nAll jobs finished; stopping the client gracefully.")
        rows = await pool.fetch("SELECT * FROM river_job ORDER BY id")
        show_rows("Final rows:", rows)
        counts: dict[str, int] = collections.Counter(r["state"] for r in rows)
        print("\nBy state:", dict(sorted(counts.items())))
        errors: list[Any] = [r for r in rows if r["errors"]]
        for r in errors:
            print(f"  job {r['id']} ({r['kind']}) recorded {len(r['errors'])} error(s)")
        await pool.close()
        return 0
    finally:
        await drop_database(dbname)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
