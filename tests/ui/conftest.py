"""Fixtures of the web UI's server tests: a UI app over the test database, and an
httpx client that talks to it in-process (ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from pyriver_async import Client
from pyriver_async.ui import ALLOW_ALL, UIApp, create_app
from pyriver_async.ui.security import mint_token

MakeUI = Callable[..., Awaitable[tuple[UIApp, httpx.AsyncClient]]]

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1"}


@pytest.fixture
async def make_ui(db: str) -> AsyncIterator[MakeUI]:
    """``ui, http = await make_ui(**create_app_settings)``; live refresh and the
    sampler are off unless asked for; everything is closed after the test."""
    made: list[tuple[UIApp, httpx.AsyncClient, Client | None]] = []

    async def make(**kw: Any) -> tuple[UIApp, httpx.AsyncClient]:
        given = kw.pop("client", None)
        client = given or Client(kw.pop("database", db), pool_max_size=3)
        kw.setdefault("authorize", ALLOW_ALL)
        kw.setdefault("live", False)
        kw.setdefault("sampler", False)
        ui = create_app(client, **kw)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=ui), base_url="http://127.0.0.1")
        made.append((ui, http, None if given else client))
        return ui, http

    yield make
    for ui, http, client in made:
        await http.aclose()
        await ui.aclose()
        if client is not None:
            await client.close()


def token(ui: UIApp, principal: str = "anonymous") -> str:
    return mint_token(ui.settings.secret, principal)


async def post(
    http: httpx.AsyncClient,
    ui: UIApp,
    path: str,
    data: dict[str, Any] | list[tuple[str, str]] | None = None,
    *,
    principal: str = "anonymous",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A same-origin form POST carrying a valid CSRF token."""
    pairs = list(data.items()) if isinstance(data, dict) else list(data or [])
    fields: dict[str, list[str]] = {}
    for k, v in [*pairs, ("csrf", token(ui, principal))]:
        for item in v if isinstance(v, list) else [v]:
            fields.setdefault(k, []).append(str(item))
    return await http.post(path, data=fields, headers={**SAME_ORIGIN, **(headers or {})})
