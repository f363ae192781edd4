"""The vacuumer: VACUUMs the job table once dead row versions pass its threshold."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pyriver_async import Client
from pyriver_async._driver.queries import Queries
from pyriver_async._maintenance import Maintenance
from pyriver_async._maintenance.vacuumer import Vacuumer
from tests._support import db_executor


async def make_dead_rows(conn: asyncpg.Connection, n: int) -> None:
    """``n`` jobs, each updated once (n dead row versions), with the statistics sent."""
    await conn.execute(
        "INSERT INTO river_job (kind, args, max_attempts) "
        "SELECT 'vacuum_test', '{}', 25 FROM generate_series(1, $1::int)",
        n,
    )
    await conn.execute("UPDATE river_job SET priority = priority + 1 WHERE kind = 'vacuum_test'")
    # Statistics leave a backend at most once a second: send them now.
    await conn.execute("SELECT pg_stat_force_next_flush()")


async def dead_tuples(conn: asyncpg.Connection) -> int:
    q = Queries.for_schema().pg_job_table_stats
    row = await conn.fetchrow(q.sql, *q.bind(schema="public"))
    assert row is not None
    return int(row["n_dead_tup"])


async def test_vacuums_only_past_its_threshold(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    vacuumer = Vacuumer(db_executor(pool), pool_size=10, dead_tuples=2000)
    await make_dead_rows(conn, 1500)
    assert await dead_tuples(conn) >= 1500
    assert not await vacuumer.vacuum_if_needed()  # 1,500 dead: below 2,000
    await make_dead_rows(conn, 1500)
    assert await dead_tuples(conn) > 2000
    assert await vacuumer.vacuum_if_needed()
    assert vacuumer.vacuums == 1
    assert await dead_tuples(conn) < 100  # the VACUUM removed them and said so
    assert not await vacuumer.vacuum_if_needed()


async def test_a_schema_whose_name_needs_quoting_is_measured_and_vacuumed(
    db: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    from pyriver_async import migrate
    from pyriver_async._driver.asyncpg import AsyncpgExecutor
    from pyriver_async._driver.queries import quote_ident

    schema = "Odd-Schema's"  # mixed case, a dash and a quote
    await migrate(db, schema=schema)
    table = f"{quote_ident(schema)}.river_job"
    await conn.execute(
        f"INSERT INTO {table} (kind, args, max_attempts) "
        "SELECT 'vacuum_test', '{}', 25 FROM generate_series(1, 300)"
    )
    await conn.execute(f"UPDATE {table} SET priority = priority + 1")
    await conn.execute("SELECT pg_stat_force_next_flush()")
    ex = AsyncpgExecutor(Queries.for_schema(schema), pool=pool, timeout=30.0)
    stats = await ex.pg_job_table_stats()
    assert stats is not None and stats.live >= 300 and stats.dead >= 300  # that table's
    vacuumer = Vacuumer(ex, pool_size=10, dead_tuples=100)
    assert await vacuumer.vacuum_if_needed()


def test_a_big_table_is_vacuumed_no_more_often_than_autovacuum_would() -> None:
    vacuumer = Vacuumer(None, pool_size=10, dead_tuples=100_000)  # type: ignore[arg-type]
    assert vacuumer.threshold(10_000) == 100_000
    assert vacuumer.threshold(2_000_000) == 400_000  # 20% of the live rows


@pytest.fixture
async def other_role(db: str) -> AsyncIterator[str]:
    """A role that may use the job table but does not own it: its URL."""
    name = f"pyriver_novac_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(db)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN")
        await admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}")
        yield db.replace("postgres@", f"{name}@", 1)
    finally:
        await admin.execute(f"DROP OWNED BY {name}")
        await admin.execute(f"DROP ROLE {name}")
        await admin.close()


async def test_a_role_that_cannot_vacuum_says_so_once_and_stops_trying(
    other_role: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    assert "postgres@" not in other_role
    await make_dead_rows(conn, 500)
    pool = await asyncpg.create_pool(other_role, min_size=1, max_size=4)
    assert pool is not None
    try:
        vacuumer = Vacuumer(db_executor(pool), pool_size=10, dead_tuples=10)
        with caplog.at_level(logging.INFO, logger="pyriver_async.maintenance.vacuumer"):
            assert not await vacuumer.vacuum_if_needed()
            assert not await vacuumer.vacuum_if_needed()
        assert not vacuumer.allowed
        assert caplog.text.count("cannot VACUUM") == 1
    finally:
        await pool.close()
    assert await dead_tuples(conn) >= 500  # untouched


@pytest.mark.parametrize("setting", [100_000, 0])
def test_the_client_setting_turns_the_service_on_and_off(setting: int) -> None:
    client = Client("postgresql://unused", vacuum_dead_tuples=setting)
    m = Maintenance(None, client.config, client_id=client.id)  # type: ignore[arg-type]
    names = [s.name for s in m.leader_services]
    assert ("vacuumer" in names) is (setting > 0)
    if setting:
        assert m.vacuumer is not None and m.vacuumer.dead_tuples == setting


async def test_a_small_pool_is_left_alone(db: str, conn: asyncpg.Connection) -> None:
    await make_dead_rows(conn, 500)
    small = await asyncpg.create_pool(db, min_size=1, max_size=2)
    assert small is not None
    try:
        vacuumer = Vacuumer(db_executor(small), pool_size=2, dead_tuples=10)
        assert not await vacuumer.vacuum_if_needed()
        assert not vacuumer.allowed  # a VACUUM would hold one of its two connections
    finally:
        await small.close()


async def test_dead_rows_a_vacuum_cannot_remove_do_not_make_it_vacuum_again(
    db: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    # An old snapshot keeps the dead rows alive: after one VACUUM, the next counts only
    # rows that died since, instead of vacuuming again at every pass.
    holder = await asyncpg.connect(db)
    try:
        tr = holder.transaction(isolation="repeatable_read")
        await tr.start()
        await holder.fetchval("SELECT count(*) FROM river_job")
        vacuumer = Vacuumer(db_executor(pool), pool_size=10, dead_tuples=1000)
        await make_dead_rows(conn, 2000)
        assert await vacuumer.vacuum_if_needed()
        assert vacuumer.left_behind >= 2000
        assert not await vacuumer.vacuum_if_needed()
        await tr.rollback()
    finally:
        await holder.close()
