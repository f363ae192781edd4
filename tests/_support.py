"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


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
