"""A database error's SQLSTATE turned into the library's exception, for the drivers
that insert on other libraries' connections (psycopg, SQLAlchemy)."""

from __future__ import annotations

from .._errors import (
    ConnectionLostError,
    DatabaseError,
    PyRiverError,
    SchemaNotMigratedError,
    TransientDatabaseError,
    classify_sqlstate,
)

__all__ = ["error_from_sqlstate"]

_BY_KIND: dict[str, type[DatabaseError]] = {
    "connection": ConnectionLostError,
    "transient": TransientDatabaseError,
    "permanent": DatabaseError,
}


def error_from_sqlstate(
    exc: BaseException, sqlstate: str | None, schema: str, *, connection: bool = False
) -> PyRiverError:
    """The library's exception for ``exc``, a driver's error with ``sqlstate`` (None:
    raised on the client side; ``connection``: the connection failed), its ``__cause__``
    set to ``exc``."""
    message = f"{type(exc).__name__}: {exc}"
    kind = "connection" if connection and not sqlstate else classify_sqlstate(sqlstate)
    out: PyRiverError
    if kind == "schema":
        out = SchemaNotMigratedError(
            f"pyriver_async's tables are missing or out of date in schema {schema!r} "
            f"({message}); run `pyriver migrate up` first"
        )
    else:
        out = _BY_KIND[kind](message, sqlstate=sqlstate)
    out.__cause__ = exc
    return out
