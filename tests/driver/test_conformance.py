"""The conformance suite every insert executor passes: asyncpg (connection, pool),
psycopg (async, sync), SQLAlchemy (async on asyncpg and on psycopg, sync on psycopg).

Each test runs once per inserter (see ``_inserters.py``): the same behaviour, whatever
library the application hands to ``conn=``.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from pyriver_async import (
    Client,
    InsertOpts,
    InvalidArgsError,
    InvalidOptsError,
    Job,
    JobArgs,
    JobContext,
    JobState,
    QueueConfig,
    SchemaNotMigratedError,
    TransientDatabaseError,
    UniqueOpts,
    Workers,
)

from ._inserters import Inserter, Item
from .conftest import Listener

# Printed at the end of the run with -s (the report's figures): commit -> job started.
LATENCIES: dict[str, float] = {}


class Ping(JobArgs, kind="driver_ping"):
    n: int


class Rollback(Exception):
    """Raised in a test's transaction block to roll it back."""


async def count(admin: asyncpg.Connection, queue: str | None = None) -> int:
    if queue is None:
        n = await admin.fetchval("SELECT count(*) FROM river_job")
    else:
        n = await admin.fetchval("SELECT count(*) FROM river_job WHERE queue = $1", queue)
    assert isinstance(n, int)
    return n


async def test_rolled_back_insert_leaves_no_row_and_wakes_no_worker(
    inserter: Inserter, admin: asyncpg.Connection, listener: Listener
) -> None:
    gone = InsertOpts(queue="gone")
    with pytest.raises(Rollback):
        async with inserter.transaction() as tx:
            await tx.insert(Item(n=1), gone)
            await tx.insert_many([(Item(n=i), gone) for i in range(100)])  # COPY
            await tx.insert_many([(Item(n=i), gone) for i in range(3)])  # one statement
            assert await count(admin) == 0  # not visible outside before commit
            raise Rollback
    assert await count(admin) == 0
    # The positive control through the same library: its wake-up arrives, and nothing
    # arrived for the rolled back queue before it (wake-ups come in commit order).
    async with inserter.transaction() as tx:
        await tx.insert(Item(n=2), InsertOpts(queue="kept"))
    await listener.wait_for("kept")
    assert listener.queues == ["kept"]
    assert await count(admin) == 1


async def test_committed_insert_is_started_within_milliseconds_of_the_commit(
    inserter: Inserter, db: str, admin: asyncpg.Connection
) -> None:
    started: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    workers = Workers()

    @workers.register(Ping)
    async def work(ctx: JobContext, job: Job[Ping]) -> None:
        started.put_nowait((job.args.n, time.perf_counter()))

    # Only a wake-up can start the job in time: the poll interval is far beyond the bound.
    worker = Client(
        db,
        workers=workers,
        queues={"ping": QueueConfig(max_workers=2)},
        fetch_poll_interval=60,
        maintenance=False,
        pool_max_size=3,
    )
    async with worker:
        await _until_listening(worker, started)
        async with inserter.transaction() as tx:
            res = await tx.insert(Ping(n=1), InsertOpts(queue="ping"))
            assert (
                await admin.fetchval("SELECT count(*) FROM river_job WHERE id = $1", res.job.id)
                == 0
            )
        committed = inserter.committed_at

        async def job_started() -> float:
            while True:
                n, at = await started.get()
                if n == 1:
                    return at

        at = await asyncio.wait_for(job_started(), 2.0)
    LATENCIES[inserter.name] = at - committed
    assert res.job.state is JobState.AVAILABLE


async def _until_listening(worker: Client, started: asyncio.Queue[tuple[int, float]]) -> None:
    """Until the worker's notifier hears wake-ups: a committed warm-up job (n < 0) is
    started, which takes a wake-up with this poll interval."""
    for i in range(1, 100):
        await worker.insert(Ping(n=-i), InsertOpts(queue="ping"))
        try:
            await asyncio.wait_for(started.get(), 0.2)
        except TimeoutError:
            continue
        return
    raise AssertionError("the worker never heard a wake-up")


async def test_concurrent_unique_inserts_give_one_row(
    inserter: Inserter, admin: asyncpg.Connection
) -> None:
    n = 4
    ready = asyncio.Barrier(n)
    unique = InsertOpts(unique=UniqueOpts(by_args=True))

    async def one() -> tuple[int, bool]:
        async with inserter.transaction() as tx:
            await ready.wait()
            res = await tx.insert(Item(n=7), unique)
        return res.job.id, res.unique_skipped_as_duplicate

    results = await asyncio.gather(*(one() for _ in range(n)))
    assert len({job_id for job_id, _ in results}) == 1
    assert sorted(skipped for _, skipped in results) == [False] + [True] * (n - 1)
    assert await count(admin) == 1


async def test_unique_on_conflict_moves_a_waiting_duplicate(
    inserter: Inserter, admin: asyncpg.Connection
) -> None:
    """UniqueOpts(on_conflict=...) through every library's connection, one and many."""
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(hours=1)
    both = ("raise_priority", "reschedule_earlier")
    first = InsertOpts(unique=UniqueOpts(by_args=True), scheduled_at=later, priority=4)
    upsert = InsertOpts(unique=UniqueOpts(by_args=True, on_conflict=both), priority=2)
    async with inserter.transaction() as tx:
        created = await tx.insert(Item(n=1), first)
        moved = await tx.insert(Item(n=1), upsert)
        await tx.insert_many([(Item(n=2), first), (Item(n=3), first)])
        many = await tx.insert_many([(Item(n=2), upsert), (Item(n=3), upsert)])
    assert moved.unique_skipped_as_duplicate and moved.job.id == created.job.id
    assert moved.job.state is JobState.AVAILABLE and moved.job.priority == 2
    assert [(r.job.state, r.job.priority) for r in many] == [(JobState.AVAILABLE, 2)] * 2
    rows = await admin.fetch("SELECT state::text AS s, priority FROM river_job ORDER BY id")
    assert [(r["s"], r["priority"]) for r in rows] == [("available", 2)] * 3


async def test_insert_many_of_10000_all_present_results_in_order(
    inserter: Inserter, admin: asyncpg.Connection
) -> None:
    async with inserter.transaction() as tx:
        results = await tx.insert_many([Item(n=i) for i in range(10_000)])
    assert [r.job.args.n for r in results] == list(range(10_000))
    ids = [r.job.id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 10_000
    assert {r.job.state for r in results} == {JobState.AVAILABLE}
    assert not any(r.unique_skipped_as_duplicate for r in results)
    rows = await admin.fetch("SELECT id, (args->>'n')::int AS n FROM river_job ORDER BY id")
    assert [(r["id"], r["n"]) for r in rows] == [(r.job.id, r.job.args.n) for r in results]


async def test_mixed_batch_plain_by_copy_unique_by_statement(
    inserter: Inserter, admin: asyncpg.Connection
) -> None:
    unique = InsertOpts(unique=UniqueOpts(by_args=True), tags=["u"], metadata={"m": 1})
    items: list[Item | tuple[Item, InsertOpts | None]] = [Item(n=i) for i in range(200)]
    items += [(Item(n=1000 + i % 5), unique) for i in range(10)]  # 5 keys, each twice
    async with inserter.transaction() as tx:
        first = await tx.insert_many(items)
        again = await tx.insert_many(items[200:])
    assert [r.unique_skipped_as_duplicate for r in first] == [False] * 205 + [True] * 5
    assert all(r.unique_skipped_as_duplicate for r in again)
    assert [r.job.id for r in again] == [r.job.id for r in first[200:]]
    assert first[200].job.tags == ["u"] and first[200].job.metadata == {"m": 1}
    assert again[0].job.args == Item(n=1000)  # the existing row's args, decoded
    assert await count(admin) == 205


async def test_invalid_input_raises_the_typed_error_and_writes_nothing(
    inserter: Inserter, admin: asyncpg.Connection
) -> None:
    async with inserter.transaction() as tx:
        with pytest.raises(InvalidOptsError):
            await tx.insert(Item(n=1), InsertOpts(priority=9))
        with pytest.raises(InvalidOptsError):
            await tx.insert_many(
                [Item(n=i) for i in range(100)] + [(Item(n=0), InsertOpts(max_attempts=0))]
            )
        with pytest.raises(InvalidArgsError):
            await tx.insert(Item(n=float("nan")), None)  # type: ignore[arg-type]
        # Nothing was sent: the application's transaction goes on and commits.
        await tx.insert(Item(n=2), None)
    assert await count(admin) == 1


async def test_a_refusal_of_the_database_is_a_library_error_caused_by_the_library_s(
    inserter: Inserter, admin: asyncpg.Connection
) -> None:
    for insert_many in (False, True):
        with pytest.raises(TransientDatabaseError) as caught:
            async with inserter.transaction() as tx:
                await tx.execute("SET TRANSACTION READ ONLY")
                if insert_many:
                    await tx.insert_many([Item(n=i) for i in range(100)])
                else:
                    await tx.insert(Item(n=1), None)
        assert caught.value.sqlstate == "25006"  # read_only_sql_transaction
        assert isinstance(caught.value.__cause__, tx.errors)
    assert await count(admin) == 0


async def test_missing_tables_raise_schema_not_migrated(
    inserter: Inserter, db: str, admin: asyncpg.Connection
) -> None:
    inserter.client = Client(db, schema="nowhere")
    for insert_many in (False, True):
        with pytest.raises(SchemaNotMigratedError, match="pyriver migrate up"):
            async with inserter.transaction() as tx:
                if insert_many:
                    await tx.insert_many([Item(n=i) for i in range(100)])
                else:
                    await tx.insert(Item(n=1), None)
    assert await count(admin) == 0


async def test_outside_a_transaction_each_insert_commits_at_once(
    inserter: Inserter, admin: asyncpg.Connection, listener: Listener
) -> None:
    """The rule for every library: in autocommit mode (asyncpg outside
    ``transaction()``, a pool, psycopg ``autocommit=True``, SQLAlchemy
    ``isolation_level="AUTOCOMMIT"``) an insert, or a whole batch, is committed at once
    in a transaction of its own, as the library's own statements are."""
    auto = InsertOpts(queue="auto")
    async with inserter.autocommit() as tx:
        await tx.insert(Item(n=1), auto)
        assert await count(admin) == 1
        await listener.wait_for("auto")
        results = await tx.insert_many([(Item(n=i), auto) for i in range(100)])  # COPY
        assert await count(admin) == 101
        await tx.insert_many([(Item(n=i), auto) for i in range(3)])
        assert await count(admin) == 104
    assert [r.job.args.n for r in results] == list(range(100))


def test_zz_report_latencies() -> None:
    """Prints the commit-to-start latencies measured above (run with -s to see them)."""
    for name, seconds in sorted(LATENCIES.items()):
        print(f"commit -> started, {name}: {seconds * 1000:.1f} ms")
