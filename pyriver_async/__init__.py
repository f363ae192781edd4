"""pyriver_async: an asyncio-native background job queue on PostgreSQL, River-compatible.

The public API is what this module exports; everything in ``_modules`` may change.
"""

from ._args import InsertOpts, JobArgs, UniqueOpts
from ._client import Client
from ._config import QueueConfig
from ._context import MAX_OUTPUT_BYTES, JobContext
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
from ._driver.records import HorizonHolder
from ._errors import (
    ClientClosedError,
    ConfigError,
    ConnectionLostError,
    DatabaseError,
    InvalidArgsError,
    InvalidFilterError,
    InvalidOptsError,
    InvalidOutputError,
    JobCancel,
    JobNotFoundError,
    JobRefusedError,
    JobSnooze,
    JobTimeoutError,
    KindConflictError,
    ListenUnavailableError,
    MigrationError,
    OutputTooLargeError,
    PyRiverError,
    QueueNotFoundError,
    SchemaNotMigratedError,
    SchemaVersionError,
    TransientDatabaseError,
    UnknownKindError,
    WaitTimeoutError,
)
from ._events import JobEvent, Subscription
from ._flow import KindLimits, PartitionKey, RateLimit, SequenceOpts
from ._flow_status import KeyUse, LimitStatus
from ._insert import InsertResult
from ._insights import Insights
from ._job import AttemptError, Job, JobState
from ._middleware import (
    ErrorHandler,
    ErrorOverride,
    Hook,
    HookEvent,
    InsertBatch,
    InsertMiddleware,
    JobInsert,
    Middleware,
    WorkMiddleware,
)
from ._migrate import migrate
from ._periodic import PeriodicJob, PeriodicJobHandle, PeriodicJobs
from ._telemetry import Telemetry
from ._workers import Worker, Workers

__version__ = "0.1.0"

__all__ = [
    "MAX_OUTPUT_BYTES",
    "AttemptError",
    "Client",
    "ClientClosedError",
    "ClientInfo",
    "ConfigError",
    "ConnectionLostError",
    "DatabaseError",
    "ErrorHandler",
    "ErrorOverride",
    "Hook",
    "HookEvent",
    "HorizonHolder",
    "InsertBatch",
    "InsertMiddleware",
    "InsertOpts",
    "InsertResult",
    "Insights",
    "InvalidArgsError",
    "InvalidFilterError",
    "InvalidOptsError",
    "InvalidOutputError",
    "Job",
    "JobActionResult",
    "JobArgs",
    "JobCancel",
    "JobContext",
    "JobEvent",
    "JobFilter",
    "JobInsert",
    "JobNotFoundError",
    "JobOrder",
    "JobPage",
    "JobRefusedError",
    "JobSnooze",
    "JobState",
    "JobTimeoutError",
    "KeyUse",
    "KindConflictError",
    "KindLimits",
    "LeaderInfo",
    "LimitStatus",
    "ListenUnavailableError",
    "Middleware",
    "MigrationError",
    "OutputTooLargeError",
    "PartitionKey",
    "PeriodicJob",
    "PeriodicJobHandle",
    "PeriodicJobs",
    "PyRiverError",
    "QueueConfig",
    "QueueInfo",
    "QueueNotFoundError",
    "QueueUse",
    "RateLimit",
    "SchemaNotMigratedError",
    "SchemaVersionError",
    "SequenceOpts",
    "Subscription",
    "Telemetry",
    "TransientDatabaseError",
    "UniqueOpts",
    "UnknownKindError",
    "WaitTimeoutError",
    "WorkMiddleware",
    "Worker",
    "Workers",
    "__version__",
    "migrate",
]
