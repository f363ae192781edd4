"""``pyriver migrate``, run as a real process (``python -m pyriver_async.cli``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from pyriver_async._migrate import load_migrations

FreshDatabase = Callable[[], Awaitable[str]]

REPO = Path(__file__).resolve().parents[2]

APPLIED_ALL = [
    "applied main 001 create_river_migration",
    "applied main 002 initial_schema",
    "applied main 003 river_job_tags_non_null",
    "applied main 004 pending_and_more",
    "applied main 005 migration_unique_client",
    "applied main 006 bulk_unique",
    "applied main 007 notification_outbox_and_cleanup",
    "applied main 008 job_id_autoincrement",
    "applied pyriver 001 client_liveness",
    "applied pyriver 002 client_status",
    "applied pyriver 003 flow_control",
]


Completed = subprocess.CompletedProcess[str]


async def pyriver(*args: str, env: dict[str, str] | None = None) -> Completed:
    """Run the command in a child process, off the event loop."""
    child_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    child_env.update(env or {})
    # The checkout itself, not whatever copy of the package may be installed.
    search_path = [str(REPO), child_env.get("PYTHONPATH", "")]
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in search_path if p)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pyriver_async.cli", *args],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=REPO,
        timeout=60,
    )


def lines(result: Completed) -> list[str]:
    return result.stdout.splitlines()


async def test_up_list_validate_down_end_to_end(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()

    up = await pyriver("migrate", "up", "--database-url", url)
    assert up.returncode == 0, up.stderr
    assert lines(up) == APPLIED_ALL

    again = await pyriver("migrate", "up", "--database-url", url)
    assert again.returncode == 0, again.stderr
    assert lines(again) == ["nothing to do"]

    listing = await pyriver("migrate", "list", "--database-url", url)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in lines(listing)]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (*line.split()[1:], "applied") for line in APPLIED_ALL
    ]

    valid = await pyriver("migrate", "validate", "--database-url", url)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "up to date" in valid.stdout

    # DATABASE_URL stands in for --database-url.
    down = await pyriver("migrate", "down", "--target", "0", env={"DATABASE_URL": url})
    assert down.returncode == 0, down.stderr
    assert lines(down) == [line.replace("applied", "rolled back") for line in reversed(APPLIED_ALL)]

    listing = await pyriver("migrate", "list", "--database-url", url)
    assert all(line.endswith("pending") for line in lines(listing)), listing.stdout

    behind = await pyriver("migrate", "validate", "--database-url", url)
    assert behind.returncode == 1
    assert "pyriver migrate up" in behind.stdout


async def test_validate_exits_non_zero_for_a_river_migrated_database(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database()
    conn = await asyncpg.connect(url)
    try:
        for migration in load_migrations()["main"]:
            async with conn.transaction():
                await conn.execute(migration.up_sql)
        await conn.execute(
            "INSERT INTO river_migration (line, version) SELECT 'main', generate_series(1, 7)"
        )
    finally:
        await conn.close()

    river_only = await pyriver("migrate", "validate", "--database-url", url)
    assert river_only.returncode == 0, river_only.stdout
    assert "main line usable as it is" in river_only.stdout
    assert "pyriver line not applied (optional" in river_only.stdout
    assert "`pyriver migrate up`" in river_only.stdout

    up = await pyriver("migrate", "up", "--database-url", url)
    assert lines(up) == [
        "applied main 008 job_id_autoincrement",
        "applied pyriver 001 client_liveness",
        "applied pyriver 002 client_status",
        "applied pyriver 003 flow_control",
    ]
    valid = await pyriver("migrate", "validate", "--database-url", url)
    assert valid.returncode == 0, valid.stdout


async def test_schema_and_target_options(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()
    schema = "queue jobs"
    # Connection options are accepted before the action as well as after it.
    up = await pyriver("migrate", "--schema", schema, "--database-url", url, "up", "--target", "3")
    assert up.returncode == 0, up.stderr
    assert lines(up) == APPLIED_ALL[:3]

    behind = await pyriver("migrate", "validate", "--database-url", url, "--schema", schema)
    assert behind.returncode == 1
    assert "main line needs versions 4, 5, 6, 7" in behind.stdout
    assert "--schema 'queue jobs'" in behind.stdout

    public = await pyriver("migrate", "list", "--database-url", url)
    assert all(line.endswith("pending") for line in lines(public))

    down = await pyriver("migrate", "down", "--database-url", url, "--schema", schema)
    assert lines(down) == ["rolled back main 003 river_job_tags_non_null"]


async def test_errors_and_usage_have_their_own_exit_codes(fresh_database: FreshDatabase) -> None:
    url = await fresh_database()

    no_database = await pyriver("migrate", "list")
    assert no_database.returncode == 2
    assert "DATABASE_URL" in no_database.stderr

    bad_target = await pyriver("migrate", "up", "--target", "seven", "--database-url", url)
    assert bad_target.returncode == 2

    bad_line = await pyriver("migrate", "up", "--line", "other", "--database-url", url)
    assert bad_line.returncode == 2

    no_action = await pyriver("migrate", "--database-url", url)
    assert no_action.returncode == 2

    too_far = await pyriver("migrate", "up", "--target", "99", "--database-url", url)
    assert too_far.returncode == 1
    assert too_far.stderr.startswith("error: ")

    await pyriver("migrate", "up", "--database-url", url)
    refused = await pyriver(
        "migrate", "down", "--line", "main", "--target", "4", "--database-url", url
    )
    assert refused.returncode == 1
    assert "--line pyriver --target 0" in refused.stderr
