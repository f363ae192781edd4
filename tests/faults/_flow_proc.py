"""A worker process for the multi-process flow control test.

    python tests/faults/_flow_proc.py --dsn postgresql://... --id flow-0 --global-limit 5

It works ``flow_mp`` jobs in queue ``flow`` under the limits given on the command
line. Each attempt records itself in ``flow_runs`` (which the test creates): a row
when it starts and its end time when it ends, both from the database's clock, so that
a test can compute how many ran at once across every process. A job may fail or
snooze its first attempt, or sleep long (to be running when the test SIGKILLs its
process). Prints ``ready <client id>`` once started; stops on SIGTERM, when stdin
closes, or after ``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pyriver_async import (
    Client,
    Job,
    JobArgs,
    JobContext,
    JobSnooze,
    QueueConfig,
    RateLimit,
    Workers,
)
from tests.faults._worker_proc import _on_stdin_closed

SCRIPT = Path(__file__)

RUNS_DDL = """
CREATE TABLE flow_runs (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    key int NOT NULL,
    client text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz,
    PRIMARY KEY (job_id, attempt, client)
)
"""


class FlowMp(JobArgs, kind="flow_mp"):
    key: int = 0
    ms: float = 20.0
    fail_first: bool = False
    snooze_first: bool = False


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--max-workers", type=int, default=8)
    p.add_argument("--global-limit", type=int, default=None)
    p.add_argument("--partition-limit", type=int, default=None)
    p.add_argument("--rate", type=float, default=None, help="starts per second")
    p.add_argument("--heartbeat", type=float, default=0.5)
    p.add_argument("--dead-client-after", type=float, default=3.0)
    p.add_argument("--leader-ttl", type=float, default=2.0)
    p.add_argument("--lifetime", type=float, default=120.0)
    p.add_argument("--poll", type=float, default=0.2, help="fetch_poll_interval, seconds")
    return p.parse_args(argv)


async def run(opts: argparse.Namespace) -> None:
    workers = Workers()

    @workers.register(FlowMp, timeout=None)
    async def work(ctx: JobContext, job: Job[FlowMp]) -> None:
        pool = ctx.client.pool
        await pool.execute(
            "INSERT INTO flow_runs (job_id, attempt, key, client) VALUES ($1, $2, $3, $4)",
            job.id,
            job.attempt,
            job.args.key,
            opts.id,
        )
        try:
            await asyncio.sleep(job.args.ms / 1000)
        finally:
            await pool.execute(
                "UPDATE flow_runs SET ended_at = clock_timestamp() "
                "WHERE job_id = $1 AND attempt = $2 AND client = $3",
                job.id,
                job.attempt,
                opts.id,
            )
        if job.args.fail_first and job.attempt == 1:
            raise RuntimeError("the first attempt fails")
        if job.args.snooze_first and not job.metadata.get("snoozes"):
            raise JobSnooze(0.05)

    cfg = QueueConfig(
        max_workers=opts.max_workers,
        global_limit=opts.global_limit,
        partition_by="key" if opts.partition_limit else None,
        partition_limit=opts.partition_limit,
        # A burst of 2: a claim that comes a little late starts the job it was owed.
        rate_limit=RateLimit(int(opts.rate * 10), per=10, burst=2) if opts.rate else None,
    )
    client = Client(
        opts.dsn,
        id=opts.id,
        workers=workers,
        queues={"flow": cfg},
        fetch_poll_interval=opts.poll,
        leader_ttl=opts.leader_ttl,
        heartbeat_interval=opts.heartbeat,
        dead_client_after=opts.dead_client_after,
        retry_policy=lambda job, now: now,
        soft_stop_timeout=2.0,
        hard_stop_timeout=1.0,
        pool_max_size=opts.max_workers + 3,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _on_stdin_closed(stop.set)
    await client.start()
    print(f"ready {client.id}", flush=True)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), opts.lifetime)
    finally:
        await client.stop()
        print(f"stopped {client.id}", flush=True)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(run(parse(sys.argv[1:])))


if __name__ == "__main__":
    main()
