"""The UI's queries on a table of a million jobs (UI-SPEC C3): each is served by the
index it names, never a sequential scan of river_job, and reads a bounded number of
buffers. Statements are captured as the UI and the query API send them (asyncpg's
query logger), then run again under ``EXPLAIN (ANALYZE, BUFFERS)``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import pyriver_async
from pyriver_async import Client, _localdb
from pyriver_async._insights import Insights
from pyriver_async.ui import ALLOW_ALL, create_app

N = 1_000_000
QUEUES = ["q0", "q1", "q2", "q3", "q4"]

# (state, rows): 800k completed over 24 h, 100k available over 5 queues x 4 priorities,
# 50k scheduled, 30k discarded with errors, 10k retryable, 5k running, 5k pending.
LAYOUT = [
    ("completed", 800_000),
    ("available", 100_000),
    ("scheduled", 50_000),
    ("discarded", 30_000),
    ("retryable", 10_000),
    ("running", 5_000),
    ("pending", 5_000),
]

pytestmark = pytest.mark.timeout(600)


SPREAD = "(g % 86400) * interval '1 second'"  # over a day


def _columns(state: str) -> dict[str, str]:
    final = state in ("completed", "discarded")
    ran = final or state in ("running", "retryable")
    error = "jsonb_build_object('at', now(), 'attempt', 1, 'error', 'boom ' || (g % 13))"
    return {
        "attempt": "1" if ran else "0",
        "errors": f"ARRAY[{error}]" if state in ("discarded", "retryable") else "NULL",
        "scheduled_at": "now() + (g % 3600) * interval '1 second'"
        if state in ("scheduled", "retryable")
        else f"now() - interval '25 hours' + {SPREAD}",
        "attempted_at": f"now() - interval '24 hours' + {SPREAD}" if ran else "NULL",
        "finalized_at": f"now() - interval '24 hours' + {SPREAD} + interval '50 ms'"
        if final
        else "NULL",
        "attempted_by": "ARRAY['client-' || (g % 3)]" if ran else "NULL",
    }


async def _build(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'river_job' "
            "AND indexname <> 'river_job_pkey'"
        )
        for ix in indexes:  # built again after the rows: much faster than kept up
            await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
        start = 0
        for state, rows in LAYOUT:
            c = _columns(state)
            await conn.execute(
                f"""
                INSERT INTO river_job (state, kind, queue, priority, args, max_attempts,
                    attempt, tags, errors, created_at, scheduled_at, attempted_at,
                    finalized_at, attempted_by)
                SELECT '{state}', 'kind_' || (g % 40), 'q' || (g % 5), 1 + (g / 5) % 4,
                    jsonb_build_object('user_id', g % 100000, 'n', g), 25, {c["attempt"]},
                    CASE WHEN g % 10 = 0 THEN ARRAY['tag' || (g % 7)] ELSE '{{}}' END,
                    {c["errors"]}, now() - interval '25 hours', {c["scheduled_at"]},
                    {c["attempted_at"]}, {c["finalized_at"]}, {c["attempted_by"]}
                FROM generate_series({start + 1}, {start + rows}) AS g
                """
            )
            start += rows
        for ix in indexes:
            await conn.execute(ix["indexdef"])
        await conn.execute("VACUUM ANALYZE river_job")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def big_db() -> Iterator[str]:
    """A database with a million jobs (about a minute to build), dropped after."""
    url, name = asyncio.run(_localdb.create_database("pyriver_ui_plans"))
    try:
        asyncio.run(pyriver_async.migrate(url))
        t0 = time.monotonic()
        asyncio.run(_build(url))
        print(f"\n1M-row fixture built in {time.monotonic() - t0:.1f}s")
        yield url
    finally:
        asyncio.run(_localdb.drop_database(name))


class Captured:
    """Statements sent on a connection, for EXPLAIN afterwards."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, record: Any) -> None:
        # Only the library's statements on river_job (not asyncpg's own introspection).
        q = record.query
        if "river_job" in q and q.lstrip().upper().startswith(("SELECT", "WITH")):
            self.statements.append((q, tuple(record.args or ())))


@contextlib.asynccontextmanager
async def capturing(conn: asyncpg.Connection) -> AsyncIterator[Captured]:
    cap = Captured()
    conn.add_query_logger(cap)
    try:
        yield cap
    finally:
        await asyncio.sleep(0.05)  # asyncpg calls query loggers soon after, not at once
        conn.remove_query_logger(cap)


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


async def explain(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> dict[str, Any]:
    async with conn.transaction(readonly=True):
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    plan: dict[str, Any] = json.loads(raw)[0]["Plan"]
    return plan


def buffers(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


def check_plan(
    plan: dict[str, Any], *, index: str | None = None, max_buffers: int | None = None
) -> None:
    nodes = _nodes(plan)
    seq = [
        n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "river_job"
    ]
    assert not seq, "sequential scan of river_job"
    if index is not None:
        used = {n.get("Index Name") for n in nodes}
        assert index in used, f"{index} not in {used}"
    if max_buffers is not None:
        assert buffers(plan) <= max_buffers, f"{buffers(plan)} buffers > {max_buffers}"


async def plans_of(big_db: str, call: Any) -> list[tuple[str, dict[str, Any]]]:
    """Run ``call(conn, insights, client)``; EXPLAIN every statement it sent."""
    conn = await asyncpg.connect(big_db)
    client = Client(big_db, pool_max_size=2)
    try:
        async with capturing(conn) as cap:
            await call(conn, Insights(client), client)
        return [(sql, await explain(conn, sql, args)) for sql, args in cap.statements]
    finally:
        await client.close()
        await conn.close()


def _now() -> datetime:
    return datetime.now(UTC)


CATALOG: list[tuple[str, Any, str | None, int]] = [
    (
        "state_counts",
        lambda c, i, _: i.state_counts(cap=100_000, conn=c),
        "river_job_prioritized_fetching_index",
        4_000,
    ),
    (
        "throughput_60m",
        lambda c, i, _: i.throughput(_now() - timedelta(minutes=60), conn=c),
        "river_job_state_and_finalized_at_index",
        1_000,
    ),
    (
        "queue_stats",
        lambda c, i, _: i.queue_stats(cap=100_000, conn=c),
        "river_job_prioritized_fetching_index",
        6_000,
    ),
    ("kinds", lambda c, i, _: i.kinds(conn=c), "river_job_kind", 400),
    ("health", lambda c, i, _: i.health(conn=c), "river_job_prioritized_fetching_index", 2_000),
    (
        "error_groups",
        lambda c, i, _: i.error_groups(since=_now() - timedelta(hours=24), conn=c),
        "river_job_state_and_finalized_at_index",
        30_000,
    ),
    (
        "kind_sample",
        lambda c, i, _: i.kind_sample("kind_7", conn=c),
        "river_job_state_and_finalized_at_index",
        120_000,
    ),
    (
        "claim_order",
        lambda c, i, _: i.claim_order("q1", limit=21, conn=c),
        "river_job_prioritized_fetching_index",
        100,
    ),
    (
        "breakdown_5s",
        lambda c, i, _: i.breakdown(_now() - timedelta(seconds=5), conn=c),
        "river_job_state_and_finalized_at_index",
        2_000,
    ),
    (
        "periodic_runs",
        lambda c, i, _: i.periodic_runs("nightly", conn=c),
        "river_job_metadata_index",
        100,
    ),
]


@pytest.mark.parametrize(("name", "call", "index", "limit"), CATALOG, ids=[c[0] for c in CATALOG])
async def test_insights_queries_use_their_index(
    big_db: str, name: str, call: Any, index: str | None, limit: int
) -> None:
    plans = await plans_of(big_db, call)
    assert plans
    for _sql, plan in plans:
        check_plan(plan)  # never a sequential scan of river_job
    total = sum(buffers(p) for _sql, p in plans)
    used = {n.get("Index Name") for _s, p in plans for n in _nodes(p)}
    assert index in used, used
    assert total <= limit, f"{name}: {total} buffers"


async def test_a_capped_count_reads_the_index_only_up_to_the_cap(big_db: str) -> None:
    async def call(c: Any, i: Insights, _: Any) -> None:
        counts = await i.state_counts(cap=100_000, conn=c)
        assert counts.counts[pyriver_async.JobState.AVAILABLE] == 100_000

    plans = await plans_of(big_db, call)
    first = plans[0][1]  # the active states: 100k available stop at the cap
    print(f"\nactive states counted up to 100,000: {buffers(first)} buffers")
    check_plan(first, index="river_job_prioritized_fetching_index", max_buffers=3_000)


LISTS: list[tuple[str, dict[str, Any]]] = [
    ("final_discarded", {"states": ["discarded"], "order": "finalized_at"}),
    ("final_completed", {"states": ["completed"], "order": "finalized_at"}),
    # A queue filter on a finalized state is checked on the rows (the finalized index
    # has no queue column): bounded by the scan, not an index range.
    (
        "final_completed_one_queue",
        {"states": ["completed"], "queues": ["q3"], "order": "finalized_at"},
    ),
    (
        "active_time_available",
        {"states": ["available"], "queues": QUEUES, "order": "scheduled_at", "descending": False},
    ),
    (
        "active_time_retryable",
        {"states": ["retryable"], "order": "scheduled_at", "descending": False},
    ),
    ("running", {"states": ["running"], "order": "scheduled_at", "descending": False}),
]


@pytest.mark.parametrize(("name", "kw"), LISTS, ids=[x[0] for x in LISTS])
async def test_job_list_pages_are_index_ranges(big_db: str, name: str, kw: dict[str, Any]) -> None:
    async def call(c: Any, _i: Any, client: Client) -> None:
        kw2 = dict(kw)
        page = await client.list(limit=20, conn=c, **kw2)
        assert len(page.jobs) == 20
        await client.list(limit=20, cursor=page.next_cursor, conn=c, **kw2)

    plans = await plans_of(big_db, call)
    total = 0
    for _sql, plan in plans:
        # UI-SPEC P2: at most 500 buffers a statement. A queue filter on a finalized
        # state is checked on the rows (the finalized index has no queue column).
        check_plan(plan, max_buffers=2_000 if "one_queue" in name else 500)
        total += buffers(plan)
    print(f"\n{name}: {total} buffers for two pages of 20")


async def test_the_claim_order_has_no_sort(big_db: str) -> None:
    async def call(c: Any, i: Insights, _: Any) -> None:
        first = await i.claim_order("q2", limit=21, conn=c)
        last = first[-1]
        await i.claim_order(
            "q2", limit=21, after=(last.priority, last.scheduled_at, last.id), conn=c
        )

    plans = await plans_of(big_db, call)
    assert len(plans) == 2
    for _sql, plan in plans:
        check_plan(plan, index="river_job_prioritized_fetching_index", max_buffers=500)
        assert not [n for n in _nodes(plan) if "Sort" in n["Node Type"]]


async def test_a_filter_that_matches_nothing_stops_at_its_budget(big_db: str) -> None:
    async def call(c: Any, _i: Any, client: Client) -> None:
        page = await client.list(
            states=["completed"],
            kinds=["no_such_kind"],
            order="finalized_at",
            limit=20,
            scan_budget=50_000,
            conn=c,
        )
        assert page.jobs == [] and page.stopped_early and page.scanned <= 50_000

    plans = await plans_of(big_db, call)
    assert sum(buffers(p) for _s, p in plans) <= 60_000
    for _sql, plan in plans:
        check_plan(plan)


async def test_args_containment_uses_the_gin_index(big_db: str) -> None:
    async def selective(c: Any, _i: Any, client: Client) -> None:
        page = await client.list(states=["completed"], args_contains={"n": 12345}, limit=20, conn=c)
        assert [j.args["n"] for j in page.jobs] == [12345]

    plans = await plans_of(big_db, selective)
    used = {n.get("Index Name") for _s, p in plans for n in _nodes(p)}
    assert "river_job_args_index" in used
    for _sql, plan in plans:
        check_plan(plan, max_buffers=500)

    async def dense(c: Any, _i: Any, client: Client) -> None:
        page = await client.list(
            states=["completed"],
            args_contains={"user_id": 7},
            limit=20,
            order="finalized_at",
            conn=c,
        )
        assert len(page.jobs) == 8

    for _sql, plan in await plans_of(big_db, dense):
        check_plan(plan)


async def test_throughput_reads_the_finalized_index_in_proportion_to_the_window(
    big_db: str,
) -> None:
    short = await plans_of(
        big_db, lambda c, i, _: i.throughput(_now() - timedelta(seconds=5), conn=c)
    )
    hour = await plans_of(
        big_db, lambda c, i, _: i.throughput(_now() - timedelta(minutes=60), conn=c)
    )
    for plans in (short, hour):
        ((_sql, plan),) = plans
        check_plan(plan, index="river_job_state_and_finalized_at_index")
        assert [n for n in _nodes(plan) if n["Node Type"] == "Index Only Scan"]
    assert buffers(short[0][1]) <= 20 and buffers(hour[0][1]) <= 1_000


async def test_the_unique_conflict_probe_uses_the_unique_index(big_db: str) -> None:
    conn = await asyncpg.connect(big_db)
    try:
        sql = Client(big_db).queries.insights_unique_conflict.sql
        plan = await explain(conn, sql, (b"some-key", 1))
        check_plan(plan, index="river_job_unique_idx", max_buffers=10)
    finally:
        await conn.close()


async def test_the_overview_costs_little_once_warm(big_db: str) -> None:
    client = Client(big_db, pool_max_size=2)
    ui = create_app(client, authorize=ALLOW_ALL, live=False, sampler=False)
    statements: list[tuple[str, tuple[Any, ...]]] = []
    try:
        await ui.start()
        assert ui.db is not None
        plain_read = ui.db.read

        @contextlib.asynccontextmanager
        async def logged_read(**kw: Any) -> AsyncIterator[Any]:
            async with plain_read(**kw) as conn:
                cap = Captured()
                conn.add_query_logger(cap)
                try:
                    yield conn
                finally:
                    await asyncio.sleep(0.01)
                    conn.remove_query_logger(cap)
                    statements.extend(cap.statements)

        ui.db.read = logged_read  # type: ignore[method-assign]
        import httpx

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ui), base_url="http://x"
        ) as http:
            cold = await http.get("/")
            assert cold.status_code == 200 and "Server-Timing" in cold.headers
            cold_statements = list(statements)
            statements.clear()
            warm = await http.get("/")
            assert warm.status_code == 200
    finally:
        await ui.aclose()
        await client.close()
    conn = await asyncpg.connect(big_db)
    try:
        cold_buffers = sum([buffers(await explain(conn, s, a)) for s, a in cold_statements])
        warm_buffers = sum([buffers(await explain(conn, s, a)) for s, a in statements])
    finally:
        await conn.close()
    print(
        f"\noverview: cold {cold_buffers} buffers in {len(cold_statements)} statements, "
        f"warm {warm_buffers} in {len(statements)}"
    )
    assert cold_buffers <= 10_000
    assert warm_buffers <= 100
