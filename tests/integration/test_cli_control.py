"""The ``pyriver`` worker and admin commands, end to end in real processes: jobs
worked, SIGTERM draining a running job, a second SIGTERM stopping hard with the job
given back, ``--processes 2`` surviving a killed child, ``jobs retry`` of a discarded
job, and bad input reported as one line with a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from tests._support import eventually

REPO = Path(__file__).resolve().parents[2]
FreshDatabase = Callable[[], Awaitable[str]]

APP = """
import asyncio
import os

from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers


class CliSleep(JobArgs, kind="cli_sleep"):
    seconds: float = 0.0


class CliFlaky(JobArgs, kind="cli_flaky"):
    pass


workers = Workers()


async def record(ctx: JobContext, table: str, job: Job) -> None:
    async with ctx.client.pool.acquire() as conn:
        await conn.execute(
            f"INSERT INTO {table} (job_id, attempt, pid) VALUES ($1, $2, $3)",
            job.id, job.attempt, os.getpid(),
        )


@workers.register(CliSleep, timeout=None)
async def sleep(ctx: JobContext, job: Job[CliSleep]) -> None:
    await record(ctx, "cli_started", job)
    await asyncio.sleep(job.args.seconds)
    await record(ctx, "cli_done", job)


@workers.register(CliFlaky)
async def flaky(ctx: JobContext, job: Job[CliFlaky]) -> None:
    if job.attempt == 1:
        raise RuntimeError("the first attempt fails")
    await record(ctx, "cli_done", job)


def make() -> Client:
    return Client(
        os.environ["DATABASE_URL"],
        workers=workers,
        queues={"default": QueueConfig(max_workers=5)},
        soft_stop_timeout=20,
        hard_stop_timeout=3,
        heartbeat_interval=0.3,
        dead_client_after=2,
        leader_ttl=2,
        fetch_poll_interval=0.2,
        pool_max_size=4,
    )


async def make_async() -> Client:
    return make()


def make_ephemeral() -> Client:
    client = make()
    client.queues = {"default": QueueConfig(max_workers=5, ephemeral=True)}
    return client


not_a_client = 42
"""


def child_env(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url is not None:
        env["DATABASE_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP)
    return tmp_path


@pytest.fixture
async def side_tables(db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db)
    for t in ("cli_started", "cli_done"):
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {t} (job_id bigint, attempt int, pid int); TRUNCATE {t}"
        )
    try:
        yield conn
    finally:
        await conn.close()


class Proc:
    """A ``pyriver`` process whose stderr lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def wait_line(self, pattern: str, count: int = 1, timeout: float = 30) -> list[str]:
        rx = re.compile(pattern)
        await eventually(
            lambda: sum(1 for ln in self.lines if rx.search(ln)) >= count, timeout=timeout
        )
        return [ln for ln in self.lines if rx.search(ln)]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 60) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def spawn(app_dir: Path, db: str) -> AsyncIterator[Callable[..., Awaitable[Proc]]]:
    procs: list[Proc] = []

    async def start(*args: str) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pyriver_async.cli",
            *args,
            cwd=app_dir,
            env=child_env(db),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        p = Proc(proc)
        procs.append(p)
        return p

    yield start
    for p in procs:
        await p.kill()


async def pyriver(
    *args: str, url: str | None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pyriver_async.cli", *args],
        capture_output=True,
        text=True,
        env=child_env(url),
        cwd=cwd,
        timeout=60,
    )


async def insert(
    conn: asyncpg.Connection, kind: str, args: str = "{}", n: int = 1, **kw: int
) -> list[int]:
    rows = await conn.fetch(
        """INSERT INTO river_job (kind, args, queue, max_attempts)
           SELECT $1, $2::jsonb, 'default', $3 FROM generate_series(1, $4) RETURNING id""",
        kind,
        args,
        kw.get("max_attempts", 25),
        n,
    )
    await conn.execute("SELECT pg_notify('public.river_insert', '{\"queue\": \"default\"}')")
    return [r["id"] for r in rows]


async def states(conn: asyncpg.Connection) -> dict[int, tuple[str, int]]:
    rows = await conn.fetch("SELECT id, state::text, attempt FROM river_job")
    return {r["id"]: (r["state"], r["attempt"]) for r in rows}


async def test_worker_works_jobs_and_stops_cleanly_on_sigterm(
    spawn: Callable[..., Awaitable[Proc]], side_tables: asyncpg.Connection
) -> None:
    conn = side_tables
    worker = await spawn("worker", "cliapp:make_async")
    await worker.wait_line(r"ready: schema 'public', queues default \(5 workers\)")
    ids = await insert(conn, "cli_sleep", n=20)

    async def all_completed() -> bool:
        s = await states(conn)
        return all(s[i][0] == "completed" for i in ids)

    await eventually(all_completed, timeout=20)
    worker.signal(signal.SIGTERM)
    assert await worker.wait(30) == 0
    assert any("stopped" in ln for ln in worker.lines[-2:])
    assert not any("Traceback" in ln for ln in worker.lines)


async def test_sigterm_lets_the_running_job_finish_then_exits_0(
    spawn: Callable[..., Awaitable[Proc]], side_tables: asyncpg.Connection
) -> None:
    conn = side_tables
    worker = await spawn("worker", "cliapp:make", "--queue", "default:2")
    await worker.wait_line("ready: .* default \\(2 workers\\)")
    (job_id,) = await insert(conn, "cli_sleep", json.dumps({"seconds": 2.0}))
    await eventually(lambda: conn.fetchval("SELECT count(*) FROM cli_started"), timeout=20)
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert await worker.wait(30) == 0
    elapsed = time.monotonic() - t0
    assert elapsed < 20  # within soft_stop_timeout
    assert (await states(conn))[job_id] == ("completed", 1)
    assert await conn.fetchval("SELECT count(*) FROM cli_done WHERE job_id = $1", job_id) == 1


async def test_worker_queue_option_keeps_the_queues_other_settings(
    spawn: Callable[..., Awaitable[Proc]], side_tables: asyncpg.Connection
) -> None:
    conn = side_tables
    worker = await spawn("worker", "cliapp:make_ephemeral", "--queue", "default:2")
    await worker.wait_line("ready: .* default \\(2 workers\\)")
    (job_id,) = await insert(conn, "cli_sleep")
    await eventually(lambda: conn.fetchval("SELECT count(*) FROM cli_done"), timeout=20)

    async def deleted() -> bool:  # ephemeral, as the client configured the queue
        return job_id not in await states(conn)

    await eventually(deleted, timeout=20)
    worker.signal(signal.SIGTERM)
    assert await worker.wait(30) == 0


def test_worker_queue_option_refuses_a_bad_max_workers_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pyriver_async.cli import main

    for value in ("default:0", "default:-2", "default:", "default:1.5", "default: 3", "d:many"):
        assert main(["worker", "cliapp:make", "--queue", value]) == 2, value
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "MAX_WORKERS must be a positive integer" in err[0], err
    assert main(["worker", "cliapp:make", "--queue", "no spaces:3"]) == 2
    assert "queue name 'no spaces' is invalid" in capsys.readouterr().err


async def test_a_second_sigterm_stops_hard_and_gives_the_job_back(
    spawn: Callable[..., Awaitable[Proc]], side_tables: asyncpg.Connection
) -> None:
    conn = side_tables
    worker = await spawn("worker", "cliapp:make")
    await worker.wait_line("ready")
    (job_id,) = await insert(conn, "cli_sleep", json.dumps({"seconds": 120.0}))
    await eventually(lambda: conn.fetchval("SELECT count(*) FROM cli_started"), timeout=20)
    worker.signal(signal.SIGTERM)
    await worker.wait_line("stopping softly")
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert await worker.wait(30) == 0
    assert time.monotonic() - t0 < 10
    await worker.wait_line("stopping at once")
    row = await conn.fetchrow(
        "SELECT state::text, attempt, coalesce(array_length(errors, 1), 0) AS errors "
        "FROM river_job WHERE id = $1",
        job_id,
    )
    assert row is not None
    assert (row["state"], row["attempt"], row["errors"]) == ("available", 0, 0)


async def test_two_processes_survive_a_killed_child_and_finish_every_job_once(
    spawn: Callable[..., Awaitable[Proc]], side_tables: asyncpg.Connection
) -> None:
    conn = side_tables
    sup = await spawn("worker", "cliapp:make", "--processes", "2")
    await sup.wait_line("ready", count=2)
    started = await sup.wait_line(r"worker \d started \(pid \d+\)", count=2)
    pids = [int(re.search(r"pid (\d+)", ln).group(1)) for ln in started]  # type: ignore[union-attr]
    ids = await insert(conn, "cli_sleep", json.dumps({"seconds": 0.3}), n=60)
    await eventually(lambda: conn.fetchval("SELECT count(*) FROM cli_started"), timeout=20)
    victim = int(
        await conn.fetchval("SELECT pid FROM cli_started ORDER BY job_id LIMIT 1") or pids[0]
    )
    os.kill(victim, signal.SIGKILL)
    await sup.wait_line("restarting in")
    await sup.wait_line("ready", count=3)

    async def all_completed() -> bool:
        s = await states(conn)
        return all(s[i][0] == "completed" for i in ids)

    await eventually(all_completed, timeout=60)
    done = await conn.fetch("SELECT job_id, count(*) AS n FROM cli_done GROUP BY job_id")
    assert {r["job_id"] for r in done} == set(ids)
    assert all(r["n"] == 1 for r in done)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(40) == 0
    assert await conn.fetchval("SELECT count(DISTINCT pid) FROM cli_started") >= 2


async def test_jobs_retry_of_a_discarded_job_makes_it_run(
    spawn: Callable[..., Awaitable[Proc]], side_tables: asyncpg.Connection, db: str
) -> None:
    conn = side_tables
    worker = await spawn("worker", "cliapp:make")
    await worker.wait_line("ready")
    (job_id,) = await insert(conn, "cli_flaky", max_attempts=1)

    async def discarded() -> bool:
        return (await states(conn))[job_id][0] == "discarded"

    await eventually(discarded, timeout=20)
    listed = await pyriver("jobs", "list", "--state", "discarded", "--json", url=db)
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [job_id]
    retried = await pyriver("jobs", "retry", str(job_id), url=db)
    assert retried.returncode == 0, retried.stderr
    assert "done" in retried.stdout

    async def completed() -> bool:
        return (await states(conn))[job_id] == ("completed", 2)

    await eventually(completed, timeout=20)
    assert await conn.fetchval("SELECT max_attempts FROM river_job WHERE id = $1", job_id) == 2
    got = await pyriver("jobs", "get", str(job_id), "--json", url=db)
    assert json.loads(got.stdout)["state"] == "completed"
    queues = await pyriver("queues", "list", "--json", url=db)
    assert json.loads(queues.stdout)[0]["name"] == "default"
    clients = await pyriver("clients", "--json", url=db)
    (info,) = json.loads(clients.stdout)["clients"]
    assert info["alive"] and info["queues"]["default"]["max_workers"] == 5
    worker.signal(signal.SIGTERM)
    assert await worker.wait(30) == 0


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, result.stderr
    assert err[0].startswith("error: "), err
    return err[0]


async def test_bad_input_exits_non_zero_with_one_line(
    app_dir: Path, db: str, fresh_database: FreshDatabase
) -> None:
    bad_dsn = "postgresql://postgres@127.0.0.1:5432/pyriver_no_such_database"
    assert "does not exist" in one_line_error(await pyriver("jobs", "list", url=bad_dsn))
    assert "DSN" in one_line_error(await pyriver("queues", "list", url="not a dsn"))
    unmigrated = await fresh_database()
    assert "pyriver migrate up" in one_line_error(await pyriver("clients", url=unmigrated))
    assert "no job with id" in one_line_error(await pyriver("jobs", "get", "999999", url=db))
    assert "not found" in one_line_error(await pyriver("jobs", "delete", "999999", url=db))
    assert "unknown job state" in one_line_error(
        await pyriver("jobs", "list", "--state", "finished", url=db)
    )
    assert "malformed cursor" in one_line_error(
        await pyriver("jobs", "list", "--cursor", "nope", url=db)
    )
    assert "no database" in one_line_error(await pyriver("jobs", "list", url=None))
    cases = {
        ("worker", "nomodule:client"): "cannot import",
        ("worker", "cliapp:missing"): "no attribute",
        ("worker", "cliapp:not_a_client"): "not a Client",
        ("worker", "cliapp:CliSleep"): "not a Client",
        ("worker", "cliapp"): "module:attribute",
        ("worker", "cliapp:make", "--queue", "default:many"): "MAX_WORKERS",
        ("worker", "cliapp:make", "--schema", "other"): "works schema 'public'",
        ("jobs", "retry", "--all-matching"): "give job ids, or filters",
        ("jobs", "delete", "7", "--state", "completed"): "not both",
    }
    for argv, message in cases.items():
        assert message in one_line_error(await pyriver(*argv, url=db, cwd=app_dir)), argv
    supervised = await pyriver(
        "worker", "cliapp:not_a_client", "--processes", "2", url=db, cwd=app_dir
    )
    assert supervised.returncode == 2 and "Traceback" not in supervised.stderr
    assert "refused its command line" in supervised.stderr
    crashed = await pyriver("worker", "cliapp:make", url=unmigrated, cwd=app_dir)
    assert crashed.returncode == 1
    assert "Traceback" not in crashed.stderr
    assert crashed.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "pyriver migrate up" in crashed.stderr


async def test_every_command_has_help() -> None:
    for argv in (
        ("worker",),
        ("jobs", "list"),
        ("jobs", "get"),
        ("jobs", "retry"),
        ("jobs", "cancel"),
        ("jobs", "delete"),
        ("queues", "list"),
        ("queues", "pause"),
        ("queues", "resume"),
        ("clients",),
        ("bench",),
    ):
        result = await pyriver(*argv, "--help", url=None)
        assert result.returncode == 0, argv
        assert "--database-url" in result.stdout and "--schema" in result.stdout, argv


async def test_bench_runs_in_a_throwaway_schema(db: str) -> None:
    result = await pyriver(
        "bench", "--jobs", "300", "--workers", "20", "--latency-jobs", "20", "--json", url=db
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["drain"]["jobs"] == 300 and out["drain"]["jobs_per_s"] > 0
    assert out["latency"]["p50_ms"] > 0
    conn = await asyncpg.connect(db)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pyriver_bench_%'"
        )
    finally:
        await conn.close()
    assert left == 0
    table = await pyriver("bench", "--jobs", "50", "--latency-jobs", "5", url=db)
    assert table.returncode == 0, table.stderr
    assert "jobs/s" in table.stdout and "p50" in table.stdout
