"""Fixtures of the driver conformance suite: one ``inserter`` per way of passing a
connection to ``conn=`` (see ``_inserters.INSERTERS``), a Listener for wake-ups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import asyncpg
import pytest

from pyriver_async import Client

from ._inserters import INSERTERS, Inserter

CHANNEL = "public.river_insert"


@pytest.fixture(params=INSERTERS, ids=[i.name for i in INSERTERS])
async def inserter(request: pytest.FixtureRequest, db: str) -> AsyncIterator[Inserter]:
    client = Client(db)  # insert-only: with conn= it opens nothing of its own
    ins: Inserter = request.param(db, client)
    await ins.open()
    try:
        yield ins
    finally:
        await ins.close()
        await client.close()


@pytest.fixture
def admin(conn: asyncpg.Connection) -> asyncpg.Connection:
    """A connection of the test's own, to look at the table from outside."""
    return conn


class Listener:
    """Collects the queues named by ``river_insert`` wake-ups, on a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []
        self._arrived = asyncio.Condition()
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> Listener:
        self._conn = await asyncpg.connect(self.url)
        await self._conn.add_listener(CHANNEL, self._on_message)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        await self._conn.close()

    def _on_message(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        assert isinstance(payload, str)
        self.queues.append(json.loads(payload)["queue"])
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for(self, queue: str, timeout: float = 5.0) -> None:
        """Until a wake-up for ``queue`` has arrived."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: queue in self.queues), timeout)


@pytest.fixture
async def listener(db: str) -> AsyncIterator[Listener]:
    async with Listener(db) as lst:
        yield lst
