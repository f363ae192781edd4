"""The asyncpg executor: every query of the library, one method each."""

from __future__ import annotations

from .control import ControlQueries
from .flow import FlowQueries
from .insights import InsightQueries
from .jobs import JobQueries
from .maintenance import ClientQueries, LeaderQueries, PgQueries, QueueQueries
from .migrations import MigrationQueries
from .telemetry import TelemetryQueries

__all__ = ["AsyncpgExecutor"]


class AsyncpgExecutor(
    JobQueries,
    QueueQueries,
    LeaderQueries,
    ClientQueries,
    PgQueries,
    MigrationQueries,
    TelemetryQueries,
    ControlQueries,
    InsightQueries,
    FlowQueries,
):
    """Bound to one asyncpg connection (``conn=``) or borrowing from a pool (``pool=``).

    Each area's queries live in their own module (jobs, maintenance, migrations);
    this class only puts them together.
    """

    __slots__ = ()
