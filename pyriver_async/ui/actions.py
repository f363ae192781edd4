"""Actions: retry, run now, cancel and delete on one job, on a selection (at most
1,000 ids) and on everything a filter matches (a background operation in batches,
with progress and cancel); pause and resume queues. All go through the library's
control API; each logs one audit record."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from .._args import validate_queue
from .._errors import InvalidOptsError
from .backend import ActionResult, control
from .jobs import _job_id, _list_call
from .params import BadParam, Params, parse_jobs_query
from .web import UIError, View, json_text

if TYPE_CHECKING:
    from .app import UIApp
    from .web import Ctx

__all__ = [
    "Op",
    "Ops",
    "bulk_filter",
    "bulk_selection",
    "job_action",
    "op_cancel",
    "op_page",
    "queue_action",
]

ACTIONS = {
    "retry": "retry_jobs",
    "run_now": "retry_jobs",
    "cancel": "cancel_jobs",
    "delete": "delete_jobs",
}
PAST = {"retry": "retried", "run_now": "made available", "cancel": "cancelled", "delete": "deleted"}
MAX_SELECTION = 1000
BATCH = 500
BATCH_PAUSE = 0.05
CONFIRM_ABOVE = 1000


def _action(form: Params) -> str:
    """The posted action (a form may repeat it: the submit button and a hidden field)."""
    values = set(form.raw("action"))
    if len(values) != 1 or (action := values.pop()) not in ACTIONS:
        raise BadParam("action", f"one of {', '.join(ACTIONS)}")
    return action


def _next_url(ctx: Ctx, default: str) -> str:
    """Where to go after an action: a path of this UI only (never another site)."""
    nxt: str | None = ctx.form.one("next") if ctx.form is not None else None
    if nxt and nxt.startswith(ctx.base + "/") and not nxt.startswith("//") and "\\" not in nxt:
        return nxt
    return ctx.url(default)


def _permit(ctx: Ctx, action: str) -> None:
    if action not in ACTIONS:
        raise UIError(404, f"no action {action!r}")
    if ctx.read_only and not ctx.access.allows(ACTIONS[action]):
        raise UIError(403, "this UI is read-only for you")
    if not ctx.can(ACTIONS[action]):
        raise UIError(403, f"you may not {action.replace('_', ' ')} jobs")


async def _apply(ui: UIApp, action: str, ids: Sequence[int]) -> list[ActionResult]:
    api = control(ui.client)
    if action in ("retry", "run_now"):
        return list(await api.retry_many(list(ids)))
    if action == "cancel":
        return list(await api.cancel_many(list(ids)))
    return list(await api.delete_many(list(ids)))


def summary(action: str, results: Sequence[ActionResult]) -> str:
    """ "3 retried" / "retried 998, skipped 2: unique conflict with job 123 (#7), ..."."""
    done = sum(1 for r in results if r.outcome == "done")
    skipped = [r for r in results if r.outcome != "done"]
    if not skipped:
        return f"{done} {PAST[action]}"
    reasons = ", ".join(
        f"#{r.job_id} {r.reason or r.outcome.replace('_', ' ')}" for r in skipped[:5]
    )
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"{done} {PAST[action]}, {len(skipped)} skipped: {reasons}{more}"


def _answer(
    ui: UIApp, ctx: Ctx, action: str, results: Sequence[ActionResult], url: str
) -> Response:
    message = summary(action, results)
    ui.cache.clear()
    ui.live.publish("jobs", "queues")
    if ctx.wants_json:
        body = {
            "action": action,
            "message": message,
            "results": [
                {"job_id": r.job_id, "outcome": r.outcome, "reason": r.reason} for r in results
            ],
        }
        return Response(
            json_text(body), media_type="application/json", headers={"Cache-Control": "no-store"}
        )
    return ui.redirect(ctx, url, message)


def _audit(
    ui: UIApp, ctx: Ctx, action: str, results: Sequence[ActionResult], t0: float, **extra: Any
) -> None:
    outcomes = Counter(r.outcome for r in results)
    ui.audit(
        ctx,
        {
            "action": action,
            "ids": [r.job_id for r in results][:1000],
            "counts": dict(outcomes),
            "outcome": "ok",
            "duration_ms": round((time.perf_counter() - t0) * 1000, 1),
            **extra,
        },
    )


async def job_action(ui: UIApp, ctx: Ctx) -> Response | View:
    """``POST /jobs/{id}/{action}``; a delete without ``confirm=1`` asks first."""
    job_id = _job_id(ctx)
    action = ctx.request.path_params["action"].replace("-", "_")
    _permit(ctx, action)
    if action == "delete" and ctx.form.one("confirm") != "1" and not ctx.wants_json:
        data = {"action": action, "ids": [job_id], "next": _next_url(ctx, f"/jobs/{job_id}")}
        return View(
            "confirm.html", data, {"url": ctx.url(f"/jobs/{job_id}/delete")}, title="confirm"
        )
    t0 = time.perf_counter()
    results = await _apply(ui, action, [job_id])
    _audit(ui, ctx, action, results, t0)
    default = "/jobs" if action == "delete" else f"/jobs/{job_id}"
    url = _next_url(ctx, default)
    if action == "delete" and url.endswith(f"/jobs/{job_id}"):
        url = ctx.url("/jobs")
    return _answer(ui, ctx, action, results, url)


async def bulk_selection(ui: UIApp, ctx: Ctx) -> Response | View:
    """``POST /jobs/actions``: ``action`` on the selected ``id``s (at most 1,000)."""
    form: Params = ctx.form
    action = _action(form)
    _permit(ctx, action)
    ids = sorted(set(form.ints("id", most=MAX_SELECTION)))
    if not ids:
        raise BadParam("id", "select at least one job")
    if action == "delete" and form.one("confirm") != "1" and not ctx.wants_json:
        data = {"action": action, "ids": ids, "next": _next_url(ctx, "/jobs")}
        return View("confirm.html", data, {"url": ctx.url("/jobs/actions")}, title="confirm")
    t0 = time.perf_counter()
    results = await _apply(ui, action, ids)
    _audit(ui, ctx, action, results, t0)
    return _answer(ui, ctx, action, results, _next_url(ctx, "/jobs"))


# -- bulk by filter ------------------------------------------------------------------


@dataclass
class Op:
    """A background bulk operation over everything a filter matches."""

    id: str
    principal: str
    action: str
    description: str
    expected: int
    limit: int
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    done: int = 0
    skipped: int = 0
    batches: int = 0
    finished: bool = False
    cancelled: bool = False
    error: str | None = None
    reasons: Counter[str] = field(default_factory=Counter)
    task: asyncio.Task[None] | None = None

    @property
    def processed(self) -> int:
        return self.done + self.skipped

    @property
    def percent(self) -> int:
        if self.finished:
            return 100
        return min(99, round(100 * self.processed / self.expected)) if self.expected else 0


class Ops:
    """The in-process registry of bulk operations (a restart abandons them)."""

    def __init__(self) -> None:
        self._ops: dict[str, Op] = {}
        self._ids = itertools.count(1)

    def get(self, op_id: str) -> Op | None:
        return self._ops.get(op_id)

    def running_for(self, principal: str) -> Op | None:
        return next(
            (o for o in self._ops.values() if o.principal == principal and not o.finished), None
        )

    def new(self, **kw: Any) -> Op:
        op = Op(id=f"op{next(self._ids)}", **kw)
        self._ops[op.id] = op
        while len(self._ops) > 50:
            oldest = next(iter(self._ops))
            if not self._ops[oldest].finished:
                break
            del self._ops[oldest]
        return op

    async def stop(self) -> None:
        for op in self._ops.values():
            if op.task is not None and not op.task.done():
                op.cancelled = True
                op.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await op.task


async def _filter_batches(ui: UIApp, q: Any, limit: int) -> AsyncIterator[list[int]]:
    """Ids matching ``q``, BATCH at a time, the filter re-run by the server each time."""
    flt, order, desc = _list_call(q)
    cursor: str | None = None
    seen = 0
    while seen < limit:
        async with ui.read() as conn:
            page = await control(ui.client).list(
                flt,
                order=order,
                descending=desc,
                limit=min(BATCH, limit - seen),
                cursor=cursor,
                conn=conn,
            )
        ids = [j.id for j in page.jobs]
        if ids:
            seen += len(ids)
            yield ids
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def _run_op(ui: UIApp, ctx: Ctx, op: Op, batches: AsyncIterator[list[int]]) -> None:
    t0 = time.perf_counter()
    try:
        async for ids in batches:
            if op.cancelled:
                break
            results = await _apply(ui, op.action, ids)
            op.batches += 1
            for r in results:
                if r.outcome == "done":
                    op.done += 1
                else:
                    op.skipped += 1
                    op.reasons[r.reason or r.outcome] += 1
            ui.cache.clear()
            ui.live.publish("op", "jobs")
            await asyncio.sleep(BATCH_PAUSE)
    except asyncio.CancelledError:
        op.cancelled = True
        raise
    except Exception as exc:
        op.error = str(exc)
    finally:
        op.finished = True
        ui.live.publish("op", "jobs", "queues")
        ui.audit(
            ctx,
            {
                "action": f"{op.action}_all",
                "filter": op.description,
                "op": op.id,
                "counts": {"done": op.done, "skipped": op.skipped},
                "batches": op.batches,
                "outcome": "cancelled" if op.cancelled else ("error" if op.error else "ok"),
                "error": op.error,
                "duration_ms": round((time.perf_counter() - t0) * 1000, 1),
            },
        )


async def bulk_filter(ui: UIApp, ctx: Ctx) -> Response:
    """``POST /jobs/bulk``: ``action`` on every job the posted filter matches now.

    ``seen`` is the count the user saw; above 1,000 jobs ``confirm_count`` must repeat
    it. The server re-runs the filter itself and never trusts posted ids."""
    form: Params = ctx.form
    action = _action(form)
    _permit(ctx, action)
    if not ctx.can("bulk_by_filter"):
        raise UIError(403, "you may not act on everything a filter matches")
    q = parse_jobs_query(form)
    seen = form.integer("seen", lo=0, hi=10_000_000)
    if seen is None:
        raise BadParam("seen", "say how many jobs you saw")
    if seen > CONFIRM_ABOVE and form.integer("confirm_count", 0, lo=0, hi=10_000_000) != seen:
        raise BadParam("confirm_count", f"type the number of jobs ({seen}) to confirm")
    if ui.ops.running_for(ctx.principal.id) is not None:
        raise UIError(409, "you already have a bulk operation running")
    limit = min(ctx.access.bulk_limit, 100_000)
    description = " ".join(f"{k}={v}" for k, v in q.query_items())
    op = ui.ops.new(
        principal=ctx.principal.id,
        action=action,
        description=description,
        expected=min(seen, limit),
        limit=limit,
    )
    op.task = asyncio.create_task(_run_op(ui, ctx, op, _filter_batches(ui, q, limit)))
    return ui.redirect(ctx, ctx.url(f"/ops/{op.id}"), f"{action} of {seen} jobs started")


async def group_retry(ui: UIApp, ctx: Ctx, kind: str, fingerprint: str, ids: list[int]) -> Response:
    """Retry every job of one error group (ids re-derived by the server)."""
    _permit(ctx, "retry")
    if not ctx.can("bulk_by_filter") and len(ids) > MAX_SELECTION:
        raise UIError(403, "you may not act on more than 1,000 jobs at once")
    if ui.ops.running_for(ctx.principal.id) is not None:
        raise UIError(409, "you already have a bulk operation running")
    ids = ids[: min(ctx.access.bulk_limit, 100_000)]

    async def batches() -> AsyncIterator[list[int]]:
        for i in range(0, len(ids), BATCH):
            yield ids[i : i + BATCH]

    op = ui.ops.new(
        principal=ctx.principal.id,
        action="retry",
        description=f"errors kind={kind} fingerprint={fingerprint}",
        expected=len(ids),
        limit=len(ids),
    )
    op.task = asyncio.create_task(_run_op(ui, ctx, op, batches()))
    return ui.redirect(ctx, ctx.url(f"/ops/{op.id}"), f"retry of {len(ids)} jobs started")


async def op_page(ui: UIApp, ctx: Ctx) -> View:
    op = ui.ops.get(ctx.request.path_params["op_id"])
    if op is None:
        raise UIError(404, "no such operation (they are kept in this process only)")
    data = {
        "id": op.id,
        "action": op.action,
        "filter": op.description,
        "expected": op.expected,
        "done": op.done,
        "skipped": op.skipped,
        "batches": op.batches,
        "percent": op.percent,
        "finished": op.finished,
        "cancelled": op.cancelled,
        "error": op.error,
        "reasons": dict(op.reasons.most_common(10)),
        "started_at": op.started_at,
    }
    return View("op.html", data, {"mine": op.principal == ctx.principal.id}, title="operation")


async def op_cancel(ui: UIApp, ctx: Ctx) -> Response:
    op = ui.ops.get(ctx.request.path_params["op_id"])
    if op is None:
        raise UIError(404, "no such operation")
    if op.principal != ctx.principal.id:
        raise UIError(403, "only who started an operation may cancel it")
    op.cancelled = True
    return ui.redirect(ctx, ctx.url(f"/ops/{op.id}"), "cancelling")


# -- queues -----------------------------------------------------------------------------


async def queue_action(ui: UIApp, ctx: Ctx) -> Response:
    """``POST /queues/{name}/pause|resume`` (``*``: every queue)."""
    name = ctx.request.path_params["name"]
    action = ctx.request.path_params["action"]
    if action not in ("pause", "resume"):
        raise UIError(404, f"no queue action {action!r}")
    if not ctx.can("pause_queues"):
        raise UIError(403, "you may not pause or resume queues")
    if name != "*":
        try:
            validate_queue(name)
        except InvalidOptsError as exc:
            raise UIError(400, str(exc), param="name") from None
    t0 = time.perf_counter()
    api = control(ui.client)
    await (api.pause(name) if action == "pause" else api.resume(name))
    ui.audit(
        ctx,
        {
            "action": f"queue_{action}",
            "queue": name,
            "outcome": "ok",
            "duration_ms": round((time.perf_counter() - t0) * 1000, 1),
        },
    )
    ui.cache.clear()
    ui.live.publish("queues")
    label = "every queue" if name == "*" else f"queue {name}"
    message = f"{label} {'paused' if action == 'pause' else 'resumed'}"
    if ctx.wants_json:
        return Response(
            json_text({"action": action, "queue": name, "message": message}),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
    default = "/queues" if name == "*" else f"/queues/{name}"
    return ui.redirect(ctx, _next_url(ctx, default), message)
