"""``client.wait(job_id)``: the finished job, woken by its completion.

How a waiter hears of the completion, in whichever process works the job:

1. It registers locally, then makes sure a LISTEN on the control channel is up (the
   client's own notifier when it is started, else a listener of its own, opened on
   the first wait and kept until the client closes).
2. It marks the job (``pyriver:wait`` in its metadata; one UPDATE by primary key). The
   statements that finalize jobs send a ``finished`` message for marked rows only, at
   commit, so jobs nobody waits for cost nothing but a key lookup in their metadata.
3. A completion written by this process wakes the waiter directly; one written
   elsewhere arrives as that message. Either way the waiter reads the job once.

A slow safety poll (0.5 s, doubling to 10 s) covers what no message announces: a
job finalized by ``client.cancel`` before it ran, by the rescuer or the scheduler, or
while the listener was reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._aio import wait_event
from ._driver import Executor, JobRow, Listener
from ._errors import JobNotFoundError, WaitTimeoutError
from ._job import FINALIZED_STATES, Job
from ._notifier import Notifier
from ._rows import read_job

__all__ = ["Waiters"]

log = logging.getLogger("pyriver_async.wait")

FIRST_POLL = 0.5
MAX_POLL = 10.0


class Waiters:
    """The jobs this client's ``wait`` calls are waiting for, and how they hear."""

    def __init__(self, control_channel: str) -> None:
        self._channel = control_channel
        self._by_id: dict[int, set[asyncio.Event]] = {}
        self._notifier: Notifier | None = None
        self._lock = asyncio.Lock()

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def wake(self, job_id: int) -> None:
        for ev in self._by_id.get(job_id, ()):
            ev.set()

    def wake_all(self) -> None:
        for events in self._by_id.values():
            for ev in events:
                ev.set()

    def on_message(self, channel: str, msg: dict[str, Any]) -> None:
        """A control message (from the client's notifier or our own listener)."""
        if msg.get("action") == "finished":
            job_id = msg.get("job_id")
            if isinstance(job_id, int):
                self.wake(job_id)

    def _on_connected(self, connected: bool) -> None:
        if connected:
            self.wake_all()  # back after an outage: look again at every job

    async def _listening(
        self, engine_notifier: Notifier | None, make_listener: Callable[[], Listener]
    ) -> None:
        """Until a LISTEN on the control channel is up (what comes after is heard)."""
        notifier = engine_notifier
        if notifier is None:
            async with self._lock:
                if self._notifier is None:
                    self._notifier = Notifier(
                        make_listener(), [self._channel], self.on_message, self._on_connected
                    )
                    self._notifier.start()
            notifier = self._notifier
        await notifier.connected.wait()

    async def wait(
        self,
        job_id: int,
        *,
        timeout: float | None,
        db: Callable[[], Awaitable[Executor]],
        engine_notifier: Notifier | None,
        make_listener: Callable[[], Listener],
    ) -> Job[Any]:
        ev = asyncio.Event()
        self._by_id.setdefault(job_id, set()).add(ev)
        last: Job[Any] | None = None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                ex = await db()
                await self._listening(engine_notifier, make_listener)
                row: JobRow | None = await ex.job_mark_waited(id=job_id)
                delay = FIRST_POLL
                while True:
                    if row is None:
                        raise JobNotFoundError(f"no job with id {job_id}")
                    last = read_job(row)
                    if last.state in FINALIZED_STATES:
                        return last
                    ev.clear()
                    await wait_event(ev, delay)
                    delay = min(delay * 2, MAX_POLL)
                    row = await ex.job_get(id=job_id)
        except TimeoutError:
            if deadline is None or time.monotonic() < deadline - 0.001:
                raise  # not our deadline: a statement timed out
            state = last.state.value if last is not None else "unknown"
            raise WaitTimeoutError(
                f"job {job_id} did not finish within {timeout}s (it is {state})", last
            ) from None
        finally:
            events = self._by_id.get(job_id)
            if events is not None:
                events.discard(ev)
                if not events:
                    del self._by_id[job_id]

    async def close(self) -> None:
        if self._notifier is not None:
            await self._notifier.stop()
            self._notifier = None
