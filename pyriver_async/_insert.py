"""Inserting jobs: one, many in one statement, or very many through COPY."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from ._args import InsertOpts, JobArgs
from ._codec import InsertParams, build_insert_params, job_from_record
from ._driver import Driver
from ._errors import SchemaNotMigratedError
from ._job import Job

__all__ = ["COPY_THRESHOLD", "InsertResult", "insert_many", "insert_one"]

# insert_many switches from one unnest() statement to COPY at this many jobs.
# Measured with benchmarks/insert.py (see README): below ~2,000 rows the extra
# round trips of the COPY path cost more than they save.
COPY_THRESHOLD = 2000


@dataclasses.dataclass(frozen=True, slots=True)
class InsertResult:
    """What an insert returns: the job row, and whether a unique duplicate was found instead."""

    job: Job[Any]
    unique_skipped_as_duplicate: bool = False


_JSON = msgspec.json.encode


def _missing_schema(exc: Exception, driver: Driver) -> SchemaNotMigratedError:
    return SchemaNotMigratedError(
        f"pyriver_async's tables are missing in schema {driver.schema!r} ({exc}); "
        "run `pyriver migrate up` (or `await pyriver_async.migrate(...)`) first"
    )


def _result(rec: asyncpg.Record, p: InsertParams) -> InsertResult:
    skipped = bool(rec["skipped"])
    if skipped and rec["kind"] != p.kind:  # pragma: no cover - unique key includes the kind
        args: Any = msgspec.json.decode(rec["args"])
    elif skipped:
        args = msgspec.json.decode(rec["args"], type=type(p.args))
    else:
        args = p.args
    return InsertResult(job=job_from_record(rec, args), unique_skipped_as_duplicate=skipped)


async def insert_one(
    conn: Any, driver: Driver, args: JobArgs, opts: InsertOpts | None
) -> InsertResult:
    p = build_insert_params(args, opts)
    try:
        rec = await conn.fetchrow(
            driver.sql["job_insert"],
            p.encoded_args,
            p.kind,
            p.max_attempts,
            p.metadata,
            p.priority,
            p.queue,
            p.scheduled_at,
            p.tags,
            p.unique_key,
            p.unique_states,
        )
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError,
            asyncpg.UndefinedObjectError) as exc:
        raise _missing_schema(exc, driver) from exc
    return _result(rec, p)


def _dedupe(params: list[InsertParams]) -> tuple[list[InsertParams], list[int]]:
    """Rows sharing a unique key collapse onto the first (one statement may not hit a row twice).

    Returns the rows to send and, for every input row, the index of its sent row.
    """
    seen: dict[bytes, int] = {}
    send: list[InsertParams] = []
    index: list[int] = []
    for p in params:
        if p.unique_key is not None:
            i = seen.get(p.unique_key)
            if i is not None:
                index.append(i)
                continue
            seen[p.unique_key] = len(send)
        index.append(len(send))
        send.append(p)
    return send, index


async def insert_many(
    conn: Any,
    driver: Driver,
    items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]],
    *,
    copy_threshold: int = COPY_THRESHOLD,
) -> list[InsertResult]:
    params = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError("insert_many items are JobArgs or (JobArgs, InsertOpts) pairs")
            params.append(build_insert_params(item[0], item[1]))
        else:
            params.append(build_insert_params(item, None))
    if not params:
        return []
    send, index = _dedupe(params)
    try:
        if len(send) >= copy_threshold and all(p.unique_key is None for p in send):
            results = await _insert_copy(conn, driver, send)
        else:
            results = await _insert_unnest(conn, driver, send)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError,
            asyncpg.UndefinedObjectError) as exc:
        raise _missing_schema(exc, driver) from exc
    out = []
    for i, p in enumerate(params):
        r = results[index[i]]
        if send[index[i]] is not p:
            r = InsertResult(job=r.job, unique_skipped_as_duplicate=True)
        out.append(r)
    return out


async def _insert_unnest(conn: Any, driver: Driver, send: list[InsertParams]) -> list[InsertResult]:
    rows = await conn.fetch(
        driver.sql["job_insert_many"],
        [p.encoded_args for p in send],
        [p.kind for p in send],
        [p.max_attempts for p in send],
        [p.metadata for p in send],
        [p.priority for p in send],
        [p.queue for p in send],
        [p.scheduled_at for p in send],
        [_JSON(p.tags).decode() if p.tags else None for p in send],
        [p.unique_key for p in send],
        [p.unique_states for p in send],
    )
    # RETURNING gives no order guarantee: match rows back by unique key or by order of ids.
    by_key: dict[bytes, asyncpg.Record] = {}
    fresh: list[asyncpg.Record] = []
    for r in rows:
        if r["unique_key"] is not None and r["unique_states"] is not None:
            by_key[r["unique_key"]] = r
        if not r["skipped"] and r["unique_key"] is None:
            fresh.append(r)
    fresh.sort(key=lambda r: r["id"])
    it = iter(fresh)
    out = []
    for p in send:
        rec = by_key[p.unique_key] if p.unique_key is not None else next(it)
        out.append(_result(rec, p))
    return out


_COPY_COLUMNS = (
    "id",
    "args",
    "kind",
    "max_attempts",
    "metadata",
    "priority",
    "queue",
    "scheduled_at",
    "created_at",
    "state",
    "tags",
)


async def _insert_copy(conn: Any, driver: Driver, send: list[InsertParams]) -> list[InsertResult]:
    """COPY with ids drawn from the sequence first, so the results need no read-back."""
    from ._job import JobState

    async with conn.transaction():
        head = await conn.fetchrow(driver.sql["job_next_ids"], len(send), driver.job_sequence)
        ids: list[int] = head["ids"]
        now = head["now"]
        records = []
        jobs = []
        queues: set[str] = set()
        for job_id, p in zip(ids, send, strict=True):
            at = p.scheduled_at or now
            state = JobState.SCHEDULED if at > now else JobState.AVAILABLE
            if state is JobState.AVAILABLE:
                queues.add(p.queue)
            records.append(
                (job_id, p.encoded_args, p.kind, p.max_attempts, p.metadata, p.priority,
                 p.queue, at, now, state.value, p.tags)
            )
            jobs.append(
                Job(
                    id=job_id, args=p.args, kind=p.kind, queue=p.queue, state=state,
                    priority=p.priority, attempt=0, max_attempts=p.max_attempts,
                    scheduled_at=at, created_at=now, tags=list(p.tags),
                    metadata=msgspec.json.decode(p.metadata) if p.metadata != "{}" else {},
                )
            )
        await conn.copy_records_to_table(
            "river_job", schema_name=driver.schema, columns=_COPY_COLUMNS, records=records
        )
        if queues:
            await conn.execute(driver.sql["job_notify_queues"], sorted(queues))
    return [InsertResult(job=j) for j in jobs]
