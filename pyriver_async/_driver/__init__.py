"""The driver seam: the only way the library talks to PostgreSQL.

Everything above this package calls an :class:`Executor` method with keyword
arguments and gets job rows (tuples read by the named indices of ``columns``) or the
small records of ``records``; it never sees a connection, a SQL string or a driver's
exception. Each implementation translates its driver's errors into
:class:`~pyriver_async._errors.DatabaseError` (transient or not, decided once by
SQLSTATE in :func:`~pyriver_async._errors.classify_sqlstate`) and
:class:`~pyriver_async._errors.SchemaNotMigratedError`.

- ``asyncpg/``: the engine's driver (claims, completions, LISTEN, maintenance,
  migrations) and inserts on asyncpg connections and pools. The only package that
  imports asyncpg.
- ``psycopg`` and ``sqlalchemy`` implementations of :class:`InsertExecutor` let
  ``client.insert(args, conn=...)`` join a transaction of those libraries.

The SQL lives in ``sql/*.sql``, loaded by :mod:`.queries`. These Protocols are the
library's own seam, not (yet) an interface for users to implement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from .._outcome import Outcome
from .columns import JOB_COLUMNS
from .listing import ListedPage, ListSpec
from .queries import Queries, Query, quote_ident
from .records import (
    COPY_COLUMNS,
    ActionRow,
    ClientRow,
    FlowClaimed,
    FlowRules,
    FlowUsage,
    HorizonHolder,
    InsertedRow,
    InsertParams,
    KeyedCandidates,
    LeaderInfoRow,
    LeaderRow,
    NextIds,
    QueueRow,
    RecordedMigration,
    RescueCounts,
    ScheduleCounts,
    TableStats,
)

__all__ = [
    "COPY_COLUMNS",
    "JOB_COLUMNS",
    "Executor",
    "FlowClaimed",
    "FlowRules",
    "FlowUsage",
    "HorizonHolder",
    "InsertExecutor",
    "InsertParams",
    "InsertedRow",
    "JobRow",
    "KeyedCandidates",
    "LeaderRow",
    "Listener",
    "NextIds",
    "Queries",
    "Query",
    "RecordedMigration",
    "RescueCounts",
    "ScheduleCounts",
    "TableStats",
    "quote_ident",
]

#: A job row in ``JOB_COLUMNS`` order (read it with the indices of ``columns``).
JobRow = Sequence[Any]


class InsertExecutor(Protocol):
    """What inserting jobs needs; bound to one connection (or a pool) of some library."""

    @property
    def queries(self) -> Queries: ...

    def session(self) -> AbstractAsyncContextManager[Any]:
        """This executor bound to one connection for the calls in the block (itself,
        when it is bound already)."""
        ...

    def in_transaction(self) -> bool:
        """True when the bound connection is inside a transaction."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """A transaction around several calls; nothing when one is already open (a
        failure then aborts the caller's transaction, as a failed statement would)."""
        ...

    async def job_insert(self, p: InsertParams, *, timeout: float | None = None) -> InsertedRow:
        """Insert one job (or find its unique duplicate) and wake its queue."""
        ...

    async def job_insert_many(self, ps: Sequence[InsertParams]) -> list[InsertedRow]:
        """Insert many jobs in one statement; results in the order of ``ps``."""
        ...

    async def job_next_ids(
        self, *, n: int, queues: Sequence[str], first_at: Sequence[datetime | None]
    ) -> NextIds:
        """Draw ``n`` ids and read the clock; wake each queue whose first job is due."""
        ...

    async def job_copy(
        self, records: Sequence[tuple[Any, ...]], during: Callable[[], Any] | None = None
    ) -> Any:
        """COPY ``records`` (``COPY_COLUMNS`` order) into river_job; ``during()`` runs
        while the rows travel, and its result is returned."""
        ...

    async def job_notify_queues(self, *, queues: Sequence[str]) -> None:
        """One wake-up per queue."""
        ...


class Executor(InsertExecutor, Protocol):
    """Every query of the engine, the control API, maintenance and migrations."""

    def session(self) -> AbstractAsyncContextManager[Executor]:
        """An executor holding one connection for several calls."""
        ...

    # -- jobs: the engine --------------------------------------------------------------
    async def job_claim(
        self, *, queue: str, limit: int, client_id: str, kinds: Sequence[str] | None = None
    ) -> list[JobRow]:
        """Claim up to ``limit`` available jobs of ``queue`` (of ``kinds`` only, when
        given), in priority order; the plain claim of a queue without limits."""
        ...

    async def job_claim_after(
        self,
        *,
        queue: str,
        limit: int,
        client_id: str,
        kinds: Sequence[str] | None,
        after: tuple[int, datetime, int],
    ) -> list[JobRow]:
        """job_claim of the jobs after ``after`` = (priority, scheduled_at, id) in claim
        order only: a range of the claim index that skips the entries of the jobs
        claimed before it."""
        ...

    async def job_complete_many(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Ids of the jobs written (a stale outcome changes nothing)."""
        ...

    async def job_delete_completed_many(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Ids of the ephemeral jobs deleted at completion."""
        ...

    async def job_set_outcome_many(self, outcomes: Sequence[Outcome]) -> dict[int, str]:
        """The state written, by id (a cancellation requested meanwhile may have
        turned a retry into ``cancelled``)."""
        ...

    async def job_release_orphans(
        self, *, queue: str, client_id: str, keep: Sequence[int]
    ) -> int: ...

    # -- jobs: control -----------------------------------------------------------------
    async def job_get(self, *, id: int) -> JobRow | None: ...
    async def job_cancel(self, *, id: int) -> JobRow | None: ...

    # -- jobs: client.wait (issue 19) ----------------------------------------------------
    async def job_mark_waited(self, *, id: int) -> JobRow | None: ...

    # -- jobs: maintenance -------------------------------------------------------------
    async def job_schedule(self, *, limit: int) -> ScheduleCounts: ...
    async def job_rescue(
        self, *, dead_after: float, stuck_after: float, limit: int, liveness: bool
    ) -> RescueCounts: ...
    async def job_clean(self, *, state: str, older_than: float, limit: int) -> int: ...

    # -- queues ------------------------------------------------------------------------
    async def queue_pause(self, *, name: str) -> None: ...
    async def queue_resume(self, *, name: str) -> None: ...
    async def queue_paused_many(self, *, names: Sequence[str]) -> set[str]: ...
    async def queue_keep(self, *, names: Sequence[str]) -> None: ...
    async def queue_clean(self, *, older_than: float, limit: int) -> int: ...

    # -- leader ------------------------------------------------------------------------
    async def leader_attempt_elect(self, *, leader_id: str, ttl: float) -> datetime | None: ...
    async def leader_get(self) -> LeaderRow | None: ...
    async def leader_attempt_reelect(
        self, *, leader_id: str, elected_at: datetime, ttl: float
    ) -> bool: ...
    async def leader_resign(self, *, leader_id: str, elected_at: datetime) -> None: ...

    # -- clients (liveness) -------------------------------------------------------------
    async def client_heartbeat(
        self,
        *,
        id: str,
        hostname: str,
        pid: int,
        queues: Sequence[str],
        version: str = "",
        queue_use: Mapping[str, Mapping[str, int]] | None = None,
        stopping: bool = False,
        dead_after: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None: ...
    async def client_mark_dead(self, *, id: str) -> None: ...
    async def client_prune(self, *, older_than: float) -> int: ...

    # -- the query and control API (control.sql, listing.py; _control.py) -------------
    async def job_list(self, spec: ListSpec) -> ListedPage: ...
    async def job_retry_many(self, *, ids: Sequence[int]) -> list[ActionRow]: ...
    async def job_cancel_many(self, *, ids: Sequence[int]) -> list[ActionRow]: ...
    async def job_delete_many(self, *, ids: Sequence[int]) -> list[ActionRow]: ...
    async def job_queues_in_states(
        self, *, states: Sequence[str], max_queues: int = 1000
    ) -> list[tuple[str, str]]: ...
    async def queue_list_rows(self, *, names: Sequence[str] | None = None) -> list[QueueRow]: ...
    async def queue_counts(
        self, *, names: Sequence[str], states: Sequence[str], cap: int
    ) -> dict[tuple[str, str], int]: ...
    async def queue_count_estimate(self, *, state: str, queue: str) -> int | None: ...
    async def client_table_exists(self) -> bool: ...
    async def client_list(self) -> list[ClientRow]: ...
    async def leader_info(self) -> LeaderInfoRow | None: ...
    async def schema_drop(self) -> None: ...

    # -- PostgreSQL --------------------------------------------------------------------
    async def pg_job_table_stats(self) -> TableStats | None: ...
    async def pg_vacuum_jobs(self) -> None: ...

    # -- PostgreSQL: failover and the vacuum horizon (issue 22) ---------------------------
    async def pg_writable(self) -> bool:
        """Whether the server takes writes (not a standby, not read-only)."""
        ...

    async def pg_horizon_holders(self, *, older_than: float, limit: int) -> list[HorizonHolder]:
        """What holds back this database's vacuum horizon, oldest first."""
        ...

    # -- flow control (flow.sql; _claim.py, _flow.py) -----------------------------------
    async def flow_claim(
        self,
        *,
        gate: str,
        queue: str,
        limit: int,
        client_id: str,
        kinds: Sequence[str] | None,
        done: Sequence[int],
        window: int,
        sequences: bool,
        rules: FlowRules,
        fair_rule: int | None,
        fair_name: str,
        weight_keys: Sequence[str],
        weights: Sequence[int],
        default_weight: int,
        keyed: KeyedCandidates | None = None,
    ) -> FlowClaimed:
        """The claim of a queue with limits: one statement behind the queue's claim
        gate (``gate``), run again in a transaction holding the gate when it was stale.
        With ``keyed``, the candidates are read first and their keys computed by
        ``keyed.compute``."""
        ...

    async def flow_usage(
        self, *, queue: str, kinds: Sequence[str] | None, rules: FlowRules, scan: int
    ) -> list[FlowUsage]:
        """Per rule and key: jobs running and waiting (the status API)."""
        ...

    async def flow_unclaimed_kinds(
        self, *, queue: str, kinds: Sequence[str], older_than: float
    ) -> list[tuple[str, int, Any]]:
        """Kinds outside ``kinds`` with jobs waiting in ``queue`` for longer than
        ``older_than`` seconds: (kind, jobs seen, waiting since)."""
        ...

    async def flow_prune(self, *, names: Sequence[str]) -> int:
        """Delete the rows of rate buckets and fair turns of ``names`` that are spent."""
        ...

    # -- migrations --------------------------------------------------------------------
    async def migration_table_info(self) -> bool | None:
        """None without a river_migration table, else whether it has its line column."""
        ...

    async def migration_rows(self, *, has_line: bool) -> list[RecordedMigration]: ...
    async def migration_run(
        self, *, script: str, line: str, version: int, up: bool, has_line: bool | None
    ) -> None:
        """Run one migration file in its own transaction and record (or forget) it."""
        ...

    async def migration_lock(self, *, key: int) -> None: ...
    async def migration_unlock(self, *, key: int) -> None: ...
    async def schema_ensure(self) -> None: ...
    async def schema_columns(self, *, tables: Sequence[str]) -> set[tuple[str, str]]: ...
    async def schema_indexes(self, *, names: Sequence[str]) -> set[str]: ...

    # -- telemetry (issue 19) --------------------------------------------------------------
    async def job_count_by_queue_state(self) -> dict[tuple[str, str], int]:
        """Unfinished jobs per (queue, state)."""
        ...

    # -- insights (read-only; _insights.py and the web UI) ------------------------------
    async def insights_state_counts(
        self, *, states: Sequence[str], cap: int
    ) -> list[dict[str, Any]]: ...
    async def insights_final_window(self, *, since: datetime) -> list[dict[str, Any]]: ...
    async def insights_estimate(self) -> dict[str, Any] | None: ...
    async def insights_max_id(self) -> int | None: ...
    async def insights_throughput(
        self, *, since: datetime, until: datetime, bin: float
    ) -> list[dict[str, Any]]: ...
    async def insights_breakdown(
        self, *, since: datetime, until: datetime, bounds: Sequence[float], limit: int
    ) -> list[dict[str, Any]]: ...
    async def insights_queue_states(self, *, limit: int) -> list[dict[str, Any]]: ...
    async def insights_queues(self) -> list[dict[str, Any]]: ...
    async def insights_queue_counts(
        self, *, queues: Sequence[str], cap: int
    ) -> list[dict[str, Any]]: ...
    async def insights_queue_lag(self, *, queues: Sequence[str]) -> list[dict[str, Any]]: ...
    async def insights_scheduler_lag(
        self, *, queues: Sequence[str], lag: float
    ) -> list[dict[str, Any]]: ...
    async def insights_cleaner_lag(self) -> list[dict[str, Any]]: ...
    async def insights_kinds(self, *, limit: int) -> list[str]: ...
    async def insights_kind_sample(
        self, *, kind: str, budget: int, max: int, bounds: Sequence[float]
    ) -> list[dict[str, Any]]: ...
    async def insights_claim_order(
        self,
        *,
        queue: str,
        limit: int,
        priority: int | None,
        scheduled_at: datetime | None,
        id: int | None,
    ) -> list[Any]: ...
    async def insights_job_documents(self, *, id: int, max_bytes: int) -> dict[str, Any] | None: ...
    async def insights_job_document_full(self, *, id: int, which: str) -> str | None: ...
    async def insights_unique_conflict(
        self, *, unique_key: bytes, id: int
    ) -> dict[str, Any] | None: ...
    async def insights_discarded_errors(
        self, *, since: datetime, limit: int
    ) -> list[dict[str, Any]]: ...
    async def insights_retryable_errors(self, *, limit: int) -> list[dict[str, Any]]: ...
    async def insights_periodic_runs(self, *, match: str, limit: int) -> list[dict[str, Any]]: ...
    async def insights_running(self, *, limit: int) -> list[dict[str, Any]]: ...
    async def insights_liveness_table(self) -> bool: ...
    async def insights_clients(self) -> list[dict[str, Any]]: ...
    async def insights_leader(self) -> dict[str, Any] | None: ...
    async def insights_table_health(self) -> dict[str, Any] | None: ...
    async def insights_old_xmin(self, *, older_than: float) -> list[dict[str, Any]]: ...
    async def insights_server(self) -> dict[str, Any] | None: ...
    async def insights_ping(self) -> bool: ...


class Listener(Protocol):
    """The LISTEN connection: ``async with listener.connect(): ...``."""

    def connect(self) -> AbstractAsyncContextManager[Listener]: ...
    async def listen(
        self, channels: Sequence[str], on_message: Callable[[str, str], None]
    ) -> None: ...
    async def wait_lost(self, health_check_interval: float) -> None:
        """Return (raising ConnectionLostError) when the connection is gone or fails
        its health check; runs until then."""
        ...

    @property
    def backend_pid(self) -> int | None: ...

    # -- failover and poolers (issue 22) -------------------------------------------------
    def drop(self) -> None:
        """Give up the connection now (``wait_lost`` raises), to reconnect afresh."""
        ...
