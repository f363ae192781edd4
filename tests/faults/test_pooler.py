"""Through a transaction-mode pooler: Debian's PgBouncer (1.18 here), started by the
test in front of a cluster of its own, ``pool_mode=transaction``.

What it takes (docs/operations.md): ``Client(pooler_dsn, pooler="transaction",
listen_database_url=direct_dsn)``. The pool then keeps no named prepared statements
(PgBouncer 1.18 cannot follow them from one server connection to the next) and LISTEN
runs on a direct connection (through transaction pooling, notifications are dropped).
A LISTEN pointed at the pooler anyway fails ``start()`` with a clear error instead of
leaving producers to a silent poll.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from pyriver_async import (
    Client,
    Job,
    JobArgs,
    JobContext,
    ListenUnavailableError,
    PyRiverError,
    QueueConfig,
    TransientDatabaseError,
    Workers,
)
from pyriver_async._driver.asyncpg.listener import PROBE_TIMEOUT

from ._cluster import PgCluster
from .conftest import PgBouncers

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]


class Hop(JobArgs, kind="pooler_hop"):
    n: int = 0


def _workers(done: set[int], seen: asyncio.Event | None = None) -> Workers:
    w = Workers()

    @w.register(Hop)
    async def hop(ctx: JobContext, job: Job[Hop]) -> None:
        done.add(job.id)
        if seen is not None and job.args.n == -1:
            seen.set()

    return w


async def _states(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM river_job GROUP BY state")
    finally:
        await conn.close()
    return {r["state"]: r["n"] for r in rows}


async def test_inserts_and_the_engine_work_through_transaction_pooling(
    pg_cluster: PgCluster, cluster_url: str, pgbouncers: PgBouncers
) -> None:
    bouncer = pgbouncers.start("127.0.0.1", pg_cluster.port, pool_mode="transaction")
    done: set[int] = set()
    late = asyncio.Event()
    client = Client(
        bouncer.url("pyriver"),
        workers=_workers(done, late),
        queues={"default": QueueConfig(max_workers=20)},
        pooler="transaction",
        listen_database_url=cluster_url,
        # Long: the late job below is found by its notification, not by a poll.
        fetch_poll_interval=10.0,
        leader_ttl=2.0,
    )
    async with client:
        # Single inserts from many coroutines at once, and a batch.
        singles = await asyncio.gather(*(client.insert(Hop(n=i)) for i in range(600)))
        batch = await client.insert_many([Hop(n=i) for i in range(400)])
        ids = {r.job.id for r in [*singles, *batch]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not ids <= done:
            assert loop.time() < deadline, f"{len(ids - done)} jobs not worked"
            await asyncio.sleep(0.05)
        t0 = loop.time()
        await client.insert(Hop(n=-1))
        await asyncio.wait_for(late.wait(), 5)
        pickup = loop.time() - t0
        # Maintenance through the pooler too: this client was elected leader.
        while not client.is_leader:
            assert loop.time() < deadline, "no leader elected through the pooler"
            await asyncio.sleep(0.05)
        assert client.notifier is not None and client.notifier.connected.is_set()
    assert pickup < 2.0, pickup
    # Every outcome was written (the client's completer went through the pooler).
    assert await _states(cluster_url) == {"completed": 1001}
    assert "prepared statement" not in bouncer.log_text()


async def test_listen_through_a_transaction_pooler_fails_start_clearly(
    pg_cluster: PgCluster, cluster_url: str, pgbouncers: PgBouncers
) -> None:
    bouncer = pgbouncers.start("127.0.0.1", pg_cluster.port, pool_mode="transaction")
    # The application's own pool, made right for the pooler, and no direct LISTEN.
    pool = await asyncpg.create_pool(
        bouncer.url("pyriver"), min_size=1, max_size=4, statement_cache_size=0
    )
    assert pool is not None
    client = Client(pool, workers=_workers(set()), queues={"default": QueueConfig(max_workers=5)})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        with pytest.raises(ListenUnavailableError, match="listen_database_url"):
            await client.start()
        took = loop.time() - t0
        # Nothing is left running, and the pool is the application's to go on using.
        assert not client.is_leader and client.notifier is None
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await client.close()
        await pool.close()
    assert took < PROBE_TIMEOUT + 3


async def test_pooler_without_a_direct_listen_polls_and_says_so(
    pg_cluster: PgCluster,
    cluster_url: str,
    pgbouncers: PgBouncers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pyriver_async")
    bouncer = pgbouncers.start("127.0.0.1", pg_cluster.port, pool_mode="transaction")
    done: set[int] = set()
    client = Client(
        bouncer.url("pyriver"),
        workers=_workers(done),
        queues={"default": QueueConfig(max_workers=5)},
        pooler="transaction",
        fetch_poll_interval=0.2,
    )
    async with client:
        assert client.notifier is None
        job = (await client.insert(Hop())).job
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while job.id not in done:
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        # client.wait() has no LISTEN to be woken by either: it polls, and returns.
        other = (await client.insert(Hop(n=1))).job
        finished = await client.wait(other.id, timeout=10)
        assert finished.state.value == "completed"
    assert any("does not LISTEN" in r.getMessage() for r in caplog.records)


async def test_default_settings_through_the_pooler_raise_the_librarys_errors(
    pg_cluster: PgCluster,
    cluster_url: str,
    pgbouncers: PgBouncers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With asyncpg's statement cache on (the default), prepared statements go missing
    through the pooler: the caller sees a TransientDatabaseError (never asyncpg's raw
    error), and the log says once what to change."""
    caplog.set_level(logging.ERROR, logger="pyriver_async")
    bouncer = pgbouncers.start("127.0.0.1", pg_cluster.port, pool_mode="transaction")
    client = Client(bouncer.url("pyriver"), pool_max_size=8)
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        try:
            await client.insert(Hop(n=i))
        except Exception as exc:
            errors.append(exc)

    try:
        for _ in range(5):
            await asyncio.gather(*(one(i) for i in range(40)))
    finally:
        await client.close()
    print(f"\n{len(errors)} of 200 inserts refused")
    assert all(isinstance(e, PyRiverError) for e in errors), errors[:3]
    if errors:  # likely, not certain: it depends on how the pooler paired connections
        assert all(isinstance(e, TransientDatabaseError) for e in errors)
        hints = [r for r in caplog.records if "pooler='transaction'" in r.getMessage()]
        assert len(hints) == 1, [r.getMessage() for r in caplog.records]
