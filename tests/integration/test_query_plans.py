"""Every listing shape of the query API on a table of 1,000,000 jobs: each statement it
runs is explained (``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``, the very SQL and
arguments of the page), and uses the index named for it, reads a bounded number of
buffers, and never scans river_job sequentially.

The table is built once for the module with one COPY (indexes built after it, as a
bulk load would), then VACUUM ANALYZE: 800k completed, 100k available over 5 queues
and 4 priorities, 50k scheduled, 30k discarded with an error, 10k retryable, 5k
running, 5k pending; 40 kinds; tags on 10 %. ``-m "not plans"`` skips it locally.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import pyriver_async
from pyriver_async import JobFilter
from pyriver_async._control import build_spec
from pyriver_async._driver.listing import ALL_STATES, ListedPage, list_page
from pyriver_async._driver.queries import Queries, Query
from pyriver_async.testing.db import create_database, drop_database

pytestmark = pytest.mark.plans

N_QUEUES = 5
COLUMNS = (
    "state", "queue", "kind", "priority", "args", "metadata", "tags", "created_at",
    "scheduled_at", "attempted_at", "finalized_at", "max_attempts", "attempt", "errors",
)  # fmt: skip
MIX = (
    ("completed", 800_000),
    ("available", 100_000),
    ("scheduled", 50_000),
    ("discarded", 30_000),
    ("retryable", 10_000),
    ("running", 5_000),
    ("pending", 5_000),
)
NOW = datetime.now(UTC)


def _records() -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(1)
    error = ['{"at": "2026-01-01T00:00:00Z", "attempt": 1, "error": "boom", "trace": ""}']
    day = timedelta(days=1)
    queues = [f"queue_{q}" for q in range(N_QUEUES)]
    kinds = [f"kind_{k:02d}" for k in range(40)]
    i = 0
    for state, n in MIX:
        for _ in range(n):
            i += 1
            created = NOW - day * (1 - i / 1_000_000)
            waiting = state in ("scheduled", "retryable")
            scheduled = NOW + timedelta(seconds=rnd.randrange(1, 86400)) if waiting else created
            ran = state in ("completed", "discarded", "running", "retryable")
            yield (
                state,
                queues[i % N_QUEUES],
                kinds[i % 40],
                1 + (i // N_QUEUES) % 4,
                f'{{"n": {i % 1000}, "user": {i}}}',
                f'{{"b": {i % 100}}}',
                [f"t{i % 7}"] if i % 10 == 0 else [],
                created,
                scheduled,
                created if ran else None,
                created + timedelta(seconds=1) if state in ("completed", "discarded") else None,
                25,
                1 if ran else 0,
                error if state == "discarded" else None,
            )


async def _build() -> tuple[str, str]:
    url, name = await create_database("pyriver_plans")
    await pyriver_async.migrate(url)
    conn = await asyncpg.connect(url)
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename = 'river_job' AND indexname <> 'river_job_pkey'"
        )
        for ix in indexes:
            await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
        await conn.copy_records_to_table("river_job", columns=COLUMNS, records=list(_records()))
        await conn.execute("SET maintenance_work_mem = '256MB'")
        for ix in indexes:
            await conn.execute(ix["indexdef"])
        await conn.execute("VACUUM ANALYZE river_job")
    finally:
        await conn.close()
    return url, name


@pytest.fixture(scope="module")
def big_db() -> Iterator[str]:
    url, name = asyncio.run(_build())
    yield url
    asyncio.run(drop_database(name))


@pytest.fixture
async def conn(big_db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(big_db)
    try:
        yield c
    finally:
        await c.close()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


class Explained:
    """The plans of every statement a page ran, and their buffers."""

    def __init__(self) -> None:
        self.plans: list[tuple[str, dict[str, Any]]] = []

    @property
    def indexes(self) -> set[str]:
        return {n["Index Name"] for _, p in self.plans for n in _nodes(p) if "Index Name" in n}

    @property
    def buffers(self) -> int:
        return sum(p["Shared Hit Blocks"] + p["Shared Read Blocks"] for _, p in self.plans)

    def seq_scans(self) -> list[str]:
        return [
            name
            for name, p in self.plans
            for n in _nodes(p)
            if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "river_job"
        ]


async def explain(conn: asyncpg.Connection, sql: str, *args: Any, analyze: bool = True) -> Any:
    opts = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    raw = await conn.fetchval(f"EXPLAIN ({opts}) {sql}", *args)
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


async def explained_page(
    conn: asyncpg.Connection, f: JobFilter, **kw: Any
) -> tuple[ListedPage, Explained]:
    ex = Explained()

    async def fetch(q: Query, args: tuple[Any, ...]) -> list[Any]:
        ex.plans.append((q.name, await explain(conn, q.sql, *args)))
        return list(await conn.fetch(q.sql, *args))

    page = await list_page(fetch, Queries.for_schema("public"), build_spec(f, **kw))
    return page, ex


HOUR_AGO = NOW - timedelta(hours=1)
FETCH = "river_job_prioritized_fetching_index"
FINALIZED = "river_job_state_and_finalized_at_index"
PKEY = "river_job_pkey"
# (filter, listing options, the index that serves it, most buffers for one page)
SHAPES: list[tuple[str, JobFilter, dict[str, Any], str, int]] = [
    ("newest", JobFilter(), {}, PKEY, 200),
    ("ids", JobFilter(ids=list(range(1, 1_000_000, 10_007))), {}, PKEY, 400),
    (
        "claim order of one queue",
        JobFilter(states=["available"], queues=["queue_1"]),
        {"order": "scheduled_at", "descending": False},
        FETCH,
        300,
    ),
    (
        "available, every queue",
        JobFilter(states=["available"]),
        {"order": "scheduled_at", "descending": False},
        FETCH,
        500,
    ),
    (
        "due soonest",
        JobFilter(states=["scheduled", "retryable"], priorities=[1, 2]),
        {"order": "scheduled_at", "descending": True},
        FETCH,
        600,
    ),
    ("every state by time", JobFilter(), {"order": "scheduled_at"}, FETCH, 2_000),
    (
        "completed, newest",
        JobFilter(states=["completed"]),
        {"order": "finalized_at"},
        FINALIZED,
        300,
    ),
    (
        "discarded in the last hour",
        JobFilter(states=["discarded"], finalized_after=HOUR_AGO),
        {"order": "finalized_at"},
        FINALIZED,
        300,
    ),
    (
        "every finalized",
        JobFilter(),
        {"order": "finalized_at", "descending": False},
        FINALIZED,
        300,
    ),
    ("one kind, by id", JobFilter(kinds=["kind_07"]), {}, PKEY, 500),
    (
        "one kind's discards",
        JobFilter(kinds=["kind_07"], states=["discarded"]),
        {"order": "finalized_at"},
        FINALIZED,
        500,
    ),
    ("tagged, by id", JobFilter(tags_any=["t3"]), {"limit": 50}, PKEY, 1_500),
    (
        "a filter nothing matches",
        JobFilter(tags_all=["t3", "t4"]),
        {"scan_budget": 10_000},
        PKEY,
        1_500,
    ),
    (
        "one user's jobs",
        JobFilter(args_contains={"user": 123_456}),
        {},
        "river_job_args_index",
        100,
    ),
    (
        "args shared by 1,000 jobs",
        JobFilter(args_contains={"n": 5}),
        {"order": "scheduled_at"},
        "river_job_args_index",
        3_000,
    ),
    (
        "metadata",
        JobFilter(metadata_contains={"b": 7}, states=["discarded"]),
        {"order": "finalized_at"},
        "river_job_metadata_index",
        12_000,
    ),
]


@pytest.mark.parametrize(("label", "f", "kw", "index", "most"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_each_listing_shape_uses_its_index_and_bounded_buffers(
    conn: asyncpg.Connection, label: str, f: JobFilter, kw: dict[str, Any], index: str, most: int
) -> None:
    kw = {"limit": 20, **kw}
    page, ex = await explained_page(conn, f, **kw)
    assert ex.seq_scans() == [], ex.plans
    assert index in ex.indexes, (label, ex.indexes)
    assert ex.buffers <= most, (label, ex.buffers, [n for n, _ in ex.plans])
    if label == "a filter nothing matches":
        assert page.stopped_early and page.rows == [] and page.next_key is not None
        assert 10_000 <= page.scanned <= 11_000
    else:
        assert page.rows and not page.stopped_early
    if page.next_key is None:
        return
    # The next page, from the cursor: the same index, as cheap.
    from pyriver_async._control import encode_cursor

    spec = build_spec(f, **kw)
    cursor = encode_cursor(spec.order, spec.descending, page.next_key)
    _, nxt = await explained_page(conn, f, **kw, cursor=cursor)
    assert nxt.seq_scans() == []
    assert index in nxt.indexes
    assert nxt.buffers <= most, (label, "next page", nxt.buffers)


async def test_queue_counts_and_queue_discovery_are_bounded(conn: asyncpg.Connection) -> None:
    q = Queries.for_schema("public")
    names = [f"queue_{i}" for i in range(N_QUEUES)]
    plan = await explain(
        conn,
        q.queue_counts.sql,
        *q.queue_counts.bind(names=names, states=list(ALL_STATES), cap=10_000),
    )
    nodes = list(_nodes(plan))
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
    assert any(n.get("Index Name") == FETCH for n in nodes)
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] <= 5_000
    plan = await explain(
        conn,
        q.job_queues_in_states.sql,
        *q.job_queues_in_states.bind(states=list(ALL_STATES), max_queues=1000),
    )
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] <= 500
    assert not [n for n in _nodes(plan) if n["Node Type"] == "Seq Scan"]


async def test_bulk_actions_find_their_rows_by_primary_key(conn: asyncpg.Connection) -> None:
    q = Queries.for_schema("public")
    ids = list(range(900_001, 900_501))
    for query in (q.job_retry_many, q.job_cancel_many, q.job_delete_many):
        plan = await explain(conn, query.sql, *query.bind(ids=ids), analyze=False)
        nodes = list(_nodes(plan))
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], query.name
        assert any(n.get("Index Name") == PKEY for n in nodes), query.name


async def test_a_big_queue_reports_estimated_counts(big_db: str) -> None:
    client = pyriver_async.Client(big_db, pool_max_size=2)
    try:
        info = await client.get_queue("queue_1", count_cap=1000)
        assert not info.counts_exact
        assert 100_000 <= info.counts[pyriver_async.JobState.COMPLETED] <= 250_000
        assert info.counts[pyriver_async.JobState.PENDING] == 1000
    finally:
        await client.close()
