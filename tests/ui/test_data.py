"""What the pages show is exact where it must be and bounded where it may not be
(UI-SPEC C2): paging a state while jobs move (S12), capped counts and regions that
time out (S13), JSON shown digit for digit (S14), and no input giving a 5xx (S2)."""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyriver_async import Client
from pyriver_async.ui import ALLOW_ALL, create_app

from ._seed import add_job
from ._server import serve
from .conftest import MakeUI
from .html import parse


async def test_paging_a_state_while_jobs_move(make_ui: MakeUI, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO river_job (kind, state, args, max_attempts, attempt, attempted_at,"
        " finalized_at) SELECT 'k', 'discarded', '{}', 25, 1, now(),"
        " now() - g * interval '1 second'"
        " FROM generate_series(1, 95) g"
    )
    stayed = {r[0] for r in await conn.fetch("SELECT id FROM river_job")}
    _ui, http = await make_ui()
    seen: list[int] = []
    url = "/jobs?state=discarded&limit=20"
    for step in range(20):  # noqa: B007 (read after the loop)
        page = (await http.get(url, headers={"Accept": "application/json"})).json()
        seen += [j["id"] for j in page["jobs"]]
        # Between pages: new discarded jobs arrive (newer than anything listed) and an
        # old one is retried away.
        await add_job(conn, state="discarded")
        victim = await conn.fetchval(
            "UPDATE river_job SET state = 'available', finalized_at = NULL WHERE id = "
            "(SELECT id FROM river_job WHERE state = 'discarded' AND id <> ALL($1::bigint[]) "
            "ORDER BY finalized_at LIMIT 1) RETURNING id",
            seen,
        )
        stayed.discard(victim)
        if page["next_cursor"] is None:
            break
        url = f"/jobs?state=discarded&limit=20&cursor={page['next_cursor']}"
    assert step < 19
    assert len(seen) == len(set(seen)), "a job listed twice"
    assert stayed - set(seen) == set(), "a job that stayed discarded was skipped"


async def test_paging_back_and_forth_by_links(make_ui: MakeUI, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO river_job (kind, state, args, max_attempts, attempt, attempted_at,"
        " finalized_at) SELECT 'k', 'discarded', '{}', 25, 1, now(),"
        " now() - g * interval '1 second'"
        " FROM generate_series(1, 60) g"
    )
    _ui, http = await make_ui()

    async def ids_and_links(url: str) -> tuple[list[int], dict[str, str]]:
        r = await http.get(url)
        page = parse(r.text)
        ids = [int(e.get("data-id")) for e in page.find("tr") if e.get("data-id")]
        links = {
            e.get("rel"): e.get("href") for e in page.find("a") if e.get("rel") in ("next", "prev")
        }
        return ids, links

    first, links = await ids_and_links("/jobs?state=discarded")
    second, links2 = await ids_and_links(links["next"])
    third, links3 = await ids_and_links(links2["next"])
    back, _ = await ids_and_links(links3["prev"])
    assert len(first) == len(second) == len(third) == 20
    assert len(set(first + second + third)) == 60
    assert back == second
    assert "next" not in links3


async def test_counts_are_capped_and_a_slow_region_does_not_fail_the_page(
    make_ui: MakeUI, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO river_job (kind, args, max_attempts)"
        " SELECT 'k', '{}', 25 FROM generate_series(1, 1500)"
    )
    await conn.execute("ANALYZE river_job")
    _ui, http = await make_ui(count_cap=1000)
    overview = (await http.get("/", headers={"Accept": "application/json"})).json()
    tile = next(t for t in overview["tiles"] if t["state"] == "available")
    assert tile["count"] == 1000 and tile["capped"] is True
    assert tile["estimate"] == pytest.approx(1500, rel=0.2)
    html = (await http.get("/")).text
    assert "1,000+" in html or "≈" in html
    _ui2, slow = await make_ui(statement_timeout_s=0.001)
    r = await slow.get("/")
    assert r.status_code == 200
    assert "unavailable" in r.text


async def test_json_is_shown_digit_for_digit(make_ui: MakeUI, conn: asyncpg.Connection) -> None:
    text = (
        '{"n": 12345678901234567890, "f": 0.1000000000000000055511151231257827, '
        '"b": "é\\u2028</x>"}'
    )
    exact = await add_job(conn, state="completed", args_text=text)
    big = await add_job(conn, state="completed", args={"blob": "x" * (2 << 20)})
    _ui, http = await make_ui()
    page = (await http.get(f"/jobs/{exact}")).text
    shown = parse(page).find("pre", id="args-json")[0].text
    assert "12345678901234567890" in shown and "0.1000000000000000055511151231257827" in shown
    assert shown.index('"b"') < shown.index('"f"') < shown.index('"n"')
    assert "&lt;/x&gt;" in page
    data = (await http.get(f"/jobs/{exact}", headers={"Accept": "application/json"})).text
    assert "12345678901234567890" in data and "0.1000000000000000055511151231257827" in data
    stored = await conn.fetchval("SELECT args::text FROM river_job WHERE id = $1", exact)
    download = await http.get(f"/jobs/{exact}/args.json")
    assert download.text == stored
    big_page = (await http.get(f"/jobs/{big}")).text
    assert "Larger than 1 MB" in big_page and "x" * 1000 not in big_page
    big_download = await http.get(f"/jobs/{big}/args.json")
    assert big_download.text == await conn.fetchval(
        "SELECT args::text FROM river_job WHERE id = $1", big
    )


# -- fuzzing ----------------------------------------------------------------------------

PARAMS = [
    "state",
    "queue",
    "kind",
    "priority",
    "tag",
    "tag_mode",
    "id",
    "args",
    "meta",
    "after",
    "before",
    "order",
    "cursor",
    "limit",
    "back",
    "window",
    "span",
]
values = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=string.digits + "-", max_size=25),
    st.sampled_from(
        [
            "available",
            "discarded",
            "claim",
            "asc",
            "{}",
            '{"a":1}',
            "a=1",
            "[1]",
            "2024-01-01T00:00:00Z",
            "20",
            "200",
            "1h",
            "-1",
            "9" * 30,
            "%00",
            "\x00",
        ]
    ),
)
queries = st.lists(st.tuples(st.sampled_from(PARAMS), values), max_size=6)
paths = st.sampled_from(["/jobs", "/kinds", "/errors", "/", "/queues", "/jobs/{id}", "/kinds/{id}"])


@pytest.fixture(scope="module")
def fuzz_server(database_url: str) -> Iterator[str]:
    client = Client(database_url, pool_max_size=2)
    ui = create_app(client, authorize=ALLOW_ALL, live=False, sampler=False)
    with serve(ui) as base:
        yield base
    asyncio.run(client.close())


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=paths, query=queries, job=st.one_of(st.integers(), st.text(max_size=12)))
def test_no_input_gives_a_server_error(
    fuzz_server: str, path: str, query: list[tuple[str, str]], job: object
) -> None:
    params: list[tuple[str, str | int | float | bool | None]] = list(query)
    url = fuzz_server + path.replace("{id}", quote(str(job), safe="") or "0")
    with httpx.Client(timeout=30) as http:
        for accept in ("text/html", "application/json"):
            r = http.get(url, params=params, headers={"Accept": accept})
            # 405: a GET of an action's URL (/jobs/1/retry takes POST only).
            assert r.status_code in (200, 400, 404, 405), (url, query, r.status_code, r.text[:300])
            if r.status_code == 400 and accept == "application/json":
                assert json.loads(r.text)["error"]


async def test_the_overview_counts_jobs_finished_just_before_the_sampler_started(
    make_ui: MakeUI, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jobs finished a second before the UI started fall in the seconds its backfill
    # leaves to the first sample; until that sample, the chart reads the index.
    for _ in range(3):
        await add_job(conn, state="completed")
    first_tick = asyncio.Event()

    async def slow_tick() -> None:
        await first_tick.wait()  # the first sample has not come yet

    ui, http = await make_ui(sampler=True)
    monkeypatch.setattr(ui.sampler, "tick", slow_tick)
    try:
        r = await http.get("/", headers={"Accept": "application/json"})
        assert r.status_code == 200
        assert ui.sampler.running and ui.sampler.ticks == 0
        bars = r.json()["throughput"]
        assert sum(b.get("completed", 0) for b in bars) == 3, bars
    finally:
        first_tick.set()
