"""The exception hierarchy. Every error pyriver_async raises derives from :class:`PyRiverError`."""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "ConfigError",
    "InvalidArgsError",
    "InvalidOptsError",
    "JobCancel",
    "JobNotFoundError",
    "JobSnooze",
    "KindConflictError",
    "MigrationError",
    "PyRiverError",
    "SchemaNotMigratedError",
    "SchemaVersionError",
    "UnknownKindError",
]

from datetime import timedelta


class PyRiverError(Exception):
    """Base class of every error raised by pyriver_async."""


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


class ClientClosedError(PyRiverError, RuntimeError):
    """The client is stopped (or was never started) and cannot do what was asked."""


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
