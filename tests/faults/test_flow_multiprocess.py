"""Flow limits are exact across OS processes: four worker processes share a queue with
a global limit and a per-key limit, through retries, snoozes and the SIGKILL of one of
them; every attempt's start and end (the database's clock) is recorded, and the most
that ever ran at once never exceeds a limit. The jobs the killed process held keep
their slots until the rescuer judges it dead and takes them back.

A rate limit across two processes holds its rate (tests/faults, same file)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import pyriver_async
from pyriver_async import Client, InsertOpts
from pyriver_async._localdb import create_database, drop_database
from tests._support import eventually

from ._flow_proc import RUNS_DDL, SCRIPT, FlowMp
from ._worker_proc import WorkerProc

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

GLOBAL_LIMIT = 5
PER_KEY = 2
DEAD_CLIENT_AFTER = 3.0


@contextlib.asynccontextmanager
async def flow_database() -> AsyncIterator[str]:
    url, name = await create_database("pyriver_flowmp")
    try:
        await pyriver_async.migrate(url)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(RUNS_DDL)
        finally:
            await conn.close()
        yield url
    finally:
        await drop_database(name)


class Procs:
    def __init__(self, dsn: str, tmp: Path) -> None:
        self.dsn = dsn
        self.tmp = tmp
        self.procs: list[WorkerProc] = []

    async def start(self, client_id: str, *args: str) -> WorkerProc:
        log = self.tmp / f"{client_id}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SCRIPT), "--dsn", self.dsn, "--id", client_id, *args,
                stdin=asyncio.subprocess.PIPE, stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        wp = WorkerProc(client_id, proc, log)
        self.procs.append(wp)
        return wp

    async def close(self, failed: bool) -> None:
        if failed:
            for p in self.procs:
                print(f"--- {p.client_id}\n{p.output()[-3000:]}", file=sys.stderr)
        for p in self.procs:
            await p.kill()


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals that hold at one instant (an end before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


async def test_limits_hold_across_processes_retries_snoozes_and_a_sigkill(
    tmp_path: Path,
) -> None:
    settings = (
        "--max-workers", "6",
        "--global-limit", str(GLOBAL_LIMIT),
        "--partition-limit", str(PER_KEY),
        "--dead-client-after", str(DEAD_CLIENT_AFTER),
        # Claims every 10 ms while jobs wait on a limit: the processes' claims race.
        "--poll", "0.01",
    )  # fmt: skip
    rnd = random.Random(21)
    async with flow_database() as dsn:
        procs = Procs(dsn, tmp_path)
        conn = await asyncpg.connect(dsn)
        inserter = Client(dsn)
        failed = True
        try:
            started = [await procs.start(f"flow-{i}", *settings) for i in range(4)]
            for p in started:
                await p.wait_ready()
            # Long jobs first, so the process about to be killed holds some; then a mix.
            items: list[Any] = [(FlowMp(key=k, ms=4000), InsertOpts(queue="flow")) for k in (0, 1)]
            for _ in range(200):
                job = FlowMp(
                    key=rnd.randrange(4),
                    ms=rnd.uniform(2, 20),
                    fail_first=rnd.random() < 0.1,
                    snooze_first=rnd.random() < 0.1,
                )
                items.append((job, InsertOpts(queue="flow")))
            ids = [r.job.id for r in await inserter.insert_many(items)]

            async def long_ones_running() -> bool:
                n: int = await conn.fetchval(
                    "SELECT count(*) FROM flow_runs WHERE job_id = ANY($1) AND ended_at IS NULL",
                    ids[:2],
                )
                return n == 2

            await eventually(long_ones_running, timeout=20)
            holder = await conn.fetchval(
                "SELECT client FROM flow_runs WHERE job_id = $1 AND ended_at IS NULL", ids[0]
            )
            victim = next(p for p in started if p.client_id == holder)
            await victim.kill()

            async def all_done() -> bool:
                n: int = await conn.fetchval(
                    "SELECT count(*) FROM river_job WHERE id = ANY($1) AND state = 'completed'",
                    ids,
                )
                return n == len(ids)

            # More jobs keep arriving, at the head of the claim order (an earlier
            # scheduled_at, as a retried or rescued job may have): claims that raced
            # without the queue's lock would see different candidates, and over-claim.
            for _ in range(800):
                job = FlowMp(key=rnd.randrange(4), ms=rnd.uniform(2, 20))
                at = datetime.now(UTC) - timedelta(hours=1, seconds=rnd.random() * 1000)
                ids.append(
                    (await inserter.insert(job, InsertOpts(queue="flow", scheduled_at=at))).job.id
                )
                await asyncio.sleep(0.003)
            await eventually(all_done, timeout=150, interval=0.2)
            runs = await conn.fetch("SELECT * FROM flow_runs")
            jobs = await conn.fetch("SELECT id, attempt, errors, metadata FROM river_job")
            failed = False
        finally:
            await inserter.close()
            await conn.close()
            await procs.close(failed)

    # When did the killed process's attempts end? When the rescuer took them back.
    rescued_at: dict[tuple[int, int], datetime] = {}
    for j in jobs:
        for e in j["errors"] or []:
            err = json.loads(e)
            if err["error"].startswith("Stuck job rescued"):
                rescued_at[(j["id"], err["attempt"])] = datetime.fromisoformat(err["at"])
    intervals: list[tuple[datetime, datetime, int]] = []
    for r in runs:
        end = r["ended_at"]
        if end is None:
            assert r["client"] == victim.client_id, dict(r)
            end = rescued_at[(r["job_id"], r["attempt"])]
        intervals.append((r["started_at"], end, r["key"]))
    killed = [i for i, r in enumerate(runs) if r["ended_at"] is None]
    assert killed, "the killed process held no job"
    assert {(r["job_id"], r["attempt"]) for r in runs if r["ended_at"] is None} <= set(rescued_at)

    overall = max_overlap([(s, e) for s, e, _ in intervals])
    per_key = {
        k: max_overlap([(s, e) for s, e, kk in intervals if kk == k])
        for k in {k for _, _, k in intervals}
    }
    assert overall == GLOBAL_LIMIT, overall  # reached, never exceeded
    assert max(per_key.values()) == PER_KEY, per_key
    # Retries and snoozes ran again; every attempt of every process is in the record.
    attempts = collections.Counter(r["job_id"] for r in runs)
    assert any(n >= 2 for n in attempts.values())
    assert len({r["client"] for r in runs}) == 4


async def test_a_rate_limit_holds_across_two_processes(tmp_path: Path) -> None:
    rate = 20.0  # starts per second, across both processes
    async with flow_database() as dsn:
        procs = Procs(dsn, tmp_path)
        conn = await asyncpg.connect(dsn)
        inserter = Client(dsn)
        failed = True
        try:
            await inserter.insert_many(
                [(FlowMp(key=i, ms=1), InsertOpts(queue="flow")) for i in range(400)]
            )
            for i in range(2):
                await (await procs.start(f"rate-{i}", "--rate", str(rate))).wait_ready()
            t0 = time.monotonic()
            await eventually(lambda: time.monotonic() - t0 > 5.5, timeout=10)
            starts = [
                r["attempted_at"]
                for r in await conn.fetch(
                    "SELECT attempted_at FROM river_job WHERE attempted_at IS NOT NULL "
                    "ORDER BY attempted_at"
                )
            ]
            clients = await conn.fetchval("SELECT count(DISTINCT client) FROM flow_runs")
            failed = False
        finally:
            await inserter.close()
            await conn.close()
            await procs.close(failed)
    assert clients == 2
    # From the first start: a burst of 2, then one every 1/rate s (GCRA), whoever
    # claims. Claim times are the database's, so the count per window is exact.
    span = (starts[-1] - starts[0]).total_seconds()
    assert span > 4
    assert (len(starts) - 2) / span == pytest.approx(rate, rel=0.05)
    most = max(sum(1 for t in starts if 0 <= (t - s).total_seconds() < 1) for s in starts)
    assert most <= rate + 2, most
