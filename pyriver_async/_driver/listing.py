"""Listing jobs: which index serves a request, the SQL built from whitelisted fragments,
and the bounded walk that keeps every page cheap on a table of millions of rows.

A request (:class:`ListSpec`, validated by ``_control``) is served in one of two ways.

Exact
    ``ids`` (at most 10,000, the primary key), or an ``args`` / ``metadata``
    containment that matches at most :data:`CONTAINS_CAP` jobs (the GIN indexes): the
    whole candidate set is known, and one statement applies every filter, the cursor,
    the order and the limit to it.

Walked in order
    Otherwise the candidates come from the index that gives the page's order, read
    from the cursor onwards:

    - ``id``: the primary key;
    - ``scheduled_at``: river_job_prioritized_fetching_index, one range per (state,
      queue, priority) — states, queues (found by a loose index scan when not given)
      and priorities become equality conditions, ``scheduled_after``/``before`` a range,
      the cursor a row comparison — merged by (scheduled_at, id);
    - ``finalized_at``: river_job_state_and_finalized_at_index, one range per
      finalized state, ``finalized_after``/``before`` a range.

    Filters that index does not serve (kinds, tags, priorities on the primary key...)
    are checked on the candidates' rows. Each round reads at most ``chunk`` entries per
    range; the *frontier* is the least advanced last entry among the ranges that were
    cut short, and only candidates up to it count (beyond it a range may hold entries
    not read yet). Rounds grow until the page is full, every range is exhausted, or
    ``scan_budget`` entries have been read; then the page says it stopped early and
    its cursor is the frontier, so the next call goes on from there. With no filter
    left to check on the rows, the first round fills the page.

Every value is a bind parameter; the only text put together here is the fragments of
this module (conditions and orders) and the skeletons of ``sql/control.sql``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from .._errors import InvalidFilterError
from .columns import FINALIZED_AT, ID, SCHEDULED_AT
from .queries import Queries, Query

__all__ = [
    "ALL_STATES",
    "CONTAINS_CAP",
    "FINALIZED",
    "ListSpec",
    "ListedPage",
    "list_page",
]

ALL_STATES = (
    "available",
    "cancelled",
    "completed",
    "discarded",
    "pending",
    "retryable",
    "running",
    "scheduled",
)
FINALIZED = ("cancelled", "completed", "discarded")
PRIORITIES = (1, 2, 3, 4)
#: A containment filter matching at most this many jobs is served exactly by its GIN index.
CONTAINS_CAP = 10_000
#: Above this many (state, queue, priority) ranges, a scheduled_at listing is walked on
#: the primary key instead (every range costs a descent per round).
MAX_RANGES = 2_000
MAX_QUEUES = 1_000

Key = tuple[datetime | None, int]


@dataclass(frozen=True, slots=True)
class ListSpec:
    """A validated list request in plain values (JSON filters as text)."""

    order: str = "id"  # "id" | "scheduled_at" | "finalized_at"
    descending: bool = True
    limit: int = 100
    after: Key | None = None  # the cursor: the key of the last job already seen
    scan_budget: int = 10_000
    states: tuple[str, ...] | None = None
    queues: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    ids: tuple[int, ...] | None = None
    priorities: tuple[int, ...] | None = None
    tags_any: tuple[str, ...] | None = None
    tags_all: tuple[str, ...] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    scheduled_after: datetime | None = None
    scheduled_before: datetime | None = None
    attempted_after: datetime | None = None
    attempted_before: datetime | None = None
    finalized_after: datetime | None = None
    finalized_before: datetime | None = None
    args_contains: str | None = None
    metadata_contains: str | None = None


@dataclass(frozen=True, slots=True)
class ListedPage:
    rows: list[Any]  # job rows (JOB_COLUMNS order)
    next_key: Key | None
    stopped_early: bool
    scanned: int
    source: str  # which index served the page: ids, contains, pkey, fetch, finalized


# -- the whitelisted fragments ---------------------------------------------------------

# Conditions on a job row, by ListSpec field (`j` is river_job).
_CONDITIONS = {
    "states": "j.state = ANY(@states::text[]::{schema}.river_job_state[])",
    "queues": "j.queue = ANY(@queues::text[])",
    "kinds": "j.kind = ANY(@kinds::text[])",
    "ids": "j.id = ANY(@ids::bigint[])",
    "priorities": "j.priority = ANY(@priorities::smallint[])",
    "tags_any": "j.tags && @tags_any::varchar(255)[]",
    "tags_all": "j.tags @> @tags_all::varchar(255)[]",
    "created_after": "j.created_at >= @created_after::timestamptz",
    "created_before": "j.created_at < @created_before::timestamptz",
    "scheduled_after": "j.scheduled_at >= @scheduled_after::timestamptz",
    "scheduled_before": "j.scheduled_at < @scheduled_before::timestamptz",
    "attempted_after": "j.attempted_at >= @attempted_after::timestamptz",
    "attempted_before": "j.attempted_at < @attempted_before::timestamptz",
    "finalized_after": "j.finalized_at >= @finalized_after::timestamptz",
    "finalized_before": "j.finalized_at < @finalized_before::timestamptz",
    "args_contains": "j.args @> @args_contains::text::jsonb",
    "metadata_contains": "j.metadata @> @metadata_contains::text::jsonb",
}
# The order column of each order (the id breaks ties).
_ORDER_COLUMN = {"id": None, "scheduled_at": "j.scheduled_at", "finalized_at": "j.finalized_at"}
# What each walked source serves itself (the rest is checked on the rows).
_SERVED = {
    "pkey": frozenset(),
    "fetch": frozenset({"states", "queues", "priorities", "scheduled_after", "scheduled_before"}),
    "finalized": frozenset({"states", "finalized_after", "finalized_before"}),
}


def _order_sql(order: str, descending: bool) -> str:
    d = "DESC" if descending else "ASC"
    col = _ORDER_COLUMN[order]
    return f"j.id {d}" if col is None else f"{col} {d}, j.id {d}"


def _keyset_sql(order: str, descending: bool) -> str:
    op = "<" if descending else ">"
    col = _ORDER_COLUMN[order]
    if col is None:
        return f"j.id {op} @c_id::bigint"
    bound = "<=" if descending else ">="
    # The plain bound first: it is the range condition of an index that ends with the
    # order column but not with the id (the finalized index).
    return (
        f"{col} {bound} @c_at::timestamptz AND "
        f"({col}, j.id) {op} (@c_at::timestamptz, @c_id::bigint)"
    )


@lru_cache(maxsize=1024)
def _render(
    template: Query,
    where: tuple[str, ...],
    order: str,
    qschema: str,
    ok: tuple[str, ...] = (),
    key: str = "NULL::timestamptz",
) -> Query:
    text = template.text.replace("{where}", " AND ".join(where) or "true")
    text = text.replace("{ok}", "(" + " AND ".join(ok) + ")" if ok else "true")
    text = text.replace("{order}", order).replace("{key}", key).replace("{schema}", qschema)
    return Query(template.name, text)


def _conditions(spec: ListSpec, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(_CONDITIONS[n] for n in names if getattr(spec, n) is not None)


def _values(spec: ListSpec, after: Key | None, **more: Any) -> dict[str, Any]:
    v: dict[str, Any] = {n: getattr(spec, n) for n in _CONDITIONS}
    for n in ("states", "queues", "kinds", "ids", "priorities", "tags_any", "tags_all"):
        if v[n] is not None:
            v[n] = list(v[n])
    v["c_at"] = after[0] if after is not None else None
    v["c_id"] = after[1] if after is not None else None
    v.update(more)
    return v


def _bind(q: Query, values: dict[str, Any]) -> tuple[Any, ...]:
    return q.bind(**{p: values[p] for p in q.params})


Fetch = Callable[[Query, tuple[Any, ...]], Awaitable[list[Any]]]


def _key(order: str, row: Any) -> Key:
    if order == "id":
        return (None, row[ID])
    if order == "scheduled_at":
        return (row[SCHEDULED_AT], row[ID])
    return (row[FINALIZED_AT], row[ID])


async def _rows(
    fetch: Fetch,
    queries: Queries,
    spec: ListSpec,
    ids: Sequence[int],
    after: Key | None,
    limit: int,
) -> list[Any]:
    """The rows of ``ids`` that match every filter now, past ``after``, in page order."""
    if not ids or limit <= 0:
        return []
    where = _conditions(spec, [n for n in _CONDITIONS if n != "ids"])
    if spec.order == "finalized_at":
        where += ("j.finalized_at IS NOT NULL",)  # only finalized jobs have that order
    if after is not None:
        where += (_keyset_sql(spec.order, spec.descending),)
    q = _render(
        queries.job_list_rows, where, _order_sql(spec.order, spec.descending), queries.qschema
    )
    return await fetch(q, _bind(q, _values(spec, after, ids=list(ids), limit=limit)))


def _exact_page(spec: ListSpec, rows: list[Any], scanned: int, source: str) -> ListedPage:
    if len(rows) > spec.limit:
        page = rows[: spec.limit]
        return ListedPage(page, _key(spec.order, page[-1]), False, scanned, source)
    return ListedPage(rows, None, False, scanned, source)


async def list_page(fetch: Fetch, queries: Queries, spec: ListSpec) -> ListedPage:
    """One page of ``spec``; ``fetch(query, args)`` runs a statement (one connection)."""
    if spec.ids is not None:
        rows = await _rows(fetch, queries, spec, spec.ids, spec.after, spec.limit + 1)
        return _exact_page(spec, rows, len(spec.ids), "ids")
    if spec.args_contains is not None or spec.metadata_contains is not None:
        contains = ("args_contains", "metadata_contains")
        others = [n for n in _CONDITIONS if n not in contains and getattr(spec, n) is not None]
        ok = _conditions(spec, others)
        if spec.order == "finalized_at":
            ok += ("j.finalized_at IS NOT NULL",)
        q = _render(
            queries.job_list_ids_contains,
            _conditions(spec, contains),
            "",
            queries.qschema,
            ok,
            _ORDER_COLUMN[spec.order] or "NULL::timestamptz",
        )
        found = await fetch(q, _bind(q, _values(spec, None, chunk=CONTAINS_CAP + 1)))
        if len(found) <= CONTAINS_CAP:
            keys = [(r[1], r[0]) for r in found if r[3]]
            if spec.after is not None:
                keys = [k for k in keys if not _before_or_at(k, spec.after, spec.descending)]
            ids, cut = _first_in_order(keys, spec.descending, spec.limit + 1)
            rows = await _rows(fetch, queries, spec, ids, spec.after, spec.limit + 1)
            if len(rows) <= spec.limit and cut is not None:
                # Some changed since the candidates were read: go on after the last one
                # looked at, not past the ones never looked at.
                return ListedPage(rows, cut, False, len(found), "contains")
            return _exact_page(spec, rows, len(found), "contains")
        # Dense: walk the order's index, the containment checked on the rows.
    return await _walk(fetch, queries, spec)


async def _ranges(
    fetch: Fetch, queries: Queries, spec: ListSpec
) -> tuple[str, list[tuple[Any, ...]]]:
    """The walked source and its ranges ((state, queue, priority) for fetch)."""
    if spec.order == "finalized_at":
        states = [s for s in FINALIZED if spec.states is None or s in spec.states]
        return "finalized", [(s,) for s in states]
    if spec.order == "scheduled_at":
        states = list(spec.states) if spec.states is not None else list(ALL_STATES)
        priorities = list(spec.priorities) if spec.priorities is not None else list(PRIORITIES)
        if spec.queues is not None:
            pairs = [(s, q) for s in states for q in spec.queues]
        else:
            q = queries.job_queues_in_states
            found = await fetch(q, q.bind(states=states, max_queues=MAX_QUEUES + 1))
            pairs = [(r[0], r[1]) for r in found]
            per_state: dict[str, int] = {}
            for st, _q in pairs:
                per_state[st] = per_state.get(st, 0) + 1
            if any(n > MAX_QUEUES for n in per_state.values()):
                raise InvalidFilterError(
                    f"ordering by scheduled_at over more than {MAX_QUEUES} queues: filter "
                    "by queues, or order by id"
                )
        ranges = [(s, q, p) for s, q in pairs for p in priorities]
        if len(ranges) > MAX_RANGES:
            raise InvalidFilterError(
                f"ordering by scheduled_at reads one index range per (state, queue, "
                f"priority): {len(ranges)} of them here, more than {MAX_RANGES}; filter "
                "by states, queues or priorities, or order by id"
            )
        return "fetch", ranges
    return "pkey", [()]


def _first_in_order(keys: list[Key], descending: bool, n: int) -> tuple[list[int], Key | None]:
    """The ids of the first ``n`` keys in page order, and the last of them when there
    were more (the rest were not looked at: a page that ends short goes on from it)."""
    if keys and keys[0][0] is not None:
        keys.sort(key=lambda k: (k[0], k[1]), reverse=descending)
    else:
        keys.sort(key=lambda k: k[1], reverse=descending)
    return [k[1] for k in keys[:n]], (keys[n - 1] if len(keys) > n else None)


def _before_or_at(a: Key, b: Key, descending: bool) -> bool:
    """Whether ``a`` comes no later than ``b`` in page order (keys of one source: the
    order column is None for every key of the primary key, set for the others)."""
    ka: tuple[Any, ...] = (a[1],) if a[0] is None or b[0] is None else a
    kb: tuple[Any, ...] = (b[1],) if a[0] is None or b[0] is None else b
    return ka >= kb if descending else ka <= kb


async def _walk(fetch: Fetch, queries: Queries, spec: ListSpec) -> ListedPage:
    source, ranges = await _ranges(fetch, queries, spec)
    if not ranges:
        return ListedPage([], None, False, 0, source)
    residual = [n for n in _CONDITIONS if getattr(spec, n) is not None and n not in _SERVED[source]]
    template = {
        "pkey": queries.job_list_ids_pkey,
        "fetch": queries.job_list_ids_fetch,
        "finalized": queries.job_list_ids_finalized,
    }[source]
    order = _order_sql(spec.order, spec.descending)
    served = [n for n in _SERVED[source] if n not in ("states", "queues", "priorities")]
    base_where = _conditions(spec, served)
    ok = _conditions(spec, residual)  # checked on each candidate's row, in the same visit
    extra: dict[str, Any] = {}
    if source == "fetch":
        extra = {
            "states": [r[0] for r in ranges],
            "queues": [r[1] for r in ranges],
            "priorities": [r[2] for r in ranges],
        }
    elif source == "finalized":
        extra = {"states": [r[0] for r in ranges]}
    n_ranges = len(ranges)
    if not residual:
        per_range = spec.limit + 1
    else:
        total = min(spec.scan_budget, max(4 * (spec.limit + 1), 1000))
        per_range = max(1, total // n_ranges)
    after = spec.after
    matches: list[Any] = []
    scanned = 0
    while True:
        where = base_where + ((_keyset_sql(spec.order, spec.descending),) if after else ())
        q = _render(template, where, order, queries.qschema, ok)
        cands = await fetch(q, _bind(q, _values(spec, after, chunk=per_range, **extra)))
        scanned += len(cands)
        last: dict[int, Key] = {}
        count: dict[int, int] = {}
        for r in cands:
            count[r[2]] = count.get(r[2], 0) + 1
            last[r[2]] = (r[1], r[0])
        cut_short = [last[c] for c, n in count.items() if n >= per_range]
        frontier: Key | None = None
        for k in cut_short:
            if frontier is None or _before_or_at(k, frontier, spec.descending):
                frontier = k
        keys = [
            (r[1], r[0])
            for r in cands
            if r[3] and (frontier is None or _before_or_at((r[1], r[0]), frontier, spec.descending))
        ]
        need = spec.limit - len(matches)
        ids, cut = _first_in_order(keys, spec.descending, need + 1)
        matches += await _rows(fetch, queries, spec, ids, after, need + 1)
        if len(matches) > spec.limit:
            page = matches[: spec.limit]
            return ListedPage(page, _key(spec.order, page[-1]), False, scanned, source)
        # How far this round looked: the frontier, or the last candidate passed on when
        # more were left (rows that changed meanwhile came back short).
        reached = cut if cut is not None else frontier
        if reached is None:  # every range read to its end
            return ListedPage(matches, None, False, scanned, source)
        if len(matches) == spec.limit:
            return ListedPage(matches, reached, False, scanned, source)
        if scanned >= spec.scan_budget:
            return ListedPage(matches, reached, True, scanned, source)
        after = reached
        if cut is None:
            left = spec.scan_budget - scanned
            per_range = max(1, min(per_range * 4, left // n_ranges))
