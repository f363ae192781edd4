"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pyriver_async import JobEvent, Subscription


async def eventually(
    cond: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, interval: float = 0.02
) -> None:
    """Wait until ``cond()`` is true, polling; fail after ``timeout`` seconds.

    For conditions that only the database can tell (a row changed by another process),
    where there is no event to await.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def next_event(sub: Subscription, job_id: int, timeout: float = 10.0) -> JobEvent:
    """The next event of job ``job_id`` on ``sub`` (others are skipped)."""

    async def find() -> JobEvent:
        async for ev in sub:
            if ev.job_id == job_id:
                return ev
        raise AssertionError("subscription closed")

    return await asyncio.wait_for(find(), timeout)


async def events_for(sub: Subscription, ids: set[int], timeout: float) -> dict[int, JobEvent]:
    """The first event of each job in ``ids``; fails naming how many arrived in time."""
    seen: dict[int, JobEvent] = {}

    async def collect() -> None:
        async for ev in sub:
            if ev.job_id in ids:
                seen[ev.job_id] = ev
                if len(seen) == len(ids):
                    return

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise AssertionError(f"only {sorted(seen)} of {sorted(ids)} had an event") from None
    return seen


def db_executor(pool: Any) -> Any:
    """The engine's executor over a test's pool (what maintenance services take)."""
    from pyriver_async._driver.asyncpg import AsyncpgExecutor
    from pyriver_async._driver.queries import Queries

    return AsyncpgExecutor(Queries.for_schema("public"), pool=pool, timeout=30.0)
