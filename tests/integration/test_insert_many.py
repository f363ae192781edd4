"""client.insert_many: the unnest statement, the COPY fast path and mixed batches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import pyriver_async
from pyriver_async import (
    Client,
    InsertOpts,
    InvalidArgsError,
    InvalidOptsError,
    JobArgs,
    JobState,
    UniqueOpts,
    _insert,
)
from pyriver_async._errors import DatabaseError

from .test_insert import Listener, count_rows


class Item(JobArgs, kind="it_many_item"):
    n: int
    label: str = ""


class Other(JobArgs, kind="it_many_other"):
    text: str


class Paths:
    """Counts which insert path each insert_many call took."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[Paths]:
    spy = Paths()
    copy, unnest = _insert._insert_copy, _insert._insert_unnest

    async def spy_copy(ex: Any, send: list[Any], *rest: Any) -> Any:
        spy.calls.append(("copy", len(send)))
        return await copy(ex, send, *rest)

    async def spy_unnest(ex: Any, send: list[Any]) -> Any:
        spy.calls.append(("unnest", len(send)))
        return await unnest(ex, send)

    monkeypatch.setattr(_insert, "_insert_copy", spy_copy)
    monkeypatch.setattr(_insert, "_insert_unnest", spy_unnest)
    yield spy


@pytest.mark.parametrize(
    ("n", "threshold", "path"), [(10_000, 2_000, "copy"), (500, 100_000, "unnest")]
)
async def test_insert_many_large_batches(
    db: str,
    pool: asyncpg.Pool,
    paths: Paths,
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    threshold: int,
    path: str,
) -> None:
    monkeypatch.setattr(_insert, "COPY_THRESHOLD", threshold)
    client = Client(pool)
    later = datetime.now(UTC) + timedelta(hours=1)
    items: list[Item | tuple[Item, InsertOpts | None]] = []
    for i in range(n):
        args = Item(n=i, label=f"l{i}'\"\\")
        if i % 10 == 0:  # scheduled: queue "later" gets no wake-up at all
            items.append((args, InsertOpts(queue="later", scheduled_at=later, tags=["s"])))
        elif i % 2:
            items.append((args, InsertOpts(queue="odd", priority=2, metadata={"i": i})))
        elif i % 4 == 0:
            items.append((args, None))
        else:
            items.append(args)
    async with Listener(db) as listener:
        results = await client.insert_many(items)
        await client.insert(Item(n=-1), InsertOpts(queue="control"))
        await listener.wait_for("control")
        await asyncio.sleep(0.1)
        wakeups = sorted(m["queue"] for m in listener.messages)
    assert paths.calls == [(path, n)]
    assert wakeups == ["control", "default", "odd"]

    assert len(results) == n
    ids = [r.job.id for r in results]
    assert len(set(ids)) == n
    assert ids == sorted(ids)  # the batch keeps its order
    for i, r in enumerate(results):
        assert r.job.args == Item(n=i, label=f"l{i}'\"\\")
        assert not r.unique_skipped_as_duplicate
        if i % 10 == 0:
            assert (r.job.queue, r.job.state, r.job.tags) == ("later", JobState.SCHEDULED, ["s"])
            assert r.job.scheduled_at == later
        elif i % 2:
            assert (r.job.queue, r.job.priority, r.job.metadata) == ("odd", 2, {"i": i})
            assert r.job.state is JobState.AVAILABLE
        else:
            assert (r.job.queue, r.job.state) == ("default", JobState.AVAILABLE)

    rows = await pool.fetch(
        "SELECT id, args, queue, state::text, priority, tags, metadata, scheduled_at"
        " FROM river_job WHERE queue <> 'control'"
    )
    assert len(rows) == n
    by_id = {r["id"]: r for r in rows}
    for r in results:
        row = by_id[r.job.id]
        assert json.loads(row["args"]) == {"n": r.job.args.n, "label": r.job.args.label}
        assert (row["queue"], row["state"], row["priority"]) == (
            r.job.queue,
            r.job.state.value,
            r.job.priority,
        )
        assert row["tags"] == r.job.tags
        assert json.loads(row["metadata"]) == r.job.metadata
        assert row["scheduled_at"] == r.job.scheduled_at
    # What insert_many returned is what get() reads.
    for r in results[:: n // 50]:
        assert await client.get(r.job.id) == r.job


@pytest.mark.parametrize(("threshold", "expected"), [(1, ["copy", "unnest"]), (100, ["unnest"])])
async def test_mixed_unique_and_plain_in_one_batch(
    pool: asyncpg.Pool,
    paths: Paths,
    monkeypatch: pytest.MonkeyPatch,
    threshold: int,
    expected: list[str],
) -> None:
    monkeypatch.setattr(_insert, "COPY_THRESHOLD", threshold)
    client = Client(pool)
    uniq = InsertOpts(unique=UniqueOpts(by_args=True))
    existing = await client.insert(Item(n=100), uniq)
    results = await client.insert_many(
        [
            Item(n=0),
            (Item(n=1), uniq),  # new unique
            Item(n=2),
            (Item(n=1), uniq),  # same key as the second item: its duplicate
            (Item(n=3), InsertOpts(queue="other", unique=UniqueOpts(by_args=True))),
            (Item(n=100), uniq),  # duplicate of a row already in the table
            Item(n=1),  # not unique: a row of its own
            (Item(n=1), uniq),  # and again
        ]
    )
    assert [c[0] for c in paths.calls] == expected
    skipped = [r.unique_skipped_as_duplicate for r in results]
    assert skipped == [False, False, False, True, False, True, False, True]
    assert results[3].job.id == results[1].job.id == results[7].job.id
    assert results[5].job.id == existing.job.id
    assert [r.job.args.n for r in results] == [0, 1, 2, 1, 3, 100, 1, 1]
    assert len({results[i].job.id for i in (0, 1, 2, 4, 6)}) == 5
    assert results[4].job.queue == "other"
    assert await count_rows(pool) == 6
    for r in results:
        assert await client.get(r.job.id) == r.job


async def test_empty_batch(pool: asyncpg.Pool) -> None:
    assert await Client(pool).insert_many([]) == []


async def test_item_shapes(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    with pytest.raises(TypeError):
        await client.insert_many([(Item(n=1),)])  # type: ignore[list-item]
    with pytest.raises(InvalidArgsError):
        await client.insert_many([{"n": 1}])  # type: ignore[list-item]
    with pytest.raises(InvalidOptsError):
        await client.insert_many([(Item(n=1), {"queue": "x"})])  # type: ignore[list-item]
    assert await count_rows(pool) == 0


@pytest.mark.parametrize("threshold", [1, 100_000])
async def test_one_bad_item_among_100_writes_nothing(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, threshold: int
) -> None:
    monkeypatch.setattr(_insert, "COPY_THRESHOLD", threshold)
    client = Client(pool)
    bad_items: list[tuple[Any, type[Exception]]] = [
        (Other(text="nul \x00 here"), InvalidArgsError),
        (Other(text="\udcff"), InvalidArgsError),
        ((Other(text="ok"), InsertOpts(metadata={"x": object()})), InvalidOptsError),
        ((Other(text="ok"), InsertOpts(metadata={"x": "\x00"})), InvalidOptsError),
    ]
    for bad, exc in bad_items:
        good: list[Any] = [Item(n=i) for i in range(100)]
        good.insert(50, bad)
        with pytest.raises(exc):
            await client.insert_many(good)
        assert await count_rows(pool) == 0


@pytest.mark.parametrize(
    ("threshold", "uniques"),
    [(1, False), (1, True), (100_000, False)],
    ids=["copy", "mixed", "unnest"],
)
async def test_a_row_the_database_refuses_rolls_back_the_whole_batch(
    fresh_database: Callable[[], Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
    threshold: int,
    uniques: bool,
) -> None:
    # A CHECK constraint stands in for anything only the database can refuse.
    monkeypatch.setattr(_insert, "COPY_THRESHOLD", threshold)
    url = await fresh_database()
    await pyriver_async.migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await pool.execute(
            "ALTER TABLE river_job ADD CONSTRAINT no_poison CHECK (args->>'label' <> 'poison')"
        )
        client = Client(pool)
        items: list[Any] = [Item(n=i) for i in range(200)]
        poison = Item(n=-1, label="poison")
        if uniques:
            # The plain rows are copied first; the refused row is in the unique part,
            # sent after them: the copied rows must go too.
            items += [(Item(n=i), InsertOpts(unique=UniqueOpts(by_args=True))) for i in range(5)]
            items.append((poison, InsertOpts(unique=UniqueOpts(by_args=True))))
        else:
            items.insert(150, poison)
        with pytest.raises(DatabaseError, match="no_poison") as refused:
            await client.insert_many(items)
        assert refused.value.sqlstate == "23514"  # check_violation, as a typed error
        assert await count_rows(pool) == 0
        async with pool.acquire() as c:
            with pytest.raises(DatabaseError, match="no_poison"):
                async with c.transaction():
                    await client.insert_many(items, conn=c)
        assert await count_rows(pool) == 0
    finally:
        await pool.close()


async def test_insert_many_in_a_rolled_back_transaction(db: str, pool: asyncpg.Pool) -> None:
    client = Client(pool)
    async with Listener(db) as listener:
        async with pool.acquire() as c:
            tr = c.transaction()
            await tr.start()
            await client.insert_many([Item(n=i) for i in range(5000)], conn=c)
            await client.insert_many([Item(n=i) for i in range(5)], conn=c)
            assert await c.fetchval("SELECT count(*) FROM river_job") == 5005
            await tr.rollback()
        await client.insert_many([Item(n=0)])
        await listener.wait_for("default")
        await asyncio.sleep(0.1)
        assert listener.messages == [{"queue": "default"}]
    assert await count_rows(pool) == 1


async def test_a_bad_item_in_a_big_batch_leaves_the_callers_transaction_usable(
    pool: asyncpg.Pool,
) -> None:
    # A batch this big asks for its ids before it is validated: a refused item must
    # neither write anything nor abort (or leave busy) the caller's transaction.
    client = Client(pool)
    n = _insert.PREFETCH_IDS_FROM + 500
    bad: list[Any] = [Item(n=i) for i in range(n)]
    bad.append(Other(text="nul \x00 here"))
    async with pool.acquire() as c, c.transaction():
        with pytest.raises(InvalidArgsError):
            await client.insert_many(bad, conn=c)
        assert await c.fetchval("SELECT count(*) FROM river_job") == 0
        results = await client.insert_many(bad[:-1], conn=c)
    assert await count_rows(pool) == n
    assert [r.job.args.n for r in results] == list(range(n))


@pytest.mark.parametrize(
    ("plain", "unique_n"), [(_insert.PREFETCH_IDS_FROM + 10, 10), (10, _insert.PREFETCH_IDS_FROM)]
)
async def test_big_batches_with_unique_jobs(pool: asyncpg.Pool, plain: int, unique_n: int) -> None:
    # Big batches take the prefetching path whatever their mix: mostly plain (COPY and
    # one statement in a transaction) or mostly unique (one statement).
    client = Client(pool)
    uniq = InsertOpts(unique=UniqueOpts(by_args=True))
    items: list[Any] = [Item(n=i) for i in range(plain)]
    items += [(Item(n=-i), uniq) for i in range(unique_n)]
    items.append((Item(n=0), uniq))  # the duplicate of the first unique item
    results = await client.insert_many(items)
    assert len(results) == plain + unique_n + 1
    assert results[-1].unique_skipped_as_duplicate
    assert results[-1].job.id == results[plain].job.id
    assert await count_rows(pool) == plain + unique_n
    assert len({r.job.id for r in results}) == plain + unique_n


async def test_a_big_batch_cancelled_while_its_ids_are_drawn(pool: asyncpg.Pool) -> None:
    # Cancelled right after it sent the statement drawing its ids: it waits for that
    # statement rather than cancelling it (which would abort the caller's
    # transaction), writes nothing and leaves the connection usable.
    client = Client(pool)
    items = [Item(n=i) for i in range(_insert.PREFETCH_IDS_FROM + 100)]
    async with pool.acquire() as c, c.transaction():
        task = asyncio.create_task(client.insert_many(items, conn=c))
        await asyncio.sleep(0)  # it runs up to its first wait: the ids are on their way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await c.fetchval("SELECT count(*) FROM river_job") == 0
        assert len(await client.insert_many(items[:10], conn=c)) == 10
    assert await count_rows(pool) == 10


@pytest.mark.parametrize("extra_yields", [0, 1, 2, 5, 20])
async def test_a_big_batch_cancelled_during_its_copy_writes_nothing(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, extra_yields: int
) -> None:
    # Cancelled once its COPY has begun (while the results are made, or while the
    # database takes the rows in): the transaction is rolled back, nothing is written,
    # and the connection it used serves the next insert.
    copying = asyncio.Event()
    original = asyncpg.Connection.copy_records_to_table

    async def copy_records_to_table(self: asyncpg.Connection, *a: Any, **k: Any) -> Any:
        copying.set()
        return await original(self, *a, **k)

    monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", copy_records_to_table)
    client = Client(pool)
    n = _insert.PREFETCH_IDS_FROM + 500
    task = asyncio.create_task(client.insert_many([Item(n=i) for i in range(n)]))
    await copying.wait()
    for _ in range(extra_yields):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
        written = n  # it finished first: then all of it
    except asyncio.CancelledError:
        written = 0
    assert await count_rows(pool) == written
    assert len(await client.insert_many([Item(n=i) for i in range(n)])) == n
    assert await count_rows(pool) == written + n


async def test_a_big_batch_cancelled_anywhere_writes_all_or_nothing(pool: asyncpg.Pool) -> None:
    # Cancelled at each of its first waits in turn (ids drawn, the COPY sent and being
    # taken in while results are made, the commit): never half a batch, and the
    # connection it used serves the next insert.
    client = Client(pool)
    n = _insert.PREFETCH_IDS_FROM + 500
    total = 0
    outcomes = set()
    for yields in range(1, 12):
        task = asyncio.create_task(client.insert_many([Item(n=i) for i in range(n)]))
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
            outcomes.add("done")
            total += n
        except asyncio.CancelledError:
            outcomes.add("cancelled")
        assert await count_rows(pool) == total
        assert len(await client.insert_many([Item(n=-1)])) == 1
        total += 1
    assert "cancelled" in outcomes
