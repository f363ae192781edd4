"""A real Ctrl-C still stops a process whose loop runs under Python's default SIGINT
handler, while a ``KeyboardInterrupt`` that a job raises only fails that job."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import asyncio, os, sys, time

from pyriver_async import Client, InsertOpts, Job, JobArgs, JobContext, QueueConfig, Workers


class Interrupts(JobArgs, kind="sigint_interrupts"):
    pass


class Waits(JobArgs, kind="sigint_waits"):
    pass


workers = Workers()


@workers.register(Interrupts)
async def interrupts(ctx: JobContext, job: Job[Interrupts]) -> None:
    raise KeyboardInterrupt  # the job's own, not a signal


@workers.register(Waits)
async def waits(ctx: JobContext, job: Job[Waits]) -> None:
    # Busy inside the job's own code, so that the signal's KeyboardInterrupt is raised
    # right here, in a job, where the executor must let it through.
    print("READY", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pass


async def main() -> None:
    client = Client(os.environ["DATABASE_URL"], workers=workers,
                    queues={"default": QueueConfig(max_workers=5)}, maintenance=False)
    async with client:
        sub = client.subscribe()
        bad = await client.insert(Interrupts(), InsertOpts(max_attempts=1))
        async for ev in sub:
            if ev.job_id == bad.job.id:
                print("JOB", ev.state, flush=True)
                break
        await client.insert(Waits())
        await asyncio.sleep(3600)


loop = asyncio.new_event_loop()  # no asyncio.run: Python's own SIGINT handler stays
loop.run_until_complete(main())
"""


async def test_real_sigint_stops_the_process_but_a_jobs_keyboard_interrupt_does_not(
    db: str, tmp_path: Path
) -> None:
    script = tmp_path / "sigint_worker.py"
    script.write_text(SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env={**os.environ, "DATABASE_URL": db, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        job = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert job.decode().split() == ["JOB", "discarded"]  # a failure of that job only
        ready = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert ready.strip() == b"READY"  # the process lived on; the next job is busy
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert code != 0 and "KeyboardInterrupt" in err
