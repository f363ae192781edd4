"""Job events for subscribers: what happened to jobs this client worked."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

import msgspec

__all__ = ["JobEvent", "Subscription"]

log = logging.getLogger("pyriver_async.events")


class JobEvent(msgspec.Struct, frozen=True):
    """One job's attempt ended and its outcome is written.

    ``state`` is the state it was written with: completed, retryable, discarded,
    cancelled, scheduled (snoozed) or available (returned on shutdown). ``output`` is
    what the job recorded with ``ctx.record_output`` (decoded JSON), else None.
    """

    job_id: int
    queue: str
    state: str
    attempt: int
    kind: str = ""
    output: Any = None


class Subscription:
    """An async iterator of :class:`JobEvent`; close it (or use ``async with``) when done."""

    def __init__(self, registry: list[Subscription], maxsize: int) -> None:
        self._registry = registry
        self._queue: asyncio.Queue[JobEvent | None] = asyncio.Queue(maxsize)
        self._closed = False
        self.dropped = 0

    def put(self, ev: JobEvent) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("a job event subscriber is not keeping up; dropping events")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self in self._registry:
                self._registry.remove(self)
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                pass

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> JobEvent:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        ev = await self._queue.get()
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def get(self, timeout: float | None = None) -> JobEvent:
        """The next event (``TimeoutError`` after ``timeout`` seconds)."""
        ev = await asyncio.wait_for(self._queue.get(), timeout)
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
