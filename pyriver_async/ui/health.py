"""The health page: each failure mode of a job queue in PostgreSQL as one check with
a status (ok, warn, fail), the reason, and where to look."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._insights import HealthReport, QueueStats, ServerInfo, TableHealth
from .._job import JobState
from .render import format_bytes, format_duration
from .web import View, region

if TYPE_CHECKING:
    from .app import UIApp
    from .web import Ctx

__all__ = ["health_checks", "health_page"]

ALIVE_AFTER = timedelta(seconds=30)
CLEANER_WARN = timedelta(days=8)


def _check(
    name: str, status: str, why: str, link: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {"name": name, "status": status, "why": why, "link": link, **extra}


def _leader(h: HealthReport) -> dict[str, Any]:
    ld = h.leader
    if ld is None:
        return _check(
            "leader", "fail", "no client leads: nothing schedules, rescues or cleans", "/clients"
        )
    if ld.expired:
        ago = format_duration(-ld.remaining)
        return _check("leader", "warn", f"the term of {ld.leader_id} expired {ago} ago", "/clients")
    return _check(
        "leader", "ok", f"{ld.leader_id}, elected {ld.elected_at:%H:%M:%S} UTC", "/clients"
    )


def _scheduler(h: HealthReport, now: datetime) -> dict[str, Any]:
    lag = h.scheduler_lag
    if not lag:
        return _check("scheduler", "ok", "no due scheduled or retryable job older than 30 s")
    late = format_duration(now - min(lag.values()))
    queues = ", ".join(sorted(lag)[:5])
    return _check(
        "scheduler",
        "warn",
        f"due jobs not made available for {late} in {len(lag)} queue(s): {queues}",
        "/jobs?state=scheduled",
    )


def _orphans(h: HealthReport) -> dict[str, Any]:
    if not h.liveness:
        return _check(
            "orphaned jobs",
            "warn",
            "no liveness table (a River-only database): only the running-for-long check applies",
            "/clients",
        )
    if h.orphans:
        return _check(
            "orphaned jobs",
            "fail",
            f"{len(h.orphans)} running job(s) of clients whose "
            "heartbeat is stale or gone; the rescuer will take them back",
            "/jobs?state=running",
            ids=[j.id for j in h.orphans[:20]],
        )
    return _check("orphaned jobs", "ok", "every running job belongs to a live client")


def _long_running(h: HealthReport) -> dict[str, Any]:
    if h.long_running:
        return _check(
            "long-running jobs",
            "warn",
            f"{len(h.long_running)} job(s) running for more than an hour",
            "/jobs?state=running",
            ids=[j.id for j in h.long_running[:20]],
        )
    return _check("long-running jobs", "ok", "none running for more than an hour")


def _cleaner(h: HealthReport, now: datetime) -> list[dict[str, Any]]:
    out = []
    for state, oldest in sorted(h.cleaner_oldest.items(), key=lambda kv: kv[0].value):
        if oldest is not None and now - oldest > CLEANER_WARN:
            out.append(
                _check(
                    f"cleaner ({state.value})",
                    "warn",
                    f"the oldest {state.value} job finished {(now - oldest).days} days "
                    "ago: is a leader cleaning?",
                    f"/jobs?state={state.value}&order=asc",
                )
            )
    return out or [_check("cleaner", "ok", "no finalized job older than 8 days")]


def _table(t: TableHealth) -> dict[str, Any]:
    ratio = t.dead_ratio
    bloated = ratio is not None and ratio > 0.2 and (t.dead_rows or 0) > 10_000
    vacuumed = (
        f"last autovacuum {t.last_autovacuum:%Y-%m-%d %H:%M} UTC"
        if t.last_autovacuum
        else "never autovacuumed"
    )
    why = (
        f"river_job {format_bytes(t.total_bytes)} with its indexes; {t.live_rows or 0:,} live "
        f"and {t.dead_rows or 0:,} dead row versions; {vacuumed}"
    )
    return _check("table", "warn" if bloated else "ok", why, indexes=dict(t.indexes))


def _transactions(h: HealthReport) -> dict[str, Any]:
    if not h.old_transactions:
        return _check("old transactions", "ok", "no transaction open for more than 5 minutes")
    oldest = h.old_transactions[0]
    rows = [
        {
            "pid": o.pid,
            "age": o.age,
            "state": o.state,
            "application": o.application_name,
            "holds_xmin": o.holds_xmin,
            "query": o.query,
        }
        for o in h.old_transactions
    ]
    return _check(
        "old transactions",
        "fail",
        f"{len(h.old_transactions)} transaction(s) open for more than 5 min (oldest "
        f"{format_duration(oldest.age)}, pid {oldest.pid}): VACUUM cannot remove the "
        "job rows that died since they began",
        transactions=rows,
    )


def _queues(h: HealthReport | None, queues: list[QueueStats]) -> list[dict[str, Any]]:
    out = []
    if h is not None and h.liveness:
        alive = {c.id for c in h.clients if c.heartbeat_age <= ALIVE_AFTER}
        served = {q for c in h.clients if c.id in alive for q in c.queues}
        starving = [
            q.name
            for q in queues
            if q.counts.get(JobState.AVAILABLE) and q.name not in served and not q.paused
        ]
        if starving:
            out.append(
                _check(
                    "queues without clients",
                    "warn",
                    "available jobs but no live client: " + ", ".join(starving[:10]),
                    "/queues",
                )
            )
    paused = [q.name for q in queues if q.paused]
    if paused:
        out.append(_check("paused queues", "warn", ", ".join(paused[:10]), "/queues"))
    return out


def health_checks(
    health: HealthReport | None,
    server: ServerInfo | None,
    queues: list[QueueStats] | None,
    errors: list[str],
) -> list[dict[str, Any]]:
    """Every check, in the order the page shows them."""
    now = datetime.now(UTC)
    checks = []
    if server is not None:
        lines = ", ".join(f"{k} {v}" for k, v in sorted(server.migrations.items()))
        checks.append(
            _check("database", "ok", f"PostgreSQL {server.server_version}; migrations {lines}")
        )
    else:
        checks.append(_check("database", "fail", "; ".join(errors) or "unavailable"))
    if health is not None:
        checks += [
            _leader(health),
            _scheduler(health, now),
            _orphans(health),
            _long_running(health),
            *_cleaner(health, now),
        ]
        if health.table is not None:
            checks.append(_table(health.table))
        checks.append(_transactions(health))
    else:
        checks.append(_check("checks", "fail", "; ".join(errors) or "unavailable"))
    if queues is not None:
        checks += _queues(health, queues)
    return checks


async def health_page(ui: UIApp, ctx: Ctx) -> View:
    cap = ui.settings.count_cap
    health, err = await region(
        ctx, lambda: ui.cached(ctx, ("health",), 10.0, lambda c: ui.insights.health(conn=c))
    )
    server, s_err = await region(
        ctx, lambda: ui.cached(ctx, ("server",), 60.0, lambda c: ui.insights.server_info(conn=c))
    )
    queues, q_err = await region(
        ctx,
        lambda: ui.cached(
            ctx, ("queue_stats",), 5.0, lambda c: ui.insights.queue_stats(cap=cap, conn=c)
        ),
    )
    errors = [e for e in (err, s_err, q_err) if e]
    slow = sorted(ctx.timings, key=lambda t: -t[1])[:5]
    data = {
        "checks": health_checks(health, server, queues, errors),
        "cache_hit_ratio": ui.cache.hit_ratio,
        "sampler_tick_ms": ui.sampler.last_tick_ms,
        "listening": ui.live.listening,
        "streams": ui.live.stream_count,
        "errors": errors,
        "slowest": [{"name": n, "ms": round(ms, 1)} for n, ms in slow],
    }
    return View("health.html", data, title="health")
