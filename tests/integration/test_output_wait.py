"""Job output and client.wait (issue 19).

- ``ctx.record_output(value)`` stores the value in ``metadata["output"]`` (River's
  key), readable through ``get``, ``wait`` and the events; too large or unencodable
  values raise a typed error in the job;
- ``client.wait`` returns the finished job, woken by the completion: from this
  client's own completer, or from another process through the ``finished`` message
  that only waited-for jobs get.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from pyriver_async import (
    MAX_OUTPUT_BYTES,
    Client,
    InsertOpts,
    InvalidOutputError,
    Job,
    JobArgs,
    JobContext,
    JobNotFoundError,
    JobState,
    OutputTooLargeError,
    QueueConfig,
    WaitTimeoutError,
    Workers,
)
from tests._support import next_event


class Compute(JobArgs, kind="out_compute"):
    n: int
    size: int = 0  # bytes of output to try
    hold: float = 0.0


def _workers(gate: asyncio.Event | None = None) -> Workers:
    w = Workers()

    @w.register(Compute)
    async def compute(ctx: JobContext, job: Job[Compute]) -> None:
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(job.args.hold)
        if job.args.size:
            try:
                ctx.record_output("x" * job.args.size)
            except OutputTooLargeError as exc:
                ctx.record_output({"error": str(exc)[:40]})
            return
        if job.args.n < 0:
            try:
                ctx.record_output(object())
            except InvalidOutputError:
                ctx.record_output("unencodable")
            return
        ctx.record_output({"square": job.args.n**2})

    return w


def _worker(pool: asyncpg.Pool, gate: asyncio.Event | None = None) -> Client:
    return Client(
        pool,
        workers=_workers(gate),
        queues={"default": QueueConfig(max_workers=5)},
        maintenance=False,
    )


async def test_output_is_stored_and_read_back(pool: asyncpg.Pool) -> None:
    client = _worker(pool)
    async with client, client.subscribe() as events:
        job = (await client.insert(Compute(n=7))).job
        ev = await next_event(events, job.id)
        assert ev.state == "completed" and ev.output == {"square": 49} and ev.kind == Compute.kind
        got = await client.get(job.id)
    assert got.output == {"square": 49}
    raw = await pool.fetchval("SELECT metadata ->> 'output' FROM river_job WHERE id = $1", job.id)
    assert raw == '{"square": 49}'  # where River's tools look


async def test_output_too_large_or_unencodable_raises_in_the_job(pool: asyncpg.Pool) -> None:
    client = _worker(pool)
    async with client:
        big = (await client.insert(Compute(n=0, size=MAX_OUTPUT_BYTES + 1))).job
        fits = (await client.insert(Compute(n=0, size=MAX_OUTPUT_BYTES - 2))).job
        odd = (await client.insert(Compute(n=-1))).job
        big_done = await client.wait(big.id, timeout=10)
        fits_done = await client.wait(fits.id, timeout=10)
        odd_done = await client.wait(odd.id, timeout=10)
    assert big_done.output == {"error": str(big_done.output["error"])}
    assert "over the" in big_done.output["error"] or "bytes" in big_done.output["error"]
    assert len(fits_done.output) == MAX_OUTPUT_BYTES - 2
    assert odd_done.output == "unencodable"


async def test_wait_returns_the_finished_job_worked_here(pool: asyncpg.Pool) -> None:
    gate = asyncio.Event()
    client = _worker(pool, gate)
    async with client:
        job = (await client.insert(Compute(n=3))).job
        waiter = asyncio.create_task(client.wait(job.id, timeout=10))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        t0 = time.monotonic()
        gate.set()
        done = await waiter
        woke_after = time.monotonic() - t0
    assert done.state is JobState.COMPLETED and done.output == {"square": 9}
    assert woke_after < 0.4  # woken by the completion, not the 0.5 s safety poll


async def test_wait_in_another_client_is_woken_by_the_completion(pool: asyncpg.Pool) -> None:
    # The web process: inserts and waits, works nothing (its own LISTEN for waits).
    web = Client(pool, maintenance=False)
    gate = asyncio.Event()
    worker = _worker(pool, gate)
    job = (await web.insert(Compute(n=4))).job
    async with worker:
        waiter = asyncio.create_task(web.wait(job.id, timeout=20))
        # Let the waiter mark the job and listen; the job waits on the gate meanwhile.
        for _ in range(100):
            if await pool.fetchval(
                "SELECT metadata ? 'pyriver:wait' FROM river_job WHERE id = $1", job.id
            ):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.2)  # past the first safety polls: only a message is quick
        t0 = time.monotonic()
        gate.set()
        done = await waiter
        woke_after = time.monotonic() - t0
    await web.close()
    assert done.output == {"square": 16}
    assert woke_after < 0.5, woke_after  # the next safety poll would be 2 s away


async def test_wait_for_a_job_already_finished_returns_at_once(pool: asyncpg.Pool) -> None:
    client = _worker(pool)
    async with client, client.subscribe() as events:
        job = (await client.insert(Compute(n=2))).job
        await next_event(events, job.id)
        done = await client.wait(job.id, timeout=5)
    assert done.output == {"square": 4}
    # A finished job is not marked.
    assert not await pool.fetchval(
        "SELECT metadata ? 'pyriver:wait' FROM river_job WHERE id = $1", job.id
    )


async def test_wait_times_out_with_the_job_as_it_is(pool: asyncpg.Pool) -> None:
    client = Client(pool, maintenance=False)
    job = (await client.insert(Compute(n=1), InsertOpts(queue="nobody_works_this"))).job
    with pytest.raises(WaitTimeoutError) as info:
        await client.wait(job.id, timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert info.value.job is not None and info.value.job.state is JobState.AVAILABLE
    with pytest.raises(JobNotFoundError):
        await client.wait(10**12, timeout=2)
    await client.close()


async def test_wait_sees_a_cancellation_before_the_job_ran(pool: asyncpg.Pool) -> None:
    client = Client(pool, maintenance=False)
    job = (await client.insert(Compute(n=1), InsertOpts(queue="nobody_works_this"))).job
    waiter = asyncio.create_task(client.wait(job.id, timeout=10))
    await asyncio.sleep(0.1)
    await client.cancel(job.id)
    done: Any = await waiter  # the safety poll: no statement announces this one
    assert done.state is JobState.CANCELLED
    await client.close()
