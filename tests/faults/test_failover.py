"""Failover with real servers: a primary and its streaming standby, the client reaching
them through a TCP proxy the test owns (the DNS name or the managed endpoint of a
real deployment). Mid-drain, three ways:

- ``promote_then_read_only``: the standby is promoted, the proxy pointed at it, then
  the old primary turned read-only (what some failover tools do to it);
- ``promote_then_stop``: the same, the old primary stopped;
- ``fence_then_promote``: the old primary turned read-only first, the standby left to
  replay everything, then promoted and the proxy pointed at it (a planned switchover).

In the first two, the old primary takes writes for a moment after the promotion:
claims and completions of that moment are lost with it, so those jobs run again
(at-least-once; the client gives back its own claims that vanished). In the third
nothing is lost: every job runs exactly once, its outcome written after the switch.

Each test checks from the new primary's job table alone that every job inserted
before the switch (and replicated) ends ``completed``, that the drain resumed within
the stated bound, and that the client heals itself: one log line for the episode,
LISTEN and leadership on the new primary, no restart.

The bound: completions resume within ``RESUME_BOUND`` (5 s) of the switch. What it is
made of (``_failover.py``): the first refused write (the next flush or claim, well
under a second under load), the watch's first probe 0.1 s later on a recycled
connection, then one claim. Measured here at about 0.3 s.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import pyriver_async
from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers

from ._cluster import PgCluster, Setting
from ._proxy import TcpProxy
from .conftest import PgClusters

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

PRIMARY_SETTINGS: dict[str, Setting] = {
    "wal_level": "replica",
    "max_wal_senders": 4,
    "hot_standby": True,
}
RESUME_BOUND = 5.0


class Step(JobArgs, kind="failover_step"):
    ms: int = 10


async def _completed(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM river_job WHERE state = 'completed'")
        return n
    finally:
        await conn.close()


async def _until(what: str, timeout: float, check: Callable[[], Awaitable[bool]]) -> float:
    """Poll ``check()`` (a coroutine function returning bool) until true; returns when
    (loop time). The database is polled: no event of ours tells when others write."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(0.05)
    return loop.time()


@pytest.mark.parametrize(
    "how", ["promote_then_read_only", "promote_then_stop", "fence_then_promote"]
)
async def test_drain_survives_a_failover_and_heals_itself(
    pg_clusters: PgClusters, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.INFO, logger="pyriver_async")
    primary = pg_clusters.new(PRIMARY_SETTINGS)
    standby: PgCluster = pg_clusters.standby(primary)
    url = await primary.create_database("pyriver")
    await pyriver_async.migrate(url)
    total = 3000
    runs: collections.Counter[int] = collections.Counter()
    workers = Workers()

    @workers.register(Step)
    async def step(ctx: JobContext, job: Job[Step]) -> None:
        runs[job.id] += 1
        await asyncio.sleep(job.args.ms / 1000)

    new_primary_url = standby.url("pyriver")
    async with TcpProxy("127.0.0.1", primary.port) as proxy:
        client = Client(
            proxy.url("pyriver"),
            workers=workers,
            queues={"default": QueueConfig(max_workers=50)},
            # Long: a job picked up fast after the switch was woken by LISTEN.
            fetch_poll_interval=5.0,
            statement_timeout=5.0,
            leader_ttl=3.0,
            pool_max_size=6,
        )
        async with client:
            ids = {r.job.id for r in await client.insert_many([Step() for _ in range(total)])}
            await _until("a third of the jobs done", 30, lambda: _third(url, total))
            assert client.is_leader or await _leader_soon(client)
            await standby.wait_replayed()  # everything inserted so far is on the standby

            # The switch.
            if how == "fence_then_promote":
                await primary.set_read_only(True)
                # A checkpoint flushes the WAL: the fenced, idle primary would leave a
                # trailing record unflushed, and the standby could not replay up to it.
                await _checkpoint(primary)
                await standby.wait_replayed()
            await standby.promote()
            proxy.retarget("127.0.0.1", standby.port)
            if how == "promote_then_read_only":
                await primary.set_read_only(True)
            elif how == "promote_then_stop":
                await primary.astop()
            loop = asyncio.get_running_loop()
            switched = loop.time()
            before = await _completed(new_primary_url)

            resumed = await _until(
                "completions resuming on the new primary",
                RESUME_BOUND,
                lambda: _grew(new_primary_url, before),
            )
            await _until(
                "every job completed on the new primary",
                60,
                lambda: _all_completed(new_primary_url, total),
            )
            drained = loop.time()

            # LISTEN follows the primary: a job inserted now starts long before the
            # 5 s poll would find it.
            t0 = loop.time()
            late = (await client.insert(Step(ms=0))).job.id
            await _until("the late job", 3, lambda: _done(new_primary_url, late))
            pickup = loop.time() - t0
            # Leadership too: the client leads again, on the new primary; and LISTEN
            # settles there (a reconnect asked while one was under way takes a step
            # of backoff).
            assert await _leader_soon(client, timeout=15)
            await _until(
                "LISTEN on the new primary", 10, lambda: _listens_on(client, new_primary_url)
            )

    print(
        f"\n{how}: resumed {resumed - switched:.2f}s after the switch, "
        f"drained in {drained - switched:.1f}s, late job picked up in {pickup * 1000:.0f} ms, "
        f"{sum(1 for n in runs.values() if n > 1)} jobs ran twice"
    )
    assert resumed - switched <= RESUME_BOUND
    assert pickup < 2.0
    # Every job inserted before the switch ran (some twice: a claim the old primary
    # took after the last replay is lost with it) and is completed once.
    assert set(runs) >= ids
    if how == "fence_then_promote":
        assert max(runs.values()) == 1, collections.Counter(runs.values())
    conn = await asyncpg.connect(new_primary_url)
    try:
        states = await conn.fetch("SELECT state, count(*) AS n FROM river_job GROUP BY state")
        rows = await conn.fetchval("SELECT count(*) FROM river_job WHERE id = ANY($1)", list(ids))
    finally:
        await conn.close()
    assert {r["state"]: r["n"] for r in states} == {"completed": total + 1}
    assert rows == total
    messages = [r.getMessage() for r in caplog.records]
    if how != "promote_then_stop":
        # Told once, and once that it is over; nothing crashed.
        assert sum("refuses writes as read-only" in m for m in messages) == 1, messages
        assert sum("takes writes again" in m for m in messages) == 1
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("pyriver_async")]


async def _checkpoint(cluster: PgCluster) -> None:
    conn = await asyncpg.connect(
        cluster.url(), server_settings={"default_transaction_read_only": "off"}
    )
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def _third(url: str, total: int) -> bool:
    return await _completed(url) >= total // 3


async def _grew(url: str, before: int) -> bool:
    try:
        return await _completed(url) > before
    except (OSError, asyncpg.PostgresError):
        return False


async def _all_completed(url: str, total: int) -> bool:
    return await _completed(url) >= total


async def _done(url: str, job_id: int) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(
            await conn.fetchval("SELECT state = 'completed' FROM river_job WHERE id = $1", job_id)
        )
    finally:
        await conn.close()


async def _backend_of(url: str, pid: int) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(
            await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        )
    finally:
        await conn.close()


async def _listens_on(client: Client, url: str) -> bool:
    pid = client.notifier.connection_pid if client.notifier else None
    return pid is not None and await _backend_of(url, pid)


async def _leader_soon(client: Client, timeout: float = 10) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not client.is_leader:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
