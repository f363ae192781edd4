"""Inserting jobs: one, many in one statement, or very many through COPY."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import asyncpg
import msgspec

from ._args import InsertOpts, JobArgs
from ._codec import InsertParams, build_insert_params, build_plain_params, job_from_record
from ._driver import Driver
from ._errors import SchemaNotMigratedError
from ._job import Job, JobState

__all__ = ["COPY_THRESHOLD", "InsertResult", "insert_many", "insert_one"]

# insert_many sends the jobs without a unique key through COPY from this many on,
# and through one unnest() statement below it. Measured with a throwaway script on
# the development machine (2 vCPUs shared with other work, PostgreSQL 15 on the same
# host over TCP loopback, one connection, ~30-byte args, the two paths alternating),
# ms per insert_many call, unnest / COPY, outside a transaction, median of 5:
#       500: 13.4 / 9.5    1,000: 22.7 / 17.1    2,000: 71.0 / 45.7
#     5,000: 138 / 95     10,000: 262 / 146     (COPY 53k-69k jobs/s, unnest 28k-44k)
# and, median of 15: 10: 1.6 / 1.7, 20: 2.0 / 2.2, 30: 2.1 / 2.7, 50: 2.6 / 2.5,
# 100: 4.0 / 3.4, 200: 7.8 / 6.4. The crossover is between 30 and 50 jobs. Inside
# the caller's transaction (2 round trips for COPY instead of 4) COPY won at every
# size from 10. COPY saves ~5-10 us a job; with the database across a network of
# round trip r ms, its three extra round trips move the crossover up by ~400 * r jobs.
COPY_THRESHOLD = 50
# From this many items, insert_many asks for the batch's ids before validating it, so
# that the database's work overlaps ours (100k jobs: ~50 ms of ~800). Below it, the
# round trip it may add outweighs the overlap.
PREFETCH_IDS_FROM = 2000

_MISSING_SCHEMA_ERRORS = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
    asyncpg.UndefinedObjectError,
)


class InsertResult:
    """What an insert returns: the job row, and whether a unique duplicate was found instead."""

    __slots__ = ("_job", "_params", "_record", "unique_skipped_as_duplicate")

    def __init__(self, job: Job[Any], unique_skipped_as_duplicate: bool = False) -> None:
        self._job: Job[Any] | None = job
        self._record: tuple[Any, ...] | None = None
        self._params: InsertParams | None = None
        self.unique_skipped_as_duplicate = unique_skipped_as_duplicate

    @classmethod
    def _copied(cls, record: tuple[Any, ...], params: InsertParams) -> InsertResult:
        # The COPY path builds its Job on first access, from the row it copied: a 100k
        # batch whose results are not read costs no Job objects.
        self = cls.__new__(cls)
        self._job = None
        self._record = record
        self._params = params
        self.unique_skipped_as_duplicate = False
        return self

    @property
    def job(self) -> Job[Any]:
        """The inserted job, or the existing one when the insert was a unique duplicate."""
        if self._job is None:
            assert self._record is not None and self._params is not None
            self._job = _copied_job(self._record, self._params)
            self._record = self._params = None
        return self._job

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InsertResult):
            return NotImplemented
        return (self.job, self.unique_skipped_as_duplicate) == (
            other.job,
            other.unique_skipped_as_duplicate,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"InsertResult(job={self.job!r}, "
            f"unique_skipped_as_duplicate={self.unique_skipped_as_duplicate})"
        )


_JSON = msgspec.json.encode


def _missing_schema(exc: Exception, driver: Driver) -> SchemaNotMigratedError:
    return SchemaNotMigratedError(
        f"pyriver_async's tables are missing or out of date in schema {driver.schema!r} "
        f"({type(exc).__name__}: {exc}); run `pyriver migrate up` "
        "(or `await pyriver_async.migrate(...)`) first"
    )


def _result(rec: asyncpg.Record, p: InsertParams) -> InsertResult:
    skipped = bool(rec["skipped"])
    args: Any = p.args
    if skipped:
        # The existing row: its args may differ from ours in fields the key ignores.
        try:
            args = msgspec.json.decode(rec["args"], type=type(p.args))
        except msgspec.DecodeError:  # written by another version of the class
            args = msgspec.json.decode(rec["args"])
    return InsertResult(job=job_from_record(rec, args), unique_skipped_as_duplicate=skipped)


async def insert_one(
    conn: Any, driver: Driver, args: JobArgs, opts: InsertOpts | None
) -> InsertResult:
    return await insert_params(conn, driver, build_insert_params(args, opts))


async def insert_params(
    conn: Any, driver: Driver, p: InsertParams, *, timeout: float | None = None
) -> InsertResult:
    """Insert one job whose parameters are already validated and encoded."""
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
            timeout=timeout,
        )
    except _MISSING_SCHEMA_ERRORS as exc:
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
    copy_threshold: int | None = None,
) -> list[InsertResult]:
    """Insert every item or none. Every item is validated before anything is sent.

    ``copy_threshold`` defaults to the module's ``COPY_THRESHOLD``, read at each call.
    """
    if copy_threshold is None:
        copy_threshold = COPY_THRESHOLD
    prefetched: asyncio.Future[Any] | None = None
    try:
        if len(items) >= max(copy_threshold, PREFETCH_IDS_FROM):
            # A big batch: the database draws its ids (on the other core) while the
            # batch is validated and encoded here. Drawing ids writes no row; a batch
            # refused below leaves a gap in the sequence, as a rolled back insert does.
            prefetched = asyncio.ensure_future(_next_ids(conn, driver, len(items), [], []))
            await asyncio.sleep(0)  # let it be sent
        return await _insert_built(conn, driver, items, copy_threshold, prefetched)
    finally:
        if prefetched is not None:
            # Whatever happened (an error, a cancellation), the connection is not free
            # before the statement has answered.
            await _settle(prefetched)


# From this many items insert_many first tries to encode the batch in one call
# (build_plain_params); below, the per-item path is as fast.
_PLAIN_BATCH_FROM = 16


def _build_each(items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]]) -> list[InsertParams]:
    params = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise TypeError("insert_many items are JobArgs or (JobArgs, InsertOpts) pairs")
            params.append(build_insert_params(item[0], item[1]))
        else:
            params.append(build_insert_params(item, None))
    return params


async def _insert_built(
    conn: Any,
    driver: Driver,
    items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]],
    copy_threshold: int,
    prefetched: asyncio.Future[Any] | None,
) -> list[InsertResult]:
    params: list[InsertParams] | None = None
    any_unique = False
    with _gc_paused(len(items)):
        if len(items) >= _PLAIN_BATCH_FROM:
            params = build_plain_params(items)
        if params is None:
            params = _build_each(items)
            any_unique = any(p.unique_key is not None for p in params)
    if not params:
        return []
    if prefetched is not None:
        # The connection is busy until it answers; a cancellation waits for it too.
        await _settle(prefetched)
    try:
        if not any_unique:
            # Nothing to collapse or to route through ON CONFLICT: one statement or
            # COPY, results in input order.
            if len(params) < copy_threshold:
                return await _insert_unnest(conn, driver, params)
            return await _insert_copy(conn, driver, params, _head(prefetched))
        send, index = _dedupe(params)
        plain = [i for i, p in enumerate(send) if p.unique_key is None]
        if len(plain) < copy_threshold:
            results = await _insert_unnest(conn, driver, send)
        else:
            # Plain jobs by COPY, unique ones (which need ON CONFLICT) in one statement;
            # one transaction, so the batch stays all or nothing.
            unique = [i for i, p in enumerate(send) if p.unique_key is not None]
            head = _head(prefetched)
            async with _atomic(conn):
                copied = await _insert_copy(conn, driver, [send[i] for i in plain], head)
                stated = await _insert_unnest(conn, driver, [send[i] for i in unique])
            merged: list[InsertResult | None] = [None] * len(send)
            for i, r in zip(plain, copied, strict=True):
                merged[i] = r
            for i, r in zip(unique, stated, strict=True):
                merged[i] = r
            results = [r for r in merged if r is not None]
    except _MISSING_SCHEMA_ERRORS as exc:
        raise _missing_schema(exc, driver) from exc
    out = []
    for i, p in enumerate(params):
        r = results[index[i]]
        if send[index[i]] is not p:
            # A later item with the unique key of an earlier one in the same batch.
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
        driver.job_sequence,
    )
    # A new row carries the position (`ord`, from 1) of its input; a unique duplicate
    # is the existing row, found by its key.
    by_ord: dict[int, asyncpg.Record] = {}
    by_key: dict[bytes, asyncpg.Record] = {}
    for r in rows:
        if r["ord"] is not None:
            by_ord[r["ord"]] = r
        elif r["unique_key"] is not None:
            by_key[r["unique_key"]] = r
    out = []
    for n, p in enumerate(send, start=1):
        rec = by_ord.get(n)
        if rec is None:
            assert p.unique_key is not None, "a row without a unique key is always inserted"
            rec = by_key[p.unique_key]
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


def _atomic(conn: Any) -> contextlib.AbstractAsyncContextManager[Any]:
    """A transaction around several statements, unless the caller's is already open.

    Inside the caller's transaction a failure aborts it anyway, as a failed single
    statement would: a savepoint would only cost two more round trips.
    """
    if conn.is_in_transaction():
        return contextlib.nullcontext()
    return cast("contextlib.AbstractAsyncContextManager[Any]", conn.transaction())


async def _next_ids(
    conn: Any, driver: Driver, n: int, queues: list[str], first_at: list[datetime | None]
) -> Any:
    return await conn.fetchrow(driver.sql["job_next_ids"], n, driver.job_sequence, queues, first_at)


def _head(prefetched: asyncio.Future[Any] | None) -> Any:
    """The row of ids drawn ahead (its error, if it failed), or None."""
    return prefetched.result() if prefetched is not None else None


async def _settle(fut: asyncio.Future[Any]) -> None:
    """Wait for a statement already sent, whatever its end, and never cancel it:
    cancelling it could abort the caller's transaction, and the connection is not free
    before it has answered. A cancellation of the caller waits for it, then goes on."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.cancelled():
                cancelled = True  # the caller was cancelled, not the statement
        except Exception:
            pass
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" warning
    if cancelled:
        raise asyncio.CancelledError


async def _insert_copy(
    conn: Any,
    driver: Driver,
    send: list[InsertParams],
    head: Any = None,
) -> list[InsertResult]:
    """COPY with ids drawn from the sequence first, so the results need no read-back.

    Two round trips (plus BEGIN/COMMIT outside a transaction): ids, clock and wake-ups
    in one statement, then the COPY. A big batch drew its ids while it was being
    validated (``head``: at least ``len(send)`` ids and the clock, no wake-ups); its
    wake-ups follow the COPY.
    """
    # Per queue, the earliest scheduled_at (None: now) decides whether it gets a wake-up.
    first_at: dict[str, datetime | None] = {}
    for p in send:
        q, at = p.queue, p.scheduled_at
        if q not in first_at:
            first_at[q] = at
        else:
            prev = first_at[q]
            if prev is not None and (at is None or at < prev):
                first_at[q] = at
    queues = sorted(first_at)
    drawn_ahead = head is not None
    async with _atomic(conn):
        if head is None:
            head = await _next_ids(conn, driver, len(send), queues, [first_at[q] for q in queues])
        ids: list[int] = head["ids"]
        ids.sort()  # ascending, so the batch keeps its order in the claim; linear when sorted
        now = head["now"]
        records = []
        with _gc_paused(len(send)):
            for job_id, p in zip(ids, send, strict=False):
                at = p.scheduled_at
                if at is None:
                    at = now
                    state = _AVAILABLE
                else:
                    state = _SCHEDULED if at > now else _AVAILABLE
                records.append(
                    (
                        job_id,
                        p.encoded_args,
                        p.kind,
                        p.max_attempts,
                        p.metadata,
                        p.priority,
                        p.queue,
                        at,
                        now,
                        state,
                        p.tags,
                    )
                )
        if len(records) != len(send):  # pragma: no cover - the database gave too few ids
            raise RuntimeError(f"asked for {len(send)} job ids, got {len(ids)}")
        copy = asyncio.ensure_future(
            conn.copy_records_to_table(
                "river_job", schema_name=driver.schema, columns=_COPY_COLUMNS, records=records
            )
        )
        try:
            await asyncio.sleep(0)  # the COPY encodes its rows and starts sending them
            # The results are made while the database takes in the rows (~0.3 us a job).
            new_result = InsertResult._copied
            with _gc_paused(len(send)):
                results = list(map(new_result, records, send))
        except BaseException:
            copy.cancel()
            await _settle(copy)
            raise
        await copy
        if drawn_ahead:
            due = [q for q in queues if first_at[q] is None or first_at[q] <= now]
            if due:
                await conn.execute(driver.sql["job_notify_queues"], due)
    return results


@contextlib.contextmanager
def _gc_paused(n: int) -> Iterator[None]:
    """Pause the cyclic GC while a large batch builds objects that all stay alive.

    The loops inside are synchronous (no other task runs meanwhile); without this,
    generation-0 collections walking the growing batch cost ~20% of a 100k insert.
    """
    if n < 1000 or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_AVAILABLE = JobState.AVAILABLE.value
_SCHEDULED = JobState.SCHEDULED.value


def _copied_job(record: tuple[Any, ...], p: InsertParams) -> Job[Any]:
    """The Job of a row the COPY path wrote (a record in ``_COPY_COLUMNS`` order)."""
    return Job(
        id=record[0],
        args=p.args,
        kind=p.kind,
        queue=p.queue,
        state=JobState(record[9]),
        priority=p.priority,
        attempt=0,
        max_attempts=p.max_attempts,
        scheduled_at=record[7],
        created_at=record[8],
        tags=list(p.tags),
        metadata=msgspec.json.decode(p.metadata) if p.metadata != "{}" else {},
    )
