"""Live refresh and the UI's life (UI-SPEC C2): event streams from LISTEN (S17),
mounting in FastAPI with no lifespan wiring (S18), and ``pyriver ui`` ending at once
on SIGTERM with a stream open (S21)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from pyriver_async import Client, JobArgs
from pyriver_async.ui import ALLOW_ALL, create_app

from ._seed import add_job
from ._server import serve
from .html import parse


class Hello(JobArgs, kind="ui_live_hello"):
    n: int = 0


async def _events(url: str, out: list[str], ready: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=10) as http, http.stream("GET", url) as r:
        out.append(f"status {r.status_code}")
        async for line in r.aiter_lines():
            out.append(line)
            if line.startswith("retry:"):
                ready.set()


async def _wait_for(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_event_streams_carry_notifications(db: str) -> None:
    client = Client(db, pool_max_size=2)
    ui = create_app(client, authorize=ALLOW_ALL, sampler=False, max_streams=2)
    try:
        with serve(ui) as base:
            lines: list[str] = []
            ready = asyncio.Event()
            stream = asyncio.create_task(_events(base + "/events", lines, ready))
            await asyncio.wait_for(ready.wait(), 10)
            await _wait_for(lambda: ui.live.listening, 10)
            t0 = time.monotonic()
            await client.insert(Hello(n=1))
            await _wait_for(lambda: "event: jobs" in lines, 5)
            assert time.monotonic() - t0 < 1.5
            assert lines[0] == "status 200" and lines[1].startswith("retry: 3000")
            # The stream limit: a second stream fits, a third is refused.
            second = asyncio.create_task(_events(base + "/events", [], asyncio.Event()))
            await _wait_for(lambda: ui.live.stream_count == 2, 5)
            async with httpx.AsyncClient() as http:
                third = await http.get(base + "/events")
            assert third.status_code == 503
            # Disconnects leave nothing behind.
            for t in (stream, second):
                t.cancel()
            await asyncio.gather(stream, second, return_exceptions=True)
            await _wait_for(lambda: ui.live.stream_count == 0, 5)
    finally:
        await client.close()


async def test_mounted_in_fastapi_without_lifespan_wiring(
    db: str, conn: asyncpg.Connection
) -> None:
    job = await add_job(conn, state="discarded", kind="mounted_kind", queue="mq")
    client = Client(db, pool_max_size=2)
    ui = create_app(client, authorize=ALLOW_ALL, sample_interval_s=0.2)
    app = FastAPI()
    app.mount("/admin/jobs", ui)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            r = await http.get("/admin/jobs")
            assert r.status_code in (307, 308) and r.headers["location"].endswith("/admin/jobs/")
            seen: set[str] = set()
            todo = ["/admin/jobs/", f"/admin/jobs/jobs/{job}", "/admin/jobs/jobs?state=discarded"]
            while todo and len(seen) < 80:
                path = todo.pop()
                if path in seen:
                    continue
                seen.add(path)
                r = await http.get(path)
                assert r.status_code == 200, (path, r.status_code)
                page = parse(r.text)
                refs = page.links() + [e.get("src") for e in page.find("script")]
                refs += [e.get("href") for e in page.find("link", rel="stylesheet")]
                refs += [e.get("action") for e in page.find("form") if e.get("method") == "post"]
                refs += [e.get("hx-get") for e in page.with_attr_prefix("hx-get")]
                for ref in refs:
                    if not ref or ref.startswith("#"):
                        continue
                    assert ref.startswith("/admin/jobs/"), (path, ref)
                    if "/static/" not in ref and ref not in seen and not ref.endswith((".json",)):
                        if any(f.get("action") == ref for f in page.find("form", method="post")):
                            continue
                        todo.append(ref)
            assert len(seen) > 15
            await asyncio.wait_for(ui.sampler.ticked.wait(), 10)
            assert ui.sampler.ticks >= 1
    finally:
        await ui.aclose()
        await client.close()
    leftovers = [
        t for t in asyncio.all_tasks() if t.get_name().startswith("pyriver-ui") and not t.done()
    ]
    assert leftovers == []


async def test_the_command_exits_at_once_on_sigterm_with_a_stream_open(db: str) -> None:
    env = {**os.environ, "DATABASE_URL": db}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pyriver_async.cli",
        "ui",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert m, line
        lines: list[str] = []
        ready = asyncio.Event()
        stream = asyncio.create_task(_events(m.group(1) + "/events", lines, ready))
        await asyncio.wait_for(ready.wait(), 10)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
        elapsed = time.monotonic() - t0
        await asyncio.gather(stream, return_exceptions=True)
        assert code == 0
        assert elapsed < 1.0, elapsed
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
