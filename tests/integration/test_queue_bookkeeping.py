"""Queue rows and client liveness rows, kept by every started client."""

from __future__ import annotations

import os
from datetime import datetime

import asyncpg

from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers
from pyriver_async._maintenance.heartbeat import Heartbeat
from pyriver_async._maintenance.queues import QueueKeeper
from tests._support import db_executor, eventually


class Nothing(JobArgs, kind="bookkeeping_nothing"):
    pass


def worker_client(db: str, **kwargs: object) -> Client:
    workers = Workers()

    @workers.register(Nothing)
    async def nothing(ctx: JobContext, job: Job[Nothing]) -> None:
        return None

    return Client(
        db,
        workers=workers,
        queues={"alpha": QueueConfig(), "beta": QueueConfig(max_workers=3)},
        heartbeat_interval=0.1,
        dead_client_after=1.0,
        **kwargs,  # type: ignore[arg-type]
    )


async def queue_updated_at(conn: asyncpg.Connection) -> dict[str, datetime]:
    return {r[0]: r[1] for r in await conn.fetch("SELECT name, updated_at FROM river_queue")}


async def test_started_client_keeps_a_row_per_queue_fresh(
    db: str, conn: asyncpg.Connection
) -> None:
    async with worker_client(db):

        async def both_there() -> bool:
            return set(await queue_updated_at(conn)) == {"alpha", "beta"}

        await eventually(both_there)
        first = await queue_updated_at(conn)

        async def refreshed() -> bool:
            now = await queue_updated_at(conn)
            return all(now[q] > first[q] for q in first)

        await eventually(refreshed)


async def test_started_client_keeps_its_liveness_row_fresh_and_marks_it_dead_on_stop(
    db: str, conn: asyncpg.Connection
) -> None:
    client = worker_client(db, id="bookkeeper-1")
    async with client:

        async def row() -> asyncpg.Record | None:
            return await conn.fetchrow("SELECT * FROM pyriver_client WHERE id = 'bookkeeper-1'")

        async def present() -> bool:
            return await row() is not None

        await eventually(present)
        first = await row()
        assert first is not None
        assert first["pid"] == os.getpid()
        assert sorted(first["queues"]) == ["alpha", "beta"]
        assert first["hostname"]

        async def beat_again() -> bool:
            r = await row()
            return r is not None and r["heartbeat_at"] > first["heartbeat_at"]

        await eventually(beat_again)
    dead = await conn.fetchval(
        "SELECT heartbeat_at = '-infinity' FROM pyriver_client WHERE id = 'bookkeeper-1'"
    )
    assert dead is True


async def test_a_restarted_client_id_comes_back_to_life(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    hb = Heartbeat(db_executor(pool), "phoenix", ["q"], interval=5)
    await hb.run_once()
    await hb.mark_dead()
    await hb.run_once()
    r = await conn.fetchrow(
        "SELECT heartbeat_at > now() - interval '1 minute' AS alive, "
        "started_at > now() - interval '1 minute' AS restarted FROM pyriver_client "
        "WHERE id = 'phoenix'"
    )
    assert r is not None and r["alive"] and r["restarted"]


async def test_queue_keeper_leaves_a_pause_in_place(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO river_queue (name, paused_at, updated_at) "
        "VALUES ('paused', now(), now() - interval '1 hour')"
    )
    keeper = QueueKeeper(db_executor(pool), ["paused", "other", "paused"])
    await keeper.run_once()
    rows = {
        r["name"]: r
        for r in await conn.fetch(
            "SELECT name, paused_at, updated_at > now() - interval '1 minute' AS fresh "
            "FROM river_queue"
        )
    }
    assert set(rows) == {"paused", "other"}
    assert rows["paused"]["paused_at"] is not None and rows["paused"]["fresh"]
    assert rows["other"]["paused_at"] is None


async def test_insert_only_client_keeps_no_queue_rows(db: str, conn: asyncpg.Connection) -> None:
    client = Client(db, id="web-1", heartbeat_interval=0.1)
    async with client:

        async def beating() -> bool:
            return bool(
                await conn.fetchval("SELECT count(*) FROM pyriver_client WHERE id = 'web-1'")
            )

        await eventually(beating)
        assert await conn.fetchval("SELECT count(*) FROM river_queue") == 0
