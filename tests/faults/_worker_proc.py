"""A worker process for the multi-process maintenance tests, and the test side's helpers.

    python tests/faults/_worker_proc.py --dsn postgresql://... --id proc-0 --queue mp

As a script, it runs a client with maintenance (leader election, rescuer, scheduler...) that works
``mp_sleep`` jobs: each sleeps ``seconds``, then records ``(job_id, attempt, client)``
in the table ``mp_done`` (which the test creates), so a test can count how many times
each job really ran to the end. It also works ``mp_raise`` jobs, which raise
``SystemExit(3)`` or ``KeyboardInterrupt`` (exceptions that are not ``Exception``s) from
the job's body. Prints ``ready <client id>`` once started, ``stopped <client id>`` once
stopped; exits 0 after a graceful stop.

It stops gracefully on SIGTERM, when its stdin closes (the test process is gone), or
after ``--lifetime`` seconds, so no run leaves it behind; SIGKILL is what the tests use.

Imported by a test, it offers :func:`scratch_database` (a migrated database of the
test's own, with ``mp_done``), :func:`create_side_table` (``mp_done`` in a database
the test made, such as a throwaway cluster's) and :class:`WorkerProcs` (starts these
processes, kills whatever is left at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

import asyncpg

import pyriver_async
from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers
from pyriver_async._localdb import create_database, drop_database

SCRIPT = Path(__file__)


class MpSleep(JobArgs, kind="mp_sleep"):
    seconds: float = 0.0


class MpRaise(JobArgs, kind="mp_raise"):
    """Raises ``exc`` from the job: ``"SystemExit"`` (code 3) or ``"KeyboardInterrupt"``."""

    exc: str = "SystemExit"


def _raise_named(name: str) -> None:
    if name == "SystemExit":
        raise SystemExit(3)
    if name == "KeyboardInterrupt":
        raise KeyboardInterrupt
    raise ValueError(f"mp_raise: unknown exception {name!r}")


SIDE_TABLE_DDL = (
    "CREATE TABLE mp_done (job_id bigint NOT NULL, attempt int NOT NULL, "
    "client text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--queue", default="mp")
    p.add_argument("--max-workers", type=int, default=10)
    p.add_argument("--leader-ttl", type=float, default=2.0)
    p.add_argument("--heartbeat", type=float, default=0.5)
    p.add_argument("--dead-client-after", type=float, default=3.0)
    p.add_argument("--rescue-after", type=float, default=3600.0)
    p.add_argument("--lifetime", type=float, default=90.0)
    return p.parse_args(argv)


def _on_stdin_closed(callback: Callable[[], None]) -> None:
    """Call ``callback`` (thread-safely) once stdin reaches its end."""
    loop = asyncio.get_running_loop()

    def read() -> None:
        # os.read, not sys.stdin.buffer.read(): a daemon thread blocked inside the
        # buffered reader holds its lock, and the interpreter, finalizing stdin on the
        # way out, then aborts the process ("_enter_buffered_busy", SIGABRT), so a
        # graceful stop ended with exit code -6.
        while os.read(0, 65536):
            pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(callback)

    # A daemon thread: the process never waits for it on the way out.
    threading.Thread(target=read, daemon=True).start()


async def run(opts: argparse.Namespace) -> None:
    workers = Workers()

    @workers.register(MpSleep, timeout=None)
    async def sleep_then_record(ctx: JobContext, job: Job[MpSleep]) -> None:
        await asyncio.sleep(job.args.seconds)
        async with ctx.client.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO mp_done (job_id, attempt, client) VALUES ($1, $2, $3)",
                job.id,
                job.attempt,
                opts.id,
            )

    @workers.register(MpRaise, timeout=None)
    async def raise_base_exception(ctx: JobContext, job: Job[MpRaise]) -> None:
        await asyncio.sleep(0)
        _raise_named(job.args.exc)

    # Connections named after the client: the server's views (and the chaos matrix's
    # audit of who wrote each outcome) can tell the processes apart.
    dsn = f"{opts.dsn}{'&' if '?' in opts.dsn else '?'}application_name={opts.id}"
    client = Client(
        dsn,
        id=opts.id,
        workers=workers,
        queues={opts.queue: QueueConfig(max_workers=opts.max_workers)},
        fetch_poll_interval=0.2,
        leader_ttl=opts.leader_ttl,
        heartbeat_interval=opts.heartbeat,
        dead_client_after=opts.dead_client_after,
        rescue_stuck_jobs_after=opts.rescue_after,
        soft_stop_timeout=2.0,
        hard_stop_timeout=1.0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    _on_stdin_closed(stop.set)
    await client.start()
    print(f"ready {client.id}", flush=True)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), opts.lifetime)
    finally:
        await client.stop()
        print(f"stopped {client.id}", flush=True)


# -- the test side -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A migrated database of the test's own, with the ``mp_done`` table; dropped after."""
    url, name = await create_database("pyriver_mp")
    try:
        await pyriver_async.migrate(url)
        await create_side_table(url)
        yield url
    finally:
        await drop_database(name)


async def create_side_table(url: str) -> None:
    """The ``mp_done`` table the worker processes record finished jobs in."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SIDE_TABLE_DDL)
    finally:
        await conn.close()


class WorkerProc:
    """One worker process; its output goes to a file."""

    def __init__(self, client_id: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.client_id = client_id
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(rf"^ready {re.escape(self.client_id)}$", self.output(), re.M):
            if self.proc.returncode is not None:
                raise AssertionError(f"{self.client_id} exited early:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.client_id} not ready in time:\n{self.output()}")
            await asyncio.sleep(0.05)

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful stop); returns the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


class WorkerProcs:
    """``async with WorkerProcs(dsn, tmp_path) as procs: await procs.start("p0")``."""

    def __init__(self, dsn: str, tmp: Path) -> None:
        self.dsn = dsn
        self.tmp = tmp
        self.procs: list[WorkerProc] = []

    async def start(self, client_id: str, *args: str) -> WorkerProc:
        log = self.tmp / f"{client_id}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPT),
                "--dsn",
                self.dsn,
                "--id",
                client_id,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        wp = WorkerProc(client_id, proc, log)
        self.procs.append(wp)
        return wp

    def outputs(self) -> str:
        return "\n".join(f"--- {p.client_id}\n{p.output()[-3000:]}" for p in self.procs)

    async def __aenter__(self) -> WorkerProcs:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            print(self.outputs(), file=sys.stderr)
        for p in self.procs:
            await p.kill()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    opts = parse(sys.argv[1:])
    asyncio.run(run(opts))


if __name__ == "__main__":
    main()
