"""asyncpg's exceptions, translated into the library's own (once, here)."""

from __future__ import annotations

import asyncpg

from ..._errors import (
    ConnectionLostError,
    DatabaseError,
    PyRiverError,
    SchemaNotMigratedError,
    TransientDatabaseError,
    classify_sqlstate,
)

__all__ = ["as_library_error", "translate"]

# Client-side refusals of a value or a setting: sending it again changes nothing.
_PERMANENT_CLIENT_ERRORS = (
    asyncpg.DataError,
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
)
# A connection that broke, closed under us, or answered something the client could
# not follow: the statement's fate is unknown, and another connection may do better.
_CONNECTION_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def schema_missing(schema: str, exc: BaseException) -> SchemaNotMigratedError:
    return SchemaNotMigratedError(
        f"pyriver_async's tables are missing or out of date in schema {schema!r} "
        f"({type(exc).__name__}: {exc}); run `pyriver migrate up` "
        "(or `await pyriver_async.migrate(...)`) first"
    )


def translate(exc: BaseException, schema: str) -> PyRiverError | None:
    """The library's exception for a driver exception (``None``: not asyncpg's)."""
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate
        kind = classify_sqlstate(code)
        message = f"{type(exc).__name__}: {exc}"
        if kind == "schema":
            return schema_missing(schema, exc)
        if kind == "connection":
            return ConnectionLostError(message, sqlstate=code)
        if kind == "transient":
            return TransientDatabaseError(message, sqlstate=code)
        return DatabaseError(message, sqlstate=code)
    if isinstance(exc, asyncpg.exceptions.OutdatedSchemaCacheError):
        return TransientDatabaseError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, _PERMANENT_CLIENT_ERRORS):
        return DatabaseError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, _CONNECTION_ERRORS):
        return ConnectionLostError(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
    return None


def as_library_error(exc: BaseException, schema: str) -> BaseException:
    """``exc`` translated (its ``__cause__`` the original), or ``exc`` itself when it is
    not asyncpg's to translate: ``raise as_library_error(exc, schema)``."""
    mine = translate(exc, schema)
    if mine is None:
        return exc
    mine.__cause__ = exc
    return mine
