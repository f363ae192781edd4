"""The SQL migrations and the migrator, against a real PostgreSQL.

Every test gets empty databases from ``fresh_database``.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pyriver_async import _migrate
from pyriver_async._driver.asyncpg import AsyncpgExecutor
from pyriver_async._driver.queries import Queries
from pyriver_async._errors import (
    ConfigError,
    MigrationError,
    SchemaNotMigratedError,
    SchemaVersionError,
)
from pyriver_async._migrate import (
    check_schema,
    known_versions,
    load_migrations,
    migrate,
    migration_status,
    validate,
)

FreshDatabase = Callable[[], Awaitable[str]]
Snapshot = dict[str, list[tuple[Any, ...]]]

ALL_STEPS = [
    ("main", 1, "create_river_migration"),
    ("main", 2, "initial_schema"),
    ("main", 3, "river_job_tags_non_null"),
    ("main", 4, "pending_and_more"),
    ("main", 5, "migration_unique_client"),
    ("main", 6, "bulk_unique"),
    ("main", 7, "notification_outbox_and_cleanup"),
    ("main", 8, "job_id_autoincrement"),
    ("pyriver", 1, "client_liveness"),
    ("pyriver", 2, "client_status"),
    ("pyriver", 3, "flow_control"),
]


def on(conn: Any, schema: str = "public") -> AsyncpgExecutor:
    """The driver's executor on a test's connection (what check_schema takes)."""
    return AsyncpgExecutor(Queries.for_schema(schema), conn=conn)


# river_job as River's main line 1-7 leaves it: (name, type, nullable, default), in
# column order.
RIVER_JOB_COLUMNS = [
    ("id", "bigint", False, "nextval('river_job_id_seq'::regclass)"),
    ("state", "river_job_state", False, "'available'::river_job_state"),
    ("attempt", "smallint", False, "0"),
    ("max_attempts", "smallint", False, "25"),
    ("attempted_at", "timestamp with time zone", True, None),
    ("created_at", "timestamp with time zone", False, "now()"),
    ("finalized_at", "timestamp with time zone", True, None),
    ("scheduled_at", "timestamp with time zone", False, "now()"),
    ("priority", "smallint", False, "1"),
    ("args", "jsonb", False, None),
    ("attempted_by", "text[]", True, None),
    ("errors", "jsonb[]", True, None),
    ("kind", "text", False, None),
    ("metadata", "jsonb", False, "'{}'::jsonb"),
    ("queue", "text", False, "'default'::text"),
    ("tags", "character varying(255)[]", False, "'{}'::character varying[]"),
    ("unique_key", "bytea", True, None),
    ("unique_states", "bit(8)", True, None),
]

RIVER_JOB_STATES = [
    "available",
    "cancelled",
    "completed",
    "discarded",
    "pending",
    "retryable",
    "running",
    "scheduled",
]

# Every table, index, sequence, type and function the migrations create, after `up`.
EXPECTED_RELATIONS = {
    "pyriver_client": "r",
    "pyriver_client_heartbeat_at_idx": "i",
    "pyriver_client_pkey": "i",
    "pyriver_flow_state": "r",
    "pyriver_flow_state_pkey": "i",
    "pyriver_flow_state_tat_idx": "i",
    "pyriver_job_sequence_idx": "i",
    "river_job": "r",
    "river_job_args_index": "i",
    "river_job_id_seq": "S",
    "river_job_kind": "i",
    "river_job_metadata_index": "i",
    "river_job_pkey": "i",
    "river_job_prioritized_fetching_index": "i",
    "river_job_state_and_finalized_at_index": "i",
    "river_job_unique_idx": "i",
    "river_leader": "r",
    "river_leader_pkey": "i",
    "river_migration": "r",
    "river_migration_pkey1": "i",
    "river_notification": "r",
    "river_notification_created_at_idx": "i",
    "river_notification_id_seq": "S",
    "river_notification_pkey": "i",
    "river_notification_topic_id_idx": "i",
    "river_queue": "r",
    "river_queue_pkey": "i",
}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def catalog_snapshot(conn: asyncpg.Connection, schema: str = "public") -> Snapshot:
    """Everything the migrations define in ``schema``, in a comparable form."""
    # Expressions are printed relative to the search path; make it the schema itself.
    await conn.execute(f"SET search_path TO {quote_ident(schema)}")
    queries = {
        "relations": """
            SELECT c.relname, c.relkind::text, c.relpersistence::text
            FROM pg_class c WHERE c.relnamespace = $1::regnamespace
            ORDER BY 1""",
        "columns": """
            SELECT c.relname,
                   row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                   a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_class c
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
            WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p')
            ORDER BY 1, 2""",
        "indexes": """
            SELECT c.relname, pg_get_indexdef(i.indexrelid)
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE c.relnamespace = $1::regnamespace
            ORDER BY 1""",
        "constraints": """
            SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = $1::regnamespace
            ORDER BY 1, 2""",
        "functions": """
            SELECT p.proname, pg_get_function_identity_arguments(p.oid),
                   pg_get_function_result(p.oid), p.provolatile::text, l.lanname, p.prosrc
            FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
            WHERE p.pronamespace = $1::regnamespace
            ORDER BY 1, 2""",
        "types": """
            SELECT t.typname, t.typtype::text,
                   (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                    FROM pg_enum e WHERE e.enumtypid = t.oid)
            FROM pg_type t
            WHERE t.typnamespace = $1::regnamespace
            ORDER BY 1""",
        "triggers": """
            SELECT t.tgname, pg_get_triggerdef(t.oid)
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal
            ORDER BY 1""",
    }
    snapshot: Snapshot = {}
    for key, query in queries.items():
        snapshot[key] = [tuple(r) for r in await conn.fetch(query, quote_ident(schema))]
    await conn.execute("RESET search_path")
    return snapshot


async def recorded_versions(conn: asyncpg.Connection, schema: str = "public") -> list[Any]:
    return [
        tuple(r)
        for r in await conn.fetch(
            f"SELECT line, version FROM {quote_ident(schema)}.river_migration "
            "ORDER BY line, version"
        )
    ]


async def migrate_like_river(url: str) -> None:
    """Bring a database to main 7 the way River's own migrator leaves it: no pyriver rows."""
    async with connect(url) as conn:
        for migration in load_migrations()["main"]:
            async with conn.transaction():
                await conn.execute(migration.up_sql)
        await conn.execute(
            "INSERT INTO river_migration (line, version) SELECT 'main', generate_series(1, 7)"
        )


def test_known_versions_name_the_latest_of_each_line() -> None:
    assert known_versions() == {"main": 8, "pyriver": 3}
    steps = [(m.line, m.version, m.name) for ms in load_migrations().values() for m in ms]
    assert steps == ALL_STEPS


def test_every_index_has_a_comment_saying_why() -> None:
    for migrations in load_migrations().values():
        for migration in migrations:
            for sql in (migration.up_sql, migration.down_sql):
                lines = sql.splitlines()
                for number, text in enumerate(lines):
                    if "CREATE" in text and "INDEX" in text:
                        above = lines[number - 1].strip()
                        assert above.startswith("--"), (migration.name, text)


async def test_up_applies_every_line_in_order(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    result = await migrate(url)
    assert result.direction == "up"
    assert result.applied == ALL_STEPS
    again = await migrate(url)
    assert again.applied == []
    async with connect(url) as conn:
        assert await recorded_versions(conn) == [(line, v) for line, v, _ in ALL_STEPS]
        await check_schema(on(conn))


async def test_each_down_exactly_undoes_its_up(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    async with connect(url) as conn:
        snapshots = {0: await catalog_snapshot(conn)}
        for line, version, _ in ALL_STEPS:
            step = len(snapshots)
            await migrate(conn, target=version, line=line)
            snapshots[step] = await catalog_snapshot(conn)
        # River's main 008 changes SQLite only: on PostgreSQL it is recorded, nothing more.
        no_ops = {("main", 8)}
        changed = [
            (line, version)
            for step, (line, version, _) in enumerate(ALL_STEPS, start=1)
            if snapshots[step] != snapshots[step - 1]
        ]
        assert changed == [(line, v) for line, v, _ in ALL_STEPS if (line, v) not in no_ops], (
            "every migration but the known no-ops changes the catalog"
        )

        # One step down at a time, each time back to the catalog before that step's up.
        for step in range(len(ALL_STEPS), 0, -1):
            result = await migrate(conn, "down")
            assert result.applied == [ALL_STEPS[step - 1]]
            assert await catalog_snapshot(conn) == snapshots[step - 1], ALL_STEPS[step - 1]

        # And all the way up again gives the same catalog as the first time.
        await migrate(conn)
        assert await catalog_snapshot(conn) == snapshots[len(ALL_STEPS)]
        await migrate(conn, "down", target=0)
        assert await catalog_snapshot(conn) == snapshots[0]
        await migrate(conn)
        assert await catalog_snapshot(conn) == snapshots[len(ALL_STEPS)]


async def test_river_job_columns_match_river(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    await migrate(url)
    async with connect(url) as conn:
        snapshot = await catalog_snapshot(conn)
        columns = [
            (name, type_, not notnull, default)
            for table, _, name, type_, notnull, default in snapshot["columns"]
            if table == "river_job"
        ]
        assert columns == RIVER_JOB_COLUMNS
        types = {name: labels for name, kind, labels in snapshot["types"] if kind == "e"}
        assert types == {"river_job_state": RIVER_JOB_STATES}
        relations = {name: (kind, persistence) for name, kind, persistence in snapshot["relations"]}
        assert relations["river_leader"] == ("r", "u")  # UNLOGGED
        assert {name for name, kind, _ in snapshot["relations"]} == set(EXPECTED_RELATIONS)


async def test_unique_index_honours_the_state_bitmask(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    await migrate(url)
    insert = """
        INSERT INTO river_job (args, kind, state, finalized_at, unique_key, unique_states)
        VALUES ('{}', 'k', $1, $2, 'key', $3::integer::bit(8))
    """
    async with connect(url) as conn:
        # 245 = every state but cancelled and discarded (River's default).
        await conn.execute(insert, "available", None, 245)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, "pending", None, 245)
        # A discarded job does not hold the key, so a new one may take it.
        await conn.execute("UPDATE river_job SET state = 'discarded', finalized_at = now()")
        await conn.execute(insert, "scheduled", None, 245)
        in_mask = await conn.fetchval(
            "SELECT river_job_state_in_bitmask(1::bit(8), 'available')"
            " AND NOT river_job_state_in_bitmask(1::bit(8), 'scheduled')"
            " AND river_job_state_in_bitmask(128::bit(8), 'scheduled')"
        )
        assert in_mask is True


async def test_migrations_into_another_schema_leave_public_untouched(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    schema = 'Jobs "of" team-A'
    result = await migrate(url, schema=schema)
    assert result.applied == ALL_STEPS
    async with connect(url) as conn:
        public = await catalog_snapshot(conn, "public")
        assert all(not rows for rows in public.values()), public
        ours = await catalog_snapshot(conn, schema)
        assert {name for name, _, _ in ours["relations"]} == set(EXPECTED_RELATIONS)
        assert {name for name, *_ in ours["functions"]} == {"river_job_state_in_bitmask"}
        await check_schema(on(conn, schema))
        with pytest.raises(SchemaNotMigratedError):
            await check_schema(on(conn))
        # The unqualified names in the functions and defaults resolve in that schema.
        await conn.execute(
            f"INSERT INTO {quote_ident(schema)}.river_job (args, kind, state)"
            " VALUES ('{}', 'k', 'pending')"
        )
        await conn.execute(f"DELETE FROM {quote_ident(schema)}.river_job")
    assert (await validate(url, schema=schema)).ok
    assert not (await validate(url)).ok
    down = await migrate(url, "down", target=0, schema=schema)
    assert down.applied == list(reversed(ALL_STEPS))
    async with connect(url) as conn:
        assert all(not rows for rows in (await catalog_snapshot(conn, schema)).values())


async def test_concurrent_migrators_apply_each_version_once(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    results = await asyncio.gather(*(migrate(url) for _ in range(10)))
    applied = sorted(step for result in results for step in result.applied)
    assert applied == sorted(ALL_STEPS)
    assert sum(1 for result in results if result.applied) == 1
    async with connect(url) as conn:
        assert await recorded_versions(conn) == [(line, v) for line, v, _ in ALL_STEPS]


async def test_river_migrated_database_is_accepted_as_it_is(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    await migrate_like_river(url)

    before = await validate(url)
    assert before.ok, before.message  # RIVER-INTEROP: validate accepts River's database
    # River 0.43 stops at main 7: 8 (a no-op on PostgreSQL) and our optional line are
    # listed, and neither makes the database unusable.
    assert before.missing == [("main", 8), ("pyriver", 1), ("pyriver", 2), ("pyriver", 3)]
    assert before.unknown == []
    assert "main line usable as it is" in before.message
    assert "pyriver line not applied (optional" in before.message
    assert "pyriver migrate up" in before.message
    async with connect(url) as conn:
        assert await check_schema(on(conn)) is False  # usable, without liveness

    result = await migrate(url)
    assert result.applied == [
        ("main", 8, "job_id_autoincrement"),
        ("pyriver", 1, "client_liveness"),
        ("pyriver", 2, "client_status"),
        ("pyriver", 3, "flow_control"),
    ]
    after = await validate(url)
    assert after.ok, after.message
    assert after.missing == []
    async with connect(url) as conn:
        assert await check_schema(on(conn)) is True


async def test_validate_reports_a_database_behind(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    await migrate(url, target=5)
    result = await validate(url)
    assert not result.ok
    assert result.missing == [
        ("main", 6),
        ("main", 7),
        ("main", 8),
        ("pyriver", 1),
        ("pyriver", 2),
        ("pyriver", 3),
    ]
    assert "main line needs versions 6, 7, 8" in result.message
    statuses = await migration_status(url)
    assert [(s.line, s.version, s.applied) for s in statuses] == [
        (line, v, v <= 5 and line == "main") for line, v, _ in ALL_STEPS
    ]
    assert all((s.applied_at is not None) == s.applied for s in statuses)


async def test_validate_ignores_other_tools_lines_and_a_newer_main_that_keeps_what_we_use(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    await migrate(url)
    async with connect(url) as conn:
        await conn.execute("INSERT INTO river_migration (line, version) VALUES ('workflow', 1)")
    result = await validate(url)
    assert result.ok
    assert result.unknown == [("workflow", 1)]
    # River upgraded first: its main line is ahead of ours, the catalog unchanged.
    async with connect(url) as conn:
        await conn.execute("INSERT INTO river_migration (line, version) VALUES ('main', 9)")
    result = await validate(url)
    assert result.ok, result.message
    assert result.unknown == [("main", 9), ("workflow", 1)]
    assert "main line is at version 9, newer" in result.message and "works" in result.message
    statuses = await migration_status(url)
    assert ("main", 9, "", True) in [(s.line, s.version, s.name, s.applied) for s in statuses]
    # ... but a newer main that took away something the library uses is refused.
    async with connect(url) as conn:
        await conn.execute("DROP INDEX river_job_kind")
    result = await validate(url)
    assert not result.ok
    assert "lacks index river_job_kind" in result.message
    assert "upgrade pyriver_async" in result.message


async def test_check_schema_on_an_empty_database_says_to_migrate(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    async with connect(url) as conn:
        with pytest.raises(SchemaNotMigratedError, match="pyriver migrate up"):
            await check_schema(on(conn))


async def test_check_schema_names_both_versions_when_behind_or_ahead(
    fresh_database: FreshDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    url = await fresh_database()
    await migrate(url, target=6)
    async with connect(url) as conn:
        with pytest.raises(SchemaVersionError) as behind:
            await check_schema(on(conn))
        assert (behind.value.database_version, behind.value.library_version) == (6, 8)
        assert "6" in str(behind.value) and "8" in str(behind.value)
        assert "pyriver migrate up" in str(behind.value)

    await migrate(url)
    async with connect(url) as conn:
        await check_schema(on(conn))
        # A newer main line (River upgraded first) that keeps everything we use: it
        # works, with one warning naming both versions.
        await conn.execute("INSERT INTO river_migration (line, version) VALUES ('main', 9)")
        with caplog.at_level(logging.WARNING, logger="pyriver_async.migrate"):
            assert await check_schema(on(conn)) is True
            assert await check_schema(on(conn)) is True
        warnings = [r.getMessage() for r in caplog.records if "newer than this" in r.getMessage()]
        assert len(warnings) == 1 and "version 9" in warnings[0] and "(8)" in warnings[0]
        # One that dropped a column we read is refused, naming what is missing.
        await conn.execute("ALTER TABLE river_job RENAME COLUMN tags TO labels")
        with pytest.raises(SchemaVersionError) as ahead:
            await check_schema(on(conn))
        assert (ahead.value.database_version, ahead.value.library_version) == (9, 8)
        assert "river_job.tags" in str(ahead.value)
        await conn.execute("ALTER TABLE river_job RENAME COLUMN labels TO tags")

        await conn.execute("DELETE FROM river_migration WHERE version = 9")
        await conn.execute("DROP TABLE pyriver_client")
        with pytest.raises(SchemaNotMigratedError, match="pyriver_client"):
            await check_schema(on(conn))


async def test_down_without_target_undoes_pyriver_first_then_main(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    await migrate(url)
    main = [step for step in ALL_STEPS if step[0] == "main"]
    pyriver = [step for step in ALL_STEPS if step[0] == "pyriver"]
    for step in reversed(pyriver):
        assert (await migrate(url, "down")).applied == [step]
    assert (await migrate(url, "down")).applied == [main[-1]]
    assert (await migrate(url, "down", line="pyriver")).applied == []
    assert (await migrate(url, "up", line="pyriver")).applied == pyriver
    assert (await migrate(url, "down", line="main", target=5)).applied == [main[6], main[5]]


async def test_main_below_005_rolls_back_pyriver_first_unless_line_is_named(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    await migrate(url)
    with pytest.raises(MigrationError, match="--line pyriver --target 0"):
        await migrate(url, "down", line="main", target=4)
    async with connect(url) as conn:
        assert len(await recorded_versions(conn)) == len(ALL_STEPS)

    result = await migrate(url, "down", target=4)
    assert result.applied == ALL_STEPS[4:][::-1]
    async with connect(url) as conn:
        # The pre-005 table again: main versions only, one row each.
        assert [r["version"] for r in await conn.fetch("SELECT version FROM river_migration")] == [
            1,
            2,
            3,
            4,
        ]


async def test_main_005_down_refuses_to_lose_other_lines(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    await migrate(url)
    async with connect(url) as conn:
        await conn.execute("INSERT INTO river_migration (line, version) VALUES ('workflow', 1)")
    with pytest.raises(MigrationError, match="workflow"):
        await migrate(url, "down", target=0)
    await migrate(url, "down", line="pyriver", target=0)
    with pytest.raises(MigrationError, match="workflow"):
        await migrate(url, "down", line="main", target=4)
    await migrate(url, "down", line="main", target=5)
    with pytest.raises(MigrationError, match="workflow"):
        await migrate(url, "down")
    # The SQL of 005's down refuses on its own too (for other tools that run it).
    down_005 = load_migrations()["main"][4].down_sql
    async with connect(url) as conn, conn.transaction():
        with pytest.raises(asyncpg.RaiseError, match="other migration lines"):
            await conn.execute(down_005)
    async with connect(url) as conn:
        assert ("main", 5) in await recorded_versions(conn)


async def test_main_004_down_refuses_while_jobs_are_pending(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    await migrate(url, target=4)
    async with connect(url) as conn:
        await conn.execute(
            "INSERT INTO river_job (args, kind, max_attempts, state)"
            " VALUES ('{}', 'k', 1, 'pending')"
        )
    with pytest.raises(MigrationError, match="pending"):
        await migrate(url, "down", target=3)
    statuses = await migration_status(url)
    assert [s.version for s in statuses if s.applied] == [1, 2, 3, 4]
    async with connect(url) as conn:
        await conn.execute("DELETE FROM river_job")
    assert (await migrate(url, "down", target=3)).applied == [ALL_STEPS[3]]


async def test_005_keeps_recorded_history(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    await migrate(url, target=4)
    before = {s.version: s.applied_at for s in await migration_status(url) if s.applied}
    await migrate(url)
    after = {s.version: s.applied_at for s in await migration_status(url) if s.line == "main"}
    assert all(after[v] == before[v] for v in before)


async def test_pyriver_line_needs_main_005(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    with pytest.raises(MigrationError, match="main version 5"):
        await migrate(url, line="pyriver")
    await migrate(url, target=5)
    assert (await migrate(url, line="pyriver")).applied == [
        step for step in ALL_STEPS if step[0] == "pyriver"
    ]


async def test_migrate_accepts_a_pool_and_a_connection(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        assert (await migrate(pool, target=3)).applied == ALL_STEPS[:3]
        async with pool.acquire() as conn:
            assert (await migrate(conn, target=5)).applied == ALL_STEPS[3:5]
            with pytest.raises(SchemaVersionError):
                await check_schema(on(conn))
            async with conn.transaction():
                with pytest.raises(MigrationError, match="outside any transaction"):
                    await migrate(conn)
            # The advisory lock was released: another session can take it at once.
            key = _migrate._lock_key("public")
            async with connect(url) as other:
                assert await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
    finally:
        await pool.close()


async def test_invalid_requests_are_refused_before_touching_the_database() -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(ConfigError):
        await migrate(unreachable, schema="")
    with pytest.raises(ConfigError):
        await migrate(unreachable, schema="s" * 64)
    with pytest.raises(MigrationError, match="unknown migration line"):
        await migrate(unreachable, line="other")


async def test_target_beyond_the_known_versions_is_refused(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    with pytest.raises(MigrationError, match="no version 9"):
        await migrate(url, target=9)
    assert (await migrate(url, target=0)).applied == []


@pytest.fixture
def packaged_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Pretend to be installed from a wheel, with the SQL shipped as package data."""
    package = tmp_path / "pyriver_async"
    shutil.copytree(Path(__file__).parents[2] / "migrations", package / "_migrations")
    (package / "_migrations" / "main" / "README").write_text("not a migration")
    monkeypatch.setattr(importlib.resources, "files", lambda _: package)
    load_migrations.cache_clear()
    yield package
    load_migrations.cache_clear()


def test_sql_is_read_from_package_data_when_installed(packaged_migrations: Path) -> None:
    assert _migrate.files._migrations_root() == packaged_migrations / "_migrations"
    assert known_versions() == {"main": 8, "pyriver": 3}


def test_a_missing_down_file_is_reported(packaged_migrations: Path) -> None:
    (packaged_migrations / "_migrations" / "main" / "003_river_job_tags_non_null.down.sql").unlink()
    with pytest.raises(MigrationError, match="003"):
        load_migrations()
