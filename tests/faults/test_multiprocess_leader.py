"""Three worker processes; the leader is SIGKILLed mid-run and another one takes over."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from pyriver_async import Client, InsertOpts
from tests._support import eventually

from ._worker_proc import MpSleep, WorkerProcs, scratch_database

pytestmark = pytest.mark.faults

TTL = 2.0


async def test_killed_leader_is_replaced_within_the_ttl_and_maintenance_goes_on(
    tmp_path: Path,
) -> None:
    async with scratch_database() as dsn, WorkerProcs(dsn, tmp_path) as procs:
        conn = await asyncpg.connect(dsn)
        inserter = Client(dsn)
        try:
            members = [await procs.start(f"proc-{i}", "--leader-ttl", str(TTL)) for i in range(3)]
            await asyncio.gather(*(m.wait_ready() for m in members))
            by_id = {m.client_id: m for m in members}

            async def leader() -> str | None:
                value: str | None = await conn.fetchval("SELECT leader_id FROM river_leader")
                return value

            async def led_by_a_member() -> bool:
                return await leader() in by_id

            await eventually(led_by_a_member)
            old = await leader()
            assert old is not None

            async def count(where: str) -> int:
                n: int = await conn.fetchval(f"SELECT count(*) FROM river_job WHERE {where}")
                return n

            # Mid-run: jobs being worked, and scheduled ones the leader must promote.
            await inserter.insert_many(
                [(MpSleep(seconds=0.3), InsertOpts(queue="mp")) for _ in range(20)]
                + [(MpSleep(), InsertOpts(queue="mp", delay=0.3)) for _ in range(5)]
            )

            async def some_done() -> bool:
                return await count("state = 'completed'") >= 5

            await eventually(some_done)

            await by_id[old].kill()
            killed_at = time.monotonic()

            async def someone_else_leads() -> bool:
                return await leader() not in (None, old)

            await eventually(someone_else_leads, timeout=TTL + 5)
            took = time.monotonic() - killed_at
            assert took <= TTL + 1.0, f"a new leader took {took:.2f}s (ttl {TTL}s)"
            assert await leader() in by_id

            # The new leader's scheduler promotes jobs scheduled after the kill: both for
            # a queue the survivors work and for one nobody works (promotion alone).
            await inserter.insert_many(
                [(MpSleep(), InsertOpts(queue="mp", delay=0.5)) for _ in range(5)]
                + [(MpSleep(), InsertOpts(queue="nobody", delay=0.5)) for _ in range(3)]
            )

            async def promoted() -> bool:
                return await count("queue = 'nobody' AND state = 'available'") == 3

            await eventually(promoted)

            # Every mp job ends completed, including any the killed leader held
            # (rescued once its heartbeat is older than dead_client_after).
            async def all_mp_done() -> bool:
                return await count("queue = 'mp' AND state <> 'completed'") == 0

            await eventually(all_mp_done, timeout=20)
            assert await count("queue = 'mp'") == 30
        finally:
            await inserter.close()
            await conn.close()
