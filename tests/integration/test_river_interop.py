"""Interoperability with River's own Python insert client, ``riverqueue`` (PyPI).

Jobs that riverqueue inserts (through SQLAlchemy's asyncio engine on asyncpg) into a
database migrated by our migrations are worked by a pyriver_async client, with their
args decoded into our msgspec types and their options kept. What does not
interoperate is pinned down too, so that a change on either side shows up here:

- riverqueue 0.7 sends no insert notification: its jobs are found by the next poll.
- riverqueue 0.7's "fast path" unique insert targets the (kind, unique_key) index
  that River's migration 006 replaced; on a database at version 6 or later (River's
  own as well as ours) PostgreSQL refuses that statement.
- Its slow path (used when ``by_state`` is given) looks a duplicate up by kind, args
  and state under an advisory lock, so it does see jobs we inserted as unique; but it
  writes no unique key, so our unique inserts do not see the jobs it inserted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import riverqueue
from riverqueue.driver import riversqlalchemy
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pyriver_async import (
    Client,
    InsertOpts,
    Job,
    JobArgs,
    JobContext,
    QueueConfig,
    UniqueOpts,
    Workers,
    migrate,
)
from tests._support import events_for, eventually

QUEUE = "interop"


class Shipment(JobArgs, kind="interop_shipment"):
    """Our side of the args: typed and validated on decode."""

    order_id: int
    items: list[str]
    weights: dict[str, float]
    ship_by: datetime
    note: str | None = None


@dataclass
class RiverShipment:
    """The same job as riverqueue's users write it: a kind and a to_json()."""

    order_id: int
    items: list[str]
    weights: dict[str, float]
    ship_by: datetime
    note: str | None = None
    kind: str = field(default="interop_shipment", init=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "order_id": self.order_id,
                "items": self.items,
                "weights": self.weights,
                "ship_by": self.ship_by.isoformat(),
                "note": self.note,
            }
        )


class Dedupe(JobArgs, kind="interop_dedupe"):
    customer: int
    topic: str


@dataclass
class RiverDedupe:
    customer: int
    topic: str
    kind: str = field(default="interop_dedupe", init=False)

    def to_json(self) -> str:
        # Keys in another order than ours: uniqueness by args must not depend on it.
        return json.dumps({"topic": self.topic, "customer": self.customer})


def _shipment(n: int) -> RiverShipment:
    return RiverShipment(
        order_id=n,
        items=[f"sku-{n}", "sku-é"],
        weights={"box": 1.5 * n, "pallet": 20.0},
        ship_by=datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        note=None if n % 2 else f"fragile #{n}",
    )


@pytest.fixture
async def engine(db: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(db.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def river(engine: AsyncEngine) -> riverqueue.AsyncClient:
    return riverqueue.AsyncClient(riversqlalchemy.AsyncDriver(engine))


async def test_jobs_inserted_by_riverqueue_are_worked_with_typed_args(
    db: str, river: riverqueue.AsyncClient, engine: AsyncEngine
) -> None:
    worked: dict[int, Job[Shipment]] = {}
    workers = Workers()

    @workers.register(Shipment)
    async def ship(ctx: JobContext, job: Job[Shipment]) -> None:
        worked[job.id] = job

    opts = riverqueue.InsertOpts(queue=QUEUE, priority=3, max_attempts=7, tags=["alpha", "b-2"])
    one = await river.insert(_shipment(1), insert_opts=opts)
    assert not one.unique_skipped_as_duplicated
    # In the caller's transaction: visible only once it commits...
    async with engine.begin() as tx:
        in_tx = await river.insert_tx(tx, _shipment(2), insert_opts=opts)
    # ...and never worked when it rolls back.
    async with engine.connect() as c:
        tx2 = await c.begin()
        rolled_back = await river.insert_tx(c, _shipment(3), insert_opts=opts)
        await tx2.rollback()
    many = await river.insert_many(
        [riverqueue.InsertManyParams(args=_shipment(n), insert_opts=opts) for n in range(4, 8)]
    )
    assert many == 4

    conn = await asyncpg.connect(db)
    try:
        ids = {r[0] for r in await conn.fetch("SELECT id FROM river_job")}
    finally:
        await conn.close()
    assert len(ids) == 6 and {one.job.id, in_tx.job.id} <= ids
    client = Client(
        db,
        workers=workers,
        queues={QUEUE: QueueConfig(max_workers=4)},
        maintenance=False,
        # riverqueue sends no NOTIFY on insert: only the poll finds its jobs.
        fetch_poll_interval=0.2,
    )
    async with client:
        sub = client.subscribe()
        events = await events_for(sub, ids, timeout=10)
        # One more, inserted while the client runs, is picked up too.
        late = await river.insert(_shipment(8), insert_opts=opts)
        events.update(await events_for(sub, {late.job.id}, timeout=5))

    assert {ev.state for ev in events.values()} == {"completed"}
    assert set(worked) == ids | {late.job.id}
    assert rolled_back.job.id not in worked
    for job in worked.values():
        sent = _shipment(job.args.order_id)
        assert job.args == Shipment(
            order_id=sent.order_id,
            items=sent.items,
            weights=sent.weights,
            ship_by=sent.ship_by,
            note=sent.note,
        )
        assert job.args.ship_by.tzinfo is not None
        assert (job.queue, job.priority, job.max_attempts) == (QUEUE, 3, 7)
        assert list(job.tags) == ["alpha", "b-2"]
        assert job.attempt == 1
    conn = await asyncpg.connect(db)
    try:
        gone = await conn.fetchval(
            "SELECT count(*) = 0 FROM river_job WHERE id = $1", rolled_back.job.id
        )
    finally:
        await conn.close()
    assert gone


async def test_a_job_riverqueue_scheduled_runs_once_due(
    db: str, river: riverqueue.AsyncClient
) -> None:
    started: dict[int, datetime] = {}
    workers = Workers()

    @workers.register(Shipment)
    async def ship(ctx: JobContext, job: Job[Shipment]) -> None:
        started[job.id] = datetime.now(UTC)

    due = datetime.now(UTC) + timedelta(seconds=1)
    res = await river.insert(
        _shipment(1), insert_opts=riverqueue.InsertOpts(queue=QUEUE, scheduled_at=due)
    )
    assert res.job.state == riverqueue.JobState.SCHEDULED
    # The scheduler (a maintenance service of the leader) makes it available when due.
    client = Client(
        db, workers=workers, queues={QUEUE: QueueConfig(max_workers=1)}, fetch_poll_interval=0.2
    )
    async with client:
        sub = client.subscribe()
        ev = (await events_for(sub, {res.job.id}, timeout=10))[res.job.id]
    assert ev.state == "completed"
    assert started[res.job.id] >= due


async def test_args_riverqueue_wrote_that_do_not_fit_our_type_fail_with_a_recorded_error(
    db: str, river: riverqueue.AsyncClient
) -> None:
    workers = Workers()

    @workers.register(Shipment)
    async def ship(ctx: JobContext, job: Job[Shipment]) -> None:
        raise AssertionError("must not run")

    bad = RiverShipment(order_id=1, items=["x"], weights={}, ship_by=datetime.now(UTC))
    bad_json = json.dumps({"order_id": "not a number", "items": ["x"], "weights": {}})
    bad.to_json = lambda: bad_json  # type: ignore[method-assign]
    res = await river.insert(bad, insert_opts=riverqueue.InsertOpts(queue=QUEUE))
    client = Client(
        db,
        workers=workers,
        queues={QUEUE: QueueConfig(max_workers=1)},
        maintenance=False,
        fetch_poll_interval=0.2,
    )
    async with client:
        sub = client.subscribe()
        ev = (await events_for(sub, {res.job.id}, timeout=10))[res.job.id]
        job = await client.get(res.job.id)
    assert ev.state == "retryable"
    assert "interop_shipment" in job.errors[0].error and "Shipment" in job.errors[0].error


async def test_riverqueue_slow_path_unique_insert_sees_our_unique_job(
    db: str, river: riverqueue.AsyncClient
) -> None:
    workers = Workers()

    @workers.register(Dedupe)
    async def fail(ctx: JobContext, job: Job[Dedupe]) -> None:
        raise RuntimeError("boom")

    # Our unique job, worked once by us and failed: retryable, with our error on the row.
    ours = Client(
        db,
        workers=workers,
        queues={"default": QueueConfig(max_workers=1)},
        maintenance=False,
        fetch_poll_interval=0.2,
    )
    async with ours:
        sub = ours.subscribe()
        first = await ours.insert(
            Dedupe(customer=7, topic="welcome"), InsertOpts(unique=UniqueOpts(by_args=True))
        )
        ev = (await events_for(sub, {first.job.id}, timeout=10))[first.job.id]
    assert not first.unique_skipped_as_duplicate
    assert ev.state == "retryable"

    states = [
        riverqueue.JobState.AVAILABLE,
        riverqueue.JobState.COMPLETED,
        riverqueue.JobState.PENDING,
        riverqueue.JobState.RETRYABLE,
        riverqueue.JobState.RUNNING,
        riverqueue.JobState.SCHEDULED,
    ]
    dup = await river.insert(
        RiverDedupe(customer=7, topic="welcome"),
        insert_opts=riverqueue.InsertOpts(
            unique_opts=riverqueue.UniqueOpts(by_args=True, by_state=states)
        ),
    )
    assert dup.unique_skipped_as_duplicated
    assert dup.job.id == first.job.id
    # riverqueue read our row with its own model, errors included.
    assert dup.job.state == riverqueue.JobState.RETRYABLE
    assert dup.job.errors is not None and len(dup.job.errors) == 1
    err = dup.job.errors[0]
    assert err.attempt == 1 and "RuntimeError: boom" in err.error and "Traceback" in err.trace
    assert err.at.tzinfo is not None and err.at <= datetime.now(UTC)

    other = await river.insert(
        RiverDedupe(customer=8, topic="welcome"),
        insert_opts=riverqueue.InsertOpts(
            unique_opts=riverqueue.UniqueOpts(by_args=True, by_state=states)
        ),
    )
    assert not other.unique_skipped_as_duplicated and other.job.id != first.job.id


async def test_riverqueue_unique_key_is_not_ours_so_our_unique_insert_does_not_see_its_job(
    db: str, river: riverqueue.AsyncClient
) -> None:
    # Slow path (by_state given): riverqueue writes the job with no unique key at all.
    res = await river.insert(
        RiverDedupe(customer=9, topic="digest"),
        insert_opts=riverqueue.InsertOpts(
            unique_opts=riverqueue.UniqueOpts(
                by_args=True, by_state=[riverqueue.JobState.AVAILABLE, riverqueue.JobState.RUNNING]
            )
        ),
    )
    assert res.job.unique_key is None
    ours = Client(db)
    try:
        again = await ours.insert(
            Dedupe(customer=9, topic="digest"), InsertOpts(unique=UniqueOpts(by_args=True))
        )
    finally:
        await ours.close()
    assert not again.unique_skipped_as_duplicate and again.job.id != res.job.id


async def test_riverqueue_fast_path_unique_insert_is_refused_by_a_river_v6_schema(
    db: str, river: riverqueue.AsyncClient
) -> None:
    if not riverqueue_version().startswith("0.7."):
        pytest.skip(
            f"written against riverqueue 0.7; re-check with {riverqueue_version()} and update "
            "the README's interoperability notes"
        )
    # Its ON CONFLICT (kind, unique_key) needs river_job_kind_unique_key_idx, which River's
    # migration 006 (and ours) replaced by river_job_unique_idx over unique_states.
    with pytest.raises(ProgrammingError, match="no unique or exclusion constraint"):
        await river.insert(
            RiverDedupe(customer=10, topic="x"),
            insert_opts=riverqueue.InsertOpts(unique_opts=riverqueue.UniqueOpts(by_args=True)),
        )


def riverqueue_version() -> str:
    from importlib.metadata import version

    return version("riverqueue")


class RiverOnly(JobArgs, kind="interop_river_only_db"):
    n: int


async def test_client_works_a_river_only_database_unchanged(
    fresh_database: Callable[[], Awaitable[str]],
) -> None:
    """A database with River's migrations only (no pyriver line) is used as it is:
    jobs are worked and maintenance runs, the rescuer judging stuck jobs by age."""
    url = await fresh_database()
    await migrate(url, line="main")
    workers = Workers()
    seen: list[int] = []

    @workers.register(RiverOnly)
    async def work(ctx: JobContext, job: Job[RiverOnly]) -> None:
        seen.append(job.args.n)

    client = Client(
        url,
        workers=workers,
        queues={"default": QueueConfig(max_workers=5)},
        heartbeat_interval=0.2,
        rescue_stuck_jobs_after=1.0,
    )
    async with client:
        assert client.liveness is False
        async with client.subscribe() as events:
            res = await client.insert(RiverOnly(n=1))
            async for ev in events:
                if ev.job_id == res.job.id:
                    assert ev.state == "completed"
                    break
        # A job stuck in running under a client that no longer exists (say a River Go
        # process killed mid-job) is rescued by age, without the liveness table.
        conn = await asyncpg.connect(url)
        try:
            stuck = await conn.fetchval(
                "INSERT INTO river_job (args, kind, max_attempts, state, attempt, "
                "attempted_at, attempted_by) VALUES ('{\"n\": 2}', 'interop_river_only_db', "
                "5, 'running', 1, now() - interval '1 hour', ARRAY['a-go-process']) "
                "RETURNING id"
            )
            await eventually(
                lambda: conn.fetchval(
                    "SELECT state = 'completed' FROM river_job WHERE id = $1", stuck
                ),
                timeout=20,
            )
            tables = await conn.fetchval("SELECT to_regclass('pyriver_client') IS NULL")
        finally:
            await conn.close()
    assert tables  # nothing was added to the River database
    assert sorted(seen) == [1, 2]
