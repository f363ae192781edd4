"""The types of connection ``conn=`` accepts, for annotations only.

Nothing here imports a database library at run time: the union is spelled for the
type checker, and each driver recognises its own objects by their module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

__all__ = ["ClientDatabase", "InsertConnection"]

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    #: What ``client.insert(..., conn=...)`` takes.
    InsertConnection: TypeAlias = (
        asyncpg.Connection[Any] | PoolConnectionProxy[Any] | asyncpg.Pool[Any]
    )
    #: What ``Client(...)`` takes: the application's asyncpg pool, or a DSN.
    ClientDatabase: TypeAlias = asyncpg.Pool[Any] | str
else:
    InsertConnection = Any
    ClientDatabase = Any
