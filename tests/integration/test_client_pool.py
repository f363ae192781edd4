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
