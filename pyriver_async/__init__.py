"""pyriver_async: an asyncio-native background job queue on PostgreSQL, River-compatible.

The public API is what this module exports; everything in ``_modules`` may change.
"""

from ._args import InsertOpts, JobArgs, UniqueOpts
from ._client import Client
from ._config import QueueConfig
from ._context import JobContext
from ._control import (
    ClientInfo,
    JobActionResult,
    JobFilter,
    JobOrder,
    JobPage,
    LeaderInfo,
    QueueInfo,
    QueueUse,
)
from ._errors import (
    ClientClosedError,
    ConfigError,
    ConnectionLostError,
    DatabaseError,
    InvalidArgsError,
    InvalidFilterError,
    InvalidOptsError,
    JobCancel,
    JobNotFoundError,
    JobRefusedError,
    JobSnooze,
    KindConflictError,
    MigrationError,
    PyRiverError,
    QueueNotFoundError,
    SchemaNotMigratedError,
    SchemaVersionError,
    TransientDatabaseError,
    UnknownKindError,
)
from ._events import JobEvent, Subscription
from ._insert import InsertResult
from ._insights import Insights
from ._job import AttemptError, Job, JobState
from ._migrate import migrate
from ._periodic import PeriodicJob, PeriodicJobHandle, PeriodicJobs
from ._workers import Worker, Workers

__version__ = "0.1.0"

__all__ = [
    "AttemptError",
    "Client",
    "ClientClosedError",
    "ClientInfo",
    "ConfigError",
    "ConnectionLostError",
    "DatabaseError",
    "InsertOpts",
    "InsertResult",
    "Insights",
    "InvalidArgsError",
    "InvalidFilterError",
    "InvalidOptsError",
    "Job",
    "JobActionResult",
    "JobArgs",
    "JobCancel",
    "JobContext",
    "JobEvent",
    "JobFilter",
    "JobNotFoundError",
    "JobOrder",
    "JobPage",
    "JobRefusedError",
    "JobSnooze",
    "JobState",
    "KindConflictError",
    "LeaderInfo",
    "MigrationError",
    "PeriodicJob",
    "PeriodicJobHandle",
    "PeriodicJobs",
    "PyRiverError",
    "QueueConfig",
    "QueueInfo",
    "QueueNotFoundError",
    "QueueUse",
    "SchemaNotMigratedError",
    "SchemaVersionError",
    "Subscription",
    "TransientDatabaseError",
    "UniqueOpts",
    "UnknownKindError",
    "Worker",
    "Workers",
    "__version__",
    "migrate",
]
