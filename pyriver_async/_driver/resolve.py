"""Which :class:`InsertExecutor` serves the ``conn=`` a caller passed.

asyncpg connections and pools are recognised by type (asyncpg is the engine's driver,
always imported); psycopg, SQLAlchemy and Django objects by the package their class
(or a base class) comes from, so that those libraries, optional extras, are imported
only when the caller already uses them.
"""

from __future__ import annotations

from typing import Any

from .._errors import ConfigError
from . import Executor, InsertExecutor
from .queries import Queries

__all__ = ["executor_for", "insert_executor_for", "sync_insert_executor_for"]


_CONNECTION, _POOL, _OTHER = 1, 2, 0
# What each type passed as conn= is to asyncpg, found once per type: isinstance against
# asyncpg's classes (ABCs among them) cost ~5 us an insert on the conn= path.
_asyncpg_kinds: dict[type, int] = {}


def _asyncpg_kind(conn: object) -> int:
    kind = _asyncpg_kinds.get(type(conn))
    if kind is None:
        from .asyncpg import is_asyncpg_connection, is_asyncpg_pool

        if is_asyncpg_connection(conn):
            kind = _CONNECTION
        elif is_asyncpg_pool(conn):
            kind = _POOL
        else:
            kind = _OTHER
        if len(_asyncpg_kinds) < 256:  # types, not objects: a handful in practice
            _asyncpg_kinds[type(conn)] = kind
    return kind


def executor_for(conn: Any, queries: Queries) -> Executor:
    """A full executor on the caller's asyncpg connection or pool (control, queries)."""
    from .asyncpg import AsyncpgExecutor

    kind = _asyncpg_kind(conn)
    if kind == _CONNECTION:
        return AsyncpgExecutor(queries, conn=conn)
    if kind == _POOL:
        return AsyncpgExecutor(queries, pool=conn)
    raise ConfigError(
        "conn= of this call takes an asyncpg connection or pool; got "
        f"{type(conn).__module__}.{type(conn).__qualname__}. psycopg and SQLAlchemy "
        "connections can insert jobs (client.insert / insert_many) but not run the "
        "control, query or insights calls: call it without conn= (the client's pool), "
        "or with an asyncpg connection"
    )


def _libraries(obj: object) -> set[str]:
    return {c.__module__.partition(".")[0] for c in type(obj).__mro__}


def _refused(conn: object, accepted: str) -> ConfigError:
    return ConfigError(
        f"conn= takes {accepted}; got {type(conn).__module__}.{type(conn).__qualname__}"
    )


def _library_executor(conn: Any, queries: Queries, *, sync: bool) -> InsertExecutor | None:
    """psycopg's or SQLAlchemy's executor for ``conn`` (None: neither library's object)."""
    libraries = _libraries(conn)
    if "psycopg" in libraries:
        from .psycopg import insert_executor

        return insert_executor(conn, queries, sync=sync)
    if "sqlalchemy" in libraries:
        from .sqlalchemy import insert_executor as sqlalchemy_executor

        return sqlalchemy_executor(conn, queries, sync=sync)
    return None


def insert_executor_for(conn: Any, queries: Queries) -> InsertExecutor:
    """The executor that inserts on ``conn`` (inside its transaction, when it has one)
    for ``client.insert``: asyncpg, psycopg ``AsyncConnection``, SQLAlchemy
    ``AsyncSession`` / ``AsyncConnection``."""
    if _asyncpg_kind(conn) != _OTHER:
        return executor_for(conn, queries)
    ex = _library_executor(conn, queries, sync=False)
    if ex is not None:
        return ex
    if "django" in _libraries(conn):
        raise ConfigError("a Django connection is synchronous: use pyriver_async.sync.insert")
    raise _refused(
        conn,
        "an asyncpg connection or pool, a psycopg AsyncConnection, or a SQLAlchemy "
        "AsyncSession or AsyncConnection",
    )


def sync_insert_executor_for(conn: Any, queries: Queries) -> InsertExecutor:
    """The executor for ``pyriver_async.sync``: psycopg ``Connection``, SQLAlchemy
    ``Session`` / ``Connection``, Django's connection on its psycopg 3 backend. Its
    coroutines block and never suspend."""
    libraries = _libraries(conn)
    if "django" in libraries:
        # django.db.connection (or connections[alias]): its psycopg connection, opened
        # if need be. Django's atomic() is that connection's transaction.
        conn.ensure_connection()
        raw = conn.connection
        if "psycopg" not in _libraries(raw):
            raise ConfigError(
                "pyriver_async.sync takes Django's connection on its psycopg 3 backend "
                f"(install psycopg); this one runs on {type(raw).__module__}"
            )
        conn = raw
    ex = _library_executor(conn, queries, sync=True)
    if ex is not None:
        return ex
    if "asyncpg" in libraries:
        raise ConfigError("asyncpg is asynchronous: use `await client.insert(..., conn=conn)`")
    raise _refused(
        conn, "a psycopg Connection, a SQLAlchemy Session or Connection, or Django's connection"
    )
