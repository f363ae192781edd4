"""A client made from a DSN owns its pool: inserts reuse connections, close() frees all."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pyriver_async import Client, InsertOpts, InvalidOptsError, JobArgs


class Item(JobArgs, kind="pool_item"):
    n: int


async def backends(pool: asyncpg.Pool, app: str) -> int:
    n: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
    )
    return n


async def test_owned_pool_inserts_concurrently_and_closes_every_connection(
    db: str, pool: asyncpg.Pool
) -> None:
    url = db + ("&" if "?" in db else "?") + "application_name=pyriver_owned_pool"
    client = Client(url, pool_max_size=4)
    results = await asyncio.gather(*(client.insert(Item(n=i)) for i in range(200)))
    assert len({r.job.id for r in results}) == 200
    # Bad input raises and leaves the client usable.
    with pytest.raises(InvalidOptsError):
        await client.insert(Item(n=-1), InsertOpts(priority=9))
    # A cancelled insert hands its connection back instead of keeping it.
    task = asyncio.create_task(client.insert(Item(n=-2)))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await client.insert(Item(n=201))).job.args.n == 201
    assert 1 <= await backends(pool, "pyriver_owned_pool") <= 4
    await client.close()
    deadline = asyncio.get_running_loop().time() + 10
    while await backends(pool, "pyriver_owned_pool"):
        assert asyncio.get_running_loop().time() < deadline, "connections left open"
        await asyncio.sleep(0.05)
    count = await pool.fetchval("SELECT count(*) FROM river_job WHERE kind = 'pool_item'")
    assert count in (201, 202)  # the cancelled one may or may not have committed


async def test_a_closed_client_inserts_and_works_again_on_a_new_pool(
    db: str, pool: asyncpg.Pool
) -> None:
    # close() closes the pool the client made; the next use makes a new one. The
    # connection kept between inserts belonged to the old pool and must not be reused.
    from pyriver_async import Job, JobContext, QueueConfig, Workers

    worked: list[int] = []
    workers = Workers()

    @workers.register(Item)
    async def work(ctx: JobContext, job: Job[Item]) -> None:
        worked.append(job.args.n)

    client = Client(db, workers=workers, queues={"default": QueueConfig(max_workers=5)})
    for round_ in range(2):
        first = await client.insert(Item(n=round_))
        async with client:
            more = await client.insert_many([Item(n=10 + round_)])
            waited = [await client.wait(r.job.id, timeout=10) for r in (first, *more)]
            assert [j.state for j in waited] == ["completed", "completed"]
        await client.close()
    assert sorted(worked) == [0, 1, 10, 11]


async def test_restarting_a_client_on_the_application_pool_keeps_no_old_leases(
    pool: asyncpg.Pool,
) -> None:
    # Each start gives the producer and the completer a lease on the pool; the ones a
    # stopped engine used must not pile up in the client across restarts.
    from pyriver_async import Job, JobContext, QueueConfig, Workers

    workers = Workers()

    @workers.register(Item)
    async def work(ctx: JobContext, job: Job[Item]) -> None:
        return None

    client = Client(pool, workers=workers, queues={"default": QueueConfig(max_workers=2)})
    await client.insert(Item(n=0))
    sizes = []
    for _ in range(4):
        async with client:
            await client.insert(Item(n=1))
        sizes.append(len(client._driver._leases))
    assert sizes == [sizes[0]] * 4 and sizes[0] <= 1, sizes
