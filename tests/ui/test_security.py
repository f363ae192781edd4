"""The UI's safety rules (UI-SPEC B9, C2): hostile job data shows as text (S3), the
templates cannot smuggle markup (S4), CSRF (S5), authentication (S7), permissions and
the read-only mode (S8), redaction (S15)."""

from __future__ import annotations

import asyncio
import base64
import re
import sys
from importlib import resources

import asyncpg
import pytest

from pyriver_async import Client
from pyriver_async.ui import ALLOW_ALL, Access, Principal, basic_auth, bearer_token, create_app

from ._seed import add_job
from .conftest import SAME_ORIGIN, MakeUI, post, token
from .html import parse

HOSTILE_KIND = '"><img src=x onerror=alert(1)>'
HOSTILE = {
    "x": "</script><script>alert(1)</script>",
    "y": '" onmouseover=alert(1)',
}


async def hostile_job(conn: asyncpg.Connection, state: str = "discarded") -> int:
    return await add_job(
        conn,
        kind=HOSTILE_KIND,
        queue="q<b>",
        state=state,
        tags=["<script>x</script>"],
        args=HOSTILE,
        metadata={
            "output": "<svg onload=alert(1)>",
            "river:log": [{"attempt": 1, "log": "<i>log</i>"}],
        },
        errors=[
            {
                "at": "2024-01-01T00:00:00Z",
                "attempt": 1,
                "error": "<b>err</b>",
                "trace": "<script>trace()</script>",
            }
        ],
    )


def assert_inert(html: str, nonce_scripts_only: bool = True) -> None:
    page = parse(html)
    for el in page.elements:
        assert not [a for a in el.attrs if a.startswith("on")], (el.tag, el.attrs)
        if el.tag == "script":
            assert el.get("src") and not el.text.strip(), el
        assert el.tag not in ("img", "svg") or el.tag == "svg"
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "<b>err</b>" not in html and "<svg onload" not in html


async def test_hostile_job_data_shows_as_text(make_ui: MakeUI, conn: asyncpg.Connection) -> None:
    job_id = await hostile_job(conn)
    await hostile_job(conn, state="retryable")
    _ui, http = await make_ui()
    for path in (
        f"/jobs/{job_id}",
        "/jobs?state=discarded",
        "/jobs?state=retryable",
        "/errors",
        "/queues",
        "/kinds",
        "/",
    ):
        r = await http.get(path)
        assert r.status_code == 200, path
        assert_inert(r.text)
    detail = (await http.get(f"/jobs/{job_id}")).text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in detail
    assert "&lt;b&gt;err&lt;/b&gt;" in detail and "&lt;i&gt;log&lt;/i&gt;" in detail
    listing = (await http.get("/jobs?state=discarded")).text
    assert "&lt;script&gt;x&lt;/script&gt;" in listing and "q&lt;b&gt;" in listing


def templates() -> list[tuple[str, str]]:
    root = resources.files("pyriver_async.ui").joinpath("templates")
    return [(t.name, t.read_text()) for t in root.iterdir() if t.name.endswith(".html")]


def test_templates_cannot_smuggle_markup() -> None:
    for name, text in templates():
        assert "|safe" not in text.replace(" ", ""), name
        assert "Markup(" not in text, name
        assert "hx-on" not in text and "js:" not in text, name
        assert "style=" not in text, name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), name
        assert "autoescape false" not in text, name
    ui_dir = resources.files("pyriver_async.ui")
    for entry in ui_dir.iterdir():
        if entry.name.endswith(".py") and entry.name != "charts.py":
            assert "Markup(" not in entry.read_text(), entry.name


async def test_every_htmx_element_carries_the_response_nonce(
    make_ui: MakeUI, conn: asyncpg.Connection
) -> None:
    job_id = await add_job(conn, state="retryable")
    _ui, http = await make_ui(live=True)
    for path in ("/", "/jobs?state=retryable", f"/jobs/{job_id}", "/queues", "/errors", "/clients"):
        r = await http.get(path)
        nonce = re.search(r"'nonce-([^']+)'", r.headers["content-security-policy"]).group(1)  # type: ignore[union-attr]
        htmx = parse(r.text).with_attr_prefix("hx-")
        assert htmx, path
        for el in htmx:
            assert el.get("hx-nonce") == nonce, (path, el)


async def db_state(conn: asyncpg.Connection) -> list[tuple[int, str]]:
    return [
        (r[0], r[1]) for r in await conn.fetch("SELECT id, state::text FROM river_job ORDER BY id")
    ]


async def test_csrf_defences(make_ui: MakeUI, conn: asyncpg.Connection) -> None:
    job_id = await add_job(conn, state="available")
    secret_token = "t" * 32
    ui, http = await make_ui(
        authorize=lambda r: _either(r, secret_token), trusted_origins=("https://trusted.example",)
    )
    url = f"/jobs/{job_id}/cancel"
    good = token(ui, "person")
    before = await db_state(conn)
    cases = [
        ({"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, {"csrf": good}, 403),
        ({"Origin": "https://evil.example"}, {"csrf": good}, 403),
        ({}, {"next": "/"}, 403),
        ({"Sec-Fetch-Site": "same-origin"}, {"csrf": token(ui, "someone-else")}, 403),
        ({"Sec-Fetch-Site": "same-site"}, {"csrf": good}, 403),
    ]
    for headers, form, status in cases:
        r = await http.post(url, data=form, headers=headers)
        assert r.status_code == status, (headers, r.text[:300])
        assert await db_state(conn) == before
    plain = await http.post(
        url, content=f"csrf={good}", headers={**SAME_ORIGIN, "Content-Type": "text/plain"}
    )
    assert plain.status_code == 415 and await db_state(conn) == before
    big = await http.post(url, data={"csrf": good, "pad": "x" * 70_000}, headers=SAME_ORIGIN)
    assert big.status_code == 413 and await db_state(conn) == before
    ok = await http.post(url, data={"csrf": good}, headers={"Origin": "https://trusted.example"})
    assert ok.status_code == 303
    assert (
        await conn.fetchval("SELECT state::text FROM river_job WHERE id = $1", job_id)
    ) == "cancelled"
    # A header token (htmx) works like the form field.
    other = await add_job(conn, state="available")
    r = await http.post(
        f"/jobs/{other}/cancel", data={"x": "1"}, headers={**SAME_ORIGIN, "X-CSRF-Token": good}
    )
    assert r.status_code == 303
    # A Bearer token is not ambient: no CSRF token needed (scripts).
    third = await add_job(conn, state="available")
    r = await http.post(
        f"/jobs/{third}/cancel",
        data={},
        headers={"Authorization": f"Bearer {secret_token}", "Accept": "application/json"},
    )
    assert r.status_code == 200 and r.json()["results"][0]["outcome"] == "done"


async def _either(request: object, secret: str) -> Principal | None:
    p = await bearer_token(secret)(request)
    return p or Principal("person")


async def test_authentication(make_ui: MakeUI) -> None:
    secret = "s" * 24
    _ui, http = await make_ui(authorize=_basic_or_bearer(secret))
    assert (await http.get("/")).status_code == 401
    assert (await http.get("/")).headers["www-authenticate"].startswith('Basic realm="pyriver"')
    bad = base64.b64encode(b"admin:wrong").decode()
    assert (await http.get("/", headers={"Authorization": f"Basic {bad}"})).status_code == 401
    good = base64.b64encode(b"admin:right").decode()
    assert (await http.get("/", headers={"Authorization": f"Basic {good}"})).status_code == 200
    assert (await http.get("/", headers={"Authorization": f"Bearer {secret}"})).status_code == 200
    assert (await http.get(f"/?token={secret}")).status_code == 400
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/healthz?db=1")).json() == {"status": "ok"}
    assert (await http.get("/healthz/../")).status_code in (401, 404)
    assert (await http.get("/events")).status_code == 401


def _basic_or_bearer(secret: str):  # type: ignore[no-untyped-def]
    from pyriver_async.ui import any_of

    return any_of(basic_auth("admin", "right"), bearer_token(secret))


async def test_create_app_needs_an_explicit_authorize(db: str) -> None:
    client = Client(db)
    try:
        with pytest.raises(TypeError):
            create_app(client)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            create_app(client, authorize=None)  # type: ignore[arg-type]
        create_app(client, authorize=ALLOW_ALL)
    finally:
        await client.close()


async def test_the_command_refuses_a_public_address_without_credentials(db: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pyriver_async.cli",
        "ui",
        "--host",
        "0.0.0.0",
        "--database-url",
        db,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, (out, err)
    assert b"without authentication" in err


async def test_permissions_and_the_read_only_mode(
    make_ui: MakeUI, conn: asyncpg.Connection
) -> None:
    discarded = await add_job(conn, state="discarded")
    scheduled = await add_job(conn, state="scheduled")
    retry_only = Access(retry_jobs=True)
    ui, http = await make_ui(access=lambda p: retry_only)
    assert (await post(http, ui, f"/jobs/{discarded}/retry")).status_code == 303
    for path in (f"/jobs/{scheduled}/cancel", f"/jobs/{scheduled}/delete", "/queues/default/pause"):
        assert (await post(http, ui, path, {"confirm": "1"})).status_code == 403, path
    assert (
        await conn.fetchval("SELECT state::text FROM river_job WHERE id=$1", scheduled)
    ) == "scheduled"
    page = parse((await http.get(f"/jobs/{scheduled}")).text)
    actions = {f.get("action").rsplit("/", 1)[-1] for f in page.find("form", method="post")}
    assert actions == {"run-now"}

    ro, ro_http = await make_ui(read_only=True)
    for path in (
        f"/jobs/{scheduled}/run-now",
        f"/jobs/{scheduled}/cancel",
        "/queues/default/pause",
        "/jobs/actions",
        "/jobs/bulk",
        "/errors/retry",
        "/periodic/run",
    ):
        r = await post(ro_http, ro, path, {"action": "retry", "id": str(scheduled), "confirm": "1"})
        assert r.status_code == 403, (path, r.status_code)
    for path in (
        "/",
        "/jobs?state=scheduled",
        f"/jobs/{scheduled}",
        f"/jobs/{discarded}",
        "/queues",
        "/errors",
        "/periodic",
        "/queues/default",
    ):
        html = (await ro_http.get(path)).text
        assert not parse(html).find("form", method="post"), path
        assert "Read-only mode" in html

    _forbidden, f_http = await make_ui(access=lambda p: Access.FORBIDDEN)
    assert (await f_http.get("/")).status_code == 403


async def test_redaction(make_ui: MakeUI, conn: asyncpg.Connection) -> None:
    secret_args = {"a": {"Password": "hunter2"}, "b": 1}
    job_id = await add_job(
        conn, state="completed", args=secret_args, metadata={"a": {"PASSWORD": "x2"}}
    )
    viewer = Access(view_raw_args=False)
    _ui, http = await make_ui(redact_keys=("password",), access=lambda p: viewer)
    for path in (
        f"/jobs/{job_id}",
        "/jobs?state=completed",
        f"/jobs/{job_id}/args.json",
        f"/jobs/{job_id}/metadata.json",
    ):
        for accept in ("text/html", "application/json"):
            body = (await http.get(path, headers={"Accept": accept})).text
            assert "hunter2" not in body and "x2" not in body, (path, accept)
            assert "[redacted]" in body, (path, accept)
    assert (await http.get(f"/jobs/{job_id}/args.json?raw=1")).status_code == 403
    _ui2, admin = await make_ui(redact_keys=("password",))
    raw = await admin.get(f"/jobs/{job_id}/args.json?raw=1")
    assert raw.status_code == 200 and "hunter2" in raw.text
    _hidden, hidden_http = await make_ui(show_args_in_list=False)
    assert "hunter2" not in (await hidden_http.get("/jobs?state=completed")).text
