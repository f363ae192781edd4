"""The columns of a job row as the engine's queries return them, with named indices.

A job row stays a tuple (an asyncpg ``Record``, a psycopg tuple) for speed; code above
the driver reads ``row[KIND]``, never ``row[2]``.
"""

from __future__ import annotations

__all__ = [
    "ARGS",
    "ATTEMPT",
    "ATTEMPTED_AT",
    "ATTEMPTED_BY",
    "CREATED_AT",
    "ERRORS",
    "FINALIZED_AT",
    "ID",
    "JOB_COLUMNS",
    "KIND",
    "MAX_ATTEMPTS",
    "METADATA",
    "PRIORITY",
    "QUEUE",
    "SCHEDULED_AT",
    "STATE",
    "TAGS",
    "UNIQUE_KEY",
    "UNIQUE_STATES",
]

JOB_COLUMNS = (
    "id",
    "args",
    "kind",
    "queue",
    "state",
    "priority",
    "attempt",
    "max_attempts",
    "scheduled_at",
    "created_at",
    "attempted_at",
    "finalized_at",
    "attempted_by",
    "errors",
    "metadata",
    "tags",
    "unique_key",
    "unique_states",
)

(
    ID,
    ARGS,
    KIND,
    QUEUE,
    STATE,
    PRIORITY,
    ATTEMPT,
    MAX_ATTEMPTS,
    SCHEDULED_AT,
    CREATED_AT,
    ATTEMPTED_AT,
    FINALIZED_AT,
    ATTEMPTED_BY,
    ERRORS,
    METADATA,
    TAGS,
    UNIQUE_KEY,
    UNIQUE_STATES,
) = range(len(JOB_COLUMNS))
