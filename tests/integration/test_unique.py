"""Unique jobs, enforced by the database the way River does it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyriver_async import Client, InsertOpts, JobArgs, JobState, UniqueOpts
from pyriver_async._insert import InsertResult

from .test_insert import Listener, count_rows


class Report(JobArgs, kind="it_unique_report"):
    account: int
    options: dict[str, int] = {}


class Known(JobArgs, kind="it_unique_known"):
    b: str
    a: int


BY_ARGS = InsertOpts(unique=UniqueOpts(by_args=True))


async def _connections(url: str, n: int) -> list[asyncpg.Connection]:
    return list(await asyncio.gather(*(asyncpg.connect(url) for _ in range(n))))


@pytest.mark.parametrize("hold", [False, True], ids=["autocommit", "held_transactions"])
async def test_twenty_concurrent_inserters_make_one_row(
    db: str, pool: asyncpg.Pool, hold: bool
) -> None:
    client = Client(pool)
    conns = await _connections(db, 20)
    start = asyncio.Event()

    async def one(c: asyncpg.Connection) -> InsertResult:
        await start.wait()
        if not hold:
            return await client.insert(Report(account=1), BY_ARGS, conn=c)
        # Every inserter's transaction stays open a moment after its insert, so the
        # others block on the unique index and must see the winner's row once it commits.
        async with c.transaction():
            r = await client.insert(Report(account=1), BY_ARGS, conn=c)
            await asyncio.sleep(0.05)
            return r

    try:
        tasks = [asyncio.create_task(one(c)) for c in conns]
        await asyncio.sleep(0.01)
        start.set()
        results = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert await count_rows(pool) == 1
    assert sum(not r.unique_skipped_as_duplicate for r in results) == 1
    assert sum(r.unique_skipped_as_duplicate for r in results) == 19
    assert len({r.job.id for r in results}) == 1
    assert all(r.job.args == Report(account=1) for r in results)


async def test_concurrent_insert_many_with_shared_unique_keys(db: str, pool: asyncpg.Pool) -> None:
    client = Client(pool)
    conns = await _connections(db, 10)
    try:
        batches = await asyncio.gather(
            *(
                client.insert_many([(Report(account=a), BY_ARGS) for a in range(30)], conn=c)
                for c in conns
            )
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert await count_rows(pool) == 30
    for a in range(30):
        col = [b[a] for b in batches]
        assert len({r.job.id for r in col}) == 1
        assert sum(not r.unique_skipped_as_duplicate for r in col) == 1


async def test_concurrent_batches_in_any_order_do_not_deadlock(db: str, pool: asyncpg.Pool) -> None:
    # Ten transactions insert the same 40 unique jobs, each in its own order, and stay
    # open a moment: they wait for one another but never deadlock.
    client = Client(pool)
    conns = await _connections(db, 10)
    rng = random.Random(8)
    orders = [rng.sample(range(40), 40) for _ in conns]

    async def one(c: asyncpg.Connection, order: list[int]) -> list[InsertResult]:
        async with c.transaction():
            res = await client.insert_many([(Report(account=a), BY_ARGS) for a in order], conn=c)
            await asyncio.sleep(0.02)
            return res

    try:
        batches = await asyncio.gather(*(one(c, o) for c, o in zip(conns, orders, strict=True)))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert await count_rows(pool) == 40
    winners: dict[int, int] = {}
    for order, batch in zip(orders, batches, strict=True):
        assert [r.job.args.account for r in batch] == order
        for a, r in zip(order, batch, strict=True):
            assert winners.setdefault(a, r.job.id) == r.job.id
    assert sum(not r.unique_skipped_as_duplicate for b in batches for r in b) == 40


async def test_by_args_ignores_key_order_but_not_values(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    first = await client.insert(Report(account=1, options={"x": 1, "y": 2}), BY_ARGS)
    same = await client.insert(Report(account=1, options={"y": 2, "x": 1}), BY_ARGS)
    other = await client.insert(Report(account=1, options={"x": 1, "y": 3}), BY_ARGS)
    assert not first.unique_skipped_as_duplicate
    assert same.unique_skipped_as_duplicate and same.job.id == first.job.id
    assert not other.unique_skipped_as_duplicate and other.job.id != first.job.id
    # The duplicate returns the existing row, args included.
    assert same.job == await client.get(first.job.id)


async def test_without_by_args_the_kind_alone_is_the_key(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    opts = InsertOpts(unique=UniqueOpts())
    a = await client.insert(Report(account=1), opts)
    b = await client.insert(Report(account=2), opts)
    assert b.unique_skipped_as_duplicate and b.job.id == a.job.id
    assert b.job.args == Report(account=1)
    assert a.job.unique_key == hashlib.sha256(b"&kind=it_unique_report").digest()


async def test_by_queue(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    u = UniqueOpts(by_args=True, by_queue=True)
    a = await client.insert(Report(account=1), InsertOpts(queue="q1", unique=u))
    b = await client.insert(Report(account=1), InsertOpts(queue="q2", unique=u))
    c = await client.insert(Report(account=1), InsertOpts(queue="q1", unique=u))
    assert not b.unique_skipped_as_duplicate and b.job.id != a.job.id
    assert c.unique_skipped_as_duplicate and c.job.id == a.job.id
    # Without by_queue, another queue is the same job.
    d = await client.insert(Report(account=5), InsertOpts(queue="q1", unique=UniqueOpts()))
    e = await client.insert(Report(account=5), InsertOpts(queue="q2", unique=UniqueOpts()))
    assert e.unique_skipped_as_duplicate and e.job.id == d.job.id and e.job.queue == "q1"


def _monday(t: datetime) -> str:
    """The Monday 00:00 UTC on or before ``t``, computed without the library."""
    d = t.astimezone(UTC).date()
    d -= timedelta(days=d.weekday())
    return f"{d.isoformat()}T00:00:00Z"


async def test_stored_key_is_sha256_of_rivers_string(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    u = UniqueOpts(by_args=True, by_period=timedelta(days=7), by_queue=True)
    before = datetime.now(UTC)
    res = await client.insert(Known(b="x", a=1), InsertOpts(queue="q", unique=u))
    after = datetime.now(UTC)
    expected = {
        hashlib.sha256(
            f'&kind=it_unique_known&args={{"a":1,"b":"x"}}&period={_monday(t)}&queue=q'.encode()
        ).digest()
        for t in (before, after)
    }
    row = await pool.fetchrow(
        "SELECT unique_key, unique_states::text AS bits FROM river_job WHERE id = $1", res.job.id
    )
    assert row is not None
    assert row["unique_key"] in expected
    assert res.job.unique_key == row["unique_key"]
    # River's bit(8): scheduled running retryable pending | discarded completed cancelled available
    assert row["bits"] == "11110101"
    assert res.job.unique_states == 245


async def test_by_period(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    u = InsertOpts(unique=UniqueOpts(by_args=True, by_period=timedelta(days=3650)))
    a = await client.insert(Report(account=1), u)
    b = await client.insert(Report(account=1), u)
    assert b.unique_skipped_as_duplicate and b.job.id == a.job.id
    # The period takes part in the key: another period length is another key.
    c = await client.insert(
        Report(account=1), InsertOpts(unique=UniqueOpts(by_args=True, by_period=3600))
    )
    assert not c.unique_skipped_as_duplicate


async def _set_state(pool: asyncpg.Pool, job_id: int, state: str) -> None:
    await pool.execute(
        "UPDATE river_job SET state = $2::river_job_state, finalized_at = now() WHERE id = $1",
        job_id,
        state,
    )


async def test_by_state_default_completed_blocks_cancelled_does_not(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    done = await client.insert(Report(account=1), BY_ARGS)
    await _set_state(pool, done.job.id, "completed")
    again = await client.insert(Report(account=1), BY_ARGS)
    assert again.unique_skipped_as_duplicate and again.job.id == done.job.id
    assert again.job.state is JobState.COMPLETED

    gone = await client.insert(Report(account=2), BY_ARGS)
    await _set_state(pool, gone.job.id, "cancelled")
    fresh = await client.insert(Report(account=2), BY_ARGS)
    assert not fresh.unique_skipped_as_duplicate and fresh.job.id != gone.job.id

    discarded = await client.insert(Report(account=3), BY_ARGS)
    await _set_state(pool, discarded.job.id, "discarded")
    assert not (await client.insert(Report(account=3), BY_ARGS)).unique_skipped_as_duplicate


async def test_by_state_custom_list(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    only_live = InsertOpts(
        unique=UniqueOpts(by_args=True, by_state=["available", "pending", "running", "scheduled"])
    )
    done = await client.insert(Report(account=1), only_live)
    assert done.job.unique_states == 1 | 16 | 64 | 128
    await _set_state(pool, done.job.id, "completed")
    again = await client.insert(Report(account=1), only_live)
    assert not again.unique_skipped_as_duplicate
    dup = await client.insert(Report(account=1), only_live)
    assert dup.unique_skipped_as_duplicate and dup.job.id == again.job.id


async def test_duplicate_sends_no_wakeup(db: str, pool: asyncpg.Pool) -> None:
    client = Client(pool)
    first = await client.insert(Report(account=1), InsertOpts(queue="uq", unique=UniqueOpts()))
    async with Listener(db) as listener:
        dup = await client.insert(Report(account=1), InsertOpts(queue="uq", unique=UniqueOpts()))
        many = await client.insert_many(
            [(Report(account=1), InsertOpts(queue="uq", unique=UniqueOpts()))]
        )
        assert dup.job.id == first.job.id == many[0].job.id
        await client.insert(Report(account=2), InsertOpts(queue="control"))
        await listener.wait_for("control")
        await asyncio.sleep(0.1)
        assert listener.messages == [{"queue": "control"}]


async def test_unique_scheduled_job(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    opts = InsertOpts(delay=3600, unique=UniqueOpts(by_args=True))
    a = await client.insert(Report(account=1), opts)
    b = await client.insert(Report(account=1), opts)
    assert a.job.state is JobState.SCHEDULED
    assert b.unique_skipped_as_duplicate and b.job.id == a.job.id


class Loose(JobArgs, kind="it_unique_loose"):
    first: Any
    second: dict[str, Any]


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=12,
)


def _reversed_dicts(value: Any) -> Any:
    """The same value with every dict's insertion order reversed."""
    if isinstance(value, dict):
        return {k: _reversed_dicts(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_dicts(v) for v in value]
    return value


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=_JSON, second=st.dictionaries(_TEXT, _JSON, max_size=4))
async def test_by_args_key_matches_an_independent_computation(
    pool: asyncpg.Pool, first: Any, second: dict[str, Any]
) -> None:
    client = Client(pool)
    a = await client.insert(Loose(first=first, second=second), BY_ARGS)
    b = await client.insert(
        Loose(first=_reversed_dicts(first), second=_reversed_dicts(second)), BY_ARGS
    )
    assert b.unique_skipped_as_duplicate and b.job.id == a.job.id
    # River's string, built with the standard library: top-level keys sorted, values
    # as encoded (dicts with sorted keys, as Go writes maps).
    args = {"first": first, "second": second}
    text = (
        "&kind=it_unique_loose&args={"
        + ",".join(
            json.dumps(k)
            + ":"
            + json.dumps(args[k], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            for k in sorted(args)
        )
        + "}"
    )
    assert a.job.unique_key == hashlib.sha256(text.encode()).digest()
