"""The types of connection ``conn=`` accepts, for annotations only.

Nothing here imports a database library at run time: the unions are spelled for the
type checker, and each driver recognises its own objects by their module (see
``resolve``), so psycopg and SQLAlchemy stay optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

__all__ = [
    "ClientDatabase",
    "ControlConnection",
    "DjangoConnection",
    "InsertConnection",
    "SyncInsertConnection",
]


class DjangoConnection(Protocol):
    """Django's ``django.db.connection`` (or ``connections[alias]``), as far as used:
    on the psycopg 3 backend, ``connection`` is a ``psycopg.Connection``."""

    def ensure_connection(self) -> None: ...

    @property
    def connection(self) -> Any: ...


if TYPE_CHECKING:
    import asyncpg
    import psycopg
    import sqlalchemy.engine
    import sqlalchemy.ext.asyncio
    import sqlalchemy.orm
    from asyncpg.pool import PoolConnectionProxy

    #: What ``client.insert(..., conn=...)`` takes.
    InsertConnection: TypeAlias = (
        asyncpg.Connection[Any]
        | PoolConnectionProxy[Any]
        | asyncpg.Pool[Any]
        | psycopg.AsyncConnection[Any]
        | sqlalchemy.ext.asyncio.AsyncSession
        | sqlalchemy.ext.asyncio.AsyncConnection
        | sqlalchemy.ext.asyncio.async_scoped_session[Any]
    )
    #: What every other ``conn=`` of the client (control, queries, insights) takes:
    #: asyncpg only, the engine's own driver (others raise ConfigError).
    ControlConnection: TypeAlias = (
        asyncpg.Connection[Any] | PoolConnectionProxy[Any] | asyncpg.Pool[Any]
    )
    #: What ``pyriver_async.sync.insert(..., conn=...)`` takes.
    SyncInsertConnection: TypeAlias = (
        DjangoConnection
        | psycopg.Connection[Any]
        | sqlalchemy.orm.Session
        | sqlalchemy.engine.Connection
        | sqlalchemy.orm.scoped_session[Any]
    )
    #: What ``Client(...)`` takes: the application's asyncpg pool, or a DSN.
    ClientDatabase: TypeAlias = asyncpg.Pool[Any] | str
else:
    InsertConnection = Any
    ControlConnection = Any
    SyncInsertConnection = Any
    ClientDatabase = Any
