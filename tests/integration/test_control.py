"""The query and control API against a real PostgreSQL: every filter and order walked
page by page (also while jobs are inserted and finished), River's retry / cancel /
delete rules per state, bulk outcomes, queue counts, clients and the leader."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import pyriver_async
from pyriver_async import (
    Client,
    InsertOpts,
    InvalidFilterError,
    Job,
    JobArgs,
    JobContext,
    JobFilter,
    JobNotFoundError,
    JobOrder,
    JobRefusedError,
    JobState,
    QueueConfig,
    QueueNotFoundError,
    UniqueOpts,
    Workers,
)
from tests._support import eventually

STATES = [s.value for s in JobState]
FINALIZED = {"cancelled", "completed", "discarded"}
QUEUES = ["alpha", "beta", "gamma"]
KINDS = ["k_one", "k_two", "k_three", "k_four"]
TAGS = ["red", "green", "blue"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Plain(JobArgs, kind="control_plain"):
    n: int = 0


class Slow(JobArgs, kind="control_slow"):
    pass


@pytest.fixture
async def client(db: str) -> AsyncIterator[Client]:
    c = Client(db, pool_max_size=3)
    try:
        yield c
    finally:
        await c.close()


async def seed(conn: asyncpg.Connection, n: int, *, seed: int = 7) -> None:
    """``n`` jobs spread over every state, queue, kind, priority, tag and time."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        state = STATES[i % len(STATES)]
        created = T0 + timedelta(seconds=rnd.randrange(0, 86400))
        scheduled = created + timedelta(seconds=rnd.randrange(-600, 600))
        attempted = (
            scheduled + timedelta(seconds=1)
            if state not in ("available", "scheduled", "pending")
            else None
        )
        # Some finalized jobs share their finalized_at, as a batch of completions does.
        finalized = (
            T0 + timedelta(seconds=rnd.randrange(0, 50) * 60) if state in FINALIZED else None
        )
        tags = rnd.sample(TAGS, rnd.randrange(0, 3))
        rows.append(
            (
                state,
                QUEUES[rnd.randrange(len(QUEUES))],
                KINDS[rnd.randrange(len(KINDS))],
                1 + rnd.randrange(4),
                json.dumps({"n": i % 10, "even": i % 2 == 0}),
                json.dumps({"batch": i % 3}),
                tags,
                created,
                scheduled,
                attempted,
                finalized,
            )
        )
    await conn.executemany(
        """INSERT INTO river_job (state, queue, kind, priority, args, metadata, tags,
               created_at, scheduled_at, attempted_at, finalized_at, max_attempts, attempt)
           VALUES ($1::river_job_state, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9, $10,
               $11, 25, 0)""",
        rows,
    )


async def all_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    recs = await conn.fetch(
        "SELECT id, state::text AS state, queue, kind, priority, args::text AS args, "
        "metadata::text AS metadata, tags, created_at, scheduled_at, attempted_at, "
        "finalized_at FROM river_job"
    )
    out = []
    for r in recs:
        d = dict(r)
        d["args"] = json.loads(d["args"])
        d["metadata"] = json.loads(d["metadata"])
        out.append(d)
    return out


def _contains(doc: dict[str, Any], sub: dict[str, Any]) -> bool:
    return all(k in doc and doc[k] == v for k, v in sub.items())


def matches(row: dict[str, Any], f: dict[str, Any]) -> bool:
    """The filter semantics, restated in Python."""
    checks: dict[str, Callable[[Any], bool]] = {
        "states": lambda v: row["state"] in v,
        "queues": lambda v: row["queue"] in v,
        "kinds": lambda v: row["kind"] in v,
        "ids": lambda v: row["id"] in v,
        "priorities": lambda v: row["priority"] in v,
        "tags_any": lambda v: bool(set(row["tags"]) & set(v)),
        "tags_all": lambda v: set(v) <= set(row["tags"]),
        "args_contains": lambda v: _contains(row["args"], v),
        "metadata_contains": lambda v: _contains(row["metadata"], v),
    }
    for name, value in f.items():
        if name in checks:
            if not checks[name](value):
                return False
            continue
        col, _, side = name.rpartition("_")
        at = row[f"{col}_at"]
        if at is None:
            return False
        if side == "after" and not at >= value:
            return False
        if side == "before" and not at < value:
            return False
    return True


def expected(
    rows: Sequence[dict[str, Any]], f: dict[str, Any], order: str, descending: bool
) -> list[int]:
    picked = [r for r in rows if matches(r, f)]
    if order == "finalized_at":
        picked = [r for r in picked if r["finalized_at"] is not None]
    if order == "id":
        picked.sort(key=lambda r: r["id"], reverse=descending)
    else:
        picked.sort(key=lambda r: (r[order], r["id"]), reverse=descending)
    return [r["id"] for r in picked]


async def walk(
    client: Client, f: dict[str, Any], order: str, descending: bool, limit: int, **kw: Any
) -> tuple[list[int], int]:
    """Every page; returns the ids in order and the number of pages."""
    ids: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await client.list(
            JobFilter(**f), order=order, descending=descending, limit=limit, cursor=cursor, **kw
        )
        pages += 1
        assert len(page.jobs) <= limit
        ids += [j.id for j in page.jobs]
        if page.next_cursor is None:
            return ids, pages
        cursor = page.next_cursor
        assert pages < 10_000


FILTERS: list[dict[str, Any]] = [
    {},
    {"states": ["available"]},
    {"states": ["discarded", "completed"]},
    {"states": ["available", "retryable", "scheduled"], "queues": ["beta"]},
    {"queues": ["alpha", "gamma"]},
    {"kinds": ["k_two"]},
    {"priorities": [1, 4]},
    {"tags_any": ["red"]},
    {"tags_all": ["red", "green"]},
    {"ids": list(range(5, 400, 7))},
    {"created_after": T0 + timedelta(hours=6), "created_before": T0 + timedelta(hours=12)},
    {"scheduled_after": T0 + timedelta(hours=20)},
    {"scheduled_before": T0 + timedelta(hours=2), "states": ["scheduled", "available"]},
    {"attempted_after": T0 + timedelta(hours=3), "attempted_before": T0 + timedelta(hours=9)},
    {"finalized_after": T0 + timedelta(minutes=10), "finalized_before": T0 + timedelta(minutes=40)},
    {"args_contains": {"n": 3}},
    {"metadata_contains": {"batch": 2}, "kinds": ["k_one", "k_four"]},
    {"args_contains": {"even": True}, "states": ["completed"], "tags_any": ["blue"]},
]


@pytest.mark.parametrize("order", ["id", "scheduled_at", "finalized_at"])
@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
async def test_every_filter_and_order_pages_through_exactly_the_matching_jobs(
    client: Client, conn: asyncpg.Connection, order: str, descending: bool
) -> None:
    await seed(conn, 600)
    rows = await all_rows(conn)
    for f in FILTERS:
        if order == "finalized_at" and any(s not in FINALIZED for s in f.get("states", [])):
            continue
        want = expected(rows, f, order, descending)
        got, pages = await walk(client, f, order, descending, limit=17, scan_budget=150)
        assert got == want, f
        assert pages >= len(want) // 17


async def test_a_rare_filter_stops_early_with_a_cursor_that_goes_on(
    client: Client, conn: asyncpg.Connection
) -> None:
    await seed(conn, 600)
    rows = await all_rows(conn)
    f: dict[str, Any] = {"kinds": ["k_three"], "tags_all": ["red", "green", "blue"]}
    want = expected(rows, f, "id", True)
    page = await client.list(JobFilter(**f), limit=50, scan_budget=40)
    assert page.stopped_early and page.next_cursor is not None
    assert page.scanned <= 40 + 1000  # one round past the budget at most
    assert page.served_by == "river_job_pkey"
    got = [j.id for j in page.jobs]
    cursor: str | None = page.next_cursor
    while cursor is not None:
        page = await client.list(JobFilter(**f), limit=50, scan_budget=40, cursor=cursor)
        got += [j.id for j in page.jobs]
        cursor = page.next_cursor
    assert got == want


async def test_listing_serves_each_shape_from_its_index(
    client: Client, conn: asyncpg.Connection
) -> None:
    await seed(conn, 200)
    shapes: dict[str, dict[str, Any]] = {
        "river_job_pkey": {},
        "river_job_prioritized_fetching_index": {"order": "scheduled_at"},
        "river_job_state_and_finalized_at_index": {"order": "finalized_at"},
        "river_job_args_index / river_job_metadata_index": {"args_contains": {"n": 1}},
    }
    for index, kw in shapes.items():
        assert (await client.list(**kw)).served_by == index
    assert (await client.list(ids=[1, 2])).served_by == "river_job_pkey"


class Churn(JobArgs, kind="control_churn"):
    n: int


async def test_pages_stay_exact_while_jobs_are_inserted_and_finished(
    db: str, conn: asyncpg.Connection
) -> None:
    """Walking every page while a worker finishes jobs and others arrive: no job twice,
    and every job that matched the filter from the first page to the last is there."""
    workers = Workers()

    @workers.register(Churn)
    async def work(ctx: JobContext, job: Job[Churn]) -> None:
        await asyncio.sleep(0.001)

    worker = Client(
        db, workers=workers, queues={"churn": QueueConfig(max_workers=5)}, pool_max_size=4
    )
    lister = Client(db, pool_max_size=2)
    stable = [(Plain(n=i), InsertOpts(queue="stable")) for i in range(300)]
    await lister.insert_many(stable)
    await lister.insert_many([(Churn(n=i), InsertOpts(queue="churn")) for i in range(300)])
    stop = asyncio.Event()

    async def arrivals() -> None:
        i = 0
        while not stop.is_set():
            await lister.insert_many([(Churn(n=i), InsertOpts(queue="churn")) for _ in range(5)])
            await lister.insert(Plain(n=-1), InsertOpts(queue="stable", priority=2))
            i += 1
            await asyncio.sleep(0.005)

    try:
        async with worker:
            feeder = asyncio.create_task(arrivals())
            before = {
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM river_job WHERE kind = $1", "control_plain"
                )
            }
            cases: list[tuple[dict[str, Any], str, bool]] = [
                ({"kinds": ["control_plain"]}, "id", True),
                ({"kinds": ["control_plain"]}, "id", False),
                ({"states": ["available"], "queues": ["stable"]}, "scheduled_at", False),
                ({"states": ["available"]}, "scheduled_at", True),
                ({}, "scheduled_at", False),
                ({"queues": ["stable"]}, "id", True),
            ]
            for f, order, descending in cases:
                ids, pages = await walk(lister, f, order, descending, limit=23, scan_budget=60)
                assert len(ids) == len(set(ids)), (f, order, descending)
                # The 300 stable jobs are available (p1) from start to end.
                assert before <= set(ids), (f, order, descending)
                assert pages > 3
            # Finalized order while jobs complete: the completed ones seen stay unique.
            ids, _ = await walk(lister, {"states": ["completed"]}, "finalized_at", True, limit=11)
            assert len(ids) == len(set(ids))
            stop.set()
            await feeder
    finally:
        await lister.close()


async def test_bad_filters_orders_limits_and_cursors_are_refused(client: Client) -> None:
    bad: list[dict[str, Any]] = [
        {"states": ["finished"]},
        {"states": "available"},
        {"queues": ["no spaces"]},
        {"kinds": [3]},
        {"priorities": [0]},
        {"ids": [True]},
        {"created_after": datetime(2026, 1, 1)},
        {"args_contains": ["not", "an", "object"]},
        {"limit": 0},
        {"limit": 10_001},
        {"order": "priority"},
        {"cursor": "not-a-cursor"},
        {"nonsense": 1},
        {"order": "finalized_at", "states": ["available"]},
    ]
    for kw in bad:
        with pytest.raises(InvalidFilterError):
            await client.list(**kw)
    page = await client.list(limit=1)
    assert page.jobs == [] and page.next_cursor is None
    await client.insert_many([Plain(n=i) for i in range(3)])
    cursor = (await client.list(limit=1)).next_cursor
    assert cursor is not None
    tampered = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    with pytest.raises(InvalidFilterError, match="changed or cut short"):
        await client.list(limit=1, cursor=tampered)
    with pytest.raises(InvalidFilterError, match="same order and direction"):
        await client.list(limit=1, cursor=cursor, descending=False)
    with pytest.raises(InvalidFilterError, match="same order and direction"):
        await client.list(limit=1, cursor=cursor, order=JobOrder.SCHEDULED_AT)
    assert (await client.list(states=[])).jobs == []


# -- retry, cancel, delete ------------------------------------------------------------


async def make_job(
    conn: asyncpg.Connection,
    state: str,
    *,
    attempt: int = 1,
    max_attempts: int = 3,
    queue: str = "default",
    scheduled_in: float = 0.0,
    unique_key: bytes | None = None,
    unique_states: int | None = None,
    metadata: str = "{}",
) -> int:
    finalized = "now()" if state in FINALIZED else "NULL"
    return int(
        await conn.fetchval(
            f"""INSERT INTO river_job (state, queue, kind, args, attempt, max_attempts,
                   scheduled_at, finalized_at, attempted_at, unique_key, unique_states, metadata)
               VALUES ($1::river_job_state, $2, 'control_plain', '{{"n": 1}}', $3, $4,
                   now() + make_interval(secs => $5), {finalized}, now(), $6,
                   $7::int::bit(8), $8::jsonb)
               RETURNING id""",
            state,
            queue,
            attempt,
            max_attempts,
            scheduled_in,
            unique_key,
            unique_states,
            metadata,
        )
    )


async def test_retry_follows_rivers_rules_in_every_state(
    client: Client, conn: asyncpg.Connection
) -> None:
    ids = {s: await make_job(conn, s) for s in STATES}
    exhausted = await make_job(conn, "discarded", attempt=3, max_attempts=3)
    future = await make_job(conn, "available", scheduled_in=3600)
    asked = await make_job(conn, "cancelled", metadata='{"cancel_attempted_at": "x"}')
    listener = await asyncpg.connect(client_dsn(client))
    notes: list[str] = []
    await listener.add_listener("public.river_insert", lambda *a: notes.append(a[3]))
    try:
        results = await client.retry_many([*ids.values(), exhausted, future, asked, 999_999])
    finally:
        await eventually(lambda: bool(notes), timeout=5)
        await listener.close()
    by_id = {r.job_id: r for r in results}
    assert [r.job_id for r in results] == [*ids.values(), exhausted, future, asked, 999_999]
    for state in ("cancelled", "completed", "discarded", "retryable", "scheduled", "pending"):
        r = by_id[ids[state]]
        assert r.outcome == "done", state
        assert r.job is not None and r.job.state is JobState.AVAILABLE
        assert r.job.finalized_at is None and r.job.attempt == 1 and r.job.max_attempts == 3
    assert by_id[ids["running"]].outcome == "refused"
    assert by_id[ids["running"]].reason == "running"
    assert by_id[ids["available"]].outcome == "done"
    assert by_id[ids["available"]].reason == "already available"
    done = {i: r.job for i, r in by_id.items() if r.job is not None}
    assert done[exhausted].max_attempts == 4
    assert done[future].scheduled_at <= datetime.now(UTC)
    assert "cancel_attempted_at" not in done[asked].metadata
    assert by_id[999_999].outcome == "not_found" and by_id[999_999].job is None
    assert notes == ['{"queue" : "default"}'] or json.loads(notes[0]) == {"queue": "default"}

    with pytest.raises(JobRefusedError, match="running") as refused:
        await client.retry(ids["running"])
    assert refused.value.reason == "running"
    with pytest.raises(JobNotFoundError):
        await client.retry(123_456)


def client_dsn(client: Client) -> str:
    dsn = client._driver._dsn
    assert dsn is not None
    return dsn


async def test_retry_reports_unique_conflicts_job_by_job(
    client: Client, conn: asyncpg.Connection
) -> None:
    """Two discarded unique jobs whose key an active job holds, and two discarded ones
    sharing a key: the blocked are refused naming the holder, the rest retried."""
    holder = await make_job(conn, "available", unique_key=b"k1", unique_states=245)
    blocked = await make_job(conn, "discarded", unique_key=b"k1", unique_states=245)
    first = await make_job(conn, "discarded", unique_key=b"k2", unique_states=245)
    second = await make_job(conn, "discarded", unique_key=b"k2", unique_states=245)
    plain = await make_job(conn, "discarded")
    results = {r.job_id: r for r in await client.retry_many([blocked, first, second, plain])}
    assert results[blocked].outcome == "refused"
    assert results[blocked].reason == f"unique conflict with job {holder}"
    assert results[first].outcome == "done"
    assert results[second].reason == f"unique conflict with job {first}"
    assert results[plain].outcome == "done"
    assert await conn.fetchval("SELECT state::text FROM river_job WHERE id = $1", blocked) == (
        "discarded"
    )


async def test_retry_of_a_unique_job_inserted_by_the_library(client: Client) -> None:
    opts = InsertOpts(unique=UniqueOpts(by_args=True), max_attempts=1)
    first = await client.insert(Plain(n=5), opts)
    await client.cancel(first.job.id)  # cancelled leaves the default unique states
    second = await client.insert(Plain(n=5), opts)
    assert not second.unique_skipped_as_duplicate
    with pytest.raises(JobRefusedError, match=f"unique conflict with job {second.job.id}"):
        await client.retry(first.job.id)
    await client.delete(second.job.id)
    assert (await client.retry(first.job.id)).state is JobState.AVAILABLE


async def test_cancel_many_and_delete_many_outcomes(
    client: Client, conn: asyncpg.Connection
) -> None:
    ids = {s: await make_job(conn, s) for s in STATES}
    results = {r.job_id: r for r in await client.cancel_many([*ids.values(), 424242])}
    for state in ("available", "scheduled", "retryable", "pending"):
        assert results[ids[state]].outcome == "done"
        job = results[ids[state]].job
        assert job is not None and job.state is JobState.CANCELLED
    running = results[ids["running"]]
    assert running.outcome == "done" and running.reason == "cancel requested while running"
    assert running.job is not None and "cancel_attempted_at" in running.job.metadata
    assert results[ids["cancelled"]].reason == "already cancelled"
    assert results[ids["completed"]].outcome == "refused"
    assert results[ids["discarded"]].reason == "already discarded"
    assert results[424242].outcome == "not_found"

    deleted = {r.job_id: r for r in await client.delete_many([*ids.values(), 424242])}
    assert deleted[ids["running"]].outcome == "refused"
    assert deleted[ids["running"]].reason == "running"
    assert deleted[424242].outcome == "not_found"
    assert all(
        deleted[i].outcome == "done" and deleted[i].job is None
        for s, i in ids.items()
        if s != "running"
    )
    assert await conn.fetchval("SELECT count(*) FROM river_job") == 1
    with pytest.raises(JobRefusedError, match="running"):
        await client.delete(ids["running"])
    with pytest.raises(JobNotFoundError):
        await client.delete(ids["completed"])


async def test_bulk_actions_by_filter_work_in_batches_and_stop_at_limit(
    client: Client, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        """INSERT INTO river_job (state, queue, kind, args, attempt, max_attempts,
               finalized_at)
           SELECT 'discarded', 'default', CASE WHEN i % 10 = 0 THEN 'k_b' ELSE 'k_a' END,
               '{}', 1, 1, now() FROM generate_series(1, 1200) i"""
    )
    results = await client.retry_many(JobFilter(states=["discarded"], kinds=["k_a"]), limit=1000)
    assert len(results) == 1000 and all(r.outcome == "done" for r in results)
    assert len({r.job_id for r in results}) == 1000
    rest = await client.retry_many(JobFilter(states=["discarded"], kinds=["k_a"]))
    assert len(rest) == 80
    left = await conn.fetch("SELECT kind, state::text FROM river_job WHERE state = 'discarded'")
    assert {r["kind"] for r in left} == {"k_b"} and len(left) == 120
    gone = await client.delete_many(JobFilter(kinds=["k_b"]))
    assert len(gone) == 120
    cancelled = await client.cancel_many(JobFilter(states=["available"]), limit=10)
    assert [r.outcome for r in cancelled] == ["done"] * 10


async def test_a_filtered_retry_acts_on_each_job_once_though_it_matches_again(
    client: Client, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Walked in scheduled_at order (descending), 2 a batch: a scheduled job retried in
    # one batch is available with scheduled_at now, ahead of the cursor, and matches
    # the filter again in a later batch.
    monkeypatch.setattr(pyriver_async._control, "BULK_BATCH", 2)
    rows = await conn.fetch(
        """INSERT INTO river_job (state, queue, kind, args, max_attempts, scheduled_at)
           SELECT 'scheduled', 'default', 'k_a', '{}', 25, now() + i * interval '1 hour'
           FROM generate_series(1, 5) i RETURNING id"""
    )
    ids = [r["id"] for r in rows]
    f = JobFilter(states=["scheduled", "available"])
    results = await client.retry_many(f)
    assert sorted(r.job_id for r in results) == sorted(ids)  # each job once
    assert {(r.outcome, r.reason) for r in results} == {("done", "")}  # each retried
    states = await conn.fetch("SELECT DISTINCT state::text AS s FROM river_job")
    assert [r["s"] for r in states] == ["available"]
    limited = await client.retry_many(f, limit=3)  # all already available now
    assert len({r.job_id for r in limited}) == len(limited) == 3


async def test_actions_inside_the_callers_transaction_roll_back_with_it(
    client: Client, pool: asyncpg.Pool
) -> None:
    job = (await client.insert(Plain(n=1))).job
    async with pool.acquire() as c:
        tx = c.transaction()
        await tx.start()
        assert (await client.cancel_many([job.id], conn=c))[0].outcome == "done"
        assert (await client.get(job.id, conn=c)).state is JobState.CANCELLED
        await tx.rollback()
    assert (await client.get(job.id)).state is JobState.AVAILABLE


# -- queues ------------------------------------------------------------------------------


async def test_queue_counts_are_exact_up_to_the_cap_then_estimated(
    client: Client, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        """INSERT INTO river_job (state, queue, kind, args)
           SELECT 'available', 'big', 'k', '{}' FROM generate_series(1, 300)"""
    )
    await conn.execute(
        """INSERT INTO river_job (state, queue, kind, args, finalized_at)
           SELECT 'completed', 'small', 'k', '{}', now() FROM generate_series(1, 3)"""
    )
    await conn.execute("ANALYZE river_job")
    await client.pause("paused_only")
    queues = {q.name: q for q in await client.list_queues(count_cap=100)}
    assert set(queues) == {"big", "small", "paused_only"}
    assert queues["small"].counts[JobState.COMPLETED] == 3 and queues["small"].counts_exact
    assert queues["small"].created_at is None and not queues["small"].paused
    assert not queues["big"].counts_exact and queues["big"].counts[JobState.AVAILABLE] > 100
    assert queues["paused_only"].paused and queues["paused_only"].created_at is not None
    exact = await client.get_queue("big", count_cap=1000)
    assert exact.counts[JobState.AVAILABLE] == 300 and exact.counts_exact
    with pytest.raises(QueueNotFoundError):
        await client.get_queue("nothing_here")
    with pytest.raises(InvalidFilterError):
        await client.get_queue("bad name")


# -- clients and leader ----------------------------------------------------------------


async def test_list_clients_shows_what_the_liveness_row_carries(db: str) -> None:
    workers = Workers()
    started = asyncio.Event()
    release = asyncio.Event()

    @workers.register(Slow)
    async def slow(ctx: JobContext, job: Job[Slow]) -> None:
        started.set()
        await release.wait()

    worker = Client(
        db,
        workers=workers,
        queues={"q_one": QueueConfig(max_workers=7), "q_two": QueueConfig(max_workers=2)},
        heartbeat_interval=0.1,
        periodic_jobs=[pyriver_async.PeriodicJob(timedelta(hours=1), Plain, id="hourly")],
        pool_max_size=4,
    )
    async with worker:
        await worker.insert(Slow(), InsertOpts(queue="q_one"))
        await asyncio.wait_for(started.wait(), 10)
        await eventually(lambda: worker.is_leader, timeout=10)

        async def shows_running() -> bool:
            infos = await worker.list_clients()
            return (
                bool(infos)
                and infos[0].queues["q_one"].running == 1
                and bool(infos[0].metadata.get("periodic"))
            )

        await eventually(shows_running, timeout=10)
        (info,) = await worker.list_clients()
        assert info.id == worker.id and info.alive and info.is_leader and not info.stopping
        assert info.version == pyriver_async.__version__
        assert info.queues["q_one"].max_workers == 7 and info.queues["q_two"].max_workers == 2
        assert info.heartbeat_age < timedelta(seconds=5)
        assert info.metadata["retention"]["discarded"] == 7 * 86400.0
        (periodic,) = info.metadata["periodic"]
        assert periodic["id"] == "hourly" and periodic["run_on_start"] is False
        assert periodic["next_run_at"] > periodic["last_run_at"]
        leader = await worker.leader()
        assert leader is not None and leader.leader_id == worker.id
        assert await worker.liveness_available()
        # A soft stop waiting for its running job: the row says it is stopping.
        stopper = asyncio.create_task(worker.stop())

        async def shows_stopping() -> bool:
            (row,) = await lister.list_clients()
            return row.stopping and row.alive

        lister = Client(db)
        await eventually(shows_stopping, timeout=10)
        release.set()
        await stopper
    (info,) = await lister.list_clients()
    assert not info.alive and info.stopping
    await lister.close()


async def test_a_river_only_schema_has_no_clients_but_lists_jobs(
    fresh_database: Callable[[], Any],
) -> None:
    url = await fresh_database()
    await pyriver_async.migrate(url, line="main")
    c = Client(url)
    try:
        assert await c.list_clients() == []
        assert not await c.liveness_available()
        await c.insert(Plain(n=1))
        assert len((await c.list()).jobs) == 1
        assert await c.leader() is None
    finally:
        await c.close()
