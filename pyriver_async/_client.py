"""The Client: configuration, lifecycle, insert and control. It delegates the work to
the producers, executor, completer, notifier and maintenance services it owns."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import asyncpg

from ._args import InsertOpts, JobArgs, validate_queue
from ._codec import args_from_record, job_from_record
from ._completer import Completer, Outcome
from ._driver import Driver
from ._errors import ClientClosedError, ConfigError, JobNotFoundError
from ._events import JobEvent, Subscription
from ._executor import Executor
from ._insert import InsertResult, insert_many, insert_one
from ._job import Job
from ._maintenance.periodic import PeriodicJob, PeriodicJobs
from ._notifier import Notifier
from ._producer import Producer
from ._workers import Workers, to_timeout

__all__ = ["Client", "QueueConfig"]

log = logging.getLogger("pyriver_async.client")


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Settings of one queue this client works: how many jobs run at once."""

    max_workers: int = 100

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_workers, bool)
            or not isinstance(self.max_workers, int)
            or not 1 <= self.max_workers <= 10_000
        ):
            raise ConfigError(
                f"max_workers must be an int from 1 to 10000, got {self.max_workers!r}"
            )


def _seconds(
    value: timedelta | float | None, what: str, *, allow_none: bool = False
) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{what} must be set")
    if isinstance(value, timedelta):
        s = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a timedelta or a number of seconds")
    else:
        s = float(value)
    if s < 0:
        raise ConfigError(f"{what} must not be negative")
    return s


async def _cheap_reset(conn: asyncpg.Connection) -> None:
    # The client's own pool never leaves session state behind (no SET, no LISTEN on
    # pooled connections but the notifier's, which it cleans itself), so the default
    # reset query — one more round trip on every release — buys nothing.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# Connections the client's own pool lends to single inserts between calls.
_MAX_SPARES = 2


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
      jobs before cancelling them, and how long it then waits for them to end.
    - ``rescue_stuck_jobs_after`` (default 1 h), ``heartbeat_interval`` (5 s),
      ``dead_client_after`` (30 s), retention of ``completed``/``cancelled``/
      ``discarded`` jobs (24 h / 24 h / 7 days; 0 keeps them for ever) and
      ``periodic_jobs``: maintenance, run by the elected leader.
    - ``vacuum_dead_tuples`` (default 100,000; 0: off): the leader VACUUMs the job
      table once more than this many (and more than 20 % of its live rows) dead row
      versions pile up, which autovacuum leaves for up to a minute on a busy queue
      while every claim walks past them (see ``pyriver_async._maintenance.vacuumer``).
    - ``pool_max_size``: size of the pool the client makes from a DSN (default 10).
    """

    def __init__(
        self,
        database: asyncpg.Pool | str,
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
    ) -> None:
        if isinstance(database, str):
            self._dsn: str | None = database
            self._pool: asyncpg.Pool | None = None
        elif isinstance(database, asyncpg.Pool):
            self._dsn = None
            self._pool = database
        else:
            raise ConfigError("Client() takes an asyncpg.Pool or a DSN string")
        self._owns_pool = self._pool is None
        self._pool_max_size = pool_max_size
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
        try:
            self._driver = Driver(schema)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.id = id or _default_client_id()
        self.job_timeout = to_timeout(job_timeout, "job_timeout")
        self._retry_policy = retry_policy
        self.fetch_cooldown = _seconds(fetch_cooldown, "fetch_cooldown") or 0.0
        self.fetch_poll_interval = _seconds(fetch_poll_interval, "fetch_poll_interval") or 1.0
        self.soft_stop_timeout = _seconds(soft_stop_timeout, "soft_stop_timeout", allow_none=True)
        self.hard_stop_timeout = _seconds(hard_stop_timeout, "hard_stop_timeout") or 0.0
        self._flush_interval = _seconds(completer_flush_interval, "completer_flush_interval") or 0.0
        if completer_batch_size < 1:
            raise ConfigError("completer_batch_size must be at least 1")
        self._batch_size = completer_batch_size
        for value, what in (
            (rescue_stuck_jobs_after, "rescue_stuck_jobs_after"),
            (heartbeat_interval, "heartbeat_interval"),
            (dead_client_after, "dead_client_after"),
            (leader_ttl, "leader_ttl"),
            (fetch_poll_interval, "fetch_poll_interval"),
        ):
            if not _seconds(value, what):
                raise ConfigError(f"{what} must be positive")
        self.rescue_stuck_jobs_after = _seconds(rescue_stuck_jobs_after, "rescue_stuck_jobs_after")
        self.heartbeat_interval = _seconds(heartbeat_interval, "heartbeat_interval")
        self.dead_client_after = _seconds(dead_client_after, "dead_client_after")
        self.retention = {
            "completed": _seconds(completed_job_retention, "completed_job_retention"),
            "cancelled": _seconds(cancelled_job_retention, "cancelled_job_retention"),
            "discarded": _seconds(discarded_job_retention, "discarded_job_retention"),
        }
        self.leader_ttl = _seconds(leader_ttl, "leader_ttl")
        if isinstance(vacuum_dead_tuples, bool) or not isinstance(vacuum_dead_tuples, int):
            raise ConfigError(f"vacuum_dead_tuples must be an int, got {vacuum_dead_tuples!r}")
        if vacuum_dead_tuples < 0:
            raise ConfigError("vacuum_dead_tuples must be 0 (off) or positive")
        self.vacuum_dead_tuples = vacuum_dead_tuples
        #: The periodic jobs the leader inserts; ``add`` / ``remove`` work at runtime.
        self.periodic_jobs = PeriodicJobs(periodic_jobs)
        self._maintenance_enabled = maintenance
        self._check_schema = check_schema

        self._producers: dict[str, Producer] = {}
        self._completer: Completer | None = None
        self._notifier: Notifier | None = None
        self._executor: Executor | None = None
        self._maintenance: Any = None
        self._monitor: asyncio.Task[None] | None = None
        self._subscriptions: list[Subscription] = []
        self._started = False
        self._stopping: asyncio.Task[None] | None = None
        self._pool_lock = asyncio.Lock()
        self._spares: list[Any] = []
        #: Whether the pyriver migration line (client liveness) is in the database;
        #: known after start(). Without it, stuck jobs are rescued by age only.
        self.liveness = True

    # -- pool --------------------------------------------------------------------------

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                assert self._dsn is not None
                pool = await asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=self._pool_max_size, reset=_cheap_reset
                )
                assert pool is not None
                self._pool = pool
        return self._pool

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool (made on first use when the client was given a DSN)."""
        if self._pool is None:
            raise ClientClosedError("the pool is made on first use: insert or start() first")
        return self._pool

    @property
    def driver(self) -> Driver:
        return self._driver

    # -- insert ------------------------------------------------------------------------

    async def insert(
        self, args: JobArgs, opts: InsertOpts | None = None, *, conn: Any = None
    ) -> InsertResult:
        """Insert one job.

        With ``conn`` (an asyncpg connection, typically inside the caller's
        transaction) the job and its wake-up notification are part of that
        transaction: visible to workers only after it commits, gone if it rolls back.
        Without, it is inserted and committed at once.

        Raises :class:`InvalidArgsError` / :class:`InvalidOptsError` before writing
        anything when the args or options are invalid.
        """
        if conn is not None and not isinstance(conn, asyncpg.Pool):
            return await insert_one(conn, self._driver, args, opts)
        if conn is None and self._owns_pool:
            return await self._insert_on_spare(args, opts)
        pool = conn if conn is not None else await self._get_pool()
        async with pool.acquire() as c:
            return await insert_one(c, self._driver, args, opts)

    async def _insert_on_spare(self, args: JobArgs, opts: InsertOpts | None) -> InsertResult:
        # A pool acquire + release costs about as much Python as the insert itself
        # (measured: 2,436 inserts/s on a bare connection, 1,865 through the pool).
        # The client's own pool lends it a couple of connections it keeps between
        # inserts; anything unusual (an error, a cancellation) hands the connection
        # back to the pool, which knows how to clean it.
        conn = self._spares.pop() if self._spares else None
        if conn is None:
            conn = await (await self._get_pool()).acquire()
        try:
            result = await insert_one(conn, self._driver, args, opts)
        except BaseException:
            await self._release_spare(conn)
            raise
        if len(self._spares) < _MAX_SPARES and self._pool is not None and not conn.is_closed():
            self._spares.append(conn)
        else:
            await self._release_spare(conn)
        return result

    async def _release_spare(self, conn: Any) -> None:
        pool = self._pool
        if pool is not None:
            await pool.release(conn)

    async def _release_spares(self) -> None:
        while self._spares:
            await self._release_spare(self._spares.pop())

    async def insert_many(
        self,
        items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]],
        *,
        conn: Any = None,
    ) -> list[InsertResult]:
        """Insert many jobs in one round trip (COPY for large batches); all or none.

        ``items`` are ``JobArgs`` or ``(JobArgs, InsertOpts)`` pairs. Results come in
        the order of ``items``. Every item is validated before anything is written.
        """
        if conn is not None and not isinstance(conn, asyncpg.Pool):
            return await insert_many(conn, self._driver, items)
        pool = conn if conn is not None else await self._get_pool()
        async with pool.acquire() as c:
            return await insert_many(c, self._driver, items)

    # -- control -----------------------------------------------------------------------

    async def get(self, job_id: int, *, conn: Any = None) -> Job[Any]:
        """The job with this id (args decoded when its kind is known); JobNotFoundError if none."""
        rec = await self._fetchrow(conn, self._driver.sql["job_get"], job_id)
        if rec is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return job_from_record(rec, args_from_record(rec))

    async def cancel(self, job_id: int, *, conn: Any = None) -> Job[Any]:
        """Cancel a job. Not yet running: ``cancelled`` at once. Running: its coroutine is
        cancelled in whichever process runs it, and it ends ``cancelled`` without retry.
        Already finalized: unchanged. Returns the job as it now is."""
        rec = await self._fetchrow(conn, self._driver.sql["job_cancel"], job_id)
        if rec is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        # Same process: no need to wait for the notification to come back. Not inside a
        # caller's transaction, though: it may still roll back, and the NOTIFY arrives
        # only if it commits.
        if rec["state"] == "running" and conn is None:
            for p in self._producers.values():
                p.cancel_job(job_id)
        return job_from_record(rec, args_from_record(rec))

    async def pause(self, queue: str = "*", *, conn: Any = None) -> None:
        """Stop every producer of ``queue`` (``"*"``: every queue) in every process
        from claiming jobs; persisted, so clients started later respect it."""
        if queue != "*":
            validate_queue(queue)
        await self._fetchrow(conn, self._driver.sql["queue_pause"], queue)
        self._apply_pause(queue, True)

    async def resume(self, queue: str = "*", *, conn: Any = None) -> None:
        """Undo :meth:`pause` for ``queue`` (``"*"``: every queue)."""
        if queue != "*":
            validate_queue(queue)
        await self._fetchrow(conn, self._driver.sql["queue_resume"], queue)
        self._apply_pause(queue, False)

    async def _fetchrow(self, conn: Any, sql: str, *args: Any) -> Any:
        if conn is not None and not isinstance(conn, asyncpg.Pool):
            return await conn.fetchrow(sql, *args)
        pool = conn if conn is not None else await self._get_pool()
        async with pool.acquire() as c:
            return await c.fetchrow(sql, *args)

    def _apply_pause(self, queue: str, paused: bool) -> None:
        for name, p in self._producers.items():
            if queue in ("*", name):
                p.set_paused(paused)

    # -- events --------------------------------------------------------------------------

    def subscribe(self, *, maxsize: int = 10_000) -> Subscription:
        """Events of jobs this client worked, once their outcome is written.

        ``async with client.subscribe() as events: async for ev in events: ...``
        """
        sub = Subscription(self._subscriptions, maxsize)
        self._subscriptions.append(sub)
        return sub

    def _on_flushed(self, outcomes: list[Outcome]) -> None:
        if not self._subscriptions:
            return
        for o in outcomes:
            ev = JobEvent(job_id=o.job_id, queue=o.queue, state=o.state, attempt=o.attempt)
            for s in self._subscriptions:
                s.put(ev)

    # -- notifications ---------------------------------------------------------------

    def _on_notification(self, channel: str, msg: dict[str, Any]) -> None:
        d = self._driver
        if channel == d.insert_channel:
            q = msg.get("queue")
            p = self._producers.get(q) if isinstance(q, str) else None
            if p is not None:
                p.notify()
        elif channel == d.control_channel:
            action = msg.get("action")
            q = msg.get("queue")
            if action in ("pause", "resume") and isinstance(q, str):
                self._apply_pause(q, action == "pause")
            elif action == "cancel":
                job_id = msg.get("job_id")
                if isinstance(job_id, int):
                    for p in self._producers.values():
                        p.cancel_job(job_id)
        elif channel == d.leadership_channel and self._maintenance is not None:
            self._maintenance.on_leadership_message(msg)

    def _on_notifier_connected(self, connected: bool) -> None:
        # Back after an outage: fetch now what arrived while we could not hear it.
        if connected:
            for p in self._producers.values():
                p.notify()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start working the configured queues (and maintenance). Idempotent."""
        if self._started:
            return
        pool = await self._get_pool()
        if self.queues and pool.get_max_size() < 2:
            raise ConfigError(
                "a client that works queues needs a pool of at least 2 connections: the "
                "notifier holds one for LISTEN, claims and completions need another"
            )
        if self._check_schema:
            from ._migrate import check_schema

            async with pool.acquire() as conn:
                self.liveness = await check_schema(conn, self.schema)
            if not self.liveness and self.queues:
                log.warning(
                    "schema %r has River's tables but not pyriver_async's client liveness "
                    "table: jobs of a dead process are rescued by age only "
                    "(rescue_stuck_jobs_after). `pyriver migrate up` adds it.",
                    self.schema,
                )
        self._started = True
        self._stopping = None
        if not self.queues and not self._maintenance_enabled:
            return
        self._completer = Completer(
            pool,
            self._driver,
            flush_interval=self._flush_interval,
            max_batch=self._batch_size,
            on_flushed=self._on_flushed,
        )
        self._completer.start()
        self._executor = Executor(
            self, self.workers, job_timeout=self.job_timeout, retry_policy=self._retry_policy
        )
        async with pool.acquire() as conn:
            paused = {
                r[0]
                for r in await conn.fetch(
                    self._driver.sql["queue_paused_many"], [*self.queues, "*"]
                )
            }
        for name, cfg in self.queues.items():
            p = Producer(
                name,
                cfg,
                pool=pool,
                driver=self._driver,
                executor=self._executor,
                completer=self._completer,
                client_id=self.id,
                fetch_cooldown=self.fetch_cooldown,
                poll_interval=self.fetch_poll_interval,
                max_completer_backlog=max(10 * self._batch_size, 2 * cfg.max_workers),
            )
            p.paused = name in paused
            self._producers[name] = p
        channels = [
            self._driver.insert_channel,
            self._driver.control_channel,
            self._driver.leadership_channel,
        ]
        self._notifier = Notifier(
            pool, channels, self._on_notification, self._on_notifier_connected
        )
        self._notifier.start()
        for p in self._producers.values():
            p.start()
            p.notify()  # claim what is already waiting
        if self._maintenance_enabled:
            from ._maintenance import Maintenance

            self._maintenance = Maintenance(self, pool, self._driver, self.periodic_jobs)
            await self._maintenance.start()
        self._monitor = asyncio.create_task(self._watch_loop(), name="pyriver-loop-monitor")

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
        if not self._started:
            return
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._do_shutdown(hard))
        elif hard:
            for p in self._producers.values():
                p.cancel_running()
        await asyncio.shield(self._stopping)

    async def _do_shutdown(self, hard: bool) -> None:
        t0 = time.monotonic()
        for p in self._producers.values():
            p.stop_fetching()
        for p in self._producers.values():
            await p.wait_fetch_loop()
        if not hard and any(p.running for p in self._producers.values()):
            waiting = asyncio.gather(*(p.wait_jobs() for p in self._producers.values()))
            try:
                await asyncio.wait_for(waiting, self.soft_stop_timeout)
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
                await asyncio.wait_for(waiting, self.hard_stop_timeout)
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
        if self._completer is not None:
            try:
                await asyncio.wait_for(self._completer.stop(), max(self.hard_stop_timeout, 5.0))
            except TimeoutError:
                log.error(
                    "could not write %d job outcomes before shutdown; those jobs will be rescued",
                    self._completer.backlog,
                )
                self._completer.abort()
        if self._maintenance is not None:
            await self._maintenance.stop()
            self._maintenance = None
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
        await self._release_spares()
        if self._owns_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def close(self) -> None:
        """Stop (softly) and release the pool the client made. Same as :meth:`stop`."""
        await self.stop()
        await self._release_spares()
        if self._owns_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

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
                names = [f"{job_id} ({kind})" for job_id, kind in suspects.items()]
                log.error(
                    "the event loop was blocked for %.1fs; a job may be doing blocking work. "
                    "Jobs running during the block: %s",
                    lag,
                    ", ".join(names[:20]) or "none",
                )

    # -- introspection (tests, UI) -----------------------------------------------------

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
