"""A worker process for the fault tests: works ``fault_record`` jobs until SIGTERM
(graceful stop, exit 0) or SIGKILL.

Each job sleeps ``--job-ms`` milliseconds, then records ``(job_id, attempt, pid)`` in
the table ``fault_side`` in a transaction of its own, so a test can tell which
attempts of which job ran, and in which process. Prints ``ready <client id>`` once
the client has started. Logs go to stderr.

    python tests/faults/_proc.py --dsn postgresql://... --max-workers 20 --job-ms 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import asyncpg

from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers

SIDE_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS fault_side (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


class FaultRecord(JobArgs, kind="fault_record"):
    n: int = 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--queue", default="default")
    p.add_argument("--max-workers", type=int, default=20)
    p.add_argument("--job-ms", type=float, default=3.0)
    p.add_argument("--poll", type=float, default=0.2, help="fetch_poll_interval, seconds")
    p.add_argument("--heartbeat", type=float, default=0.5)
    p.add_argument("--dead-client-after", type=float, default=3.0)
    p.add_argument("--rescue-after", type=float, default=3600.0)
    p.add_argument("--leader-ttl", type=float, default=2.0)
    p.add_argument("--no-maintenance", action="store_true")
    return p.parse_args(argv)


async def run(opts: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(opts.dsn, min_size=2, max_size=opts.max_workers + 5)
    assert pool is not None
    workers = Workers()
    pid = os.getpid()

    @workers.register(FaultRecord)
    async def record(ctx: JobContext, job: Job[FaultRecord]) -> None:
        await asyncio.sleep(opts.job_ms / 1000)
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO fault_side (job_id, attempt, pid) VALUES ($1, $2, $3)",
                job.id,
                job.attempt,
                pid,
            )

    client = Client(
        pool,
        workers=workers,
        queues={opts.queue: QueueConfig(max_workers=opts.max_workers)},
        maintenance=not opts.no_maintenance,
        fetch_poll_interval=opts.poll,
        heartbeat_interval=opts.heartbeat,
        dead_client_after=opts.dead_client_after,
        rescue_stuck_jobs_after=opts.rescue_after,
        leader_ttl=opts.leader_ttl,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with client:
            print("ready", client.id, flush=True)
            await stop.wait()
        print("stopped", flush=True)
    finally:
        await pool.close()


def main(argv: list[str]) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
