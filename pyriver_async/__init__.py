"""pyriver_async: an asyncio-native background job queue on PostgreSQL, River-compatible.

The public API is what this module exports; everything in ``_modules`` may change.
"""

from ._args import InsertOpts, JobArgs, UniqueOpts
from ._client import Client
from ._config import QueueConfig
from ._context import JobContext
from ._errors import (
    ClientClosedError,
    ConfigError,
    ConnectionLostError,
    DatabaseError,
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
    TransientDatabaseError,
    UnknownKindError,
)
from ._events import JobEvent, Subscription
from ._flow import KindLimits, PartitionKey, RateLimit, SequenceOpts
from ._flow_status import KeyUse, LimitStatus
from ._insert import InsertResult
from ._job import AttemptError, Job, JobState
from ._migrate import migrate
from ._periodic import PeriodicJob, PeriodicJobHandle, PeriodicJobs
from ._workers import Worker, Workers

__version__ = "0.1.0"

__all__ = [
    "AttemptError",
    "Client",
    "ClientClosedError",
    "ConfigError",
    "ConnectionLostError",
    "DatabaseError",
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
    "KeyUse",
    "KindConflictError",
    "KindLimits",
    "LimitStatus",
    "MigrationError",
    "PartitionKey",
    "PeriodicJob",
    "PeriodicJobHandle",
    "PeriodicJobs",
    "PyRiverError",
    "QueueConfig",
    "RateLimit",
    "SchemaNotMigratedError",
    "SchemaVersionError",
    "SequenceOpts",
    "Subscription",
    "TransientDatabaseError",
    "UniqueOpts",
    "UnknownKindError",
    "Worker",
    "Workers",
    "__version__",
    "migrate",
]
