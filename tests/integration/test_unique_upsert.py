"""UniqueOpts(on_conflict=...): a duplicate insert moves a waiting job earlier or raises
its priority instead of only being skipped; running and finalized jobs stay as they
are; insert and insert_many alike; the rows stay River's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pyriver_async import (
    Client,
    InsertOpts,
    InvalidOptsError,
    JobArgs,
    JobState,
    UniqueOpts,
)
from tests._support import eventually


class Report(JobArgs, kind="upsert_report"):
    account: int


@pytest.fixture
async def client(db: str) -> AsyncIterator[Client]:
    c = Client(db, pool_max_size=2)
    try:
        yield c
    finally:
        await c.close()


def opts(on_conflict: object, **kw: object) -> InsertOpts:
    return InsertOpts(unique=UniqueOpts(by_args=True, on_conflict=on_conflict), **kw)  # type: ignore[arg-type]


async def test_skip_is_the_default_and_changes_nothing(client: Client) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    first = await client.insert(Report(account=1), opts("skip", scheduled_at=later, priority=3))
    again = await client.insert(Report(account=1), opts("skip", priority=1))
    assert again.unique_skipped_as_duplicate and again.job.id == first.job.id
    assert again.job.scheduled_at == first.job.scheduled_at and again.job.priority == 3
    assert UniqueOpts().on_conflict == "skip"


async def test_reschedule_earlier_moves_a_scheduled_duplicate_and_makes_it_available(
    client: Client, conn: asyncpg.Connection
) -> None:
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    in_a_minute = datetime.now(UTC) + timedelta(minutes=1)
    first = await client.insert(
        Report(account=2), opts("reschedule_earlier", scheduled_at=in_an_hour)
    )
    assert first.job.state is JobState.SCHEDULED
    sooner = await client.insert(
        Report(account=2), opts("reschedule_earlier", scheduled_at=in_a_minute)
    )
    assert sooner.unique_skipped_as_duplicate and sooner.job.id == first.job.id
    assert sooner.job.scheduled_at == in_a_minute and sooner.job.state is JobState.SCHEDULED
    later = await client.insert(
        Report(account=2), opts("reschedule_earlier", scheduled_at=in_an_hour)
    )
    assert later.job.scheduled_at == in_a_minute  # never moved later
    listener = await asyncpg.connect(client._driver._dsn)
    notes: list[str] = []
    await listener.add_listener("public.river_insert", lambda *a: notes.append(a[3]))
    now = await client.insert(Report(account=2), opts("reschedule_earlier"))
    assert now.job.state is JobState.AVAILABLE and now.job.scheduled_at <= datetime.now(UTC)
    assert now.job.priority == 1
    row = await conn.fetchrow(
        "SELECT state::text, unique_states::int FROM river_job WHERE id = $1", first.job.id
    )
    assert row is not None and row["state"] == "available" and row["unique_states"] == 245
    # Made available by the duplicate: the queue's workers are woken as by an insert.
    await eventually(lambda: bool(notes), timeout=5)
    await listener.close()


async def test_raise_priority_and_both_actions(client: Client) -> None:
    at = datetime.now(UTC) + timedelta(hours=2)
    first = await client.insert(
        Report(account=3), opts(["raise_priority"], priority=4, scheduled_at=at)
    )
    raised = await client.insert(Report(account=3), opts(["raise_priority"], priority=2))
    assert raised.job.priority == 2 and raised.job.scheduled_at == at  # time untouched
    lower = await client.insert(Report(account=3), opts(["raise_priority"], priority=3))
    assert lower.job.priority == 2
    both = await client.insert(
        Report(account=3), opts(("raise_priority", "reschedule_earlier"), priority=1)
    )
    assert both.job.id == first.job.id and both.job.priority == 1
    assert both.job.state is JobState.AVAILABLE


async def test_running_and_finalized_duplicates_are_never_changed(
    client: Client, conn: asyncpg.Connection
) -> None:
    first = await client.insert(Report(account=4), opts("raise_priority", priority=4))
    await conn.execute(
        "UPDATE river_job SET state = 'running', attempt = 1 WHERE id = $1", first.job.id
    )
    again = await client.insert(
        Report(account=4), opts(("raise_priority", "reschedule_earlier"), priority=1)
    )
    assert again.job.id == first.job.id
    assert again.job.state is JobState.RUNNING and again.job.priority == 4
    await conn.execute(
        "UPDATE river_job SET state = 'completed', finalized_at = now() WHERE id = $1", first.job.id
    )
    done = await client.insert(Report(account=4), opts("raise_priority", priority=1))
    assert done.job.state is JobState.COMPLETED and done.job.priority == 4


async def test_insert_many_upserts_and_folds_duplicates_of_one_batch(client: Client) -> None:
    far = datetime.now(UTC) + timedelta(days=1)
    near = datetime.now(UTC) + timedelta(hours=1)
    existing = await client.insert(Report(account=10), opts("skip", scheduled_at=far, priority=4))
    results = await client.insert_many(
        [
            (Report(account=10), opts("reschedule_earlier", scheduled_at=near)),
            (Report(account=11), opts("skip", scheduled_at=far, priority=4)),
            (Report(account=11), opts("raise_priority", priority=2)),
            (Report(account=12), None),
        ]
    )
    assert results[0].unique_skipped_as_duplicate and results[0].job.id == existing.job.id
    assert results[0].job.scheduled_at == near and results[0].job.priority == 4
    assert not results[1].unique_skipped_as_duplicate
    assert results[2].unique_skipped_as_duplicate and results[2].job.id == results[1].job.id
    assert results[1].job.priority == 2 and results[1].job.scheduled_at == far
    assert not results[3].unique_skipped_as_duplicate
    again = await client.insert_many(
        [(Report(account=11), opts("raise_priority", priority=1)) for _ in range(3)]
        + [(Report(account=100 + i), None) for i in range(60)]
    )
    assert again[0].job.id == results[1].job.id and again[0].job.priority == 1


def test_bad_on_conflict_is_refused() -> None:
    for bad in ("upsert", ["skip", "raise_priority"], [], 3, ["raise_priority", 1]):
        with pytest.raises(InvalidOptsError):
            UniqueOpts(on_conflict=bad)  # type: ignore[arg-type]
    assert UniqueOpts(
        on_conflict=["raise_priority", "reschedule_earlier", "raise_priority"]
    ).on_conflict == (
        "raise_priority",
        "reschedule_earlier",
    )
