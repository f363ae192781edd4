"""Which :class:`InsertExecutor` serves the ``conn=`` a caller passed.

asyncpg connections and pools are recognised by type; psycopg and SQLAlchemy objects
by the module their class comes from, so that those libraries (optional extras) are
imported only when the caller already uses them.
"""

from __future__ import annotations

from typing import Any

from .._errors import ConfigError
from . import Executor, InsertExecutor
from .queries import Queries

__all__ = ["executor_for", "insert_executor_for"]


def executor_for(conn: Any, queries: Queries) -> Executor:
    """A full executor on the caller's asyncpg connection or pool (control, queries)."""
    from .asyncpg import AsyncpgExecutor, is_asyncpg_connection, is_asyncpg_pool

    if is_asyncpg_connection(conn):
        return AsyncpgExecutor(queries, conn=conn)
    if is_asyncpg_pool(conn):
        return AsyncpgExecutor(queries, pool=conn)
    raise ConfigError(
        "conn= of this operation takes an asyncpg connection or pool (connections of "
        "other libraries can insert jobs); got "
        f"{type(conn).__module__}.{type(conn).__qualname__}"
    )


def insert_executor_for(conn: Any, queries: Queries) -> InsertExecutor:
    """The executor that inserts on ``conn`` (inside its transaction, when it has one)."""
    from .asyncpg import is_asyncpg_connection, is_asyncpg_pool

    if is_asyncpg_connection(conn) or is_asyncpg_pool(conn):
        return executor_for(conn, queries)
    raise ConfigError(
        "conn= takes an asyncpg connection or pool; got "
        f"{type(conn).__module__}.{type(conn).__qualname__}"
    )
