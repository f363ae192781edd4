"""Actions through the UI keep River's semantics (UI-SPEC B8, C2): retry, run now,
cancel and delete on one job (S9), a selection with unique conflicts skipping one job
each (S10), and everything a filter matches in batches (S11)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import pytest

from pyriver_async.ui import actions

from ._seed import add_job
from .conftest import MakeUI, post

# River's default unique states: available, completed, pending, retryable, running, scheduled.
UNIQUE_STATES = 1 | 4 | 16 | 32 | 64 | 128


async def row(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    r = await conn.fetchrow(
        "SELECT state::text AS state, max_attempts, attempt, scheduled_at, finalized_at, metadata "
        "FROM river_job WHERE id = $1",
        job_id,
    )
    assert r is not None
    return r


async def test_single_job_actions_follow_river(
    make_ui: MakeUI, conn: asyncpg.Connection, db: str
) -> None:
    exhausted = await add_job(conn, state="discarded", attempt=3, max_attempts=3, queue="qa")
    scheduled = await add_job(conn, state="scheduled", queue="qb")
    available = await add_job(conn, state="available")
    running = await add_job(conn, state="running", queue="qr", attempted_by=["someone"])
    notes: list[tuple[str, str]] = []
    listener = await asyncpg.connect(db)
    for ch in ("public.river_insert", "public.river_control"):
        await listener.add_listener(ch, lambda _c, _p, ch, payload: notes.append((ch, payload)))
    try:
        ui, http = await make_ui()
        r = await post(http, ui, f"/jobs/{exhausted}/retry", {"next": f"/jobs/{exhausted}"})
        assert r.status_code == 303 and r.headers["location"] == f"/jobs/{exhausted}"
        assert "1 retried" in r.headers["set-cookie"]
        got = await row(conn, exhausted)
        assert (got["state"], got["max_attempts"], got["finalized_at"]) == ("available", 4, None)

        r = await post(http, ui, f"/jobs/{scheduled}/run-now")
        got = await row(conn, scheduled)
        assert got["state"] == "available"
        assert abs(got["scheduled_at"].timestamp() - time.time()) < 30

        await post(http, ui, f"/jobs/{available}/cancel")
        assert (await row(conn, available))["state"] == "cancelled"

        await post(http, ui, f"/jobs/{running}/cancel")
        got = await row(conn, running)
        assert got["state"] == "running" and "cancel_attempted_at" in json.loads(got["metadata"])

        r = await post(http, ui, f"/jobs/{running}/delete", {"confirm": "1"})
        assert r.status_code == 303 and "skipped" in r.headers["set-cookie"]
        assert (await row(conn, running))["state"] == "running"

        # Without confirm=1 a delete asks first (a page with the same form), deleting nothing.
        ask = await post(http, ui, f"/jobs/{available}/delete")
        assert ask.status_code == 200 and "confirm" in ask.text
        assert await conn.fetchval("SELECT count(*) FROM river_job WHERE id = $1", available) == 1
        gone = await post(http, ui, f"/jobs/{available}/delete", {"confirm": "1"})
        assert gone.status_code == 303
        assert await conn.fetchval("SELECT count(*) FROM river_job WHERE id = $1", available) == 0

        await asyncio.sleep(0.3)
        inserts = [json.loads(p) for ch, p in notes if ch.endswith("river_insert")]
        controls = [json.loads(p) for ch, p in notes if ch.endswith("river_control")]
        assert sorted(n["queue"] for n in inserts) == ["qa", "qb"]
        assert [c["action"] for c in controls] == ["cancel"] and controls[0]["job_id"] == running
    finally:
        await listener.close()


async def test_a_selection_skips_only_the_jobs_with_unique_conflicts(
    make_ui: MakeUI, conn: asyncpg.Connection
) -> None:
    ids = []
    for i in range(50):
        ids.append(
            await add_job(
                conn, state="discarded", unique_key=f"key-{i}".encode(), unique_states=UNIQUE_STATES
            )
        )
    blockers = [
        await add_job(
            conn, state="available", unique_key=f"key-{i}".encode(), unique_states=UNIQUE_STATES
        )
        for i in (3, 7)
    ]
    records: list[dict[str, Any]] = []
    ui, http = await make_ui(on_action=records.append)
    r = await post(
        http,
        ui,
        "/jobs/actions",
        {"action": "retry", "id": [str(i) for i in ids]},
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 200
    body = r.json()
    outcomes = {x["job_id"]: x for x in body["results"]}
    assert sum(1 for x in outcomes.values() if x["outcome"] == "done") == 48
    skipped = {i: x["reason"] for i, x in outcomes.items() if x["outcome"] != "done"}
    assert set(skipped) == {ids[3], ids[7]}
    assert str(blockers[0]) in skipped[ids[3]] and str(blockers[1]) in skipped[ids[7]]
    assert body["message"].startswith("48 retried, 2 skipped")
    assert len(records) == 1 and records[0]["counts"] == {"done": 48, "refused": 2}
    rows = await conn.fetch("SELECT id, state::text FROM river_job WHERE id = ANY($1)", ids)
    states = {r[0]: r[1] for r in rows}
    assert [i for i in ids if states[i] == "discarded"] == [ids[3], ids[7]]


async def test_a_selection_is_at_most_a_thousand_jobs(make_ui: MakeUI) -> None:
    ui, http = await make_ui()
    r = await post(
        http, ui, "/jobs/actions", {"action": "retry", "id": " ".join(map(str, range(1, 1002)))}
    )
    assert r.status_code == 400


async def test_everything_a_filter_matches_in_batches(
    make_ui: MakeUI, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await conn.execute(
        """
        INSERT INTO river_job (kind, queue, state, args, max_attempts, attempt, attempted_at,
            finalized_at, scheduled_at)
        SELECT CASE WHEN g <= 2000 THEN 'kind_a' ELSE 'kind_b' END, 'default', 'discarded',
            '{}', 25, 1, now() - interval '1 hour', now() - g * interval '1 second', now()
        FROM generate_series(1, 2100) AS g
        """
    )
    monkeypatch.setattr(actions, "BATCH_PAUSE", 0.3)
    records: list[dict[str, Any]] = []
    ui, http = await make_ui(on_action=records.append)
    base = {"state": "discarded", "kind": "kind_a", "action": "retry", "seen": "2000"}
    refused = await post(http, ui, "/jobs/bulk", {**base, "confirm_count": "1999"})
    assert refused.status_code == 400 and "confirm_count" in refused.text
    assert await conn.fetchval("SELECT count(*) FROM river_job WHERE state = 'available'") == 0

    started = await post(http, ui, "/jobs/bulk", {**base, "confirm_count": "2000"})
    assert started.status_code == 303
    op_url = started.headers["location"]
    op = ui.ops.get(op_url.rsplit("/", 1)[-1])
    assert op is not None
    deadline = time.monotonic() + 30
    while op.batches < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    # Meanwhile ten of the oldest (last to be reached) start running: they leave the filter.
    moved = await conn.fetch(
        "UPDATE river_job SET state = 'running', finalized_at = NULL WHERE id IN (SELECT id FROM "
        "river_job WHERE kind = 'kind_a' AND state = 'discarded' ORDER BY finalized_at LIMIT 10) "
        "RETURNING id"
    )
    assert len(moved) == 10
    progress = await http.get(op_url, headers={"Accept": "application/json"})
    assert progress.status_code == 200 and 0 < progress.json()["percent"] < 100
    while not op.finished:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert op.error is None and not op.cancelled
    assert op.done == 1990 and op.batches <= 20
    rows = await conn.fetch("SELECT kind || ':' || state::text, count(*) FROM river_job GROUP BY 1")
    counts = {r[0]: r[1] for r in rows}
    assert counts == {"kind_a:available": 1990, "kind_a:running": 10, "kind_b:discarded": 100}
    done = (await http.get(op_url, headers={"Accept": "application/json"})).json()
    assert done["finished"] and done["percent"] == 100
    audit = [r for r in records if r["action"] == "retry_all"]
    assert len(audit) == 1 and audit[0]["counts"] == {"done": 1990, "skipped": 0}
