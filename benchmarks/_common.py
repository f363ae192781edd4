"""Shared helpers of the benchmarks: throwaway databases, job loading, statistics,
terminal output, results files, the event loop, and probes into a running client.

Nothing here is part of pyriver_async's API; the benchmarks only use the library's
public surface, plus two clearly marked read-only probes (the SQL strings of
``pyriver_async._driver`` so the ceiling runs the very same statements, and a hook on
the client's completion callback to time the moment the last outcome is written).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec

import pyriver_async
from pyriver_async import JobArgs
from pyriver_async._driver.queries import Queries, Query
from pyriver_async._localdb import create_database, drop_database

__all__ = [
    "DB_PREFIX",
    "RESULTS_DIR",
    "CpuMeter",
    "FlushProbe",
    "LatencyArgs",
    "NoopArgs",
    "Progress",
    "Results",
    "StatementCounter",
    "add_common_args",
    "analyze",
    "bench_sql",
    "checkpoint",
    "fmt_int",
    "fmt_ms",
    "fmt_ratio",
    "latency_summary",
    "load_jobs",
    "maintenance_available",
    "make_pool",
    "median",
    "paired_ratio",
    "percentile",
    "print_table",
    "ratio",
    "reset_jobs",
    "run_main",
    "stdin_lines",
    "table_stats",
    "temp_database",
]

T = TypeVar("T")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DB_PREFIX = "pyriver_bench"

# The job kinds of the benchmarks. Drains use empty args (`{}`), latency jobs carry a
# sequence number so the worker can find the insert's send time.


class NoopArgs(JobArgs, kind="bench_noop"):
    """A job that does nothing: what the drain and insert benchmarks move around."""


class LatencyArgs(JobArgs, kind="bench_latency"):
    """A job that carries its sequence number, for insert→start latency."""

    n: int


def bench_sql() -> Queries:
    """The library's SQL for the public schema, as the ceiling must run it (each
    query's ``sql`` with ``bind(**params)`` for its positional arguments)."""
    return Queries.for_schema("public")


def maintenance_available() -> bool:
    """Whether this checkout has the maintenance services (leader, scheduler, ...)."""
    try:
        mod = __import__("pyriver_async._maintenance", fromlist=["Maintenance"])
    except ImportError:
        return False
    return hasattr(mod, "Maintenance")


# -- statistics ----------------------------------------------------------------------


def median(xs: Iterable[float]) -> float:
    data = list(xs)
    return statistics.median(data) if data else math.nan


def percentile(xs: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between ranks."""
    if not xs:
        return math.nan
    data = sorted(xs)
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of latencies given in seconds, in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": float(len(ms)),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
        "mean_ms": statistics.fmean(ms) if ms else math.nan,
    }


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def paired_ratio(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Median of the per-run ratios x[i] / y[i] of runs measured side by side (each
    pair saw the same moment of a shared machine's background load)."""
    pairs = [ratio(x, y) for x, y in zip(xs, ys, strict=False)]
    return median(p for p in pairs if not math.isnan(p))


def fmt_int(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def fmt_ratio(x: float, suffix: str = "") -> str:
    if math.isnan(x):
        return "-"
    return f"{x * 100:.0f}%{suffix}" if not suffix else f"{x:.2f}{suffix}"


# -- terminal output -----------------------------------------------------------------


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain aligned table on stdout: first column left, the others right."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        out = []
        for i, c in enumerate(r):
            out.append(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    print()
    print(title)
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))
    sys.stdout.flush()


class Progress:
    """One progress line on stderr: ``[name] step  ####......  12/30  4.1s``.

    On a terminal the line is rewritten in place; otherwise one line per step is
    printed (so CI logs stay readable).
    """

    def __init__(self, name: str, total_steps: int = 0) -> None:
        self.name = name
        self.total = total_steps
        self.done = 0
        self.t0 = time.monotonic()
        self._tty = sys.stderr.isatty()
        self._label = ""
        self._last_draw = 0.0

    def _bar(self) -> str:
        if self.total <= 0:
            return ""
        width = 24
        filled = min(width, round(width * self.done / self.total))
        return f" [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"

    def step(self, label: str) -> None:
        """A new step begins."""
        self._label = label
        self._draw(force=True, newline=not self._tty)

    def note(self, detail: str) -> None:
        """Detail of the current step (drawn on a terminal only, at most 10 times/s)."""
        if self._tty:
            self._draw(extra=detail)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw(force=True, newline=False)

    def _draw(self, *, force: bool = False, newline: bool = False, extra: str = "") -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        text = f"[{self.name}] {self._label}{self._bar()}  {now - self.t0:.1f}s"
        if extra:
            text += f"  {extra}"
        if self._tty:
            cols = 120
            with contextlib.suppress(OSError):
                cols = os.get_terminal_size(sys.stderr.fileno()).columns
            sys.stderr.write("\r\x1b[K" + text[: cols - 1])
        elif newline:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self._tty:
            sys.stderr.write("\r\x1b[K")
        sys.stderr.write(f"[{self.name}] done in {time.monotonic() - self.t0:.1f}s\n")
        sys.stderr.flush()


# -- results files -------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_mb() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for ln in f:
                if ln.startswith("MemTotal:"):
                    return int(ln.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mb": round(_mem_total_mb()),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


async def server_info(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        out: dict[str, Any] = {}
        for name in (
            "server_version",
            "fsync",
            "synchronous_commit",
            "autovacuum",
            "shared_buffers",
            "max_connections",
            "wal_level",
        ):
            out[name] = await conn.fetchval(f"SHOW {name}")
        return out
    finally:
        await conn.close()


class Results:
    """Collects what one benchmark invocation measured and writes it as JSON.

    ``benchmarks/results/<name>-<timestamp>.json`` and ``latest-<name>.json``:
    ``settings``, ``medians`` (the headline figures), ``runs`` (every run's raw
    figure), ``extra`` (curves, profiles...), versions, machine and date.
    """

    def __init__(self, name: str, settings: dict[str, Any], loop_name: str) -> None:
        self.name = name
        self.started = datetime.now(UTC)
        self.settings = dict(settings)
        self.settings["event_loop"] = loop_name
        self.medians: dict[str, Any] = {}
        self.runs: dict[str, list[Any]] = {}
        self.extra: dict[str, Any] = {}
        self.machine = machine_info()
        self.server: dict[str, Any] = {}
        self.notes: list[str] = []

    def add_run(self, key: str, value: Any) -> None:
        self.runs.setdefault(key, []).append(value)

    def to_dict(self) -> dict[str, Any]:
        load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
        machine = dict(self.machine)
        machine["loadavg_at_end"] = [round(x, 2) for x in load]
        return {
            "benchmark": self.name,
            "date": self.started.isoformat(timespec="seconds"),
            "duration_s": round((datetime.now(UTC) - self.started).total_seconds(), 1),
            "settings": self.settings,
            "medians": self.medians,
            "runs": self.runs,
            "extra": self.extra,
            "notes": self.notes,
            "versions": {
                "pyriver_async": pyriver_async.__version__,
                "git_commit": _git_commit(),
                "asyncpg": asyncpg.__version__,
                "msgspec": msgspec.__version__,
                "uvloop": _version("uvloop"),
                "python": platform.python_version(),
                "python_implementation": platform.python_implementation(),
                "postgresql": self.server.get("server_version"),
            },
            "postgresql_settings": self.server,
            "machine": machine,
        }

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        data = json.dumps(self.to_dict(), indent=2, sort_keys=False, default=_json_default)
        path = directory / f"{self.name}-{stamp}.json"
        for target in (path, directory / f"latest-{self.name}.json"):
            tmp = target.with_suffix(".json.tmp")
            tmp.write_text(data + "\n", encoding="utf-8")
            tmp.replace(target)
        return path


def _json_default(o: object) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# -- database ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def temp_database(prefix: str = DB_PREFIX) -> AsyncIterator[str]:
    """A fresh database migrated to the latest version; dropped on the way out."""
    url, name = await create_database(prefix)
    try:
        await pyriver_async.migrate(url)
        yield url
    finally:
        # Dropping must survive the cancellation that brought us here (Ctrl-C).
        await asyncio.shield(drop_database(name))


async def _no_reset(conn: asyncpg.Connection) -> None:
    # The same reset the client uses for the pool it makes itself: no round trip
    # unless the connection was left inside a transaction.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def make_pool(url: str, size: int) -> asyncpg.Pool:
    """A pool made the way ``Client(dsn)`` makes its own, with every connection
    opened up front (so no connect lands inside a timed section)."""
    pool = await asyncpg.create_pool(url, min_size=size, max_size=size, reset=_no_reset)
    assert pool is not None
    return pool


async def reset_jobs(conn: asyncpg.Connection) -> None:
    """Empty the job tables (new files for the table and its indexes)."""
    await conn.execute(
        "TRUNCATE river_job, river_queue, river_leader;"
        "DO $$ BEGIN IF to_regclass('pyriver_client') IS NOT NULL THEN "
        "TRUNCATE pyriver_client; END IF; END $$;"
    )


async def analyze(conn: asyncpg.Connection) -> None:
    await conn.execute("ANALYZE river_job")


async def checkpoint(conn: asyncpg.Connection) -> None:
    """Write dirty buffers now, so that a checkpoint is less likely inside a timed run."""
    with contextlib.suppress(asyncpg.PostgresError):
        await conn.execute("CHECKPOINT")


async def load_jobs(
    conn: asyncpg.Connection,
    n: int,
    *,
    queue: str = "default",
    kind: str = "bench_noop",
    state: str = "available",
    chunk: int = 200_000,
) -> None:
    """Insert ``n`` jobs server-side (no NOTIFY), in chunks, then ANALYZE.

    ``state='completed'`` rows get ``finalized_at``/``attempted_at`` so they look
    like jobs that went through.
    """
    finalized = state in ("completed", "cancelled", "discarded")
    sql = """
        INSERT INTO river_job (args, kind, max_attempts, metadata, priority, queue,
            scheduled_at, state, attempt, attempted_at, finalized_at)
        SELECT '{}'::jsonb, $1::text, 25, '{}'::jsonb, 1, $2::text,
            now() - interval '1 second', $3::river_job_state,
            CASE WHEN $4 THEN 1 ELSE 0 END,
            CASE WHEN $4 THEN now() END, CASE WHEN $4 THEN now() END
        FROM generate_series(1, $5::int)
    """
    left = n
    while left > 0:
        k = min(chunk, left)
        await conn.execute(sql, kind, queue, state, finalized, k)
        left -= k
    await analyze(conn)


async def table_stats(conn: asyncpg.Connection) -> dict[str, Any]:
    """Sizes and tuple counts of river_job and its indexes (bloat after long runs)."""
    row = await conn.fetchrow(
        """
        SELECT pg_relation_size('river_job') AS table_bytes,
               pg_indexes_size('river_job') AS indexes_bytes,
               pg_total_relation_size('river_job') AS total_bytes,
               s.n_live_tup, s.n_dead_tup
        FROM pg_stat_user_tables s WHERE s.relname = 'river_job'
        """
    )
    idx = await conn.fetch(
        """
        SELECT indexrelname AS name, pg_relation_size(indexrelid) AS bytes
        FROM pg_stat_user_indexes WHERE relname = 'river_job' ORDER BY indexrelname
        """
    )
    out: dict[str, Any] = dict(row) if row is not None else {}
    out["rows"] = await conn.fetchval("SELECT count(*) FROM river_job")
    out["indexes"] = {r["name"]: r["bytes"] for r in idx}
    return out


# -- CPU -------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (0 when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan, math.nan
    total = sum(vals[:8])
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (total - idle) / _TICK, total / _TICK


class CpuMeter:
    """CPU used during a timed section by this process, by this database's PostgreSQL
    backends (plus the server's WAL writer, checkpointer and background writer), and
    by the whole machine — to tell a Python-bound run from a database-bound one."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self._t0 = 0.0
        self._self0 = 0.0
        self._pg0 = 0.0
        self._m0 = (0.0, 0.0)
        self.result: dict[str, float] = {}

    async def find_backends(self, conn: Any) -> None:
        """Note the backends to watch (``conn``: a connection of the database measured)."""
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "OR backend_type IN ('walwriter', 'checkpointer', 'background writer')"
        )
        self.pids = [int(r["pid"]) for r in rows]

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._self0 = time.process_time()
        self._pg0 = sum(_proc_cpu(p) for p in self.pids)
        self._m0 = _machine_busy()

    def stop(self) -> dict[str, float]:
        """End the section (before the watched connections close); also kept in ``result``."""
        wall = time.monotonic() - self._t0
        busy, total = _machine_busy()
        cores = os.cpu_count() or 1
        py = (time.process_time() - self._self0) / wall
        pg = (sum(_proc_cpu(p) for p in self.pids) - self._pg0) / wall
        machine = (busy - self._m0[0]) / max(total - self._m0[1], 1e-9)
        self.result = {
            "wall_s": round(wall, 3),
            "python_process_core_share": round(py, 3),
            "postgres_core_share": round(pg, 3),
            "machine_busy_share": round(machine, 3),
            # what everything else on the machine used meanwhile (other users, tests...)
            "others_core_share": round(max(machine * cores - py - pg, 0.0), 3),
            "machine_cores": cores,
        }
        return self.result


# -- probes ----------------------------------------------------------------------------


@dataclass
class FlushProbe:
    """Counts the outcomes a client has written and when the last write finished.

    It wraps the client's completion callback (called after each completer flush),
    so the drain's end is the moment the last outcome was committed — without
    subscribing to events, which would add work per job.
    """

    target: int = 0
    count: int = 0
    first: float = math.nan
    last: float = math.nan
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def attach(self, client: pyriver_async.Client) -> None:
        original: Callable[[list[Any]], None] = client._on_flushed

        def hook(outcomes: list[Any]) -> None:
            now = time.monotonic()
            if self.count == 0:
                self.first = now
            self.count += len(outcomes)
            self.last = now
            if self.target and self.count >= self.target:
                self.reached.set()
            original(outcomes)

        # Must be in place before client.start(): the completer takes the callback then.
        setattr(client, "_on_flushed", hook)  # noqa: B010 - shadows the method on purpose

    def reset(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.first = self.last = math.nan
        self.reached.clear()


class StatementCounter:
    """Counts the statements this process's asyncpg connections send while it is
    entered (``with StatementCounter(): ...``), by kind.

    A client-side probe: the methods through which asyncpg sends a statement
    (``execute``, ``fetch``, ``fetchrow``, ``fetchval``, ``executemany``, the COPY
    methods) are wrapped on ``asyncpg.Connection`` for the duration, which covers
    connections of any pool (a pool's connection proxy calls them) and asyncpg's own
    statements: a pool's default reset on release (``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL``, one round trip counted once, as ``reset``) and
    a transaction's ``BEGIN``/``COMMIT``/``ROLLBACK``, and the type introspection a
    new connection runs before its first query on an enum or array type (counted as
    ``introspection``; asyncpg's private ``_introspect_types``, wrapped when present).
    Each statement of the library is counted under its name in ``Queries``
    (``job_claim``, ``job_complete_many``, ...); anything else as ``other``. The
    wrapper costs well under a microsecond per statement. The server cannot count for
    us here: pg_stat_statements is not preloaded on the bench server, and its activity
    counters count transactions or rows, not statements (checked once against
    ``pg_stat_database.xact_commit``: the two agree but for the benchmark's own few).
    """

    _METHODS = (
        "execute",
        "executemany",
        "fetch",
        "fetchrow",
        "fetchval",
        "copy_records_to_table",
        "copy_to_table",
        "copy_from_query",
        "copy_from_table",
    )
    _RESET = ("SELECT pg_advisory_unlock_all", "CLOSE ALL", "UNLISTEN *", "RESET ALL")

    def __init__(self, queries: Queries | None = None) -> None:
        q = queries if queries is not None else bench_sql()
        self._names: dict[str, str] = {}
        for f in dataclasses.fields(q):
            value = getattr(q, f.name)
            if isinstance(value, Query):
                self._names[value.sql] = f.name
        self.counts: Counter[str] = Counter()
        self._saved: dict[str, Any] = {}

    def kind(self, query: object) -> str:
        if not isinstance(query, str):
            return "other"
        name = self._names.get(query)
        if name is not None:
            return name
        head = query.lstrip()
        if head.startswith(self._RESET):
            return "reset"
        word = head.split(None, 1)[0].upper().rstrip(";") if head else ""
        if word in ("BEGIN", "COMMIT", "ROLLBACK", "LISTEN", "UNLISTEN"):
            return word.lower()
        return "other"

    def __enter__(self) -> StatementCounter:
        counts, kind = self.counts, self.kind
        cls = asyncpg.Connection
        for method in self._METHODS:
            original = getattr(cls, method)
            self._saved[method] = original

            def wrap(original: Any, copy: bool) -> Any:
                async def counted(conn: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                    counts["copy" if copy else kind(query)] += 1
                    return await original(conn, query, *args, **kwargs)

                return counted

            setattr(cls, method, wrap(original, method.startswith("copy_")))
        introspect = getattr(cls, "_introspect_types", None)
        if introspect is not None:
            self._saved["_introspect_types"] = introspect

            async def introspected(conn: Any, *args: Any, **kwargs: Any) -> Any:
                counts["introspection"] += 1
                return await introspect(conn, *args, **kwargs)

            cls._introspect_types = introspected  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        for method, original in self._saved.items():
            setattr(asyncpg.Connection, method, original)
        self._saved.clear()

    def summary(self, jobs: int, per: int = 20_000) -> dict[str, float]:
        """Claims, completion statements, reset round trips and the rest, scaled to
        ``per`` jobs, and jobs per claim / per claim-or-completion statement."""
        claims = sum(v for k, v in self.counts.items() if "claim" in k)
        completes = sum(
            v
            for k, v in self.counts.items()
            if k.startswith(("job_complete", "job_set_outcome", "job_delete", "job_finish"))
        )
        both = sum(
            v for k, v in self.counts.items() if "claim" in k and k.startswith("job_complete")
        )
        scale = per / jobs if jobs else math.nan
        total = sum(self.counts.values())
        work = claims + completes - both
        return {
            "claims": claims * scale,
            "completions": completes * scale,
            "resets": self.counts["reset"] * scale,
            "others": (total - work - self.counts["reset"]) * scale,
            "total": total * scale,
            "jobs_per_claim": jobs / claims if claims else math.nan,
            "jobs_per_statement": jobs / work if work else math.nan,
        }


# -- running ---------------------------------------------------------------------------


def add_common_args(p: argparse.ArgumentParser, *, runs: int = 3) -> None:
    p.add_argument("--runs", type=int, default=runs, help=f"runs per figure (default {runs})")
    p.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop")
    p.add_argument("--no-json", action="store_true", help="do not write a results file")
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up after this many seconds (default 600)",
    )


async def stdin_lines() -> asyncio.StreamReader:
    """Standard input as an asyncio stream (no reader thread, so profiles show one thread)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _loop_factory(no_uvloop: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    if not no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop, f"uvloop {_version('uvloop')}"
    return None, "asyncio (default loop)"


def loop_name(no_uvloop: bool) -> str:
    return _loop_factory(no_uvloop)[1]


def run_main(make: Callable[[str], Awaitable[T]], *, no_uvloop: bool, timeout: float) -> T:
    """Run ``make(loop_name)`` on uvloop when installed; SIGTERM and the timeout cancel
    it cleanly (so its temporary database is dropped)."""
    factory, name = _loop_factory(no_uvloop)

    async def guarded() -> T:
        task = asyncio.ensure_future(make(name))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await asyncio.wait_for(task, timeout)
        except TimeoutError:
            print(f"benchmark timed out after {timeout:.0f}s", file=sys.stderr)
            raise

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(guarded())
