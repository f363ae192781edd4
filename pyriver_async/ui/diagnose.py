"""The diagnosis pages: kinds (timings, error rate), errors grouped, periodic jobs,
clients, and health (the failure modes of a queue in PostgreSQL on one page)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from .._insights import DURATION_BOUNDS_MS, percentile
from .._job import JobState
from .actions import _permit, group_retry
from .backend import control, job_filter
from .charts import histogram, state_strip
from .params import BadParam, Params
from .render import format_ms
from .sampler import KindStats
from .web import UIError, View, region

if TYPE_CHECKING:
    from .app import UIApp
    from .web import Ctx

__all__ = [
    "clients_page",
    "errors_page",
    "errors_retry",
    "kind_page",
    "kinds_page",
    "periodic_page",
    "periodic_run",
]

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}
ERROR_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
BUCKET_LABELS = ["< 20 ms", *(format_ms(b) for b in DURATION_BOUNDS_MS[1:]), "> 336 s"]
ALIVE_AFTER = timedelta(seconds=30)


def _kind_row(kind: str, ks: KindStats | None) -> dict[str, Any]:
    if ks is None:
        return {
            "kind": kind,
            "completed": 0,
            "discarded": 0,
            "cancelled": 0,
            "error_rate": None,
            "run_p50": None,
            "run_p95": None,
            "run_max": None,
            "wait_p50": None,
            "wait_p95": None,
        }
    ran = ks.completed + ks.discarded
    top = max((i for i, n in enumerate(ks.run) if n), default=None)
    return {
        "kind": kind,
        "completed": ks.completed,
        "discarded": ks.discarded,
        "cancelled": ks.cancelled,
        "error_rate": ks.discarded / ran if ran else None,
        "run_p50": percentile(ks.run, 0.5),
        "run_p95": percentile(ks.run, 0.95),
        "run_max": (DURATION_BOUNDS_MS[top] if top < len(DURATION_BOUNDS_MS) else float("inf"))
        if top is not None
        else None,
        "wait_p50": percentile(ks.wait, 0.5),
        "wait_p95": percentile(ks.wait, 0.95),
    }


def _by_kind(ui: UIApp, window: timedelta) -> dict[str, KindStats]:
    out: dict[str, KindStats] = {}
    for (_q, kind), ks in ui.sampler.kind_stats(window).items():
        out.setdefault(kind, KindStats()).add(ks)
    return out


async def _running_by_kind(ui: UIApp, ctx: Ctx) -> dict[str, int]:
    running = await ui.cached(ctx, ("running",), 5.0, lambda c: ui.insights.running(conn=c))
    out: dict[str, int] = {}
    for j in running:
        out[j.kind] = out.get(j.kind, 0) + 1
    return out


async def kinds_page(ui: UIApp, ctx: Ctx) -> View:
    p = Params(ctx.request.query_params.multi_items())
    wname = p.choice("window", list(WINDOWS), "1h")
    kinds, err = await region(
        ctx, lambda: ui.cached(ctx, ("kinds",), 60.0, lambda c: ui.insights.kinds(conn=c))
    )
    running, r_err = await region(ctx, lambda: _running_by_kind(ui, ctx))
    stats = _by_kind(ui, WINDOWS[wname]) if ui.sampler.running else {}
    rows = []
    for k in sorted(set(kinds or []) | {k for k in stats if k != "other"}):
        row = _kind_row(k, stats.get(k))
        row["running"] = (running or {}).get(k, 0)
        rows.append(row)
    since = ui.sampler.covers_since
    data = {
        "window": wname,
        "kinds": rows,
        "error": err or r_err,
        "since": since,
        "sampler": ui.sampler.running,
    }
    return View("kinds.html", data, {"windows": list(WINDOWS)}, title="kinds")


async def kind_page(ui: UIApp, ctx: Ctx) -> View:
    kind = ctx.request.path_params["kind"]
    if not kind or len(kind) > 128:
        raise UIError(400, "not a kind name", param="kind")
    p = Params(ctx.request.query_params.multi_items())
    wname = p.choice("window", list(WINDOWS), "1h")
    live_stats = _by_kind(ui, WINDOWS[wname]).get(kind) if ui.sampler.running else None
    sample, s_err = await region(
        ctx,
        lambda: ui.cached(
            ctx, ("kind_sample", kind), 30.0, lambda c: ui.insights.kind_sample(kind, conn=c)
        ),
    )

    async def latest(conn: Any) -> Any:
        return await control(ui.client).list(
            job_filter(kinds=[kind], states=["completed"]),
            order="finalized_at",
            limit=10,
            conn=conn,
        )

    recent, l_err = await region(ctx, lambda: ui.cached(ctx, ("kind_latest", kind), 5.0, latest))
    sample_row = None
    if sample is not None:
        ks = KindStats(
            sample.counts.get(JobState.COMPLETED, 0),
            sample.counts.get(JobState.CANCELLED, 0),
            sample.counts.get(JobState.DISCARDED, 0),
            sample.run_histogram,
            sample.wait_histogram,
        )
        sample_row = {
            **_kind_row(kind, ks),
            "examined": sample.examined,
            "matched": sum(sample.counts.values()),
        }
    hist = (live_stats.run if live_stats and live_stats.total else None) or (
        sample.run_histogram if sample is not None else None
    )
    data = {
        "kind": kind,
        "window": wname,
        "live": _kind_row(kind, live_stats) if live_stats else None,
        "sample": sample_row,
        "sample_error": s_err,
        "latest_error": l_err,
        "latest": [
            {"id": j.id, "queue": j.queue, "finalized_at": j.finalized_at}
            for j in (recent.jobs if recent else [])
        ],
        "run_histogram": hist,
        "buckets": BUCKET_LABELS,
    }
    html = {
        "hist_svg": histogram(hist, BUCKET_LABELS, title=f"{kind}: run time")
        if hist and sum(hist)
        else None,
        "windows": list(WINDOWS),
    }
    return View("kind.html", data, html, title=f"kind {kind}")


async def _groups(ui: UIApp, ctx: Ctx, wname: str) -> Any:
    since = ctx.now - ERROR_WINDOWS[wname]
    since = since.replace(second=0, microsecond=0)
    return await ui.cached(
        ctx, ("errors", wname, since), 30.0, lambda c: ui.insights.error_groups(since=since, conn=c)
    )


async def errors_page(ui: UIApp, ctx: Ctx) -> View:
    p = Params(ctx.request.query_params.multi_items())
    wname = p.choice("window", list(ERROR_WINDOWS), "24h")
    kind = p.one("kind")
    groups, err = await region(ctx, lambda: _groups(ui, ctx, wname))
    rows = [
        {
            "kind": g.kind,
            "fingerprint": g.fingerprint,
            "message": g.message,
            "count": g.count,
            "states": {s.value: n for s, n in g.states.items()},
            "first_seen": g.first_seen,
            "last_seen": g.last_seen,
            "sample_job_id": g.sample_job_id,
        }
        for g in (groups or [])
        if kind is None or g.kind == kind
    ][:200]
    data = {"window": wname, "groups": rows, "error": err, "kind": kind}
    return View("errors.html", data, {"windows": list(ERROR_WINDOWS)}, title="errors")


async def errors_retry(ui: UIApp, ctx: Ctx) -> Response:
    """Retry every job of one group, the group re-derived on the server."""
    form: Params = ctx.form
    wname = form.choice("window", list(ERROR_WINDOWS), "24h")
    kind = form.one("kind")
    fp = form.one("fingerprint")
    if kind is None or fp is None:
        raise BadParam("fingerprint", "name the group (kind and fingerprint)")
    _permit(ctx, "retry")
    groups = await _groups(ui, ctx, wname)
    group = next((g for g in groups if g.kind == kind and g.fingerprint == fp), None)
    if group is None:
        raise UIError(404, "that error group is gone (nothing left to retry)")
    return await group_retry(ui, ctx, kind, fp, group.job_ids)


# -- periodic, clients, health -------------------------------------------------------------


def _cluster_registry(infos: Any) -> list[dict[str, Any]]:
    for ci in infos or []:
        if getattr(ci, "is_leader", False):
            md = ci.metadata or {}
            entries = md.get("periodic") or md.get("periodic_jobs") or []
            return [e for e in entries if isinstance(e, dict)]
    return []


async def periodic_page(ui: UIApp, ctx: Ctx) -> View:
    entries: dict[str, dict[str, Any]] = {}
    if hasattr(ui.client, "list_clients"):
        infos, _ = await region(
            ctx,
            lambda: ui.cached(
                ctx, ("clients",), 5.0, lambda c: control(ui.client).list_clients(conn=c)
            ),
        )
        for e in _cluster_registry(infos):
            pid = str(e.get("id", ""))
            if pid:
                entries[pid] = {
                    "id": pid,
                    "schedule": e.get("schedule"),
                    "tz": e.get("tz"),
                    "next_run_at": e.get("next_run_at"),
                    "last_run_at": e.get("last_run_at"),
                    "run_on_start": e.get("run_on_start"),
                    "source": "leader",
                    "local": False,
                }
    for pj in ui.client.periodic_jobs:
        pid = pj.known_id or pj.id
        e = entries.setdefault(pid, {"id": pid, "source": "this process", "last_run_at": None})
        e.update(
            schedule=pj.schedule.describe(),
            run_on_start=pj.run_on_start,
            local=True,
            next_run_at=pj.schedule.next_after(ctx.now),
        )
    rows = []
    for e in sorted(entries.values(), key=lambda e: e["id"]):
        pid = e["id"]

        async def runs_of(conn: Any, pid: str = pid) -> Any:
            return await ui.insights.periodic_runs(pid, conn=conn)

        async def cached_runs(pid: str = pid, f: Any = runs_of) -> Any:
            return await ui.cached(ctx, ("periodic_runs", pid), 10.0, f)

        runs, _ = await region(ctx, cached_runs)
        runs = runs or []
        e = {**e, "runs": [{"id": r[0], "state": r[1].value, "created_at": r[2]} for r in runs]}
        rows.append(e)
    html = {
        "strips": {
            r["id"]: state_strip(
                [x["state"] for x in reversed(r["runs"])], title=f"last runs of {r['id']}"
            )
            for r in rows
            if r["runs"]
        }
    }
    data = {"periodic": rows, "registry_known": hasattr(ui.client, "list_clients") or bool(rows)}
    return View("periodic.html", data, html, title="periodic jobs")


async def periodic_run(ui: UIApp, ctx: Ctx) -> Response:
    """Insert one run of a periodic job of this process now (``insert_jobs``)."""
    if not ctx.can("insert_jobs"):
        raise UIError(403, "you may not insert jobs")
    pid = ctx.form.one("id")
    pj = next((p for p in ui.client.periodic_jobs if (p.known_id or p.id) == pid), None)
    if pj is None:
        raise UIError(404, "run now works for periodic jobs of this process only")
    result = await ui.client.insert(pj.args_factory(), pj.opts)
    ui.audit(
        ctx,
        {"action": "periodic_run", "periodic_id": pid, "job_id": result.job.id, "outcome": "ok"},
    )
    ui.live.publish("jobs")
    return ui.redirect(ctx, ctx.url(f"/jobs/{result.job.id}"), f"inserted job {result.job.id}")


async def clients_page(ui: UIApp, ctx: Ctx) -> View:
    health, err = await region(
        ctx, lambda: ui.cached(ctx, ("health",), 10.0, lambda c: ui.insights.health(conn=c))
    )
    infos = None
    if hasattr(ui.client, "list_clients"):
        infos, _ = await region(
            ctx,
            lambda: ui.cached(
                ctx, ("clients",), 5.0, lambda c: control(ui.client).list_clients(conn=c)
            ),
        )
    leader = health.leader if health else None
    orphans: dict[str | None, list[int]] = {}
    for j in health.orphans if health else []:
        orphans.setdefault(j.client_id, []).append(j.id)
    rows = []
    if infos is not None:
        for ci in infos:
            rows.append(
                {
                    "id": ci.id,
                    "hostname": ci.hostname,
                    "pid": ci.pid,
                    "version": ci.version,
                    "started_at": ci.started_at,
                    "heartbeat_age": ci.heartbeat_age,
                    "alive": ci.alive,
                    "stopping": ci.stopping,
                    "leader": ci.is_leader,
                    "queues": {
                        q: {"max_workers": u.max_workers, "running": u.running}
                        for q, u in ci.queues.items()
                    },
                    "orphans": orphans.get(ci.id, []),
                }
            )
    elif health is not None and health.liveness:
        for c in health.clients:
            rows.append(
                {
                    "id": c.id,
                    "hostname": c.hostname,
                    "pid": c.pid,
                    "version": None,
                    "started_at": c.started_at,
                    "heartbeat_age": c.heartbeat_age,
                    "alive": c.heartbeat_age <= ALIVE_AFTER,
                    "stopping": False,
                    "leader": leader is not None and leader.leader_id == c.id,
                    "queues": {q: None for q in c.queues},
                    "orphans": orphans.get(c.id, []),
                }
            )
    hints = sorted({j.client_id for j in (health.running if health else []) if j.client_id})
    data = {
        "liveness": bool(health and health.liveness),
        "clients": rows,
        "error": err,
        "leader": {
            "id": leader.leader_id,
            "elected_at": leader.elected_at,
            "expires_at": leader.expires_at,
            "expired": leader.expired,
        }
        if leader
        else None,
        "running_clients_hint": hints if not (health and health.liveness) else [],
    }
    return View("clients.html", data, title="clients")
