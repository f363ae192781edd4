"""examples/fastapi_sqlalchemy.py: the user row and its job commit together, and an
error in the handler after both writes leaves neither."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import asyncpg
import httpx

import pyriver_async

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_sqlalchemy.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_fastapi_sqlalchemy", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the handler's annotations here
    spec.loader.exec_module(module)
    return module


async def test_signup_commits_the_row_and_its_job_or_neither(
    fresh_database: Callable[[], Awaitable[str]],
) -> None:
    url = await fresh_database()
    await pyriver_async.migrate(url)
    example = load_example()
    app = example.create_app(url)
    admin = await asyncpg.connect(url)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                ok = await http.post("/signups", json={"email": "ada@example.com"})
                assert ok.status_code == 201, ok.text
                ids = ok.json()
                refused = await http.post(
                    "/signups", json={"email": "bob@example.com", "referred_by": 999}
                )
                assert refused.status_code == 404, refused.text
        users = await admin.fetch("SELECT id, email FROM example_users")
        assert [(u["id"], u["email"]) for u in users] == [(ids["user_id"], "ada@example.com")]
        jobs = await admin.fetch("SELECT id, kind, args->>'user_id' AS user_id FROM river_job")
        assert [(j["id"], j["kind"], j["user_id"]) for j in jobs] == [
            (ids["job_id"], "example_welcome_email", str(ids["user_id"]))
        ]
    finally:
        await admin.close()
