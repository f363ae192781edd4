"""The psycopg 3 driver: inserts on an application's psycopg connection (the
``psycopg`` extra). The only package of the library that imports psycopg."""

from __future__ import annotations

from typing import Any

import psycopg

from ..._errors import ConfigError
from .. import InsertExecutor
from ..queries import Queries
from .executor import PsycopgExecutor, PsycopgSyncExecutor, translated

__all__ = ["PsycopgExecutor", "PsycopgSyncExecutor", "insert_executor", "translated"]


def insert_executor(conn: Any, queries: Queries, *, sync: bool) -> InsertExecutor:
    """The executor on ``conn``: an ``AsyncConnection`` for ``client.insert``, a
    ``Connection`` for ``pyriver_async.sync``; anything else is a clear ConfigError."""
    if isinstance(conn, psycopg.AsyncConnection):
        if sync:
            raise ConfigError(
                "pyriver_async.sync takes a synchronous psycopg Connection; with an "
                "AsyncConnection use `await client.insert(..., conn=conn)`"
            )
        return PsycopgExecutor(queries, conn)
    if isinstance(conn, psycopg.Connection):
        if not sync:
            raise ConfigError(
                "a synchronous psycopg Connection would block the event loop: use "
                "pyriver_async.sync.insert(..., conn=conn), or a psycopg AsyncConnection"
            )
        return PsycopgSyncExecutor(queries, conn)
    if isinstance(conn, psycopg.Cursor | psycopg.AsyncCursor):
        hint = "pass the cursor's connection: conn=cur.connection"
    else:
        hint = "take one from a pool with `pool.connection()`"
    raise ConfigError(
        f"conn= takes a psycopg connection, got {type(conn).__module__}."
        f"{type(conn).__qualname__}: {hint}"
    )
