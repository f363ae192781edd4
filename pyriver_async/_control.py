"""The query and control API: list jobs with filters and keyset cursors, act on many
jobs at once with an outcome per job, count jobs per queue, read the liveness rows.

The ``Client`` methods (``list``, ``retry``, ``retry_many``, ``cancel_many``,
``delete``, ``delete_many``, ``list_queues``, ``get_queue``, ``list_clients``,
``leader``) are thin: they validate here, run the driver's statements, and turn rows
into the public types of this module. ``docs/query-api.md`` is the user's guide;
``_driver/listing.py`` says which index serves which listing.

Refinements of the agreed shape (``briefs/control-api.md``), forced by what the
database can do cheaply:

- ``list(..., scan_budget=10_000)``: how many index entries a page may read before
  it stops early (``JobPage.stopped_early``, its cursor at the frontier).
  ``JobPage.served_by`` names the index that served the page.
- Ordering by ``finalized_at`` lists finalized jobs only (other states have no
  finalized_at): ``states`` must then name only cancelled, completed or discarded.
- An empty filter list (``states=[]``) matches nothing.
- ``retry`` of a job already ``available`` and due changes nothing and counts as done
  (reason ``"already available"``); ``cancel_many`` of a ``cancelled`` job likewise;
  of a ``completed`` or ``discarded`` one it is refused. A retried job loses a
  recorded ``cancel_attempted_at`` (else its new attempt would end cancelled).
- ``list_queues(count_cap=10_000)`` / ``get_queue``: counts exact up to the cap, then
  the planner's estimate (``counts_exact`` False); see ``docs/query-api.md``.
  ``QueueInfo.paused_at`` (when it was paused) is added.
- ``ClientInfo.heartbeat_at`` of a stopped client is when it stopped.
- ``Client.liveness_available()`` tells a schema without the liveness table (River
  only: ``list_clients()`` is then empty) from one with no client running.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import msgspec

from ._args import _KIND_RE, _QUEUE_RE, MAX_NAME_LENGTH
from ._driver import Executor
from ._driver.listing import ALL_STATES, FINALIZED, ListedPage, ListSpec
from ._driver.records import ActionRow, ClientRow
from ._errors import (
    InvalidFilterError,
    JobNotFoundError,
    JobRefusedError,
    QueueNotFoundError,
)
from ._job import Job, JobState
from ._rows import decode_metadata, read_job

__all__ = [
    "BULK_BATCH",
    "MAX_LIMIT",
    "ClientInfo",
    "JobActionResult",
    "JobFilter",
    "JobOrder",
    "JobPage",
    "LeaderInfo",
    "QueueInfo",
    "QueueUse",
]

MAX_LIMIT = 10_000
MAX_IDS = 10_000
MAX_SCAN_BUDGET = 1_000_000
DEFAULT_SCAN_BUDGET = 10_000
DEFAULT_COUNT_CAP = 10_000
MAX_JSON_FILTER = 4096
#: Ids per statement of a bulk action.
BULK_BATCH = 500

_INDEX_OF = {
    "ids": "river_job_pkey",
    "contains": "river_job_args_index / river_job_metadata_index",
    "pkey": "river_job_pkey",
    "fetch": "river_job_prioritized_fetching_index",
    "finalized": "river_job_state_and_finalized_at_index",
}


class JobOrder(StrEnum):
    """The orders ``list`` offers (the id breaks ties)."""

    ID = "id"
    SCHEDULED_AT = "scheduled_at"
    FINALIZED_AT = "finalized_at"


@dataclass(frozen=True, kw_only=True)
class JobFilter:
    """Which jobs to list or act on: every field is optional, and a job matches when it
    matches all the fields given (an empty list matches nothing).

    ``tags_any``: at least one of these tags; ``tags_all``: every one of them. Time
    bounds are timezone-aware datetimes, ``*_after`` inclusive and ``*_before``
    exclusive. ``args_contains`` / ``metadata_contains`` are JSON objects matched by
    containment (PostgreSQL's ``jsonb @>``: ``{"user_id": 7}`` matches args holding
    that key and value), served by River's GIN indexes.
    """

    states: Sequence[JobState | str] | None = None
    queues: Sequence[str] | None = None
    kinds: Sequence[str] | None = None
    ids: Sequence[int] | None = None
    priorities: Sequence[int] | None = None
    tags_any: Sequence[str] | None = None
    tags_all: Sequence[str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    scheduled_after: datetime | None = None
    scheduled_before: datetime | None = None
    attempted_after: datetime | None = None
    attempted_before: datetime | None = None
    finalized_after: datetime | None = None
    finalized_before: datetime | None = None
    args_contains: Mapping[str, Any] | None = None
    metadata_contains: Mapping[str, Any] | None = None


_FILTER_FIELDS = frozenset(f.name for f in dataclasses.fields(JobFilter))


@dataclass(frozen=True)
class JobPage:
    """One page of :meth:`Client.list`.

    ``next_cursor`` (opaque) continues after this page; ``None`` when nothing more
    matches. ``stopped_early``: the page read ``scan_budget`` index entries before
    finding ``limit`` matches (a filter its index does not serve, matching rarely); the
    jobs found so far are here and ``next_cursor`` goes on from where it stopped.
    ``scanned``: index entries read for this page. ``served_by``: the index.
    """

    jobs: list[Job[Any]]
    next_cursor: str | None
    stopped_early: bool
    scanned: int
    served_by: str = ""


@dataclass(frozen=True)
class JobActionResult:
    """What a bulk action did to one job: ``done``, ``not_found`` or ``refused``
    (``reason`` says why, e.g. ``"running"`` or ``"unique conflict with job 42"``).
    ``job`` is the job as it now is (None when not found, or deleted)."""

    job_id: int
    outcome: Literal["done", "not_found", "refused"]
    reason: str = ""
    job: Job[Any] | None = None


@dataclass(frozen=True)
class QueueInfo:
    """A queue: its ``river_queue`` row (absent for a queue that only has jobs:
    ``created_at`` and ``updated_at`` are then None) and its jobs per state.

    ``counts`` are exact up to the ``count_cap`` of the call; a count above it is the
    planner's estimate (never below the cap), and ``counts_exact`` is then False.
    """

    name: str
    paused: bool
    created_at: datetime | None
    updated_at: datetime | None
    counts: Mapping[JobState, int]
    counts_exact: bool
    metadata: Mapping[str, Any]
    paused_at: datetime | None = None


@dataclass(frozen=True)
class QueueUse:
    """A client's use of one queue at its last heartbeat."""

    max_workers: int
    running: int


@dataclass(frozen=True)
class ClientInfo:
    """A client's liveness row (pyriver_client), as of its last heartbeat.

    ``alive``: it beat within its own ``dead_client_after``; ``stopping``: it is
    shutting down (or has stopped: then ``alive`` is False and ``heartbeat_at`` is
    when it stopped). ``metadata`` holds ``retention`` (seconds per finalized state)
    and, on the leader, ``periodic``: a list of ``{id, schedule, tz, next_run_at,
    last_run_at, run_on_start}`` (times as ISO 8601 text).
    """

    id: str
    hostname: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: timedelta
    alive: bool
    stopping: bool
    queues: Mapping[str, QueueUse]
    is_leader: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LeaderInfo:
    """The row of ``river_leader``: who leads, since when, until when unless renewed."""

    leader_id: str
    elected_at: datetime
    expires_at: datetime


# -- validation ------------------------------------------------------------------------


def _bad(message: str) -> InvalidFilterError:
    return InvalidFilterError(message)


def _strings(name: str, value: object, check: Any = None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence | set | frozenset):
        raise _bad(f"{name} must be a list of strings, got {value!r}")
    out = []
    for v in value:
        if not isinstance(v, str):
            raise _bad(f"{name} must hold strings, got {v!r}")
        if check is not None:
            check(v)
        out.append(v)
    return tuple(dict.fromkeys(out))


def _check_queue(v: str) -> None:
    if not 0 < len(v) <= MAX_NAME_LENGTH or not _QUEUE_RE.fullmatch(v):
        raise _bad(f"queue name {v!r} is invalid (letters, digits, '_', '-', '.', ':')")


def _check_kind(v: str) -> None:
    if not 0 < len(v) <= MAX_NAME_LENGTH or not _KIND_RE.fullmatch(v):
        raise _bad(f"job kind {v!r} is invalid")


def _check_tag(v: str) -> None:
    if not 0 < len(v) <= 255 or "\x00" in v:
        raise _bad(f"tag {v!r} is invalid")


def parse_state(value: object) -> str:
    """A state name from a JobState or a string; InvalidFilterError names the valid ones."""
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, str) and value in ALL_STATES:
        return value
    raise _bad(f"unknown job state {value!r}; the states are {', '.join(ALL_STATES)}")


def _ints(name: str, value: object, low: int, high: int, most: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise _bad(f"{name} must be a list of integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise _bad(f"{name} must hold integers from {low} to {high}, got {v!r}")
        out.append(v)
    if len(out) > most:
        raise _bad(f"{name} holds {len(out)} values; at most {most}")
    return tuple(dict.fromkeys(out))


def _time(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise _bad(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise _bad(f"{name} must be timezone-aware, e.g. datetime.now(timezone.utc)")
    return value


def _json_object(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _bad(f"{name} must be a JSON object (a mapping with string keys)")
    if not value:
        return None  # {} is contained in every object: no filter
    try:
        text = msgspec.json.encode(dict(value)).decode()
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise _bad(f"{name} cannot be encoded as JSON: {exc}") from None
    if len(text) > MAX_JSON_FILTER:
        raise _bad(f"{name} is {len(text)} bytes of JSON; at most {MAX_JSON_FILTER}")
    if "\\u0000" in text:
        raise _bad(f"{name} holds a NUL character")
    return text


def merge_filter(filter: JobFilter | None, filters: Mapping[str, Any]) -> JobFilter:
    """``filter`` with the keyword filters of a call laid over it."""
    unknown = sorted(set(filters) - _FILTER_FIELDS)
    if unknown:
        known = ", ".join(sorted(_FILTER_FIELDS))
        raise _bad(f"unknown filter {', '.join(unknown)}; the filters are {known}")
    if filter is not None and not isinstance(filter, JobFilter):
        raise _bad(f"filter must be a JobFilter, got {type(filter).__name__}")
    base = filter if filter is not None else JobFilter()
    return dataclasses.replace(base, **filters) if filters else base


def parse_order(order: object) -> str:
    try:
        return JobOrder(str(order) if isinstance(order, str) else "").value
    except ValueError:
        raise _bad(
            f"unknown order {order!r}; the orders are {', '.join(o.value for o in JobOrder)}"
        ) from None


def build_spec(
    f: JobFilter,
    *,
    order: JobOrder | str = JobOrder.ID,
    descending: bool = True,
    limit: int = 100,
    cursor: str | None = None,
    scan_budget: int = DEFAULT_SCAN_BUDGET,
) -> ListSpec:
    """Validate a list request into the driver's :class:`ListSpec`."""
    order_name = parse_order(order)
    if not isinstance(descending, bool):
        raise _bad(f"descending must be True or False, got {descending!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    if (
        isinstance(scan_budget, bool)
        or not isinstance(scan_budget, int)
        or not 1 <= scan_budget <= MAX_SCAN_BUDGET
    ):
        raise _bad(f"scan_budget must be an integer from 1 to {MAX_SCAN_BUDGET}")
    states = None
    if f.states is not None:
        if isinstance(f.states, str) or not isinstance(f.states, Sequence | set | frozenset):
            raise _bad(f"states must be a list of job states, got {f.states!r}")
        states = tuple(dict.fromkeys(parse_state(s) for s in f.states))
    if order_name == JobOrder.FINALIZED_AT and states is not None:
        active = [s for s in states if s not in FINALIZED]
        if active:
            raise _bad(
                f"ordering by finalized_at lists finalized jobs only (cancelled, completed, "
                f"discarded); {', '.join(active)} jobs have no finalized_at"
            )
    after = decode_cursor(cursor, order_name, descending) if cursor is not None else None
    return ListSpec(
        order=order_name,
        descending=descending,
        limit=limit,
        after=after,
        scan_budget=scan_budget,
        states=states,
        queues=_strings("queues", f.queues, _check_queue),
        kinds=_strings("kinds", f.kinds, _check_kind),
        ids=_ints("ids", f.ids, 1, 2**63 - 1, MAX_IDS),
        priorities=_ints("priorities", f.priorities, 1, 4, 4),
        tags_any=_strings("tags_any", f.tags_any, _check_tag),
        tags_all=_strings("tags_all", f.tags_all, _check_tag),
        created_after=_time("created_after", f.created_after),
        created_before=_time("created_before", f.created_before),
        scheduled_after=_time("scheduled_after", f.scheduled_after),
        scheduled_before=_time("scheduled_before", f.scheduled_before),
        attempted_after=_time("attempted_after", f.attempted_after),
        attempted_before=_time("attempted_before", f.attempted_before),
        finalized_after=_time("finalized_after", f.finalized_after),
        finalized_before=_time("finalized_before", f.finalized_before),
        args_contains=_json_object("args_contains", f.args_contains),
        metadata_contains=_json_object("metadata_contains", f.metadata_contains),
    )


def _empty(spec: ListSpec) -> bool:
    """An empty list among the filters: nothing can match."""
    return any(
        v is not None and len(v) == 0
        for v in (
            spec.states,
            spec.queues,
            spec.kinds,
            spec.ids,
            spec.priorities,
            spec.tags_any,
        )
    )


# -- cursors ----------------------------------------------------------------------------

_CURSOR_VERSION = 1
_CURSOR_DIGEST = 6
_CURSOR_SALT = b"pyriver-cursor\x00"


def encode_cursor(order: str, descending: bool, key: tuple[datetime | None, int]) -> str:
    """An opaque cursor: base64url of a small JSON payload and a digest of it (so an
    edited or truncated cursor is told apart from a valid one)."""
    at, job_id = key
    payload = msgspec.json.encode(
        {
            "v": _CURSOR_VERSION,
            "o": order,
            "d": descending,
            "t": at.isoformat() if at is not None else None,
            "i": job_id,
        }
    )
    digest = hashlib.sha256(_CURSOR_SALT + payload).digest()[:_CURSOR_DIGEST]
    return base64.urlsafe_b64encode(payload + digest).rstrip(b"=").decode()


class _Cursor(msgspec.Struct):
    v: int
    o: str
    d: bool
    t: str | None
    i: int


def decode_cursor(cursor: object, order: str, descending: bool) -> tuple[datetime | None, int]:
    """The key a cursor holds; InvalidFilterError when it is not one of ours, or was
    made for another order or direction."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 512:
        raise _bad("malformed cursor: pass the next_cursor of a previous page as it is")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise _bad("malformed cursor: not base64url") from None
    payload, digest = raw[:-_CURSOR_DIGEST], raw[-_CURSOR_DIGEST:]
    if hashlib.sha256(_CURSOR_SALT + payload).digest()[:_CURSOR_DIGEST] != digest:
        raise _bad("malformed cursor: it was changed or cut short")
    try:
        c = msgspec.json.decode(payload, type=_Cursor)
    except msgspec.DecodeError:
        raise _bad("malformed cursor") from None
    if c.v != _CURSOR_VERSION:
        raise _bad(f"cursor of version {c.v}, this release reads version {_CURSOR_VERSION}")
    if c.o != order or c.d != descending:
        way = "descending" if c.d else "ascending"
        raise _bad(
            f"this cursor continues a listing ordered by {c.o} {way}; pass the same "
            "order and direction, or no cursor"
        )
    at = None
    if c.t is not None:
        try:
            at = datetime.fromisoformat(c.t)
        except ValueError:
            raise _bad("malformed cursor: bad time") from None
    if order != JobOrder.ID and at is None:
        raise _bad("malformed cursor: no time")
    return (at, c.i)


# -- listing ------------------------------------------------------------------------------


async def list_jobs(ex: Executor, spec: ListSpec) -> JobPage:
    if _empty(spec):
        return JobPage([], None, False, 0, "")
    page: ListedPage = await ex.job_list(spec)
    cursor = (
        encode_cursor(spec.order, spec.descending, page.next_key)
        if page.next_key is not None
        else None
    )
    return JobPage(
        [read_job(r) for r in page.rows],
        cursor,
        page.stopped_early,
        page.scanned,
        _INDEX_OF.get(page.source, page.source),
    )


def natural_order(states: Sequence[JobState | str] | None) -> JobOrder:
    """The order whose index serves a listing of these states exactly: finalized_at for
    finalized states only, scheduled_at for the others only, else id."""
    if not states:
        return JobOrder.ID
    names = {parse_state(s) for s in states}
    if names <= set(FINALIZED):
        return JobOrder.FINALIZED_AT
    if not names & set(FINALIZED):
        return JobOrder.SCHEDULED_AT
    return JobOrder.ID


# -- actions ------------------------------------------------------------------------------

Action = Literal["retry", "cancel", "delete"]


def _result(action: Action, a: ActionRow) -> JobActionResult:
    job = read_job(a.row)
    d = a.decision
    if action == "retry":
        if d == "retry":
            return JobActionResult(job.id, "done", "", job)
        if d == "already_available":
            return JobActionResult(job.id, "done", "already available", job)
        if d == "unique_conflict":
            holder = f" {a.conflict_id}" if a.conflict_id is not None else ""
            return JobActionResult(job.id, "refused", f"unique conflict with job{holder}", job)
        return JobActionResult(job.id, "refused", d, job)
    if action == "cancel":
        if d == "cancel":
            reason = "cancel requested while running" if job.state is JobState.RUNNING else ""
            return JobActionResult(job.id, "done", reason, job)
        if d == "cancelled":
            return JobActionResult(job.id, "done", "already cancelled", job)
        return JobActionResult(job.id, "refused", f"already {d}", job)
    if d == "delete":
        return JobActionResult(job.id, "done", "", None)
    return JobActionResult(job.id, "refused", d, job)


async def _act_ids(ex: Executor, action: Action, ids: Sequence[int]) -> list[JobActionResult]:
    if action == "retry":
        rows = await ex.job_retry_many(ids=ids)
    elif action == "cancel":
        rows = await ex.job_cancel_many(ids=ids)
    else:
        rows = await ex.job_delete_many(ids=ids)
    by_id = {a.row[0]: a for a in rows}
    return [
        _result(action, by_id[i]) if i in by_id else JobActionResult(i, "not_found") for i in ids
    ]


def _check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _bad(f"limit must be a positive integer or None, got {limit!r}")
    return limit


async def act(
    ex: Executor,
    action: Action,
    ids_or_filter: Sequence[int] | JobFilter,
    *,
    limit: int | None = None,
) -> list[JobActionResult]:
    """Apply ``action`` to ids (in their order, duplicates once) or to every job a
    filter matches, in batches of :data:`BULK_BATCH`; one result per job, each job
    acted on at most once."""
    most = _check_limit(limit)
    out: list[JobActionResult] = []
    if isinstance(ids_or_filter, JobFilter):
        f = ids_or_filter
        build_spec(f)  # refuse a bad filter before acting on anything
        order = natural_order(f.states)
        cursor: str | None = None
        # The walk's order key can change under the action (a retry moves scheduled_at
        # to now): a job acted on in one batch may match again ahead of the cursor.
        done: set[int] = set()
        while most is None or len(out) < most:
            size = BULK_BATCH if most is None else min(BULK_BATCH, most - len(out))
            try:
                spec = build_spec(f, order=order, limit=size, cursor=cursor)
                page = await list_jobs(ex, spec)
            except InvalidFilterError:
                if order is JobOrder.ID or cursor is not None:
                    raise
                order = JobOrder.ID  # too many index ranges to walk in that order
                continue
            fresh = [j.id for j in page.jobs if j.id not in done]
            if fresh:
                done.update(fresh)
                out += await _act_ids(ex, action, fresh)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return out
    if isinstance(ids_or_filter, str | bytes) or not isinstance(ids_or_filter, Sequence):
        raise _bad("give a list of job ids or a JobFilter")
    ids = _ints("ids", list(ids_or_filter), 1, 2**63 - 1, 10**12)
    assert ids is not None
    if most is not None:
        ids = ids[:most]
    for i in range(0, len(ids), BULK_BATCH):
        out += await _act_ids(ex, action, ids[i : i + BULK_BATCH])
    return out


def check_job_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise _bad(f"a job id is an integer, got {job_id!r}")
    return job_id


async def act_one(ex: Executor, action: Action, job_id: int) -> Job[Any]:
    """One job: its new state, or JobNotFoundError / JobRefusedError."""
    check_job_id(job_id)
    if job_id < 1:
        raise JobNotFoundError(f"no job with id {job_id}")
    if action == "delete":
        rows = await ex.job_delete_many(ids=[job_id])
        if not rows:
            raise JobNotFoundError(f"no job with id {job_id}")
        a = rows[0]
        job = read_job(a.row)
        if a.decision != "delete":
            raise JobRefusedError(
                f"job {job_id} is running: cancel it first, or wait for it to end",
                reason="running",
                job=job,
            )
        return job
    (r,) = await _act_ids(ex, action, [job_id])
    if r.outcome == "not_found":
        raise JobNotFoundError(f"no job with id {job_id}")
    if r.outcome == "refused":
        assert r.job is not None
        raise JobRefusedError(
            f"cannot {action} job {job_id}: {r.reason}", reason=r.reason, job=r.job
        )
    assert r.job is not None
    return r.job


# -- queues ------------------------------------------------------------------------------


async def queue_infos(ex: Executor, names: Sequence[str] | None, count_cap: int) -> list[QueueInfo]:
    if isinstance(count_cap, bool) or not isinstance(count_cap, int) or count_cap < 1:
        raise _bad(f"count_cap must be a positive integer, got {count_cap!r}")
    rows = {r.name: r for r in await ex.queue_list_rows(names=names)}
    if names is None:
        found = await ex.job_queues_in_states(states=ALL_STATES)
        all_names = sorted(set(rows) | {q for _s, q in found})
    else:
        all_names = list(names)
    counts = await ex.queue_counts(names=all_names, states=ALL_STATES, cap=count_cap)
    out = []
    for name in all_names:
        exact = True
        per_state: dict[JobState, int] = {}
        for s in ALL_STATES:
            n = counts.get((name, s), 0)
            if n > count_cap:
                exact = False
                est = await ex.queue_count_estimate(state=s, queue=name)
                n = max(count_cap + 1, est or 0)
            per_state[JobState(s)] = n
        row = rows.get(name)
        out.append(
            QueueInfo(
                name=name,
                paused=row is not None and row.paused_at is not None,
                created_at=row.created_at if row is not None else None,
                updated_at=row.updated_at if row is not None else None,
                counts=per_state,
                counts_exact=exact,
                metadata=decode_metadata(row.metadata) if row is not None else {},
                paused_at=row.paused_at if row is not None else None,
            )
        )
    return out


async def queue_info(ex: Executor, name: object, count_cap: int) -> QueueInfo:
    if not isinstance(name, str):
        raise _bad(f"a queue name is a string, got {name!r}")
    _check_queue(name)
    (info,) = await queue_infos(ex, [name], count_cap)
    if info.created_at is None and not any(info.counts.values()):
        raise QueueNotFoundError(f"no queue named {name!r} (no river_queue row, no jobs)")
    return info


# -- clients and leader -------------------------------------------------------------------

_use_decoder = msgspec.json.Decoder(dict[str, dict[str, int]])


def _client_info(r: ClientRow, leader: LeaderInfo | None) -> ClientInfo:
    try:
        use = _use_decoder.decode(r.queue_use) if r.queue_use else {}
    except (msgspec.DecodeError, msgspec.ValidationError):
        use = {}
    queues = {
        name: QueueUse(
            max_workers=int(use.get(name, {}).get("max_workers", 0)),
            running=int(use.get(name, {}).get("running", 0)),
        )
        for name in sorted(set(r.queues) | set(use))
    }
    age = r.now - r.heartbeat_at
    dead_after = r.dead_after if r.dead_after is not None else 30.0
    alive = not r.marked_dead and age.total_seconds() < dead_after
    is_leader = leader is not None and leader.leader_id == r.id and leader.expires_at >= r.now
    return ClientInfo(
        id=r.id,
        hostname=r.hostname,
        pid=r.pid,
        version=r.version,
        started_at=r.started_at,
        heartbeat_at=r.heartbeat_at,
        heartbeat_age=age,
        alive=alive,
        stopping=r.stopping or r.marked_dead,
        queues=queues,
        is_leader=is_leader,
        metadata=decode_metadata(r.metadata),
    )


async def leader_info(ex: Executor) -> LeaderInfo | None:
    row = await ex.leader_info()
    if row is None:
        return None
    return LeaderInfo(leader_id=row.leader_id, elected_at=row.elected_at, expires_at=row.expires_at)


async def client_infos(ex: Executor) -> list[ClientInfo]:
    if not await ex.client_table_exists():
        return []
    leader = await leader_info(ex)
    return [_client_info(r, leader) for r in await ex.client_list()]
