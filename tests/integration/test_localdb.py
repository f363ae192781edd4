"""With no DATABASE_URL and no server on 127.0.0.1:5432, the demo and the tests start an
embedded throwaway PostgreSQL (pgserver), so a newcomer needs nothing else."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

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
