"""Read-only insights into a job table: bounded counts, throughput, per-kind timings,
error groups and health checks, for dashboards and the web UI.

Every query behind these methods is bounded and served by one of River's indexes (see
``_driver/sql/insights.sql``), so calling them often on a table of millions of jobs
stays cheap. Each method takes ``conn=`` (an asyncpg connection, e.g. inside a
read-only transaction of the caller's) like the control API does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from ._driver import Executor
from ._driver.connections import ControlConnection
from ._errors import JobNotFoundError
from ._job import Job, JobState
from ._rows import read_job

if TYPE_CHECKING:
    from ._client import Client

__all__ = [
    "ACTIVE_STATES",
    "DURATION_BOUNDS_MS",
    "FINAL_STATES",
    "Breakdown",
    "BreakdownRow",
    "ErrorGroup",
    "HealthReport",
    "Insights",
    "JobDocuments",
    "KindSample",
    "LeaderStatus",
    "LivenessRow",
    "OldTransaction",
    "QueueStats",
    "RunningJob",
    "ServerInfo",
    "StateCounts",
    "TableHealth",
    "ThroughputBin",
    "fingerprint",
    "percentile",
]

#: States a job waits or runs in, and the states it ends in.
ACTIVE_STATES = (
    JobState.AVAILABLE,
    JobState.SCHEDULED,
    JobState.RETRYABLE,
    JobState.RUNNING,
    JobState.PENDING,
)
FINAL_STATES = (JobState.COMPLETED, JobState.CANCELLED, JobState.DISCARDED)

#: Upper bounds (ms) of the duration buckets: 20 ms x 1.5**i up to about 336 s. Bucket
#: 0 holds durations under 20 ms and the last one everything slower than 336 s;
#: buckets add up across windows and processes, unlike percentiles.
DURATION_BOUNDS_MS: tuple[float, ...] = tuple(20.0 * 1.5**i for i in range(25))

_STATE = {s.value: s for s in JobState}
_json = msgspec.json.Decoder(dict[str, Any])


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StateCounts:
    """Jobs per state. ``counts[s]`` is exact unless ``s in capped`` (then at least that
    many; final states are counted only when a ``final_cap`` was given). ``estimates``
    are the planner's (from table statistics; empty before the first ANALYZE);
    ``recent`` are exact counts of jobs finalized in the last window."""

    counts: Mapping[JobState, int]
    capped: frozenset[JobState]
    estimates: Mapping[JobState, int]
    estimated_total: int | None
    recent: Mapping[JobState, int]
    window: timedelta


@dataclass(frozen=True)
class ThroughputBin:
    """Jobs finalized in ``[start, start + width)``."""

    start: datetime
    completed: int = 0
    cancelled: int = 0
    discarded: int = 0

    @property
    def total(self) -> int:
        return self.completed + self.cancelled + self.discarded


@dataclass(frozen=True)
class BreakdownRow:
    """Jobs of one queue, kind and final state finalized in one minute, whose run and
    wait times fell in the given buckets of :data:`DURATION_BOUNDS_MS` (None: the job
    never ran)."""

    minute: datetime
    queue: str
    kind: str
    state: JobState
    run_bucket: int | None
    wait_bucket: int | None
    n: int


@dataclass(frozen=True)
class Breakdown:
    """The jobs finalized in a window; ``sampled`` when only the newest ``limit`` were read."""

    rows: list[BreakdownRow]
    sampled: bool


@dataclass(frozen=True)
class QueueStats:
    """One queue: its ``river_queue`` row (``known``), pause state, jobs per active state
    (each capped at the cap given; ``capped`` when one was) and its lag: how long its
    oldest due available job has waited."""

    name: str
    known: bool
    paused_at: datetime | None
    counts: Mapping[JobState, int]
    capped: bool
    lag: timedelta | None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


@dataclass(frozen=True)
class KindSample:
    """The newest jobs of one kind among the newest ``examined`` finalized rows:
    counts per state and run/wait time histograms (buckets of DURATION_BOUNDS_MS)."""

    kind: str
    examined: int
    counts: Mapping[JobState, int]
    run_histogram: list[int]
    wait_histogram: list[int]


@dataclass(frozen=True)
class ErrorGroup:
    """Jobs of one kind whose last error reads the same once numbers, ids and quoted
    values are blanked out (``fingerprint``)."""

    kind: str
    fingerprint: str
    message: str
    count: int
    states: Mapping[JobState, int]
    first_seen: datetime
    last_seen: datetime
    sample_job_id: int
    job_ids: list[int]


@dataclass(frozen=True)
class JobDocuments:
    """A job's args and metadata as stored (JSON text, numbers exact), or None when a
    document is larger than the limit asked for; sizes in bytes as stored."""

    args: str | None
    args_bytes: int
    metadata: str | None
    metadata_bytes: int


@dataclass(frozen=True)
class LeaderStatus:
    leader_id: str
    elected_at: datetime
    expires_at: datetime
    remaining: timedelta

    @property
    def expired(self) -> bool:
        return self.remaining < timedelta(0)


@dataclass(frozen=True)
class LivenessRow:
    """A client's liveness row (pyriver_async's ``pyriver_client`` table)."""

    id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    queues: list[str]
    heartbeat_age: timedelta


@dataclass(frozen=True)
class RunningJob:
    id: int
    kind: str
    queue: str
    attempted_at: datetime | None
    client_id: str | None


@dataclass(frozen=True)
class TableHealth:
    total_bytes: int
    table_bytes: int
    live_rows: int | None
    dead_rows: int | None
    last_autovacuum: datetime | None
    last_vacuum: datetime | None
    last_autoanalyze: datetime | None
    indexes: Mapping[str, int]

    @property
    def dead_ratio(self) -> float | None:
        if self.live_rows is None or self.dead_rows is None:
            return None
        total = self.live_rows + self.dead_rows
        return self.dead_rows / total if total else 0.0


@dataclass(frozen=True)
class OldTransaction:
    pid: int
    user: str | None
    application_name: str | None
    state: str | None
    age: timedelta
    holds_xmin: bool
    query: str | None


@dataclass(frozen=True)
class ServerInfo:
    server_version: str
    migrations: Mapping[str, int]


@dataclass(frozen=True)
class HealthReport:
    """What can go wrong with a queue in PostgreSQL, read at ``at``.

    ``orphans`` are running jobs whose client's heartbeat is stale or gone (only with
    liveness rows); ``long_running`` have run for longer than the threshold asked for;
    ``scheduler_lag`` maps queues to their oldest overdue scheduled/retryable job;
    ``cleaner_oldest`` is the oldest finalized row of each final state.
    """

    at: datetime
    leader: LeaderStatus | None
    liveness: bool
    clients: list[LivenessRow]
    running: list[RunningJob]
    running_capped: bool
    orphans: list[RunningJob]
    long_running: list[RunningJob]
    scheduler_lag: Mapping[str, datetime]
    cleaner_oldest: Mapping[JobState, datetime | None]
    table: TableHealth | None
    old_transactions: list[OldTransaction]


_FP_PATTERNS = (
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "'?'"),
    (re.compile(r'"(?:[^"\\]|\\.)*"'), '"?"'),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)


def fingerprint(message: str) -> str:
    """The first line of an error message with quoted values, UUIDs, hex strings and
    numbers replaced by placeholders: errors that differ only in those group together."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, repl in _FP_PATTERNS:
        line = pattern.sub(repl, line)
    return line[:300]


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0-1) of a duration histogram, as the upper bound (ms) of the
    bucket it falls in (``inf`` for the last bucket); None for an empty histogram."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(histogram):
        seen += n
        if seen >= rank and n:
            return DURATION_BOUNDS_MS[i] if i < len(DURATION_BOUNDS_MS) else float("inf")
    return float("inf")


class Insights:
    """Read-only insights over the tables of ``client``'s schema.

    ``Insights(client)`` works for any client, insert-only ones included. Every method
    takes ``conn=`` to run on the caller's asyncpg connection (inside its transaction,
    e.g. a read-only one with a statement timeout); without it, the client's pool.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    async def _ex(self, conn: ControlConnection | None) -> Executor:
        return await self._client._db(conn)

    # -- counts ------------------------------------------------------------------

    async def state_counts(
        self,
        *,
        cap: int = 100_000,
        final_cap: int = 10_000,
        window: timedelta = timedelta(hours=1),
        conn: ControlConnection | None = None,
    ) -> StateCounts:
        """Jobs per active state (exact up to ``cap``) and per final state (exact up to
        ``final_cap``: finalized jobs pile up, their estimate serves above it), planner
        estimates for every state, and exact counts of the jobs finalized during the
        last ``window``."""
        if cap < 1 or final_cap < 0:
            raise ValueError("cap must be at least 1 and final_cap at least 0")
        ex = await self._ex(conn)
        rows = await ex.insights_state_counts(states=[s.value for s in ACTIVE_STATES], cap=cap + 1)
        counts = {_STATE[r["state"]]: min(int(r["n"]), cap) for r in rows}
        capped = {_STATE[r["state"]] for r in rows if r["n"] > cap}
        if final_cap:
            final = await ex.insights_state_counts(
                states=[s.value for s in FINAL_STATES], cap=final_cap + 1
            )
            counts.update({_STATE[r["state"]]: min(int(r["n"]), final_cap) for r in final})
            capped.update(_STATE[r["state"]] for r in final if r["n"] > final_cap)
        recent = {s: 0 for s in FINAL_STATES}
        for r in await ex.insights_final_window(since=_utcnow() - window):
            recent[_STATE[r["state"]]] = int(r["n"])
        estimates, total = self._estimates(await ex.insights_estimate())
        return StateCounts(counts, frozenset(capped), estimates, total, recent, window)

    @staticmethod
    def _estimates(row: Mapping[str, Any] | None) -> tuple[dict[JobState, int], int | None]:
        if row is None or row["reltuples"] is None or row["reltuples"] < 0:
            return {}, None
        total = int(row["reltuples"])
        out = {s: 0 for s in JobState}
        for name, freq in zip(row["states"] or (), row["freqs"] or (), strict=False):
            if name in _STATE:
                out[_STATE[name]] = round(total * freq)
        return out, total

    async def max_id(self, *, conn: ControlConnection | None = None) -> int | None:
        """The newest job id (None for an empty table)."""
        return await (await self._ex(conn)).insights_max_id()

    # -- throughput ----------------------------------------------------------------

    async def throughput(
        self,
        since: datetime,
        until: datetime | None = None,
        *,
        bin: timedelta = timedelta(minutes=1),
        conn: ControlConnection | None = None,
    ) -> list[ThroughputBin]:
        """Jobs finalized per ``bin`` in ``[since, until)``, every bin present (zeros too)."""
        until = until or _utcnow()
        width = bin.total_seconds()
        if width <= 0:
            raise ValueError("bin must be positive")
        if (until - since).total_seconds() / width > 10_000:
            raise ValueError("at most 10,000 bins")
        rows = await (await self._ex(conn)).insights_throughput(since=since, until=until, bin=width)
        start = datetime.fromtimestamp((since.timestamp() // width) * width, UTC)
        bins: dict[datetime, dict[str, int]] = {}
        t = start
        while t < until:
            bins[t] = {}
            t += bin
        for r in rows:
            bins.setdefault(r["bin"], {})[r["state"]] = int(r["n"])
        return [ThroughputBin(t, **v) for t, v in sorted(bins.items())]

    async def breakdown(
        self,
        since: datetime,
        until: datetime | None = None,
        *,
        limit: int = 100_000,
        conn: ControlConnection | None = None,
    ) -> Breakdown:
        """Jobs finalized in ``[since, until)`` per queue, kind, state and duration
        bucket (reads those rows: keep windows short); the newest ``limit`` at most."""
        rows = await (await self._ex(conn)).insights_breakdown(
            since=since, until=until or _utcnow(), bounds=DURATION_BOUNDS_MS, limit=limit
        )
        out = [
            BreakdownRow(
                r["minute"],
                r["queue"],
                r["kind"],
                _STATE[r["state"]],
                r["run_bucket"],
                r["wait_bucket"],
                int(r["n"]),
            )
            for r in rows
        ]
        return Breakdown(out, sum(r.n for r in out) >= limit)

    # -- queues and kinds -------------------------------------------------------------

    async def queue_names(self, *, conn: ControlConnection | None = None) -> list[str]:
        """Every queue that has a ``river_queue`` row or at least one job."""
        ex = await self._ex(conn)
        names = {r["queue"] for r in await ex.insights_queue_states(limit=10_000)}
        names.update(r["name"] for r in await ex.insights_queues())
        return sorted(names)

    async def queue_stats(
        self,
        queues: Sequence[str] | None = None,
        *,
        cap: int = 100_000,
        conn: ControlConnection | None = None,
    ) -> list[QueueStats]:
        """Each queue (all of them by default) with its jobs per active state (capped),
        pause state and lag, sorted by name."""
        ex = await self._ex(conn)
        table = {r["name"]: r for r in await ex.insights_queues()}
        if queues is None:
            names = {r["queue"] for r in await ex.insights_queue_states(limit=10_000)}
            names.update(table)
            queues = sorted(names)
        queues = list(queues)
        counts: dict[str, dict[JobState, int]] = {q: {} for q in queues}
        capped: set[str] = set()
        for r in await ex.insights_queue_counts(queues=queues, cap=cap + 1):
            n = int(r["n"])
            if n > cap:
                capped.add(r["queue"])
            counts[r["queue"]][_STATE[r["state"]]] = min(n, cap)
        now = _utcnow()
        lag = {r["queue"]: now - r["oldest"] for r in await ex.insights_queue_lag(queues=queues)}
        out = []
        for name in queues:
            row = table.get(name)
            out.append(
                QueueStats(
                    name=name,
                    known=row is not None,
                    paused_at=row["paused_at"] if row else None,
                    counts=counts[name],
                    capped=name in capped,
                    lag=max(lag[name], timedelta(0)) if name in lag else None,
                    metadata=_json.decode(row["metadata"]) if row and row["metadata"] else {},
                    created_at=row["created_at"] if row else None,
                    updated_at=row["updated_at"] if row else None,
                )
            )
        return out

    async def kinds(self, *, limit: int = 2000, conn: ControlConnection | None = None) -> list[str]:
        """Every distinct job kind (one index descent per kind), sorted."""
        return await (await self._ex(conn)).insights_kinds(limit=limit)

    async def kind_sample(
        self,
        kind: str,
        *,
        budget: int = 50_000,
        max: int = 20_000,
        conn: ControlConnection | None = None,
    ) -> KindSample:
        """Timings of the newest jobs of ``kind`` among the newest ``budget`` completed
        and ``budget`` discarded jobs (at most ``max`` of them)."""
        rows = await (await self._ex(conn)).insights_kind_sample(
            kind=kind, budget=budget, max=max, bounds=DURATION_BOUNDS_MS
        )
        n = len(DURATION_BOUNDS_MS) + 1
        run, wait = [0] * n, [0] * n
        counts: dict[JobState, int] = {}
        examined = 0
        for r in rows:
            examined = int(r["examined"])
            c = int(r["n"])
            counts[_STATE[r["state"]]] = counts.get(_STATE[r["state"]], 0) + c
            run[min(int(r["run_bucket"] or 0), n - 1)] += c
            wait[min(int(r["wait_bucket"] or 0), n - 1)] += c
        return KindSample(kind, examined, counts, run, wait)

    # -- jobs ----------------------------------------------------------------------

    async def claim_order(
        self,
        queue: str,
        *,
        limit: int = 20,
        after: tuple[int, datetime, int] | None = None,
        conn: ControlConnection | None = None,
    ) -> list[Job[Any]]:
        """The available jobs of ``queue`` in the order its producers will claim them
        (priority, scheduled_at, id), after ``after`` = (priority, scheduled_at, id)."""
        p, s, i = after if after is not None else (None, None, None)
        rows = await (await self._ex(conn)).insights_claim_order(
            queue=queue, limit=limit, priority=p, scheduled_at=s, id=i
        )
        return [read_job(r) for r in rows]

    async def job_documents(
        self, job_id: int, *, max_bytes: int = 1 << 20, conn: ControlConnection | None = None
    ) -> JobDocuments:
        """A job's args and metadata as stored JSON text (None above ``max_bytes``)."""
        row = await (await self._ex(conn)).insights_job_documents(id=job_id, max_bytes=max_bytes)
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return JobDocuments(
            row["args"], int(row["args_bytes"]), row["metadata"], int(row["metadata_bytes"])
        )

    async def job_document(
        self, job_id: int, which: str, *, conn: ControlConnection | None = None
    ) -> str:
        """A job's whole ``"args"`` or ``"metadata"`` as stored JSON text."""
        if which not in ("args", "metadata"):
            raise ValueError("which is 'args' or 'metadata'")
        doc = await (await self._ex(conn)).insights_job_document_full(id=job_id, which=which)
        if doc is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return doc

    async def unique_conflict(
        self, job: Job[Any], *, conn: ControlConnection | None = None
    ) -> tuple[int, JobState] | None:
        """The job holding the unique slot that ``job`` would need to become active again."""
        if job.unique_key is None or job.unique_states is None:
            return None
        row = await (await self._ex(conn)).insights_unique_conflict(
            unique_key=job.unique_key, id=job.id
        )
        return None if row is None else (int(row["id"]), _STATE[row["state"]])

    async def periodic_runs(
        self, periodic_id: str, *, limit: int = 30, conn: ControlConnection | None = None
    ) -> list[tuple[int, JobState, datetime, datetime | None]]:
        """The latest runs of a periodic job: (id, state, created_at, finalized_at)."""
        match = msgspec.json.encode({"river:periodic_job_id": periodic_id}).decode()
        rows = await (await self._ex(conn)).insights_periodic_runs(match=match, limit=limit)
        return [(r["id"], _STATE[r["state"]], r["created_at"], r["finalized_at"]) for r in rows]

    async def error_groups(
        self,
        *,
        since: datetime | None = None,
        limit: int = 10_000,
        conn: ControlConnection | None = None,
    ) -> list[ErrorGroup]:
        """The newest ``limit`` discarded jobs (since ``since``) and the first ``limit``
        retryable ones, grouped by kind and :func:`fingerprint` of their last error,
        biggest group first."""
        ex = await self._ex(conn)
        since = since or datetime(1970, 1, 1, tzinfo=UTC)
        rows = await ex.insights_discarded_errors(since=since, limit=limit)
        rows += await ex.insights_retryable_errors(limit=limit)
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            msg = r["error"] or ""
            key = (r["kind"], fingerprint(msg))
            g = groups.get(key)
            at = r["at"]
            if g is None:
                g = groups[key] = {
                    "message": msg.strip().splitlines()[0] if msg.strip() else "",
                    "states": {},
                    "first": at,
                    "last": at,
                    "ids": [],
                }
            st = _STATE[r["state"]]
            g["states"][st] = g["states"].get(st, 0) + 1
            g["first"] = min(g["first"], at)
            g["last"] = max(g["last"], at)
            g["ids"].append(int(r["id"]))
        out = [
            ErrorGroup(
                kind=k,
                fingerprint=fp,
                message=g["message"],
                count=len(g["ids"]),
                states=g["states"],
                first_seen=g["first"],
                last_seen=g["last"],
                sample_job_id=max(g["ids"]),
                job_ids=sorted(g["ids"]),
            )
            for (k, fp), g in groups.items()
        ]
        out.sort(key=lambda g: (-g.count, g.kind, g.fingerprint))
        return out

    # -- processes and health -----------------------------------------------------------

    async def leader(self, *, conn: ControlConnection | None = None) -> LeaderStatus | None:
        """The leader row (None when no client leads)."""
        row = await (await self._ex(conn)).insights_leader()
        if row is None:
            return None
        return LeaderStatus(
            row["leader_id"],
            row["elected_at"],
            row["expires_at"],
            timedelta(seconds=row["remaining"]),
        )

    async def liveness(self, *, conn: ControlConnection | None = None) -> list[LivenessRow] | None:
        """The clients' liveness rows; None on a database without the liveness table
        (River's own, or one not migrated by pyriver_async)."""
        ex = await self._ex(conn)
        if not await ex.insights_liveness_table():
            return None
        return [
            LivenessRow(
                r["id"],
                r["hostname"],
                r["pid"],
                r["started_at"],
                r["heartbeat_at"],
                list(r["queues"] or ()),
                timedelta(seconds=max(r["age"], 0.0))
                if r["age"] != float("inf")
                else timedelta.max,
            )
            for r in await ex.insights_clients()
        ]

    async def running(
        self, *, limit: int = 10_000, conn: ControlConnection | None = None
    ) -> list[RunningJob]:
        """Running jobs, longest running first, with the client that claimed each."""
        rows = await (await self._ex(conn)).insights_running(limit=limit)
        return [
            RunningJob(r["id"], r["kind"], r["queue"], r["attempted_at"], r["client_id"])
            for r in rows
        ]

    async def ping(self, *, conn: ControlConnection | None = None) -> bool:
        """True when the database answers a ``SELECT 1``."""
        return await (await self._ex(conn)).insights_ping()

    async def server_info(self, *, conn: ControlConnection | None = None) -> ServerInfo:
        """PostgreSQL's version and the newest applied migration of each line."""
        row = await (await self._ex(conn)).insights_server()
        assert row is not None
        return ServerInfo(row["server_version"], _json.decode(row["migrations"] or "{}"))

    async def table_health(self, *, conn: ControlConnection | None = None) -> TableHealth | None:
        """river_job's size, its indexes' sizes, dead row versions and vacuum times."""
        row = await (await self._ex(conn)).insights_table_health()
        if row is None:
            return None
        indexes = {i["name"]: int(i["bytes"]) for i in msgspec.json.decode(row["indexes"] or "[]")}
        return TableHealth(
            int(row["total_bytes"]),
            int(row["table_bytes"]),
            row["n_live_tup"],
            row["n_dead_tup"],
            row["last_autovacuum"],
            row["last_vacuum"],
            row["last_autoanalyze"],
            indexes,
        )

    async def old_transactions(
        self,
        *,
        older_than: timedelta = timedelta(minutes=5),
        conn: ControlConnection | None = None,
    ) -> list[OldTransaction]:
        """Transactions of this database open for longer than ``older_than``: while they
        last, VACUUM cannot remove the job rows that died after they began."""
        rows = await (await self._ex(conn)).insights_old_xmin(older_than=older_than.total_seconds())
        return [
            OldTransaction(
                r["pid"],
                r["usename"],
                r["application_name"],
                r["state"],
                timedelta(seconds=r["age"]),
                bool(r["holds_xmin"]),
                r["query"],
            )
            for r in rows
        ]

    async def health(
        self,
        *,
        dead_client_after: timedelta = timedelta(seconds=30),
        long_running_after: timedelta = timedelta(hours=1),
        scheduler_lag: timedelta = timedelta(seconds=30),
        old_transaction_after: timedelta = timedelta(minutes=5),
        running_limit: int = 10_000,
        conn: ControlConnection | None = None,
    ) -> HealthReport:
        """Every health check at once (a dozen small queries)."""
        ex = await self._ex(conn)
        now = _utcnow()
        clients = await self.liveness(conn=conn)
        running = await self.running(limit=running_limit, conn=conn)
        alive = {c.id for c in clients or () if c.heartbeat_age <= dead_client_after}
        orphans = (
            [j for j in running if j.client_id is None or j.client_id not in alive]
            if clients is not None
            else []
        )
        long_running = [
            j
            for j in running
            if j.attempted_at is not None and now - j.attempted_at > long_running_after
        ]
        queues = await self.queue_names(conn=conn)
        lag = {
            r["queue"]: r["oldest"]
            for r in await ex.insights_scheduler_lag(
                queues=queues, lag=scheduler_lag.total_seconds()
            )
        }
        cleaner = {_STATE[r["state"]]: r["oldest"] for r in await ex.insights_cleaner_lag()}
        return HealthReport(
            at=now,
            leader=await self.leader(conn=conn),
            liveness=clients is not None,
            clients=clients or [],
            running=running,
            running_capped=len(running) >= running_limit,
            orphans=orphans,
            long_running=long_running,
            scheduler_lag=lag,
            cleaner_oldest=cleaner,
            table=await self.table_health(conn=conn),
            old_transactions=await self.old_transactions(
                older_than=old_transaction_after, conn=conn
            ),
        )
