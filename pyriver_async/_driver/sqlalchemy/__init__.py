"""The SQLAlchemy driver: inserts under an application's SQLAlchemy session or
connection (the ``sqlalchemy`` extra), on its asyncpg or psycopg dialect. The only
package of the library that imports SQLAlchemy."""

from __future__ import annotations

from typing import Any

from ..._errors import ConfigError
from .. import InsertExecutor
from ..queries import Queries
from .executor import SqlalchemyExecutor, SqlalchemySyncExecutor

__all__ = ["SqlalchemyExecutor", "SqlalchemySyncExecutor", "insert_executor"]


def _is_async(obj: object) -> bool:
    return any(c.__module__.startswith("sqlalchemy.ext.asyncio") for c in type(obj).__mro__)


def insert_executor(conn: Any, queries: Queries, *, sync: bool) -> InsertExecutor:
    """The executor under ``conn``: an ``AsyncSession`` / ``AsyncConnection`` for
    ``client.insert``, a ``Session`` / ``Connection`` for ``pyriver_async.sync``
    (a scoped session stands for its current session)."""
    if _is_async(conn) != (not sync):
        if sync:
            raise ConfigError(
                "pyriver_async.sync takes a SQLAlchemy Session or Connection; with an "
                "AsyncSession or AsyncConnection use `await client.insert(..., conn=...)`"
            )
        raise ConfigError(
            "a synchronous SQLAlchemy Session or Connection would block the event loop: "
            "use pyriver_async.sync.insert(..., conn=...), or an AsyncSession"
        )
    if sync:
        from sqlalchemy.engine import Connection
        from sqlalchemy.orm import Session, scoped_session

        if isinstance(conn, scoped_session):
            conn = conn()
        if isinstance(conn, Session | Connection):
            return SqlalchemySyncExecutor(queries, conn, is_session=isinstance(conn, Session))
    else:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

        if isinstance(conn, async_scoped_session):
            conn = conn()
        if isinstance(conn, AsyncSession | AsyncConnection):
            return SqlalchemyExecutor(queries, conn, is_session=isinstance(conn, AsyncSession))
    raise ConfigError(
        f"conn= takes a SQLAlchemy session or connection, got {type(conn).__module__}."
        f"{type(conn).__qualname__}: open one, e.g. `with engine.begin() as conn`"
    )
