"""The job pages: the list (filters, keyset pages, state tabs) and one job (timeline,
attempts, exact JSON, actions), and the args/metadata downloads."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.responses import RedirectResponse, Response

from .._insights import ACTIVE_STATES, FINAL_STATES
from .._job import FINALIZED_STATES, Job, JobState
from .backend import control, job_filter
from .params import LIMITS, BadParam, JobsQuery, Params, parse_jobs_query
from .render import first_line, parse_exact, pretty_json, unique_states
from .web import RawJSON, UIError, View

if TYPE_CHECKING:
    from .app import UIApp
    from .web import Ctx

__all__ = [
    "actions_for",
    "job_download",
    "job_page",
    "job_row",
    "jobs_page",
    "jump",
    "state_tabs",
    "suggestions",
]

STATE_ORDER = [*ACTIVE_STATES, *FINAL_STATES]
UNIQUE_ORDER = [
    "available",
    "cancelled",
    "completed",
    "discarded",
    "pending",
    "retryable",
    "running",
    "scheduled",
]
MAX_INLINE = 1 << 20
BACK_DEPTH = 20


def actions_for(job: Job[Any], now: datetime) -> list[str]:
    """The actions River allows on ``job`` now: retry, run_now, cancel, delete."""
    s = job.state
    out = []
    if s in FINALIZED_STATES:
        out.append("retry")
    elif s in (JobState.SCHEDULED, JobState.RETRYABLE) or (
        s is JobState.AVAILABLE and job.scheduled_at > now
    ):
        out.append("run_now")
    if s not in FINALIZED_STATES:
        out.append("cancel")
    if s is not JobState.RUNNING:
        out.append("delete")
    return out


def _preview(ui: UIApp, job: Job[Any]) -> str:
    args = job.args
    if isinstance(args, str):
        text = args
    else:
        try:
            value = ui.settings.redactor.args(msgspec.to_builtins(args))
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            text = "…"
    return text if len(text) <= 256 else text[:255] + "…"


def _state_time(job: Job[Any], now: datetime) -> tuple[str, datetime | None]:
    s = job.state
    if s in FINALIZED_STATES:
        return "finished", job.finalized_at
    if s is JobState.RUNNING:
        return "started", job.attempted_at
    if s is JobState.AVAILABLE and job.scheduled_at <= now:
        return "waiting since", job.scheduled_at
    return "due", job.scheduled_at


def job_row(ui: UIApp, ctx: Ctx, job: Job[Any], alive: set[str] | None) -> dict[str, Any]:
    label, at = _state_time(job, ctx.now)
    run = None
    if job.finalized_at and job.attempted_at:
        run = max(job.finalized_at - job.attempted_at, timedelta(0))
    client = job.attempted_by[-1] if job.attempted_by else None
    return {
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "state": job.state,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "time_label": label,
        "time": at,
        "run": run,
        "args": _preview(ui, job) if ctx.show_args else None,
        "tags": job.tags,
        "error": first_line(job.errors[-1].error) if job.errors else "",
        "client": client,
        "client_alive": None if alive is None or client is None else client in alive,
        "actions": actions_for(job, ctx.now),
    }


def _encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return "c" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_claim_cursor(cursor: str) -> tuple[int, datetime, int]:
    try:
        pad = "=" * (-len(cursor[1:]) % 4)
        p, s, i = json.loads(base64.urlsafe_b64decode(cursor[1:] + pad))
        return int(p), datetime.fromisoformat(s), int(i)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise BadParam("cursor", "malformed cursor") from None


def _list_call(q: JobsQuery) -> tuple[Any, str, bool]:
    final = q.state in FINALIZED_STATES
    times: dict[str, Any] = {}
    if q.after or q.before:
        which = "finalized" if final else "scheduled"
        times = {f"{which}_after": q.after, f"{which}_before": q.before}
    flt = job_filter(
        states=[q.state],
        queues=q.queues or None,
        kinds=q.kinds or None,
        ids=q.ids or None,
        priorities=q.priorities or None,
        tags_any=q.tags if q.tags and q.tag_mode == "any" else None,
        tags_all=q.tags if q.tags and q.tag_mode == "all" else None,
        args_contains=q.args,
        metadata_contains=q.meta,
        **times,
    )
    if final:
        return flt, "finalized_at", q.order != "asc"
    # Running jobs too are listed by scheduled_at (oldest first): the query API serves
    # that order from the fetch index, while id order walks the primary key from the
    # oldest job and may stop early on a big table.
    return flt, "scheduled_at", q.order == "desc"


async def _alive_clients(ui: UIApp, ctx: Ctx) -> set[str] | None:
    """Ids of the clients whose heartbeat is fresh (None without liveness rows)."""
    api = control(ui.client)

    async def load(conn: Any) -> set[str] | None:
        if not await ui.client.liveness_available(conn=conn):
            return None
        return {c.id for c in await api.list_clients(conn=conn) if c.alive}

    result: set[str] | None = await ui.cached(ctx, ("alive",), 5.0, load)
    return result


async def jobs_page(ui: UIApp, ctx: Ctx) -> View:
    params = Params(ctx.request.query_params.multi_items())
    q = parse_jobs_query(params)
    back = [c for c in (params.one("back") or "").split("~") if c][-BACK_DEPTH:]
    page_key = ("jobs", tuple(q.query_items()))

    async def load(conn: Any) -> dict[str, Any]:
        if q.order == "claim":
            after = _decode_claim_cursor(q.cursor) if q.cursor else None
            jobs = await ui.insights.claim_order(
                q.queues[0], limit=q.limit + 1, after=after, conn=conn
            )
            more = len(jobs) > q.limit
            jobs = jobs[: q.limit]
            last = jobs[-1] if jobs else None
            nxt = (
                _encode_cursor([last.priority, last.scheduled_at.isoformat(), last.id])
                if more and last
                else None
            )
            return {"jobs": jobs, "next": nxt, "stopped_early": False, "scanned": len(jobs)}
        flt, order, desc = _list_call(q)
        page = await control(ui.client).list(
            flt, order=order, descending=desc, limit=q.limit, cursor=q.cursor, conn=conn
        )
        return {
            "jobs": page.jobs,
            "next": page.next_cursor,
            "stopped_early": page.stopped_early,
            "scanned": page.scanned,
        }

    result = await ui.cached(ctx, page_key, 1.0, load)
    alive = await _alive_clients(ui, ctx)
    rows = [job_row(ui, ctx, j, alive) for j in result["jobs"]]
    counts = await state_tabs(ui, ctx, q)
    names = await suggestions(ui, ctx)
    base = q.query_items(cursor=None)
    older = (
        ctx.url(
            "/jobs",
            [*base, ("cursor", result["next"]), ("back", "~".join([*back, q.cursor or "-"]))],
        )
        if result["next"]
        else None
    )
    newer = None
    if q.cursor:
        prev = back[-1] if back else "-"
        rest = "~".join(back[:-1])
        items = [
            *base,
            *([("cursor", prev)] if prev != "-" else []),
            *([("back", rest)] if rest else []),
        ]
        newer = ctx.url("/jobs", items)
    data = {
        "state": q.state,
        "filter": {
            "queue": q.queues,
            "kind": q.kinds,
            "priority": q.priorities,
            "tag": q.tags,
            "tag_mode": q.tag_mode,
            "id": q.ids,
            "args": q.args_text,
            "meta": q.meta_text,
            "after": q.after,
            "before": q.before,
            "order": q.order,
            "limit": q.limit,
        },
        "jobs": rows,
        "next_cursor": result["next"],
        "stopped_early": result["stopped_early"],
        "scanned": result["scanned"],
        "counts": counts,
    }
    html = {
        "q": q,
        "older": older,
        "newer": newer,
        "limits": LIMITS,
        "names": names,
        "states": STATE_ORDER,
        "tab_url": lambda s: ctx.url(
            "/jobs", q.query_items(state=s.value, cursor=None, order=None)
        ),
        "here": ctx.url("/jobs", q.query_items()),
        "bulk": bulk_buttons(ctx, rows),
        "retention": None,
    }
    return View("jobs.html", data, html, title=f"{q.state.value} jobs")


def bulk_buttons(ctx: Ctx, rows: list[dict[str, Any]]) -> list[str]:
    """The bulk actions valid for at least one listed job and permitted."""
    perm = {
        "retry": "retry_jobs",
        "run_now": "retry_jobs",
        "cancel": "cancel_jobs",
        "delete": "delete_jobs",
    }
    have = {a for r in rows for a in r["actions"]}
    return [a for a in ("retry", "run_now", "cancel", "delete") if a in have and ctx.can(perm[a])]


async def state_tabs(ui: UIApp, ctx: Ctx, q: JobsQuery) -> dict[str, Any]:
    """Counts for the state tabs: global, or per chosen queues when that is the only
    filter (active states only); other filters are not counted."""
    cap = ui.settings.count_cap
    only_queue = q.queues and not (
        q.kinds or q.priorities or q.tags or q.ids or q.args or q.meta or q.after or q.before
    )
    try:
        if only_queue:
            stats = await ui.cached(
                ctx,
                ("qcounts", tuple(q.queues)),
                5.0,
                lambda c: ui.insights.queue_stats(q.queues, cap=cap, conn=c),
            )
            counts: dict[str, Any] = {}
            for s in ACTIVE_STATES:
                counts[s.value] = sum(st.counts.get(s, 0) for st in stats)
            return {
                "scope": "queues",
                "counts": counts,
                "capped": [s.value for s in ACTIVE_STATES if any(st.capped for st in stats)],
            }
        if q.filtered:
            return {"scope": "none", "counts": {}, "capped": []}
        sc = await ui.cached(
            ctx, ("state_counts",), 5.0, lambda c: ui.insights.state_counts(cap=cap, conn=c)
        )
    except Exception as exc:  # a timeout: the page still renders
        from .._errors import DatabaseError

        if not isinstance(exc, DatabaseError):
            raise
        return {"scope": "unavailable", "counts": {}, "capped": []}
    counts = {s.value: sc.counts.get(s) for s in (*ACTIVE_STATES, *FINAL_STATES)}
    return {
        "scope": "all",
        "counts": counts,
        "capped": [s.value for s in sc.capped],
        "recent": {s.value: n for s, n in sc.recent.items()},
    }


async def suggestions(ui: UIApp, ctx: Ctx) -> dict[str, list[str]]:
    """Queue and kind names for the filter's autocomplete (cached for a while)."""
    try:
        queues = await ui.cached(
            ctx, ("queue_names",), 30.0, lambda c: ui.insights.queue_names(conn=c)
        )
        kinds = await ui.cached(ctx, ("kinds",), 60.0, lambda c: ui.insights.kinds(conn=c))
    except Exception:
        return {"queues": [], "kinds": []}
    return {"queues": queues, "kinds": kinds}


async def jump(ui: UIApp, ctx: Ctx) -> Response:
    """The header's job-id box: to the job's page."""
    p = Params(ctx.request.query_params.multi_items())
    job_id = p.integer("id", lo=1)
    if job_id is None:
        raise BadParam("id", "give a job id")
    return RedirectResponse(ctx.url(f"/jobs/{job_id}"), status_code=303)


def _job_id(ctx: Ctx) -> int:
    raw = ctx.request.path_params.get("job_id", "")
    try:
        job_id = int(raw)
    except ValueError:
        raise UIError(400, f"not a job id: {str(raw)[:40]!r}", param="id") from None
    if not 1 <= job_id <= 2**63 - 1:
        raise UIError(400, "job id out of range", param="id")
    return job_id


def _document(ui: UIApp, text: str | None, size: int, *, args: bool) -> dict[str, Any]:
    if text is None:
        return {"pretty": None, "bytes": size, "redacted": False, "raw": None}
    value = parse_exact(text)
    redactor = ui.settings.redactor
    shown = redactor.args(value) if args else redactor.redact(value)
    changed = redactor.touches(value) or (args and redactor.format_args is not None)
    pretty = pretty_json(shown)
    return {"pretty": pretty, "bytes": size, "redacted": changed, "raw": RawJSON(pretty)}


def timeline(job: Job[Any], now: datetime) -> list[dict[str, Any]]:
    """The job's life as events with non-negative durations between them."""
    events: list[dict[str, Any]] = [{"what": "created", "at": job.created_at}]
    if job.scheduled_at > job.created_at + timedelta(seconds=1) or job.state in (
        JobState.SCHEDULED,
        JobState.RETRYABLE,
    ):
        due = "next attempt due" if job.errors and job.finalized_at is None else "due"
        events.append({"what": due, "at": job.scheduled_at})
    for e in job.errors:
        events.append(
            {"what": f"attempt {e.attempt} failed", "at": e.at, "error": first_line(e.error)}
        )
    snoozes = job.metadata.get("snoozes")
    if isinstance(snoozes, int) and snoozes > 0:
        events.append({"what": f"snoozed {snoozes} time(s)", "at": None})
    rescues = job.metadata.get("river:rescue_count")
    if isinstance(rescues, int) and rescues > 0:
        events.append({"what": f"rescued {rescues} time(s)", "at": None})
    if job.attempted_at is not None:
        events.append({"what": f"attempt {job.attempt} started", "at": job.attempted_at})
    if job.finalized_at is not None:
        events.append({"what": job.state.value, "at": job.finalized_at})
    elif job.state is JobState.RUNNING:
        events.append({"what": "running", "at": now})
    timed = sorted((e for e in events if e["at"] is not None), key=lambda e: e["at"])
    for prev, cur in itertools.pairwise(timed):
        cur["after"] = max(cur["at"] - prev["at"], timedelta(0))
    return timed + [e for e in events if e["at"] is None]


def attempts(job: Job[Any], alive: set[str] | None) -> list[dict[str, Any]]:
    logs: dict[int, list[str]] = {}
    raw_logs = job.metadata.get("river:log")
    if isinstance(raw_logs, list):
        for entry in raw_logs:
            if isinstance(entry, dict) and isinstance(entry.get("log"), str):
                n = entry.get("attempt")
                logs.setdefault(n if isinstance(n, int) else 0, []).append(entry["log"])
    out = []
    for n in range(1, job.attempt + 1):
        err = next((e for e in job.errors if e.attempt == n), None)
        by = job.attempted_by[n - 1] if len(job.attempted_by) >= n else None
        out.append(
            {
                "n": n,
                "error": err.error if err else None,
                "trace": err.trace if err else None,
                "at": err.at if err else None,
                "client": by,
                "client_alive": None if alive is None or by is None else by in alive,
                "logs": logs.get(n, []),
            }
        )
    return out


async def job_page(ui: UIApp, ctx: Ctx) -> View:
    job_id = _job_id(ctx)

    async def load(conn: Any) -> tuple[Job[Any], Any, Any]:
        job = await control(ui.client).get(job_id, conn=conn)
        docs = await ui.insights.job_documents(job_id, max_bytes=MAX_INLINE, conn=conn)
        conflict = None
        if job.state in FINALIZED_STATES or job.state is JobState.SCHEDULED:
            conflict = await ui.insights.unique_conflict(job, conn=conn)
        return job, docs, conflict

    job, docs, conflict = await ui.timed(ctx, "job", load)
    alive = await _alive_clients(ui, ctx)
    args = _document(ui, docs.args, docs.args_bytes, args=True)
    meta = _document(ui, docs.metadata, docs.metadata_bytes, args=False)
    output = job.metadata.get("output")
    label, at = _state_time(job, ctx.now)
    data = {
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "state": job.state,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "tags": job.tags,
        "created_at": job.created_at,
        "scheduled_at": job.scheduled_at,
        "attempted_at": job.attempted_at,
        "finalized_at": job.finalized_at,
        "attempted_by": job.attempted_by,
        "unique_key": job.unique_key.hex() if job.unique_key else None,
        "unique_states": unique_states(job.unique_states, UNIQUE_ORDER),
        "args": args["raw"],
        "args_bytes": args["bytes"],
        "args_redacted": args["redacted"],
        "metadata": meta["raw"],
        "metadata_bytes": meta["bytes"],
        "output": ui.settings.redactor.redact(output) if output is not None else None,
        "actions": actions_for(job, ctx.now),
        "blocked_by": {"id": conflict[0], "state": conflict[1]} if conflict else None,
        "timeline": timeline(job, ctx.now),
        "attempts": attempts(job, alive),
        "cancel_requested": "cancel_attempted_at" in job.metadata and job.state is JobState.RUNNING,
    }
    html = {
        "args": args,
        "meta": meta,
        "time_label": label,
        "time": at,
        "output_pretty": pretty_json(data["output"]) if output is not None else None,
        "python": copy_as_python(job, args["pretty"]),
        "running": job.state is JobState.RUNNING,
        "raw_allowed": ctx.access.view_raw_args,
    }
    return View("job.html", data, html, title=f"job {job.id}")


def copy_as_python(job: Job[Any], args_pretty: str | None) -> str:
    opts = [f"queue={job.queue!r}"]
    if job.priority != 1:
        opts.append(f"priority={job.priority}")
    if job.tags:
        opts.append(f"tags={job.tags!r}")
    args = args_pretty if args_pretty is not None else "{...}"
    return (
        f"# kind {job.kind!r}: build its JobArgs class from these args\n"
        f"args = {args}\n"
        f"await client.insert(Args(**args), InsertOpts({', '.join(opts)}))"
    )


async def job_download(ui: UIApp, ctx: Ctx) -> Response:
    """``/jobs/{id}/args.json`` and ``…/metadata.json``: the whole document, redacted
    when redaction is configured (the raw one needs ``view_raw_args``)."""
    job_id = _job_id(ctx)
    which = ctx.request.path_params["doc"]
    if which not in ("args", "metadata"):
        raise UIError(404, "no such document")
    p = Params(ctx.request.query_params.multi_items())
    raw = p.flag("raw")
    redactor = ui.settings.redactor
    if raw and redactor.active and not ctx.access.view_raw_args:
        raise UIError(403, "the raw document needs the view_raw_args permission")
    text = await ui.timed(ctx, "doc", lambda c: ui.insights.job_document(job_id, which, conn=c))
    if not raw and redactor.active:
        value = parse_exact(text)
        if redactor.touches(value) or (which == "args" and redactor.format_args is not None):
            text = pretty_json(redactor.args(value) if which == "args" else redactor.redact(value))
    headers = {
        "Content-Disposition": f'attachment; filename="job-{job_id}-{which}.json"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(text.encode(), media_type="application/json", headers=headers)
