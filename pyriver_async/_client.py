"""The Client: configuration, lifecycle, insert and control. It delegates the work to
the producers, executor, completer, notifier and maintenance services it owns, and
reaches the database only through the driver seam."""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from . import _control, _interrupts
from ._args import InsertOpts, JobArgs, validate_queue
from ._claim import claimer_for
from ._completer import Completer
from ._config import ClientConfig, QueueConfig
from ._control import (
    ClientInfo,
    JobActionResult,
    JobFilter,
    JobOrder,
    JobPage,
    LeaderInfo,
    QueueInfo,
)
from ._driver import Executor as DriverExecutor
from ._driver import InsertExecutor, Queries
from ._driver.asyncpg import AsyncpgDriver
from ._driver.connections import ClientDatabase, ControlConnection, InsertConnection
from ._driver.records import HorizonHolder
from ._driver.resolve import executor_for, insert_executor_for
from ._errors import (
    ClientClosedError,
    ConfigError,
    JobNotFoundError,
    ListenUnavailableError,
    SchemaNotMigratedError,
)
from ._events import Subscription
from ._executor import Executor
from ._failover import ReadOnlyWatch
from ._flow_status import LimitStatus, flow_status
from ._insert import InsertResult, insert_many, insert_one
from ._job import Job, JobState
from ._lifecycle import Lifecycle
from ._middleware import ErrorHandler, HookSet, compose_insert, split_middleware
from ._notifier import Notifier
from ._outcome import Outcome
from ._periodic import PeriodicJob, PeriodicJobs
from ._producer import Producer
from ._rows import read_job
from ._telemetry import Telemetry, resolve_telemetry
from ._wait import Waiters
from ._workers import Workers

__all__ = ["Client", "QueueConfig"]

log = logging.getLogger("pyriver_async.client")

# How long the completer and the producers keep an idle connection (seconds): claims
# and flushes of a busy queue come milliseconds apart; an idle client holds nothing.
LEASE_LINGER = 0.05


def _version() -> str:
    from . import __version__

    return __version__


def _periodic_schedule(jobs: PeriodicJobs) -> builtins.list[dict[str, Any]]:
    """The leader's periodic jobs as the liveness row carries them (UI-SPEC B10.1)."""
    from datetime import UTC

    from ._periodic import CronSchedule, utc_text

    now = datetime.now(UTC)
    out = []
    for job in jobs:
        sched = job.schedule
        try:
            last = sched.latest_at_or_before(now)
            nxt = sched.next_after(now)
        except Exception:  # a schedule that never fires: shown without times
            last = nxt = None
        out.append(
            {
                "id": job.known_id or sched.describe(),
                "schedule": sched.expr if isinstance(sched, CronSchedule) else sched.describe(),
                "tz": str(sched.tz) if isinstance(sched, CronSchedule) else None,
                "next_run_at": utc_text(nxt) if nxt is not None else None,
                "last_run_at": utc_text(last) if last is not None else None,
                "run_on_start": job.run_on_start,
            }
        )
    return out


def _default_client_id() -> str:
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class Client:
    """Inserts jobs and, when given queues, works them.

    ``Client(pool_or_dsn)`` with no ``queues`` is an insert-only client. With
    ``queues={"default": QueueConfig(max_workers=100)}`` and ``workers=``, ``async with
    client:`` (or ``await client.start()``) starts working jobs; leaving the block
    stops gracefully (see :meth:`stop`).

    Settings (durations are ``timedelta`` or seconds):

    - ``schema``: where the tables live (default ``"public"``).
    - ``job_timeout``: default time limit of a job (default 60 s; ``None``: none).
    - ``retry_policy``: ``f(job, now) -> datetime`` for failed jobs (default:
      (errors + 1) ** 4 seconds with jitter).
    - ``fetch_cooldown`` (default 1 ms) and ``fetch_poll_interval`` (default 1 s):
      the fastest a producer fetches after a notification, and how often it looks
      anyway.
    - ``soft_stop_timeout`` (default 25 s; ``None``: wait for ever) and
      ``hard_stop_timeout`` (default 5 s): how long :meth:`stop` waits for running
      jobs before cancelling them, and how long it then waits for them to end
      (``hard_stop_timeout`` also bounds each wait for async hooks still running:
      see :class:`Hook`).
    - ``rescue_stuck_jobs_after`` (default 1 h), ``heartbeat_interval`` (5 s),
      ``dead_client_after`` (30 s), retention of ``completed``/``cancelled``/
      ``discarded`` jobs (24 h / 24 h / 7 days; 0 keeps them for ever) and
      ``periodic_jobs``: maintenance, run by the elected leader.
    - ``vacuum_dead_tuples`` (default 100,000; 0: off): the leader VACUUMs the job
      table once more than this many (and more than 20 % of its live rows) dead row
      versions pile up (see ``docs/maintenance.md``).
    - ``pool_max_size``: size of the pool the client makes from a DSN (default 10).
    - ``statement_timeout`` (default 30 s): bounds every statement of the engine and
      every wait for a pool connection, so a partitioned network or a pool the
      application holds shows up as a logged error instead of a silent hang.

    Extending and observing (see ``docs/middleware.md``, ``docs/error-reporting.md``,
    ``docs/telemetry.md``):

    - ``middleware``: insert middleware (objects with ``async insert(batch,
      call_next)``) and work middleware (``async def (ctx, job, call_next)`` or
      objects with ``async work(...)``), first outermost.
    - ``hooks``: :class:`Hook` objects called once outcomes are written.
    - ``error_handler``: ``f(job, exc) -> ErrorOverride | None`` for every failed
      attempt.
    - ``telemetry``: ``True`` (default): OpenTelemetry spans and metrics when an SDK
      is configured at start, nothing (no cost) otherwise; ``False``: off; or a
      :class:`Telemetry` with providers of its own.

    Poolers, failover, the vacuum horizon (see ``docs/operations.md``):

    - ``pooler="transaction"``: the DSN goes through a transaction-mode pooler
      (PgBouncer ``pool_mode=transaction``): the pool made from it keeps no named
      prepared statements, and LISTEN needs ``listen_database_url``, a direct
      connection; without one the client listens to nothing and producers poll every
      ``fetch_poll_interval``. (An application's own pool: create it with
      ``statement_cache_size=0``.) A LISTEN that hears nothing (a transaction pooler
      not declared) makes :meth:`start` raise :class:`ListenUnavailableError`.
    - ``listen_database_url``: a DSN for the LISTEN connection alone.
    - ``horizon_warning_after`` (default 60 s; 0: off): the leader logs a warning
      naming any transaction that has held the vacuum horizon back for this long
      (:meth:`horizon_holders` asks the same).

    When the database turns read-only (a failover: writes refused with SQLSTATE
    25006), the client logs it once, stops claiming, gives up leadership, reopens its
    connections until a server takes writes, then resumes by itself; running jobs'
    outcomes wait and are written after the switch.
    """

    def __init__(
        self,
        database: ClientDatabase,
        *,
        workers: Workers | None = None,
        queues: Mapping[str, QueueConfig] | None = None,
        schema: str = "public",
        id: str | None = None,
        job_timeout: timedelta | float | None = 60.0,
        retry_policy: Callable[[Job[Any], datetime], datetime] | None = None,
        fetch_cooldown: timedelta | float = 0.001,
        fetch_poll_interval: timedelta | float = 1.0,
        soft_stop_timeout: timedelta | float | None = 25.0,
        hard_stop_timeout: timedelta | float = 5.0,
        completer_flush_interval: timedelta | float = 0.002,
        completer_batch_size: int = 1000,
        rescue_stuck_jobs_after: timedelta | float = 3600.0,
        heartbeat_interval: timedelta | float = 5.0,
        dead_client_after: timedelta | float = 30.0,
        completed_job_retention: timedelta | float = 86400.0,
        cancelled_job_retention: timedelta | float = 86400.0,
        discarded_job_retention: timedelta | float = 7 * 86400.0,
        periodic_jobs: Sequence[PeriodicJob] = (),
        leader_ttl: timedelta | float = 15.0,
        vacuum_dead_tuples: int = 100_000,
        maintenance: bool = True,
        pool_max_size: int = 10,
        check_schema: bool = True,
        statement_timeout: timedelta | float = 30.0,
        # -- extending and observing (issue 19) --
        middleware: Sequence[object] = (),
        hooks: Sequence[object] = (),
        error_handler: ErrorHandler | None = None,
        telemetry: bool | Telemetry = True,
        # -- poolers, failover, the vacuum horizon (issue 22) --------------------------
        pooler: str | None = None,
        listen_database_url: str | None = None,
        horizon_warning_after: timedelta | float = 60.0,
    ) -> None:
        self.config = ClientConfig.build(
            schema=schema,
            job_timeout=job_timeout,
            fetch_cooldown=fetch_cooldown,
            fetch_poll_interval=fetch_poll_interval,
            soft_stop_timeout=soft_stop_timeout,
            hard_stop_timeout=hard_stop_timeout,
            completer_flush_interval=completer_flush_interval,
            completer_batch_size=completer_batch_size,
            rescue_stuck_jobs_after=rescue_stuck_jobs_after,
            heartbeat_interval=heartbeat_interval,
            dead_client_after=dead_client_after,
            completed_job_retention=completed_job_retention,
            cancelled_job_retention=cancelled_job_retention,
            discarded_job_retention=discarded_job_retention,
            leader_ttl=leader_ttl,
            vacuum_dead_tuples=vacuum_dead_tuples,
            maintenance=maintenance,
            pool_max_size=pool_max_size,
            check_schema=check_schema,
            statement_timeout=statement_timeout,
            pooler=pooler,
            listen_database_url=listen_database_url,
            horizon_warning_after=horizon_warning_after,
        )
        through_pooler = self.config.pooler == "transaction"
        try:
            self._driver = AsyncpgDriver(
                database,
                schema=schema,
                pool_max_size=self.config.pool_max_size,
                timeout=self.config.statement_timeout,
                listen_dsn=self.config.listen_database_url,
                statement_cache_size=0 if through_pooler else None,
                listen=not through_pooler or self.config.listen_database_url is not None,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.workers = workers if workers is not None else Workers()
        self.queues: dict[str, QueueConfig] = {}
        for name, cfg in (queues or {}).items():
            validate_queue(name)
            if not isinstance(cfg, QueueConfig):
                raise ConfigError(f"queue {name!r}: expected a QueueConfig, got {cfg!r}")
            self.queues[name] = cfg
        if self.queues and not len(self.workers):
            raise ConfigError(
                "a client that works queues needs workers=Workers() with registrations"
            )
        self.schema = schema
        self.id = id or _default_client_id()
        self._retry_policy = retry_policy
        #: The periodic jobs the leader inserts; ``add`` / ``remove`` work at runtime.
        self.periodic_jobs = PeriodicJobs(periodic_jobs)

        self._producers: dict[str, Producer] = {}
        self._completer: Completer | None = None
        self._notifier: Notifier | None = None
        self._executor: Executor | None = None
        self._maintenance: Any = None
        self._failover: ReadOnlyWatch | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._subscriptions: list[Subscription] = []
        self._started = False
        self._stopping: asyncio.Task[None] | None = None
        #: Whether the pyriver migration line (client liveness) is in the database;
        #: known after start(). Without it, stuck jobs are rescued by age only.
        self.liveness = True
        self._run_stop: asyncio.Event | None = None
        self._init_extensions(middleware, hooks, error_handler, telemetry)

    # -- extending and observing (issue 19) ---------------------------------------------

    def _init_extensions(
        self,
        middleware: Sequence[object],
        hooks: Sequence[object],
        error_handler: ErrorHandler | None,
        telemetry: bool | Telemetry,
    ) -> None:
        if isinstance(middleware, str | bytes) or not isinstance(middleware, Sequence):
            raise ConfigError("middleware must be a list")
        if isinstance(hooks, str | bytes) or not isinstance(hooks, Sequence):
            raise ConfigError("hooks must be a list")
        if error_handler is not None and not callable(error_handler):
            raise ConfigError(f"error_handler must be callable, got {error_handler!r}")
        if not isinstance(telemetry, bool | Telemetry):
            raise ConfigError("telemetry must be True, False or a Telemetry")
        self._insert_mw, self._work_mw = split_middleware(middleware)
        self._hook_list = list(hooks)
        self._hooks = HookSet(self._hook_list)
        self._error_handler = error_handler
        self._telemetry_setting = telemetry
        # Resolved at the first insert or at start: an SDK configured after the
        # client was made is still seen.
        self._telemetry: Telemetry | None = None
        self._telemetry_resolved = False
        self._insert_chain = compose_insert(self._insert_mw)
        self._waiters = Waiters(self._driver.queries.control_channel)
        self._lifecycle = Lifecycle(
            self._hooks, self._subscriptions, self._waiters.wake, self._waiters.__bool__
        )

    def _resolve_telemetry(self) -> None:
        """Put telemetry (when on and an SDK is there) outermost of the middleware."""
        if self._telemetry_resolved:
            return
        self._telemetry_resolved = True
        tel = resolve_telemetry(self._telemetry_setting)
        self._telemetry = tel
        if tel is not None:
            self._insert_chain = compose_insert([tel, *self._insert_mw])
            self._hooks = HookSet([*self._hook_list, tel])
            self._lifecycle = Lifecycle(
                self._hooks, self._subscriptions, self._waiters.wake, self._waiters.__bool__
            )

    async def wait(self, job_id: int, *, timeout: timedelta | float | None = None) -> Job[Any]:
        """The job once it is finished (``completed``, ``cancelled`` or ``discarded``),
        with its output (``job.output``), whichever process works it.

        Woken by the completion itself (see ``docs/middleware.md#waiting-for-a-job``):
        no tight polling. Raises :class:`WaitTimeoutError` (a ``TimeoutError``, with
        the job as last read in ``.job``) after ``timeout`` (``None``: no limit), and
        :class:`JobNotFoundError` for an unknown id. The first call in a client that
        is not working queues holds one pool connection for LISTEN until it closes.
        """
        from ._config import to_seconds

        seconds = to_seconds(timeout, "timeout", allow_none=True)
        await self._driver.open()
        return await self._waiters.wait(
            job_id,
            timeout=seconds,
            db=self._db,
            engine_notifier=self._notifier,
            make_listener=self._driver.listener,
        )

    # -- database --------------------------------------------------------------------

    @property
    def pool(self) -> Any:
        """The asyncpg pool (made on first use when the client was given a DSN)."""
        pool = self._driver.pool
        if pool is None:
            raise ClientClosedError("the pool is made on first use: insert or start() first")
        return pool

    @property
    def queries(self) -> Queries:
        """The library's SQL for this client's schema (diagnostics, tests)."""
        return self._driver.queries

    async def _db(self, conn: ControlConnection | None = None) -> DriverExecutor:
        """The engine's executor, or one bound to the caller's asyncpg connection or
        pool (ConfigError for another library's: those can only insert)."""
        if conn is None:
            await self._driver.open()
            return self._driver.executor()
        return executor_for(conn, self._driver.queries)

    # -- insert ------------------------------------------------------------------------

    async def insert(
        self,
        args: JobArgs,
        opts: InsertOpts | None = None,
        *,
        conn: InsertConnection | None = None,
    ) -> InsertResult:
        """Insert one job.

        With ``conn`` (typically inside the caller's transaction) the job and its
        wake-up notification are part of that transaction: visible to workers only
        after it commits, gone if it rolls back. Without, it is inserted and committed
        at once.

        When ``conn`` has no transaction open, the insert does what any statement of
        the caller's would on it: in autocommit mode (an asyncpg connection outside
        ``transaction()``, an asyncpg pool, psycopg with ``autocommit=True``,
        SQLAlchemy with ``isolation_level="AUTOCOMMIT"``) the job is committed before
        the call returns; a psycopg connection outside autocommit (its default) or a
        SQLAlchemy ``AsyncSession`` / ``AsyncConnection`` (autobegin) opens its
        transaction at the insert, which the caller then commits or rolls back. An
        insert middleware's ``batch.in_transaction`` says only whether a transaction
        was open as the insert began: False in both of those cases.

        Raises :class:`InvalidArgsError` / :class:`InvalidOptsError` before writing
        anything when the args or options are invalid.
        """
        if not self._telemetry_resolved:
            self._resolve_telemetry()
        chain = self._insert_chain
        if conn is not None:
            return await insert_one(
                insert_executor_for(conn, self._driver.queries), args, opts, chain
            )
        return await insert_one(await self._driver.spare(), args, opts, chain)

    async def insert_many(
        self,
        items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]],
        *,
        conn: InsertConnection | None = None,
    ) -> list[InsertResult]:
        """Insert many jobs in one round trip (COPY for large batches); all or none.

        ``items`` are ``JobArgs`` or ``(JobArgs, InsertOpts)`` pairs. Results come in
        the order of ``items``. Every item is validated before anything is written.
        """
        ex: InsertExecutor
        if not self._telemetry_resolved:
            self._resolve_telemetry()
        if conn is not None:
            ex = insert_executor_for(conn, self._driver.queries)
        else:
            await self._driver.open()
            ex = self._driver.executor(timeout=None)
        return await insert_many(ex, items, chain=self._insert_chain)

    # -- control -----------------------------------------------------------------------

    async def get(self, job_id: int, *, conn: ControlConnection | None = None) -> Job[Any]:
        """The job with this id (args decoded when its kind is known); JobNotFoundError if none."""
        row = await (await self._db(conn)).job_get(id=job_id)
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return read_job(row)

    async def cancel(self, job_id: int, *, conn: ControlConnection | None = None) -> Job[Any]:
        """Cancel a job. Not yet running: ``cancelled`` at once. Running: its coroutine is
        cancelled in whichever process runs it, and it ends ``cancelled`` without retry.
        Already finalized: unchanged. Returns the job as it now is."""
        row = await (await self._db(conn)).job_cancel(id=job_id)
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        job = read_job(row)
        # Same process: no need to wait for the notification to come back. Not inside a
        # caller's transaction, though: it may still roll back, and the NOTIFY arrives
        # only if it commits.
        if job.state is JobState.RUNNING and conn is None:
            self._cancel_running(job_id, job.queue)
        return job

    async def pause(self, queue: str = "*", *, conn: ControlConnection | None = None) -> None:
        """Stop every producer of ``queue`` (``"*"``: every queue) in every process
        from claiming jobs; persisted, so clients started later respect it."""
        if queue != "*":
            validate_queue(queue)
        await (await self._db(conn)).queue_pause(name=queue)
        self._apply_pause(queue, True)

    async def resume(self, queue: str = "*", *, conn: ControlConnection | None = None) -> None:
        """Undo :meth:`pause` for ``queue`` (``"*"``: every queue)."""
        if queue != "*":
            validate_queue(queue)
        await (await self._db(conn)).queue_resume(name=queue)
        self._apply_pause(queue, False)

    async def horizon_holders(
        self, *, older_than: timedelta | float = 60.0, conn: ControlConnection | None = None
    ) -> list[HorizonHolder]:
        """What holds this database's vacuum horizon back for longer than
        ``older_than``, oldest first: sessions with an old transaction (pid,
        application, age, query), prepared transactions, inactive replication slots.
        While one does, VACUUM removes no dead row version newer than it and every
        claim gets slower; ending it is the fix (see docs/operations.md). Other roles'
        sessions show only to a superuser or a member of ``pg_monitor``."""
        from ._config import to_seconds
        from ._maintenance.horizon import horizon_holders

        seconds = to_seconds(older_than, "older_than")
        assert seconds is not None
        return await horizon_holders(await self._db(conn), older_than=seconds)

    def _apply_pause(self, queue: str, paused: bool) -> None:
        for name, p in self._producers.items():
            if queue in ("*", name):
                p.set_paused(paused)

    # -- query and control -----------------------------------------------------------
    # The query and control API (pyriver_async/_control.py, docs/query-api.md) and
    # run(), the embedded program's SIGTERM/SIGINT handling that `pyriver worker` uses.

    async def list(
        self,
        filter: JobFilter | None = None,
        *,
        order: JobOrder | str = JobOrder.ID,
        descending: bool = True,
        limit: int = 100,
        cursor: str | None = None,
        scan_budget: int = 10_000,
        conn: ControlConnection | None = None,
        **filters: Any,
    ) -> JobPage:
        """A page of jobs matching ``filter`` (a :class:`JobFilter`) and/or the same
        fields as keywords (``states=["discarded"], kinds=["send_email"]``), ordered by
        ``order`` (``"id"``, ``"scheduled_at"`` or ``"finalized_at"``, the id breaking
        ties), newest first unless ``descending=False``.

        Keyset pagination: pass the page's ``next_cursor`` as ``cursor`` (with the same
        order and direction) for the next page; walking every page while jobs are
        inserted and finished returns no job twice and skips none that matched
        throughout. Each page reads an index range of River's schema; a filter that
        index does not serve is checked on the rows it yields, and after
        ``scan_budget`` entries the page stops early (``page.stopped_early``) with a
        cursor to go on. Raises :class:`InvalidFilterError` for a bad filter, order,
        limit (1 to 10,000) or cursor. See ``docs/query-api.md``.
        """
        spec = _control.build_spec(
            _control.merge_filter(filter, filters),
            order=order,
            descending=descending,
            limit=limit,
            cursor=cursor,
            scan_budget=scan_budget,
        )
        return await _control.list_jobs(await self._db(conn), spec)

    async def retry(self, job_id: int, *, conn: ControlConnection | None = None) -> Job[Any]:
        """Make a job ``available`` now (River's retry): attempt kept, max_attempts raised
        by one when used up, a wake-up sent so a worker starts it at once. Works on
        finalized, retryable, scheduled and pending jobs; a job already available and
        due is left as it is. Raises :class:`JobNotFoundError`, or
        :class:`JobRefusedError` for a running job or a unique conflict."""
        return await _control.act_one(await self._db(conn), "retry", job_id)

    async def retry_many(
        self,
        ids_or_filter: Sequence[int] | JobFilter,
        *,
        conn: ControlConnection | None = None,
        limit: int | None = None,
    ) -> builtins.list[JobActionResult]:
        """:meth:`retry` for many jobs (ids, or every job a :class:`JobFilter` matches, up
        to ``limit``), in batches; one :class:`JobActionResult` per job, never all or
        nothing. Each job is acted on at most once a call (a job retried in one batch
        that matches the filter again in a later one is not retried again)."""
        return await _control.act(await self._db(conn), "retry", ids_or_filter, limit=limit)

    async def cancel_many(
        self,
        ids_or_filter: Sequence[int] | JobFilter,
        *,
        conn: ControlConnection | None = None,
        limit: int | None = None,
    ) -> builtins.list[JobActionResult]:
        """:meth:`cancel` for many jobs; one :class:`JobActionResult` per job. A running
        job's cancellation is requested (done); a completed or discarded one is
        refused."""
        results = await _control.act(await self._db(conn), "cancel", ids_or_filter, limit=limit)
        if conn is None:
            for r in results:
                if r.job is not None and r.job.state is JobState.RUNNING:
                    self._cancel_running(r.job_id, r.job.queue)
        return results

    async def delete(self, job_id: int, *, conn: ControlConnection | None = None) -> Job[Any]:
        """Delete a job; returns the deleted row. Raises :class:`JobNotFoundError`, or
        :class:`JobRefusedError` for a running job (cancel it first)."""
        return await _control.act_one(await self._db(conn), "delete", job_id)

    async def delete_many(
        self,
        ids_or_filter: Sequence[int] | JobFilter,
        *,
        conn: ControlConnection | None = None,
        limit: int | None = None,
    ) -> builtins.list[JobActionResult]:
        """:meth:`delete` for many jobs; one :class:`JobActionResult` per job (running
        jobs refused)."""
        return await _control.act(await self._db(conn), "delete", ids_or_filter, limit=limit)

    async def list_queues(
        self, *, count_cap: int = 10_000, conn: ControlConnection | None = None
    ) -> builtins.list[QueueInfo]:
        """Every queue (a ``river_queue`` row, or jobs in it) with its jobs per state:
        exact up to ``count_cap``, the planner's estimate above (``counts_exact``)."""
        return await _control.queue_infos(await self._db(conn), None, count_cap)

    async def get_queue(
        self, name: str, *, count_cap: int = 10_000, conn: ControlConnection | None = None
    ) -> QueueInfo:
        """One queue as :meth:`list_queues` gives it; :class:`QueueNotFoundError` if it
        has neither a ``river_queue`` row nor jobs."""
        return await _control.queue_info(await self._db(conn), name, count_cap)

    async def list_clients(
        self, *, conn: ControlConnection | None = None
    ) -> builtins.list[ClientInfo]:
        """The clients' liveness rows (host, pid, version, queues with max workers and
        running jobs, heartbeat age, leader). Empty on a schema without the pyriver
        migration line (see :meth:`liveness_available`)."""
        return await _control.client_infos(await self._db(conn))

    async def liveness_available(self, *, conn: ControlConnection | None = None) -> bool:
        """Whether the schema has the liveness table (the pyriver migration line)."""
        return await (await self._db(conn)).client_table_exists()

    async def leader(self, *, conn: ControlConnection | None = None) -> LeaderInfo | None:
        """Who leads maintenance now (``river_leader``), or None."""
        return await _control.leader_info(await self._db(conn))

    def _heartbeat_status(self) -> dict[str, Any]:
        """What the liveness row says besides the heartbeat (pyriver 002)."""
        cfg = self.config
        status: dict[str, Any] = {
            "version": _version(),
            "queue_use": {
                name: {
                    "max_workers": qcfg.max_workers,
                    "running": len(p.running) if (p := self._producers.get(name)) else 0,
                }
                for name, qcfg in self.queues.items()
            },
            "stopping": self._stopping is not None,
            "metadata": {"retention": dict(cfg.retention)},
        }
        if self.is_leader:
            status["metadata"]["periodic"] = _periodic_schedule(self.periodic_jobs)
        return status

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Work until SIGTERM or SIGINT, then stop: what a program that embeds its
        client calls (``asyncio.run(client.run())``), and what ``pyriver worker`` runs.

        Starts the client and logs that it is ready. The first SIGTERM or SIGINT is a
        soft stop (:meth:`stop`: claim nothing more, let running jobs finish within
        ``soft_stop_timeout``, write every outcome); a second one during it is a hard
        stop (:meth:`stop_and_cancel`: running jobs are cancelled and go back to
        ``available`` with their attempt restored). Returns once stopped; raises what
        :meth:`start` raised when the client could not start. Without
        ``install_signal_handlers`` (or off the main thread) it waits until another
        task calls :meth:`stop`.
        """
        loop = asyncio.get_running_loop()
        stop_asked = asyncio.Event()
        received: builtins.list[str] = []
        hard: builtins.list[asyncio.Task[None]] = []

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            received.append(name)
            if len(received) == 1:
                log.info(
                    "client %s: %s received, stopping softly (running jobs finish, up to "
                    "%ss); send it again to stop at once",
                    self.id,
                    name,
                    cfg.soft_stop_timeout,
                )
                stop_asked.set()
            elif not hard:
                log.warning(
                    "client %s: %s received again, stopping at once: running jobs are "
                    "cancelled and go back to available",
                    self.id,
                    name,
                )
                hard.append(asyncio.ensure_future(self.stop_and_cancel()))

        cfg = self.config
        installed: builtins.list[signal.Signals] = []
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass  # not the main thread, or no signals on this platform
        try:
            await self.start()
            queues = ", ".join(f"{n} ({q.max_workers} workers)" for n, q in self.queues.items())
            log.info(
                "client %s ready: schema %r, queues %s", self.id, self.schema, queues or "none"
            )
            self._run_stop = stop_asked
            await stop_asked.wait()
            if hard:
                await hard[0]
            else:
                await self.stop()
            for t in hard:
                await t
        finally:
            self._run_stop = None
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._driver.close()
        log.info("client %s stopped", self.id)

    # -- events --------------------------------------------------------------------------

    def subscribe(self, *, maxsize: int = 10_000) -> Subscription:
        """Events of jobs this client worked, once their outcome is written.

        ``async with client.subscribe() as events: async for ev in events: ...``
        """
        sub = Subscription(self._subscriptions, maxsize)
        self._subscriptions.append(sub)
        return sub

    def _on_flushed(self, outcomes: builtins.list[Outcome]) -> None:
        # The outcomes the completer wrote: hooks, events and waiters (see _lifecycle).
        self._lifecycle.on_flushed(outcomes)

    # -- notifications ---------------------------------------------------------------

    def _on_notification(self, channel: str, msg: dict[str, Any]) -> None:
        q = self._driver.queries
        if channel == q.insert_channel:
            name = msg.get("queue")
            p = self._producers.get(name) if isinstance(name, str) else None
            if p is not None:
                p.notify()
        elif channel == q.control_channel:
            action = msg.get("action")
            name = msg.get("queue")
            if action in ("pause", "resume") and isinstance(name, str):
                self._apply_pause(name, action == "pause")
            elif action == "cancel":
                job_id = msg.get("job_id")
                if isinstance(job_id, int):
                    queue = msg.get("queue")
                    self._cancel_running(job_id, queue if isinstance(queue, str) else None)
            elif action == "finished" and self._waiters:
                self._waiters.on_message(channel, msg)
        elif channel == q.leadership_channel and self._maintenance is not None:
            self._maintenance.on_leadership_message(msg)

    def _cancel_running(self, job_id: int, queue: str | None) -> None:
        """Cancel a running job if it runs here. The producer of its queue remembers
        the id for a moment if the job is not known yet (a claim's reply may still be
        on its way); without a queue named, every producer does."""
        if queue is not None:
            p = self._producers.get(queue)
            if p is not None:
                p.cancel_job(job_id)
            return
        for p in self._producers.values():
            p.cancel_job(job_id)

    def _on_read_only(self) -> None:
        for p in self._producers.values():
            p.set_held(True)
        if self._maintenance is not None:
            self._maintenance.hold_leadership(True)
        if self._notifier is not None:
            self._notifier.reconnect()

    def _on_writable(self) -> None:
        if self._maintenance is not None:
            self._maintenance.hold_leadership(False)
        for p in self._producers.values():
            p.set_held(False)
        if self._completer is not None:
            self._completer.retry_now()
        if self._notifier is not None and not self._notifier.connected.is_set():
            self._notifier.reconnect()

    def _on_connection_lost(self, _exc: BaseException) -> None:
        # Whatever the lost connection had written may be gone with its server (a
        # failover): claims of ours whose outcome it recorded would stay running.
        for p in self._producers.values():
            p.look_for_orphans()

    def _wake_producers(self) -> None:
        for p in self._producers.values():
            p.notify()

    async def _writable(self) -> bool:
        return await self._driver.executor().pg_writable()

    def _on_notifier_connected(self, connected: bool) -> None:
        # Back after an outage: fetch now what arrived while we could not hear it.
        if connected:
            for p in self._producers.values():
                p.notify()
            self._waiters.wake_all()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start working the configured queues (and maintenance). Idempotent.

        A start that fails (the database away, an unmigrated schema) undoes what it
        built and raises: the client is stopped, and ``start()`` may be tried again.
        """
        if self._started:
            return
        try:
            await self._start()
        except BaseException:
            if self._started:
                await self._do_shutdown(True)
            raise

    async def _start(self) -> None:
        cfg = self.config
        await self._driver.open()
        if self.queues and self._driver.pool_size() < 2:
            raise ConfigError(
                "a client that works queues needs a pool of at least 2 connections: the "
                "notifier holds one for LISTEN, claims and completions need another"
            )
        db = self._driver.executor()
        if cfg.check_schema:
            from ._migrate import check_schema

            async with db.session() as s:
                self.liveness = await check_schema(s)
            if not self.liveness and self.queues:
                log.warning(
                    "schema %r has River's tables but not pyriver_async's client liveness "
                    "table: jobs of a dead process are rescued by age only "
                    "(rescue_stuck_jobs_after). `pyriver migrate up` adds it.",
                    self.schema,
                )
            if not self.liveness:
                self._check_flow_schema()
        self._started = True
        self._stopping = None
        if not self.queues and not cfg.maintenance:
            return
        self._failover = ReadOnlyWatch(
            recycle=self._driver.recycle,
            writable=self._writable,
            on_read_only=self._on_read_only,
            on_writable=self._on_writable,
        )
        self._driver.on_read_only = self._failover.signal
        self._driver.on_connection_lost = self._on_connection_lost
        q = self._driver.queries
        listener = self._driver.listener()
        if listener is not None:
            channels = [q.insert_channel, q.control_channel, q.leadership_channel]
            self._notifier = Notifier(
                listener, channels, self._on_notification, self._on_notifier_connected
            )
            self._notifier.start()
            # A LISTEN that hears nothing is a setting to change: said here, at once.
            # Anything else (the server away, read-only) the notifier rides out.
            try:
                async with asyncio.timeout(10.0):
                    first = await self._notifier.first_attempt()
            except TimeoutError:
                first = None
            if isinstance(first, ListenUnavailableError):
                await self._abort_start()
                raise first
        elif self.queues:
            log.warning(
                "pooler=%r and no listen_database_url: the client does not LISTEN, and "
                "producers find new jobs by polling every %.1fs (fetch_poll_interval)",
                cfg.pooler,
                cfg.fetch_poll_interval,
            )
        _interrupts.install()
        # The completer and each producer keep their connection through a burst (a
        # pool round per statement cost as much as the statement; see Lease), and give
        # it back within LEASE_LINGER of going quiet.
        self._completer = Completer(
            self._driver.leased_executor(linger=LEASE_LINGER),
            flush_interval=cfg.completer_flush_interval,
            max_batch=cfg.completer_batch_size,
            on_flushed=self._on_flushed,
        )
        # Producers stop claiming while outcomes cannot be written: wake them when they can.
        self._completer.on_recovered = self._wake_producers
        self._completer.start()
        self._resolve_telemetry()
        tel = self._telemetry
        self._executor = Executor(
            self,
            self.workers,
            job_timeout=cfg.job_timeout,
            retry_policy=self._retry_policy,
            middleware=[tel.work, *self._work_mw] if tel is not None else self._work_mw,
            error_handler=self._error_handler,
            queues=self.queues,
        )
        if tel is not None:
            tel.observe_client(self)
        paused = await db.queue_paused_many(names=[*self.queues, "*"])
        for name, qcfg in self.queues.items():
            p = Producer(
                name,
                qcfg,
                db=self._driver.leased_executor(linger=LEASE_LINGER),
                executor=self._executor,
                completer=self._completer,
                client_id=self.id,
                fetch_cooldown=cfg.fetch_cooldown,
                poll_interval=cfg.fetch_poll_interval,
                max_completer_backlog=max(10 * cfg.completer_batch_size, 2 * qcfg.max_workers),
                claimer=claimer_for(name, qcfg, self.workers, schema=self.schema),
            )
            p.paused = name in paused
            p.held = self._failover.read_only
            self._producers[name] = p
        if cfg.maintenance:
            from ._maintenance import Maintenance

            self._maintenance = Maintenance(
                db,
                cfg,
                client_id=self.id,
                queues=list(self.queues),
                periodic_jobs=self.periodic_jobs,
                liveness=self.liveness,
                pool_size=self._driver.pool_size(),
                heartbeat_executor=self._driver.executor(timeout=max(cfg.heartbeat_interval, 5.0)),
                status=self._heartbeat_status,
                busy=self._has_backlog,
            )
            # A first beat before the first claim: a client started again (its row
            # marked dead by the last stop) must not have fresh claims rescued.
            await self._maintenance.beat_now()
            await self._maintenance.start()
            if self._failover.read_only:
                self._maintenance.hold_leadership(True)
        for p in self._producers.values():
            p.start()
            p.notify()  # claim what is already waiting
        self._monitor = asyncio.create_task(self._watch_loop(), name="pyriver-loop-monitor")

    async def _abort_start(self) -> None:
        """Undo what start() did so far (it is about to raise)."""
        if self._notifier is not None:
            await self._notifier.stop()
            self._notifier = None
        if self._failover is not None:
            await self._failover.close()
            self._failover = None
        self._driver.on_read_only = self._driver.on_connection_lost = None
        self._started = False
        await self._driver.close()

    async def stop(self) -> None:
        """Soft stop: claim nothing more, let running jobs finish (up to
        ``soft_stop_timeout``, then cancel them as :meth:`stop_and_cancel` does),
        write every outcome, stop maintenance. Safe to call more than once."""
        await self._shutdown(hard=False)

    async def stop_and_cancel(self) -> None:
        """Hard stop: cancel running jobs at once. A job interrupted only by this
        shutdown goes back to ``available`` with its attempt restored. A job that
        ignores cancellation is logged by name and left to the rescuer."""
        await self._shutdown(hard=True)

    async def _shutdown(self, *, hard: bool) -> None:
        if self._run_stop is not None:
            self._run_stop.set()  # run() returns once this stop is done
        if not self._started:
            return
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._do_shutdown(hard))
        elif hard:
            for p in self._producers.values():
                p.cancel_running()
        await asyncio.shield(self._stopping)

    async def _do_shutdown(self, hard: bool) -> None:
        cfg = self.config
        t0 = time.monotonic()
        for p in self._producers.values():
            p.stop_fetching()
        for p in self._producers.values():
            await p.wait_fetch_loop()
        if not hard and any(p.running for p in self._producers.values()):
            waiting = asyncio.gather(*(p.wait_jobs() for p in self._producers.values()))
            try:
                await asyncio.wait_for(waiting, cfg.soft_stop_timeout)
            except TimeoutError:
                log.warning(
                    "soft stop timed out after %.1fs with %d jobs running; cancelling them",
                    time.monotonic() - t0,
                    sum(len(p.running) for p in self._producers.values()),
                )
        if any(p.running for p in self._producers.values()):
            for p in self._producers.values():
                p.cancel_running()
            waiting = asyncio.gather(*(p.wait_jobs() for p in self._producers.values()))
            try:
                await asyncio.wait_for(waiting, cfg.hard_stop_timeout)
            except TimeoutError:
                for p in self._producers.values():
                    for job_id, kind in p.job_names.items():
                        log.error(
                            "job %d (kind %r) ignores cancellation; it is abandoned "
                            "still running and will be rescued",
                            job_id,
                            kind,
                        )
        for p in self._producers.values():
            p.close()
        if self._executor is not None:
            self._executor.close()
        # The final phase (the last outcomes, then the async hooks they fired) shares
        # one budget, so stop() keeps README's bound: soft_stop_timeout, then
        # hard_stop_timeout, then at most max(hard_stop_timeout, 5 s).
        final = max(cfg.hard_stop_timeout, 5.0)
        final_ends = time.monotonic() + final
        if self._completer is not None:
            try:
                await asyncio.wait_for(self._completer.stop(), final)
            except TimeoutError:
                log.error(
                    "could not write %d job outcomes before shutdown; those jobs will be rescued",
                    self._completer.backlog,
                )
                self._completer.abort()
        left = max(0.0, final_ends - time.monotonic())
        await self._lifecycle.stop(min(2 * cfg.hard_stop_timeout, left))
        if self._telemetry is not None:
            self._telemetry.forget_client(self)
        if self._maintenance is not None:
            await self._maintenance.stop()
            self._maintenance = None
        if self._failover is not None:
            await self._failover.close()
            self._failover = None
        self._driver.on_read_only = self._driver.on_connection_lost = None
        if self._notifier is not None:
            await self._notifier.stop()
            self._notifier = None
        if self._monitor is not None:
            self._monitor.cancel()
            try:
                await self._monitor
            except asyncio.CancelledError:
                pass
            self._monitor = None
        for s in list(self._subscriptions):
            s.close()
        self._producers.clear()
        self._completer = None
        self._started = False
        _interrupts.uninstall()
        # Before the pool closes: a wait()'s own LISTEN connection is one of its own.
        await self._waiters.close()
        await self._driver.close()

    async def close(self) -> None:
        """Stop (softly) and release the pool the client made. Same as :meth:`stop`."""
        await self.stop()
        await self._waiters.close()
        await self._driver.close()

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _watch_loop(self, interval: float = 0.25, threshold: float = 1.0) -> None:
        """Log loudly when something blocks the event loop (a job doing blocking I/O)."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(interval)
            lag = time.monotonic() - t - interval
            if lag > threshold:
                # The culprit is running now, or finished right after the block ended.
                suspects = {
                    job_id: kind
                    for p in self._producers.values()
                    for end, job_id, kind in p.recent_done
                    if end >= t
                }
                for p in self._producers.values():
                    suspects.update(p.job_names)
                # Blocking (def) workers run in threads: they hold no loop time.
                names = [
                    f"{job_id} ({kind})"
                    for job_id, kind in suspects.items()
                    if not getattr(self.workers.get(kind), "blocking", False)
                ]
                log.error(
                    "the event loop was blocked for %.1fs; a job may be doing blocking work. "
                    "Jobs running during the block: %s",
                    lag,
                    ", ".join(names[:20]) or "none",
                )

    # -- introspection (tests, UI) -----------------------------------------------------

    def _has_backlog(self) -> bool:
        """True while a producer's last claim came back full (jobs are waiting)."""
        return any(p.backlog for p in self._producers.values())

    @property
    def running_jobs(self) -> dict[int, str]:
        """Ids and kinds of the jobs this client is running now."""
        out: dict[int, str] = {}
        for p in self._producers.values():
            out.update(p.job_names)
        return out

    @property
    def notifier(self) -> Notifier | None:
        return self._notifier

    @property
    def is_leader(self) -> bool:
        return bool(self._maintenance is not None and self._maintenance.is_leader)

    # -- flow control (_claim.py, _flow.py, _flow_status.py) ---------------------------

    def _check_flow_schema(self) -> None:
        """Flow control keeps its state in the pyriver migration line's tables."""
        limited = [
            name
            for name, qcfg in self.queues.items()
            if claimer_for(name, qcfg, self.workers, schema=self.schema).locked
        ]
        if limited:
            raise SchemaNotMigratedError(
                f"queues {limited} have flow limits or sequences, which need the pyriver "
                f"migration line in schema {self.schema!r} (a database River migrated "
                "lacks it); run `pyriver migrate up`"
            )

    async def flow_status(self, queue: str | None = None) -> builtins.list[LimitStatus]:
        """Every flow limit of the queues this client works (or of ``queue``): what it
        uses now across the cluster and what waits on it (see :class:`LimitStatus`).
        A queue without limits has none. Read-only: one query per queue."""
        if queue is not None and queue not in self.queues:
            raise ConfigError(f"queue {queue!r} is not one this client works")
        names = [queue] if queue is not None else list(self.queues)
        db = await self._db()
        out: builtins.list[LimitStatus] = []
        for name in names:
            producer = self._producers.get(name)
            claimer = (
                producer.claimer
                if producer is not None
                else claimer_for(name, self.queues[name], self.workers, schema=self.schema)
            )
            here = producer.running_kinds() if producer is not None else {}
            out += await flow_status(db, name, claimer, running_here=here)
        return out
