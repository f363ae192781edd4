"""Inserting jobs: one, many in one statement, or very many through COPY.

The routing here (validation, dedupe, unnest or COPY, one transaction) is written once,
as coroutines over an :class:`InsertExecutor`, and serves both worlds: ``client.insert``
awaits it with an asynchronous executor; ``pyriver_async.sync`` drives the very same
coroutines with an executor whose coroutines block and never suspend, to completion
in one step, with no event loop (``pyriver_async.sync.run_blocking``). The only thing
that needs a loop, drawing a big batch's ids while it is being encoded, is turned off
there (``prefetch_ids=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._aio import settle
from ._args import InsertOpts, JobArgs
from ._driver import InsertedRow, InsertExecutor, InsertParams, NextIds
from ._insert_params import build_insert_params, build_plain_params
from ._job import Job, JobState
from ._middleware import InsertBatch, InsertFn
from ._rows import job_from_row

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


def _result(ins: InsertedRow, p: InsertParams) -> InsertResult:
    args: Any = p.args
    if ins.skipped:
        # The existing row: its args may differ from ours in fields the key ignores.
        raw = ins.row[1]
        try:
            args = msgspec.json.decode(raw, type=type(p.args))
        except (msgspec.DecodeError, msgspec.ValidationError):  # another version's class
            args = msgspec.json.decode(raw)
    return InsertResult(job=job_from_row(ins.row, args), unique_skipped_as_duplicate=ins.skipped)


async def insert_one(
    ex: InsertExecutor,
    args: JobArgs,
    opts: InsertOpts | None,
    chain: InsertFn | None = None,
) -> InsertResult:
    """Insert one job; ``chain`` is the client's insert middleware, composed."""
    p = build_insert_params(args, opts)
    if chain is None:
        return await insert_params(ex, p)

    async def write() -> list[InsertResult]:
        return [await insert_params(ex, batch._apply()[0])]

    batch = InsertBatch([p], write, in_transaction=ex.in_transaction())
    results = await chain(batch)
    return results[0]


async def insert_params(
    ex: InsertExecutor, p: InsertParams, *, timeout: float | None = None
) -> InsertResult:
    """Insert one job whose parameters are already validated and encoded."""
    return _result(await ex.job_insert(p, timeout=timeout), p)


def _dedupe(params: list[InsertParams]) -> tuple[list[InsertParams], list[int]]:
    """Rows sharing a unique key collapse onto the first (one statement may not hit a row twice).

    A later duplicate with an ``on_conflict`` action folds it into the first, as if
    the two were inserted one after the other: an earlier ``scheduled_at`` or a higher
    priority is taken, and its action applies to an existing job too.
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
                if p.unique_on_conflict:
                    send[i] = _fold(send[i], p)
                continue
            seen[p.unique_key] = len(send)
        index.append(len(send))
        send.append(p)
    return send, index


def _fold(first: InsertParams, later: InsertParams) -> InsertParams:
    changes: dict[str, Any] = {
        "unique_on_conflict": first.unique_on_conflict | later.unique_on_conflict
    }
    if later.unique_on_conflict & 1:
        now = datetime.now(UTC)
        if (later.scheduled_at or now) < (first.scheduled_at or now):
            changes["scheduled_at"] = later.scheduled_at
    if later.unique_on_conflict & 2 and later.priority < first.priority:
        changes["priority"] = later.priority
    return msgspec.structs.replace(first, **changes)


async def insert_many(
    ex: InsertExecutor,
    items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]],
    *,
    copy_threshold: int | None = None,
    prefetch_ids: bool = True,
    chain: InsertFn | None = None,
) -> list[InsertResult]:
    """Insert every item or none. Every item is validated before anything is sent.

    ``copy_threshold`` defaults to the module's ``COPY_THRESHOLD``, read at each call.
    ``prefetch_ids`` lets a big batch draw its ids concurrently (needs an event loop).
    """
    if copy_threshold is None:
        copy_threshold = COPY_THRESHOLD
    async with ex.session() as s:
        prefetched: asyncio.Future[NextIds] | None = None
        try:
            if prefetch_ids and len(items) >= max(copy_threshold, PREFETCH_IDS_FROM):
                # A big batch: the database draws its ids (on the other core) while the
                # batch is validated and encoded here. Drawing ids writes no row; a batch
                # refused below leaves a gap in the sequence, as a rolled back insert does.
                prefetched = asyncio.ensure_future(
                    s.job_next_ids(n=len(items), queues=[], first_at=[])
                )
                await asyncio.sleep(0)  # let it be sent
            return await _insert_built(s, items, copy_threshold, prefetched, chain)
        finally:
            if prefetched is not None:
                # Whatever happened (an error, a cancellation), the connection is not free
                # before the statement has answered.
                await settle(prefetched, swallow=True)


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
    ex: InsertExecutor,
    items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]],
    copy_threshold: int,
    prefetched: asyncio.Future[NextIds] | None,
    chain: InsertFn | None = None,
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
    if chain is None:
        return await _route(ex, params, any_unique, copy_threshold, prefetched)

    async def write() -> list[InsertResult]:
        return await _route(ex, batch._apply(), any_unique, copy_threshold, prefetched)

    batch = InsertBatch(params, write, in_transaction=ex.in_transaction())
    return await chain(batch)


async def _route(
    ex: InsertExecutor,
    params: list[InsertParams],
    any_unique: bool,
    copy_threshold: int,
    prefetched: asyncio.Future[NextIds] | None,
) -> list[InsertResult]:
    """Write validated params: one statement, COPY, or both for a mixed batch."""
    head: NextIds | None = None
    if prefetched is not None:
        # The connection is busy until it answers; a cancellation waits for it too.
        head = await settle(prefetched)
    if not any_unique:
        # Nothing to collapse or to route through ON CONFLICT: one statement or
        # COPY, results in input order.
        if len(params) < copy_threshold:
            return await _insert_unnest(ex, params)
        return await _insert_copy(ex, params, head)
    send, index = _dedupe(params)
    plain = [i for i, p in enumerate(send) if p.unique_key is None]
    if len(plain) < copy_threshold:
        results = await _insert_unnest(ex, send)
    else:
        # Plain jobs by COPY, unique ones (which need ON CONFLICT) in one statement;
        # one transaction, so the batch stays all or nothing.
        unique = [i for i, p in enumerate(send) if p.unique_key is not None]
        async with ex.transaction():
            copied = await _insert_copy(ex, [send[i] for i in plain], head)
            stated = await _insert_unnest(ex, [send[i] for i in unique])
        merged: list[InsertResult | None] = [None] * len(send)
        for i, r in zip(plain, copied, strict=True):
            merged[i] = r
        for i, r in zip(unique, stated, strict=True):
            merged[i] = r
        results = [r for r in merged if r is not None]
    out = []
    sent: set[int] = set()
    for i in range(len(params)):
        r = results[index[i]]
        if index[i] in sent:
            # A later item with the unique key of an earlier one in the same batch.
            r = InsertResult(job=r.job, unique_skipped_as_duplicate=True)
        sent.add(index[i])
        out.append(r)
    return out


async def _insert_unnest(ex: InsertExecutor, send: list[InsertParams]) -> list[InsertResult]:
    masks = {p.unique_on_conflict for p in send}
    if len(masks) <= 1:
        rows = await ex.job_insert_many(send)
        return [_result(r, p) for r, p in zip(rows, send, strict=True)]
    # Rows of different UniqueOpts.on_conflict: one statement each, one transaction.
    out: list[InsertResult | None] = [None] * len(send)
    async with ex.transaction():
        for mask in sorted(masks):
            picked = [i for i, p in enumerate(send) if p.unique_on_conflict == mask]
            rows = await ex.job_insert_many([send[i] for i in picked])
            for i, r in zip(picked, rows, strict=True):
                out[i] = _result(r, send[i])
    return [r for r in out if r is not None]


async def _insert_copy(
    ex: InsertExecutor, send: list[InsertParams], head: NextIds | None = None
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
    async with ex.transaction():
        if head is None:
            head = await ex.job_next_ids(
                n=len(send), queues=queues, first_at=[first_at[q] for q in queues]
            )
        ids = head.ids
        ids.sort()  # ascending, so the batch keeps its order in the claim; linear when sorted
        now = head.now
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

        def make_results() -> list[InsertResult]:
            # Made while the database takes in the rows (~0.3 us a job).
            with _gc_paused(len(send)):
                return list(map(InsertResult._copied, records, send))

        results: list[InsertResult] = await ex.job_copy(records, make_results)
        if drawn_ahead:
            due = [q for q in queues if (at := first_at[q]) is None or at <= now]
            if due:
                await ex.job_notify_queues(queues=due)
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
