"""Small asyncio helpers shared by every moving part."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait", "settle", "wait_event"]


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False).

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11, wait_for can
    swallow a cancellation that arrives as the awaited event fires, and a loop that
    lost its cancellation never stops.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(task: asyncio.Task[Any], log: logging.Logger) -> None:
    """Cancel ``task`` and wait for its end, cancelling again should a cancellation
    get lost on the way (the caller is a shutdown: it must not hang)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        log.error("%s ended with an error", task.get_name(), exc_info=task.exception())


async def settle(fut: asyncio.Future[Any], *, swallow: bool = False) -> Any:
    """Wait for a statement already sent, whatever its end, and never cancel it from
    here: cancelling it could abort the caller's transaction, and the connection is not
    free before it has answered. A cancellation of the caller waits for it too, then
    goes on (raised at the end). Returns its result or raises its error, unless
    ``swallow``."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.cancelled():
                cancelled = True  # the caller was cancelled, not the statement
        except Exception:
            pass
    exc = None if fut.cancelled() else fut.exception()  # retrieved either way
    if cancelled or (fut.cancelled() and not swallow):
        raise asyncio.CancelledError
    if swallow or fut.cancelled():
        return None
    if exc is not None:
        raise exc
    return fut.result()
