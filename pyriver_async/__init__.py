"""pyriver_async: an asyncio-native background job queue on PostgreSQL, River-compatible.

The public API is what this module exports; everything in ``_modules`` may change.
"""

from ._args import InsertOpts, JobArgs, UniqueOpts
from ._client import Client, QueueConfig
from ._errors import (
    ClientClosedError,
    ConfigError,
    InvalidArgsError,
    InvalidOptsError,
    JobCancel,
    JobNotFoundError,
    JobSnooze,
    KindConflictError,
    MigrationError,
    PyRiverError,
    SchemaNotMigratedError,
    SchemaVersionError,
    UnknownKindError,
)
from ._events import JobEvent, Subscription
from ._insert import InsertResult
from ._job import AttemptError, Job, JobContext, JobState
from ._maintenance import PeriodicJob, PeriodicJobHandle, PeriodicJobs
from ._migrate import migrate
from ._workers import Worker, Workers

__version__ = "0.1.0"

__all__ = [
    "AttemptError",
    "Client",
    "ClientClosedError",
    "ConfigError",
    "InsertOpts",
    "InsertResult",
    "InvalidArgsError",
    "InvalidOptsError",
    "Job",
    "JobArgs",
    "JobCancel",
    "JobContext",
    "JobEvent",
    "JobNotFoundError",
    "JobSnooze",
    "JobState",
    "KindConflictError",
    "MigrationError",
    "PeriodicJob",
    "PeriodicJobHandle",
    "PeriodicJobs",
    "PyRiverError",
    "QueueConfig",
    "SchemaNotMigratedError",
    "SchemaVersionError",
    "Subscription",
    "UniqueOpts",
    "UnknownKindError",
    "Worker",
    "Workers",
    "__version__",
    "migrate",
]
