"""The route table, the overview and the queue pages, and the small unauthenticated
routes (``/healthz``, static files, robots.txt)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from .._insights import ACTIVE_STATES, FINAL_STATES, QueueStats
from .._job import JobState
from . import actions, diagnose, health, jobs, live
from .backend import control, job_filter
from .charts import Bar, series_class, sparkline, stacked_bars
from .params import Params
from .security import static_headers
from .web import RouteSpec, UIError, View, region

if TYPE_CHECKING:
    from .app import UIApp
    from .web import Ctx

__all__ = ["routes"]

SPANS = {
    "1h": (timedelta(hours=1), 1),
    "6h": (timedelta(hours=6), 5),
    "24h": (timedelta(hours=24), 15),
}
TOP_QUEUES = 8


def routes() -> list[RouteSpec]:
    post = ("POST",)
    return [
        RouteSpec("/", overview),
        RouteSpec("/jobs", jobs.jobs_page),
        RouteSpec("/jobs/actions", actions.bulk_selection, post),
        RouteSpec("/jobs/bulk", actions.bulk_filter, post),
        RouteSpec("/jobs/jump", jobs.jump),
        RouteSpec("/jobs/{job_id}", jobs.job_page),
        RouteSpec("/jobs/{job_id}/{doc}.json", jobs.job_download),
        RouteSpec("/jobs/{job_id}/{action}", actions.job_action, post),
        RouteSpec("/ops/{op_id}", actions.op_page),
        RouteSpec("/ops/{op_id}/cancel", actions.op_cancel, post),
        RouteSpec("/queues", queues_page),
        RouteSpec("/queues/{name}", queue_page),
        RouteSpec("/queues/{name}/{action}", actions.queue_action, post),
        RouteSpec("/kinds", diagnose.kinds_page),
        RouteSpec("/kinds/{kind:path}", diagnose.kind_page),
        RouteSpec("/errors", diagnose.errors_page),
        RouteSpec("/errors/retry", diagnose.errors_retry, post),
        RouteSpec("/periodic", diagnose.periodic_page),
        RouteSpec("/periodic/run", diagnose.periodic_run, post),
        RouteSpec("/clients", diagnose.clients_page),
        RouteSpec("/health", health.health_page),
        RouteSpec("/events", live.events_endpoint),
        RouteSpec("/healthz", healthz, auth=False),
        RouteSpec("/robots.txt", robots, auth=False),
        RouteSpec("/static/{path:path}", static, auth=False),
    ]


async def healthz(ui: UIApp, ctx: Ctx) -> Response:
    """``{"status":"ok"}``, or 503; with ``?db=1`` also a ``SELECT 1`` within 1 s."""
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if ctx.request.query_params.get("db") == "1":
        try:
            await ui.start()
            async with ui.read(statement_timeout=1.0) as conn:
                await ui.insights.ping(conn=conn)
        except Exception:
            return JSONResponse({"status": "unavailable"}, 503, headers=headers)
    return JSONResponse({"status": "ok"}, headers=headers)


async def robots(ui: UIApp, ctx: Ctx) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow: /\n", headers={"Cache-Control": "no-store"})


async def static(ui: UIApp, ctx: Ctx) -> Response:
    found = ui.static.get(ctx.request.path_params["path"])
    if found is None:
        return Response("not found", 404, media_type="text/plain")
    data, media = found
    return Response(data, media_type=media, headers=static_headers())


# -- overview ----------------------------------------------------------------------------


async def _queue_stats(ui: UIApp, ctx: Ctx) -> list[QueueStats]:
    if ui.sampler.running and ui.sampler.queues:
        return ui.sampler.queues
    cap = ui.settings.count_cap
    result: list[QueueStats] = await ui.cached(
        ctx, ("queue_stats",), 5.0, lambda c: ui.insights.queue_stats(cap=cap, conn=c)
    )
    return result


async def _throughput(ui: UIApp, ctx: Ctx, span: timedelta, step: int) -> list[Bar]:
    """Bars of ``step`` minutes over ``span``: from the sampler's minutes when it runs
    and has sampled once (backfilled once from the index), else straight from the
    index. Before its first sample the sampler knows nothing of the seconds just
    before it started (the backfill stops short of them to let their jobs commit)."""
    if ui.sampler.running and ui.sampler.started_at is not None and ui.sampler.ticks > 0:
        await ui.sampler.backfill(span)
        minutes = ui.sampler.window(span)
        bars = []
        for i in range(0, len(minutes), step):
            chunk = minutes[i : i + step]
            ins = [m.inserted for m in chunk if m.inserted is not None]
            bars.append(
                Bar(
                    chunk[0].start.strftime("%H:%M"),
                    {
                        s: float(sum(getattr(m, s) for m in chunk))
                        for s in ("completed", "discarded", "cancelled")
                    },
                    float(sum(ins)) if ins else None,
                )
            )
        return bars
    now = ctx.now
    bins = await ui.cached(
        ctx,
        ("throughput", span, step),
        5.0,
        lambda c: ui.insights.throughput(now - span, now, bin=timedelta(minutes=step), conn=c),
    )
    return [
        Bar(
            b.start.strftime("%H:%M"),
            {"completed": b.completed, "discarded": b.discarded, "cancelled": b.cancelled},
        )
        for b in bins
    ]


def _backlog(ui: UIApp, span: timedelta, step: int) -> tuple[list[Bar], list[str]]:
    minutes = ui.sampler.window(span)
    totals: dict[str, int] = {}
    for m in minutes:
        for q, n in m.backlog.items():
            totals[q] = max(totals.get(q, 0), n)
    top = [q for q, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:TOP_QUEUES]]
    series = [*top, "other"] if len(totals) > len(top) else top
    bars = []
    for i in range(0, len(minutes), step):
        last = next((m for m in reversed(minutes[i : i + step]) if m.backlog), None)
        values: dict[str, float] = {}
        if last is not None:
            for q, n in last.backlog.items():
                key = q if q in top else "other"
                values[key] = values.get(key, 0) + n
        bars.append(Bar(minutes[i].start.strftime("%H:%M"), values))
    return bars, series


async def overview(ui: UIApp, ctx: Ctx) -> View:
    p = Params(ctx.request.query_params.multi_items())
    span_name = p.choice("span", list(SPANS), "1h")
    span, step = SPANS[span_name]
    cap = ui.settings.count_cap
    counts, counts_err = await region(
        ctx,
        lambda: ui.cached(
            ctx, ("state_counts",), 5.0, lambda c: ui.insights.state_counts(cap=cap, conn=c)
        ),
    )
    bars, tp_err = await region(ctx, lambda: _throughput(ui, ctx, span, step))
    queues, q_err = await region(ctx, lambda: _queue_stats(ui, ctx))
    health, h_err = await region(
        ctx, lambda: ui.cached(ctx, ("health",), 10.0, lambda c: ui.insights.health(conn=c))
    )

    async def latest(conn: Any) -> tuple[list[Any], list[Any]]:
        api = control(ui.client)
        disc = await api.list(
            job_filter(states=["discarded"]),
            order="finalized_at",
            descending=True,
            limit=5,
            conn=conn,
        )
        due = await api.list(
            job_filter(states=["retryable"]),
            order="scheduled_at",
            descending=False,
            limit=5,
            conn=conn,
        )
        return disc.jobs, due.jobs

    lists, l_err = await region(ctx, lambda: ui.cached(ctx, ("overview_lists",), 2.0, latest))
    tiles = []
    if counts is not None:
        for s in ACTIVE_STATES:
            tiles.append(
                {
                    "state": s,
                    "count": counts.counts[s],
                    "capped": s in counts.capped,
                    "estimate": counts.estimates.get(s),
                }
            )
        for s in FINAL_STATES:
            tiles.append(
                {
                    "state": s,
                    "count": counts.counts.get(s),
                    "capped": s in counts.capped,
                    "estimate": counts.estimates.get(s),
                    "recent": counts.recent.get(s),
                }
            )
    series = ["completed", "discarded", "cancelled"]
    backlog_bars, backlog_series = _backlog(ui, span, step) if ui.sampler.running else ([], [])
    live_clients = {
        c.id: c
        for c in (health.clients if health else [])
        if c.heartbeat_age <= timedelta(seconds=30)
    }
    queue_rows = [
        {
            "name": q.name,
            "paused": q.paused,
            "available": q.counts.get(JobState.AVAILABLE, 0),
            "running": q.counts.get(JobState.RUNNING, 0),
            "capped": q.capped,
            "lag": q.lag,
            "clients": sum(1 for c in live_clients.values() if q.name in c.queues),
        }
        for q in (queues or [])
    ]
    strip = None
    if health is not None:
        strip = {
            "leader": health.leader.leader_id
            if health.leader and not health.leader.expired
            else None,
            "leader_since": health.leader.elected_at if health.leader else None,
            "clients_alive": len(live_clients) if health.liveness else None,
            "orphans": len(health.orphans),
            "scheduler_lag": min(health.scheduler_lag.values()) if health.scheduler_lag else None,
            "errors_last_hour": counts.recent.get(JobState.DISCARDED) if counts else None,
            "old_transactions": len(health.old_transactions),
        }
    data = {
        "tiles": tiles,
        "counts_error": counts_err,
        "throughput": [{"at": b.label, **b.values, "inserted": b.line} for b in (bars or [])],
        "throughput_error": tp_err,
        "span": span_name,
        "queues": queue_rows,
        "queues_error": q_err,
        "health": strip,
        "health_error": h_err,
        "discarded": [jobs.job_row(ui, ctx, j, None) for j in lists[0]] if lists else [],
        "retries_due": [jobs.job_row(ui, ctx, j, None) for j in lists[1]] if lists else [],
        "lists_error": l_err,
    }
    html = {
        "throughput_svg": stacked_bars(
            bars or [],
            series,
            title=f"jobs finished per {step} min, last {span_name}",
            line_label="inserted ≈",
        )
        if bars
        else None,
        "backlog_svg": stacked_bars(backlog_bars, backlog_series, title="available jobs per queue")
        if any(sum(b.values.values()) for b in backlog_bars)
        else None,
        "backlog": backlog_bars,
        "spans": list(SPANS),
        "backlog_legend": [(name, series_class(name, i)) for i, name in enumerate(backlog_series)],
        "step": step,
    }
    return View("overview.html", data, html, title="overview")


# -- queues ------------------------------------------------------------------------------


def _sparks(ui: UIApp, name: str) -> list[float]:
    values = []
    for m in ui.sampler.window(timedelta(hours=1)):
        values.append(
            float(sum(ks.completed + ks.discarded for (q, _k), ks in m.kinds.items() if q == name))
        )
    return values


async def _clients_by_queue(ui: UIApp, ctx: Ctx) -> dict[str, list[dict[str, Any]]]:
    """Live clients per queue with their max workers and running jobs when the
    control API reports them, else from the liveness rows alone."""
    out: dict[str, list[dict[str, Any]]] = {}
    api = control(ui.client)
    if hasattr(ui.client, "list_clients"):
        infos = await ui.cached(ctx, ("clients",), 5.0, lambda c: api.list_clients(conn=c))
        for ci in infos:
            if not ci.alive:
                continue
            for qn, use in ci.queues.items():
                out.setdefault(qn, []).append(
                    {
                        "id": ci.id,
                        "max_workers": use.max_workers,
                        "running": use.running,
                        "heartbeat_age": ci.heartbeat_age,
                    }
                )
        return out
    rows = await ui.cached(ctx, ("liveness",), 5.0, lambda c: ui.insights.liveness(conn=c))
    for r in rows or []:
        if r.heartbeat_age <= timedelta(seconds=30):
            for qn in r.queues:
                out.setdefault(qn, []).append(
                    {
                        "id": r.id,
                        "max_workers": None,
                        "running": None,
                        "heartbeat_age": r.heartbeat_age,
                    }
                )
    return out


def _queue_row(ui: UIApp, q: QueueStats, clients: list[dict[str, Any]]) -> dict[str, Any]:
    workers = [c["max_workers"] for c in clients if c["max_workers"] is not None]
    running = q.counts.get(JobState.RUNNING, 0)
    return {
        "name": q.name,
        "known": q.known,
        "paused": q.paused,
        "paused_at": q.paused_at,
        "counts": {s.value: q.counts.get(s, 0) for s in ACTIVE_STATES},
        "capped": q.capped,
        "lag": q.lag,
        "clients": len(clients),
        "utilization": running / sum(workers) if workers and sum(workers) else None,
        "orphan_queue": not q.known and not clients,
        "metadata": q.metadata,
    }


async def queues_page(ui: UIApp, ctx: Ctx) -> View:
    stats, err = await region(ctx, lambda: _queue_stats(ui, ctx))
    clients, c_err = await region(ctx, lambda: _clients_by_queue(ui, ctx))
    rows = [_queue_row(ui, q, (clients or {}).get(q.name, [])) for q in stats or []]
    html = {
        "sparks": {
            r["name"]: sparkline(_sparks(ui, r["name"]), title=f"{r['name']}: finished per minute")
            for r in rows
        }
        if ui.sampler.running
        else {}
    }
    data = {"queues": rows, "error": err or c_err}
    return View("queues.html", data, html, title="queues")


async def queue_page(ui: UIApp, ctx: Ctx) -> View:
    name = ctx.request.path_params["name"]
    cap = ui.settings.count_cap
    stats = await ui.cached(
        ctx, ("queue", name), 2.0, lambda c: ui.insights.queue_stats([name], cap=cap, conn=c)
    )
    clients, c_err = await region(ctx, lambda: _clients_by_queue(ui, ctx))
    q = stats[0]
    mine = (clients or {}).get(name, [])
    if not q.known and not any(q.counts.values()) and not mine:
        names = await ui.cached(
            ctx, ("queue_names",), 30.0, lambda c: ui.insights.queue_names(conn=c)
        )
        if name not in names:
            raise UIError(404, f"no queue named {name!r}")
    row = _queue_row(ui, q, mine)
    values = _sparks(ui, name) if ui.sampler.running else []
    bars = (
        [
            Bar(m.start.strftime("%H:%M"), {"available": float(m.backlog.get(name, 0))})
            for m in ui.sampler.window(timedelta(hours=1))
        ]
        if ui.sampler.running
        else []
    )
    data = {"queue": row, "clients": mine, "clients_error": c_err, "finished_per_minute": values}
    html = {
        "spark": sparkline(values, title="finished per minute") if values else None,
        "depth_svg": stacked_bars(bars, ["available"], title=f"{name}: available jobs")
        if bars
        else None,
        "state_url": lambda s: ctx.url("/jobs", [("state", s), ("queue", name)]),
        "states": [s.value for s in (*ACTIVE_STATES, *FINAL_STATES)],
    }
    return View("queue.html", data, html, title=f"queue {name}")
