"""The insert-only client the admin commands work through (schema checked first)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

from pyriver_async import Client

from ._common import connection

__all__ = ["command_client"]


@contextlib.asynccontextmanager
async def command_client(args: argparse.Namespace) -> AsyncIterator[Client]:
    """A client on the command's database and schema, checked to be migrated."""
    url, schema = connection(args)
    client = Client(url, schema=schema, pool_max_size=2, maintenance=False)
    try:
        await client.start()  # no queues, no maintenance: checks the schema only
        yield client
    finally:
        await client.close()
