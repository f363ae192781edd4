"""The exception hierarchy. Every error pyriver_async raises derives from :class:`PyRiverError`.

::

    PyRiverError
    ├── ConfigError                    a client, queue or worker setting is invalid
    ├── InvalidOptsError               insert options refused before anything is written
    ├── InvalidArgsError               job args cannot be stored (or decoded)
    ├── KindConflictError              two classes claim one kind / malformed kind
    ├── UnknownKindError
    ├── JobNotFoundError
    ├── JobRefusedError                a control action refused for this job (running...)
    ├── QueueNotFoundError
    ├── InvalidFilterError             a bad filter, order, limit or cursor of the query API
    ├── ClientClosedError
    ├── JobTimeoutError                a job ran past its timeout (given to error handlers)
    ├── WaitTimeoutError               client.wait() gave up before the job finished
    ├── InvalidOutputError             ctx.record_output() refused a value
    │   └── OutputTooLargeError
    ├── DatabaseError                  the database refused or failed an operation
    │   └── TransientDatabaseError     worth trying again: failover, timeout, pooler...
    │       └── ConnectionLostError    the connection dropped: the result is unknown
    ├── MigrationError
    │   ├── SchemaNotMigratedError     run `pyriver migrate up`
    │   └── SchemaVersionError
    └── JobSnooze, JobCancel           raised by workers to steer their job

Driver errors (asyncpg's, psycopg's) never leave the library raw: the driver seam
translates them into :class:`DatabaseError` (with the original as ``__cause__``) or
:class:`SchemaNotMigratedError`. Whether an error is transient is decided once, by its
SQLSTATE, in :func:`classify_sqlstate`.
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "ConfigError",
    "ConnectionLostError",
    "DatabaseError",
    "InvalidArgsError",
    "InvalidFilterError",
    "InvalidOptsError",
    "InvalidOutputError",
    "JobCancel",
    "JobNotFoundError",
    "JobRefusedError",
    "JobSnooze",
    "JobTimeoutError",
    "KindConflictError",
    "MigrationError",
    "OutputTooLargeError",
    "PyRiverError",
    "QueueNotFoundError",
    "SchemaNotMigratedError",
    "SchemaVersionError",
    "TransientDatabaseError",
    "UnknownKindError",
    "WaitTimeoutError",
    "classify_sqlstate",
]

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

_C = TypeVar("_C", bound=type)


class PyRiverError(Exception):
    """Base class of every error raised by pyriver_async."""


def typed_init_errors(error: type[PyRiverError]) -> Callable[[_C], _C]:
    """A class decorator: a wrong keyword or argument count given to the class (a
    ``TypeError`` from its generated ``__init__``) raises ``error`` instead, so a
    misspelled option is caught as the library's typed error."""

    def decorate(cls: _C) -> _C:
        init: Callable[..., None] = cls.__dict__["__init__"]

        @wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except TypeError as exc:
                if isinstance(exc, PyRiverError):
                    raise
                raise error(str(exc).replace(".__init__()", "()")) from None

        cls.__init__ = __init__  # type: ignore[misc]
        return cls

    return decorate


class ConfigError(PyRiverError, ValueError):
    """A client, queue or worker setting is invalid."""


class InvalidOptsError(PyRiverError, ValueError):
    """Insert options are invalid (priority, queue, max_attempts, times, unique settings...).

    Raised before anything is written to the database.
    """


class InvalidArgsError(PyRiverError, ValueError):
    """Job arguments cannot be encoded (or, when working a job, decoded)."""


class KindConflictError(PyRiverError, TypeError):
    """Two ``JobArgs`` classes claim the same ``kind``, or a kind is malformed."""


class UnknownKindError(PyRiverError, LookupError):
    """No worker is registered for a job's kind."""


class JobNotFoundError(PyRiverError, LookupError):
    """No job has the given id."""


class JobRefusedError(PyRiverError):
    """A control action (retry, delete) was refused for a job: ``reason`` says why
    (``"running"``, ``"unique conflict with job 42"``); ``job`` is the job as it is."""

    def __init__(self, message: str, *, reason: str = "", job: Any = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.job = job


class QueueNotFoundError(PyRiverError, LookupError):
    """No queue of that name: no ``river_queue`` row and no job in it."""


class InvalidFilterError(PyRiverError, ValueError):
    """A filter, order, limit or cursor given to the query API is invalid (an unknown
    state, a naive datetime, a malformed cursor...). Nothing was read or changed."""


class ClientClosedError(PyRiverError, RuntimeError):
    """The client is stopped (or was never started) and cannot do what was asked."""


class JobTimeoutError(PyRiverError, TimeoutError):
    """A job ran past its timeout; what an error handler receives for that attempt."""


class WaitTimeoutError(PyRiverError, TimeoutError):
    """``client.wait(job_id, timeout=...)`` gave up; ``job`` is the job as last read."""

    def __init__(self, message: str, job: Any = None) -> None:
        super().__init__(message)
        self.job = job


class InvalidOutputError(PyRiverError, ValueError):
    """``ctx.record_output(value)`` cannot store ``value`` (not encodable as JSON)."""


class OutputTooLargeError(InvalidOutputError):
    """``ctx.record_output(value)``: the encoded value is over the size limit."""


class DatabaseError(PyRiverError):
    """The database refused or failed an operation.

    ``sqlstate`` is PostgreSQL's error code when the server sent one (``None`` for a
    client-side failure); ``__cause__`` is the driver's own exception.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class TransientDatabaseError(DatabaseError):
    """A failure that trying again can cure: the server is read-only or shutting down
    (a failover), a statement or lock timeout, a serialization failure or deadlock, the
    server out of resources, a prepared statement a pooler lost, no connection free in
    time. The engine retries these with backoff; an application may too."""


class ConnectionLostError(TransientDatabaseError):
    """The connection failed (refused, dropped, timed out on the client side): whether
    the statement took effect is unknown."""


# SQLSTATE classes and codes after which the same statement, sent again (maybe on
# another connection, maybe after the failover ends), can succeed.
_TRANSIENT_CLASSES = frozenset({"08", "53", "58"})  # connection, resources, system
_TRANSIENT_CODES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a primary turned standby, read-only mode
        "25P03",  # idle_in_transaction_session_timeout
        "26000",  # invalid_sql_statement_name: a pooler lost a prepared statement
        "40001",  # serialization_failure
        "40003",  # statement_completion_unknown
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout, pg_cancel_backend)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, or in recovery)
        "57P05",  # idle_session_timeout
        "72000",  # snapshot_too_old
    }
)
_SCHEMA_CODES = frozenset(
    {
        "42P01",  # undefined_table
        "42703",  # undefined_column
        "42883",  # undefined_function
        "42704",  # undefined_object (a type such as river_job_state)
        "3F000",  # invalid_schema_name
    }
)


def classify_sqlstate(sqlstate: str | None) -> str:
    """``"transient"``, ``"connection"``, ``"schema"`` or ``"permanent"`` for a SQLSTATE."""
    if not sqlstate:
        return "permanent"
    if sqlstate.startswith("08"):
        return "connection"
    if sqlstate in _TRANSIENT_CODES or sqlstate[:2] in _TRANSIENT_CLASSES:
        return "transient"
    if sqlstate in _SCHEMA_CODES:
        return "schema"
    return "permanent"


class MigrationError(PyRiverError):
    """A migration could not be applied or rolled back."""


class SchemaNotMigratedError(MigrationError):
    """The database lacks pyriver_async's tables. Run ``pyriver migrate up``."""


class SchemaVersionError(MigrationError):
    """The database's schema version is not the one this library knows."""

    def __init__(self, message: str, *, database_version: int, library_version: int) -> None:
        super().__init__(message)
        self.database_version = database_version
        self.library_version = library_version


def _as_timedelta(value: timedelta | float | int, what: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    return timedelta(seconds=value)


class JobSnooze(PyRiverError):
    """Raise from a worker to run the job again after ``delay`` without using up an attempt.

    A delay of five seconds or less makes the job ``available`` at once (as River does).
    """

    def __init__(self, delay: timedelta | float | int) -> None:
        self.delay = _as_timedelta(delay, "JobSnooze delay")
        if self.delay < timedelta(0):
            raise ValueError("JobSnooze delay must not be negative")
        super().__init__(f"snoozed for {self.delay}")


class JobCancel(PyRiverError):
    """Raise from a worker to end the job as ``cancelled``; it is not retried."""

    def __init__(self, reason: str | BaseException = "") -> None:
        self.reason = str(reason)
        super().__init__(self.reason or "job cancelled")
