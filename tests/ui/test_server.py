"""Every route of the web UI answers, in HTML and JSON, on an empty and a seeded
database; GETs change nothing; the headers are the strict ones; a River-only database
works; the vendored files are the ones pinned (UI-SPEC C2: S1, S6, S16, S19, S20)."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from typing import Any

import asyncpg
import pytest

import pyriver_async
from pyriver_async import Client
from pyriver_async.ui.security import csp

from ._seed import add_job
from .conftest import MakeUI
from .html import parse

PAGES = [
    "/",
    "/?span=6h",
    "/?span=24h",
    "/jobs",
    "/queues",
    "/kinds",
    "/kinds?window=24h",
    "/errors",
    "/errors?window=7d",
    "/periodic",
    "/clients",
    "/health",
]
STATES = [
    "available",
    "scheduled",
    "retryable",
    "running",
    "pending",
    "completed",
    "cancelled",
    "discarded",
]


async def seed(conn: asyncpg.Connection) -> dict[str, int]:
    ids = {}
    for s in STATES:
        ids[s] = await add_job(
            conn,
            state=s,
            kind=f"kind_{s}",
            queue="q1" if s < "p" else "q2",
            args={"n": 1},
            tags=["t1"],
            errors=[{"at": "2024-01-01T00:00:00Z", "attempt": 1, "error": "boom 12", "trace": "tb"}]
            if s in ("retryable", "discarded")
            else None,
            attempted_by=["client-a"] if s in ("running", "completed", "discarded") else None,
        )
    await conn.execute(
        "INSERT INTO river_queue (name, updated_at, paused_at) VALUES ('q1', now(), now())"
    )
    return ids


def job_pages(ids: dict[str, int]) -> list[str]:
    out = [f"/jobs?state={s}" for s in STATES]
    out += [f"/jobs/{i}" for i in ids.values()]
    out += [f"/jobs/{ids['completed']}/args.json", f"/jobs/{ids['completed']}/metadata.json"]
    out += [
        "/queues/q1",
        "/queues/q2",
        "/kinds/kind_completed",
        "/jobs?state=available&queue=q1&order=claim",
    ]
    return out


async def test_every_page_answers_on_an_empty_database(make_ui: MakeUI) -> None:
    _ui, http = await make_ui()
    for path in PAGES + [f"/jobs?state={s}" for s in STATES]:
        for accept in ("text/html", "application/json", "*/*"):
            r = await http.get(path, headers={"Accept": accept})
            assert r.status_code == 200, (path, accept, r.text[:500])
            if accept == "application/json":
                assert r.headers["content-type"].startswith("application/json")
                json.loads(r.text)
            else:
                assert r.headers["content-type"].startswith("text/html")


async def test_every_page_answers_on_a_seeded_database(
    make_ui: MakeUI, conn: asyncpg.Connection
) -> None:
    ids = await seed(conn)
    _ui, http = await make_ui()
    for path in PAGES + job_pages(ids):
        r = await http.get(path)
        assert r.status_code == 200, (path, r.text[:800])
        r = await http.get(path, headers={"Accept": "application/json"})
        assert r.status_code == 200, (path, r.text[:800])
    data = (
        await http.get(f"/jobs/{ids['discarded']}", headers={"Accept": "application/json"})
    ).json()
    assert data["state"] == "discarded" and data["kind"] == "kind_discarded"
    assert data["attempts"][0]["error"] == "boom 12"
    listing = (
        await http.get("/jobs?state=retryable", headers={"Accept": "application/json"})
    ).json()
    assert [j["id"] for j in listing["jobs"]] == [ids["retryable"]]


async def test_htmx_requests_get_the_live_fragment_only(
    make_ui: MakeUI, conn: asyncpg.Connection
) -> None:
    await seed(conn)
    _ui, http = await make_ui()
    full = await http.get("/jobs?state=completed")
    frag = await http.get("/jobs?state=completed", headers={"HX-Request": "true"})
    assert "<html" in full.text and "<html" not in frag.text
    assert "<header" not in frag.text and "kind_completed" in frag.text


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/jobs/999999", 404),
        ("/jobs/abc", 400),
        ("/jobs/0", 400),
        ("/jobs/99999999999999999999", 400),
        ("/jobs?state=bogus", 400),
        ("/jobs?limit=7", 400),
        ("/jobs?limit=x", 400),
        ("/jobs?cursor=zz", 400),
        ("/jobs?priority=9", 400),
        ("/jobs?args=[1]", 400),
        ("/jobs?args={bad", 400),
        ("/jobs?id=a", 400),
        ("/jobs?after=yesterday", 400),
        ("/jobs?order=claim", 400),
        ("/queues/nope", 404),
        ("/nowhere", 404),
        ("/ops/op999", 404),
        ("/jobs/1/other.json", 404),
        ("/?span=3h", 400),
        ("/jobs/jump?id=x", 400),
        ("/kinds?window=2h", 400),
    ],
)
async def test_bad_requests_get_a_clear_4xx(make_ui: MakeUI, path: str, status: int) -> None:
    _ui, http = await make_ui()
    r = await http.get(path)
    assert r.status_code == status, r.text[:500]
    j = await http.get(path, headers={"Accept": "application/json"})
    assert j.status_code == status and j.json()["error"]


async def test_a_400_names_the_parameter(make_ui: MakeUI) -> None:
    _ui, http = await make_ui()
    body = (await http.get("/jobs?limit=7", headers={"Accept": "application/json"})).json()
    assert body["param"] == "limit"
    page = parse((await http.get("/jobs?state=bogus")).text)
    assert "state" in page.find("p", **{"class": "error-message"})[0].text


async def checksum(conn: asyncpg.Connection) -> str:
    rows = await conn.fetch("SELECT j::text FROM river_job j ORDER BY id")
    rows += await conn.fetch("SELECT q::text FROM river_queue q ORDER BY name")
    return hashlib.sha256("\n".join(r[0] for r in rows).encode()).hexdigest()


async def test_getting_every_page_changes_nothing(
    make_ui: MakeUI, conn: asyncpg.Connection
) -> None:
    ids = await seed(conn)
    before = await checksum(conn)
    _ui, http = await make_ui()
    for path in PAGES + job_pages(ids):
        assert (await http.get(path)).status_code == 200
    assert await checksum(conn) == before


def _nonce(response: Any) -> str:
    m = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
    assert m is not None
    return m.group(1)


async def test_headers_of_every_kind_of_response(make_ui: MakeUI, conn: asyncpg.Connection) -> None:
    ids = await seed(conn)
    _ui, http = await make_ui()
    for path, accept in (("/", "text/html"), ("/jobs", "application/json"), ("/nope", "text/html")):
        r = await http.get(path, headers={"Accept": accept})
        nonce = _nonce(r)
        assert r.headers["content-security-policy"] == csp(nonce)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cross-origin-opener-policy"] == "same-origin"
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    one, two = await http.get("/"), await http.get("/")
    assert _nonce(one) != _nonce(two)
    page = parse(one.text)
    scripts = page.find("script")
    assert scripts and all(s.get("nonce") == _nonce(one) and s.get("src") for s in scripts)
    css = page.find("link", rel="stylesheet")[0].get("href")
    static = await http.get(css)
    assert static.status_code == 200 and static.headers["cache-control"] == (
        "public, max-age=31536000, immutable"
    )
    assert re.search(r"app\.[0-9a-f]{10}\.css$", css)
    download = await http.get(f"/jobs/{ids['completed']}/args.json")
    assert download.headers["content-disposition"].startswith("attachment;")
    assert (await http.options("/jobs")).status_code == 405
    assert (await http.request("PUT", "/jobs")).status_code == 405
    robots = await http.get("/robots.txt")
    assert robots.status_code == 200 and "Disallow: /" in robots.text
    health = await http.get("/healthz")
    assert health.json() == {"status": "ok"}


async def test_a_river_only_database(fresh_database: Any, make_ui: MakeUI) -> None:
    url = await fresh_database()
    await pyriver_async.migrate(url, line="main")
    conn = await asyncpg.connect(url)
    try:
        await add_job(conn, state="running", attempted_by=["river-go-client"])
        done = await add_job(
            conn,
            state="completed",
            metadata={
                "river:log": [{"attempt": 1, "log": "line one\nline two"}],
                "river:rescue_count": 2,
                "output": {"rows": 10},
                "snoozes": 3,
            },
        )
    finally:
        await conn.close()
    client = Client(url, pool_max_size=2, check_schema=False)
    try:
        _ui, http = await make_ui(client=client)
        for path in [*PAGES, f"/jobs/{done}", "/jobs?state=running"]:
            assert (await http.get(path)).status_code == 200, path
        clients = await http.get("/clients")
        assert "Liveness data is unavailable" in clients.text and "river-go-client" in clients.text
        job = await http.get(f"/jobs/{done}")
        assert "line one\nline two" in job.text
        assert "rescued 2 time(s)" in job.text and "snoozed 3 time(s)" in job.text
        assert "Result" in job.text and "&#34;rows&#34;: 10" in job.text
    finally:
        await client.close()


def test_the_vendored_files_are_the_pinned_ones() -> None:
    vendor = resources.files("pyriver_async.ui").joinpath("static/vendor")
    pinned = json.loads(vendor.joinpath("VENDOR.json").read_text())
    assert pinned["package"] == "htmx.org" and pinned["version"] == "4.0.1"
    names = {p.name for p in vendor.iterdir()} - {"VENDOR.json"}
    assert names == set(pinned["files"])
    for name, meta in pinned["files"].items():
        assert hashlib.sha256(vendor.joinpath(name).read_bytes()).hexdigest() == meta["sha256"], (
            name
        )
