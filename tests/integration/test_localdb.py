"""With no DATABASE_URL and no server on 127.0.0.1:5432, the demo and the tests start an
embedded throwaway PostgreSQL (pgserver), so a newcomer needs nothing else."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio
    from pyriver_async import Client, JobArgs, migrate
    from pyriver_async.testing import db as _localdb

    _localdb.LOCAL_URL = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens


    class Hello(JobArgs, kind="localdb_hello"):
        pass


    async def main() -> None:
        url, name = await _localdb.create_database("embedded_check")
        assert "127.0.0.1:5432" not in url, url
        await migrate(url)
        client = Client(url)
        print("inserted", (await client.insert(Hello())).job.id)
        await client.close()
        await _localdb.drop_database(name)


    asyncio.run(main())
    """
)


async def test_embedded_postgres_is_started_when_no_server_answers() -> None:
    # pgserver has no wheel for every Python (none for 3.13 yet): nothing to start.
    pytest.importorskip("pgserver")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "inserted 1" in proc.stdout


async def test_throwaway_databases_take_any_prefix() -> None:
    # A prefix with a quote, a double quote and a space: the DDL quotes the name and
    # the URL percent-encodes it, so the database is made, reached and dropped.
    import asyncpg

    from pyriver_async.testing.db import create_database, drop_database, with_database

    url, name = await create_database("odd \"pre'fix")
    try:
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
    finally:
        await drop_database(name)
    probe = await asyncpg.connect(with_database(url, "postgres"))
    try:
        assert not await probe.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await probe.close()
