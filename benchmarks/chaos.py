"""The chaos matrix: five faults, each on a throwaway PostgreSQL cluster of its own,
under load, checked from the database alone.

    python -m benchmarks chaos [--size ci|full] [--only sigkill,restart,...]

Cells:

- ``sigkill``: three worker processes share a queue; one after another is SIGKILLed
  mid-drain and a fresh one started. Their running jobs are rescued once the dead
  client misses heart-beats for ``dead_client_after`` (3 s here). Recovery: from the
  last kill until the last rescued job is completed.
- ``restart``: PostgreSQL restarted (fast shutdown) mid-drain under one client.
  Recovery: from the server accepting connections again to the first outcome written.
- ``partition``: two clients; one reaches the server through a TCP proxy that is
  black-holed for ``dead_client_after`` + 2 s, then restored (what it had sent is
  delivered then, as a healed network does). Its jobs are rescued and completed by
  the other; its outcomes arriving late must change nothing. Recovery: from the start
  of the partition until the last of its jobs is taken back for the others (rescued;
  they then wait their turn behind the queue's backlog).
- ``horizon``: the drain runs while another session holds a REPEATABLE READ snapshot
  open. Recovery here is detection: from the pin to the leader's warning naming it.
- ``failover``: primary, streaming standby, a proxy; mid-drain the standby is
  promoted, the proxy pointed at it and the old primary turned read-only. Recovery:
  from the switch to the first outcome written on the new primary.

Each cell reports jobs ``inserted``, ``completed``, ``twice`` (jobs whose ``completed``
outcome was recorded more than once: must be 0), ``stale`` (completions written by a
client that no longer held the job's claim: must be 0), ``lost`` (inserted and never
completed: must be 0) and the time to recover. An audit trigger on ``river_job``
records every outcome (each move out of ``running``) with the writer's
``application_name`` (each client connects under its own id) and the claim's holder.
``--size ci`` is what ``.ci/run`` runs (tests/faults/test_chaos.py), ``full`` a longer
load. The process exits 1 when any cell fails its checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/chaos.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyriver_async
from benchmarks._common import Results, print_table
from pyriver_async import Client, InsertOpts, Job, JobContext, QueueConfig, Workers
from tests.faults._cluster import PgCluster, Setting, make_standby, new_cluster
from tests.faults._proxy import TcpProxy
from tests.faults._worker_proc import SIDE_TABLE_DDL, MpSleep, WorkerProcs

__all__ = ["CELLS", "CellResult", "Size", "run_cell", "run_matrix"]

# Every outcome (a job leaving `running`): who wrote it, who held the claim.
AUDIT_DDL = """
CREATE TABLE chaos_outcome (
    job_id bigint NOT NULL, attempt int NOT NULL, state text NOT NULL,
    writer text NOT NULL, holder text, at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION chaos_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state = 'running' AND NEW.state <> 'running' THEN
        INSERT INTO chaos_outcome (job_id, attempt, state, writer, holder)
        VALUES (NEW.id, OLD.attempt, NEW.state::text, current_setting('application_name'),
            OLD.attempted_by[array_upper(OLD.attempted_by, 1)]);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER chaos_audit AFTER UPDATE OF state ON river_job
    FOR EACH ROW EXECUTE FUNCTION chaos_audit();
"""

PRIMARY_SETTINGS: dict[str, Setting] = {
    "wal_level": "replica",
    "max_wal_senders": 4,
    "hot_standby": True,
}


@dataclass(frozen=True)
class Size:
    """How much load each cell runs with."""

    name: str
    jobs: int
    job_ms: int
    kills: int


SIZES = {
    "ci": Size("ci", jobs=3000, job_ms=20, kills=3),
    "full": Size("full", jobs=20000, job_ms=20, kills=6),
}


@dataclass
class CellResult:
    name: str
    inserted: int = 0
    completed: int = 0
    twice: int = 0
    stale: int = 0
    lost: int = 0
    recover_s: float | None = None
    seconds: float = 0.0
    note: str = ""
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.lost == 0 and self.twice == 0 and self.stale == 0


# -- shared pieces ---------------------------------------------------------------------


def _with_app(url: str, app: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={app}"


async def _prepare(url: str) -> None:
    await pyriver_async.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(AUDIT_DDL)
        await conn.execute(SIDE_TABLE_DDL)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _cluster(settings: dict[str, Setting] | None = None) -> AsyncIterator[PgCluster]:
    cluster = await asyncio.to_thread(new_cluster, settings)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.destroy)


async def _fetchval(url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def _now(url: str) -> Any:
    return await _fetchval(url, "SELECT clock_timestamp()")


async def _wait_completed(url: str, n: int, timeout: float) -> None:
    """Poll (the outcomes are written by the clients under test) until ``n`` jobs are
    completed or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            done = await _fetchval(url, "SELECT count(*) FROM river_job WHERE state = 'completed'")
            if done >= n:
                return
        await asyncio.sleep(0.1)


async def _tally(url: str, res: CellResult) -> None:
    conn = await asyncpg.connect(url)
    try:
        res.completed = await conn.fetchval(
            "SELECT count(*) FROM river_job WHERE state = 'completed'"
        )
        res.twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT job_id FROM chaos_outcome WHERE state = 'completed' "
            "GROUP BY job_id HAVING count(*) > 1) AS t"
        )
        res.stale = await conn.fetchval(
            "SELECT count(*) FROM chaos_outcome WHERE state = 'completed' "
            "AND writer IS DISTINCT FROM holder"
        )
        res.details["states"] = {
            r["state"]: r["n"]
            for r in await conn.fetch(
                "SELECT state::text, count(*) AS n FROM river_job GROUP BY state"
            )
        }
        res.details["ran_twice"] = await conn.fetchval(
            "SELECT count(*) FROM (SELECT job_id FROM mp_done GROUP BY job_id "
            "HAVING count(*) > 1) AS t"
        )
        res.details["rescued"] = await conn.fetchval(
            "SELECT count(*) FROM river_job WHERE metadata ? 'river:rescue_count'"
        )
    finally:
        await conn.close()
    res.lost = res.inserted - res.completed


async def _first_completion_after(url: str, at: Any) -> float | None:
    s = await _fetchval(
        url,
        "SELECT extract(epoch FROM min(o.at) - $1::timestamptz) FROM chaos_outcome AS o "
        "WHERE o.state = 'completed' AND o.at > $1::timestamptz",
        at,
    )
    return None if s is None else float(s)


async def _last_rescued_completion_after(url: str, at: Any) -> float | None:
    s = await _fetchval(
        url,
        "SELECT extract(epoch FROM max(o.at) - $1::timestamptz) FROM chaos_outcome AS o "
        "JOIN river_job AS j ON j.id = o.job_id "
        "WHERE o.state = 'completed' AND j.metadata ? 'river:rescue_count'",
        at,
    )
    return None if s is None else float(s)


async def _last_rescue_after(url: str, at: Any, *, holder: str) -> float | None:
    """Seconds from ``at`` until the last job ``holder`` held was taken back (rescued)."""
    s = await _fetchval(
        url,
        "SELECT extract(epoch FROM max(o.at) - $1::timestamptz) FROM chaos_outcome AS o "
        "WHERE o.holder = $2 AND o.writer <> $2 AND o.state <> 'completed'",
        at,
        holder,
    )
    return None if s is None else float(s)


def _recording_workers(app: str) -> Workers:
    """mp_sleep jobs that record each run in mp_done (as the worker processes do)."""
    w = Workers()

    @w.register(MpSleep, timeout=None)
    async def sleep_then_record(ctx: JobContext, job: Job[MpSleep]) -> None:
        await asyncio.sleep(job.args.seconds)
        async with ctx.client.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO mp_done (job_id, attempt, client) VALUES ($1, $2, $3)",
                job.id,
                job.attempt,
                app,
            )

    return w


def _client(url: str, app: str, **kw: Any) -> Client:
    settings: dict[str, Any] = {
        "queues": {"mp": QueueConfig(max_workers=kw.pop("max_workers", 20))},
        "fetch_poll_interval": 0.5,
        "heartbeat_interval": 0.5,
        "dead_client_after": 3.0,
        "leader_ttl": 2.0,
        "statement_timeout": 5.0,
        "soft_stop_timeout": 2.0,
        "hard_stop_timeout": 1.0,
    }
    settings.update(kw)
    return Client(_with_app(url, app), id=app, workers=_recording_workers(app), **settings)


async def _insert(url: str, n: int, ms: int, priority: int = 1) -> int:
    inserter = Client(_with_app(url, "inserter"))
    try:
        opts = InsertOpts(queue="mp", priority=priority)
        jobs = [(MpSleep(seconds=ms / 1000), opts) for _ in range(n)]
        return len(await inserter.insert_many(jobs))
    finally:
        await inserter.close()


async def _until_completed_at_least(url: str, n: int, timeout: float) -> None:
    await _wait_completed(url, n, timeout)


# -- the cells -------------------------------------------------------------------------


async def cell_sigkill(size: Size, res: CellResult) -> None:
    async with _cluster() as cluster:
        url = await cluster.create_database("chaos")
        await _prepare(url)
        with tempfile.TemporaryDirectory(prefix="pyriver-chaos-") as tmp:
            async with WorkerProcs(url, Path(tmp)) as procs:
                live = []
                for i in range(3):
                    p = await procs.start(f"w{i}", "--max-workers", "10", "--lifetime", "300")
                    live.append(p)
                for p in live:
                    await p.wait_ready()
                res.inserted = await _insert(url, size.jobs, size.job_ms * 3)
                total_ms = size.jobs * size.job_ms * 3 / 30
                last_kill = None
                for k in range(size.kills):
                    # Spread the kills over the first half of the drain.
                    await asyncio.sleep(total_ms / 1000 / 2 / size.kills)
                    victim = live.pop(0)
                    await victim.kill()
                    last_kill = await _now(url)
                    fresh = await procs.start(f"w{3 + k}", "--max-workers", "10")
                    live.append(fresh)
                    await fresh.wait_ready()
                await _wait_completed(url, res.inserted, 120)
                if last_kill is not None:
                    res.recover_s = await _last_rescued_completion_after(url, last_kill)
                await _tally(url, res)
                for p in live:
                    await p.terminate()
    res.note = (
        f"{size.kills} SIGKILLs, {res.details['rescued']} jobs rescued, "
        f"{res.details['ran_twice']} ran twice"
    )


async def cell_restart(size: Size, res: CellResult) -> None:
    async with _cluster() as cluster:
        url = await cluster.create_database("chaos")
        await _prepare(url)
        client = _client(url, "c0")
        async with client:
            res.inserted = await _insert(url, size.jobs, size.job_ms)
            await _until_completed_at_least(url, size.jobs // 3, 60)
            await cluster.arestart()
            back = await _now(url)
            await _wait_completed(url, res.inserted, 60)
            res.recover_s = await _first_completion_after(url, back)
        await _tally(url, res)
    res.note = f"{res.details['ran_twice']} ran twice"


async def cell_partition(size: Size, res: CellResult) -> None:
    dead_after, long_s, workers = 3.0, 2.5, 20
    async with _cluster() as cluster:
        url = await cluster.create_database("chaos")
        await _prepare(url)
        async with TcpProxy("127.0.0.1", cluster.port) as proxy:
            a = _client(url, "a", max_workers=workers, dead_client_after=dead_after)
            b = _client(
                proxy.url("chaos"),
                "b",
                max_workers=workers,
                dead_client_after=dead_after,
                statement_timeout=1.0,
            )
            async with a:
                # `a` leads (it runs the rescuer): it starts first and is elected.
                deadline = time.monotonic() + 15
                while not a.is_leader:
                    if time.monotonic() > deadline:
                        raise AssertionError("no leader")
                    await asyncio.sleep(0.05)
                async with b:
                    # Long jobs first (priority 1), the load behind them (priority 4):
                    # `b` is running long jobs when the network goes, and once they are
                    # rescued `a` takes them ahead of the load and is still running them
                    # when `b`'s late outcomes for them arrive: only the claim guard
                    # (attempt, attempted_at) stops those from being written.
                    res.inserted = await _insert(url, 2 * workers, int(long_s * 1000))
                    res.inserted += await _insert(url, size.jobs, size.job_ms, priority=4)
                    deadline = time.monotonic() + 15
                    while len(b.running_jobs) < workers:
                        if time.monotonic() > deadline:
                            raise AssertionError("b never filled its slots")
                        await asyncio.sleep(0.01)
                    held = len(b.running_jobs)
                    start = await _now(url)
                    proxy.blackhole()
                    await asyncio.sleep(dead_after + 2.0)  # the partition lasts this long
                    proxy.restore()
                    await _wait_completed(url, res.inserted, 120)
                    res.recover_s = await _last_rescue_after(url, start, holder="b")
        await _tally(url, res)
    res.note = (
        f"partitioned {dead_after + 2:.0f}s holding {held} jobs; "
        f"{res.details['rescued']} rescued, {res.details['ran_twice']} ran twice"
    )


class _Seen(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.at is None and self.needle in record.getMessage():
            self.at = time.monotonic()


async def cell_horizon(size: Size, res: CellResult) -> None:
    async with _cluster() as cluster:
        url = await cluster.create_database("chaos")
        await _prepare(url)
        pin = await asyncpg.connect(url, server_settings={"application_name": "chaos_pin"})
        pid = pin.get_server_pid()
        seen = _Seen(f"pid {pid}")
        log = logging.getLogger("pyriver_async.maintenance.horizon")
        level = log.level
        log.setLevel(logging.WARNING)  # whatever the root logger lets through
        log.addHandler(seen)
        try:
            client = _client(url, "c0", horizon_warning_after=1.0)
            async with client:
                res.inserted = await _insert(url, size.jobs, 0)
                await pin.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                await pin.fetchval("SELECT 1")
                t_pin = time.monotonic()
                # The watch passes every 30 s: once the pin is older than the threshold
                # (1 s), ask for a pass now, as a newly elected leader's first one would.
                assert client._maintenance is not None
                watch = client._maintenance.horizon
                if watch is not None:
                    while seen.at is None and time.monotonic() - t_pin < 30:
                        if time.monotonic() - t_pin > 1.0:
                            watch.wake()
                        await asyncio.sleep(0.1)
                res.recover_s = None if seen.at is None else seen.at - t_pin
                await _wait_completed(url, res.inserted, 120)
                drained = time.monotonic() - t_pin
            await pin.execute("ROLLBACK")
            await _tally(url, res)
        finally:
            log.removeHandler(seen)
            log.setLevel(level)
            await pin.close()
    if res.recover_s is None:
        res.error = "the pinned horizon was never reported"
    res.note = f"drained {res.inserted} pinned jobs in {drained:.1f}s; warned (detection)"


async def cell_failover(size: Size, res: CellResult) -> None:
    primary = await asyncio.to_thread(new_cluster, PRIMARY_SETTINGS)
    standby: PgCluster | None = None
    try:
        url = await primary.create_database("chaos")
        await _prepare(url)
        standby = await asyncio.to_thread(make_standby, primary)
        new_url = standby.url("chaos")
        async with TcpProxy("127.0.0.1", primary.port) as proxy:
            client = _client(proxy.url("chaos"), "c0", max_workers=50)
            async with client:
                res.inserted = await _insert(proxy.url("chaos"), size.jobs, size.job_ms)
                await _until_completed_at_least(url, size.jobs // 3, 60)
                await standby.wait_replayed()
                await standby.promote()
                proxy.retarget("127.0.0.1", standby.port)
                await primary.set_read_only(True)
                switched = await _now(new_url)
                await _wait_completed(new_url, res.inserted, 60)
                res.recover_s = await _first_completion_after(new_url, switched)
        await _tally(new_url, res)
    finally:
        if standby is not None:
            await asyncio.to_thread(standby.destroy)
        await asyncio.to_thread(primary.destroy)
    res.note = (
        f"promote, retarget, old primary read-only; {res.details['ran_twice']} ran twice "
        "(claims the old primary took after the promotion)"
    )


CELLS: dict[str, Callable[[Size, CellResult], Awaitable[None]]] = {
    "sigkill": cell_sigkill,
    "restart": cell_restart,
    "partition": cell_partition,
    "horizon": cell_horizon,
    "failover": cell_failover,
}


async def run_cell(name: str, size: Size | str = "ci") -> CellResult:
    """Run one cell; its checks are the caller's (``result.ok``)."""
    sz = SIZES[size] if isinstance(size, str) else size
    res = CellResult(name)
    t0 = time.monotonic()
    try:
        await CELLS[name](sz, res)
    except Exception as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    res.seconds = time.monotonic() - t0
    return res


async def run_matrix(names: list[str], size: str) -> list[CellResult]:
    out = []
    for name in names:
        print(f"[chaos] {name} ...", file=sys.stderr, flush=True)
        r = await run_cell(name, size)
        print(
            f"[chaos] {name}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        out.append(r)
    return out


def _fmt_s(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.2f}s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks chaos", description=__doc__)
    p.add_argument("--size", choices=sorted(SIZES), default="ci")
    p.add_argument("--only", default="", help="comma list of: " + ", ".join(CELLS))
    p.add_argument("--no-json", action="store_true")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(CELLS)
    unknown = [n for n in names if n not in CELLS]
    if unknown:
        p.error(f"unknown cell(s): {', '.join(unknown)}")
    logging.basicConfig(level=logging.ERROR)
    results = asyncio.run(run_matrix(names, args.size))
    print_table(
        f"Chaos matrix ({args.size})",
        ["cell", "inserted", "completed", "twice", "stale", "lost", "recover", "time", "", "note"],
        [
            [
                r.name,
                r.inserted,
                r.completed,
                r.twice,
                r.stale,
                r.lost,
                _fmt_s(r.recover_s),
                _fmt_s(r.seconds),
                "ok" if r.ok else "FAILED",
                r.error or r.note,
            ]
            for r in results
        ],
    )
    if not args.no_json:
        out = Results("chaos", {"size": args.size, "cells": names}, "asyncio")
        out.extra["cells"] = [asdict(r) | {"ok": r.ok} for r in results]
        out.medians = {f"{r.name}_ok": r.ok for r in results}
        print(f"results: {out.write()}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
