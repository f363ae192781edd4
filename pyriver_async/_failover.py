"""Failover: what a client does while its database refuses writes as read-only.

A managed database fails over by promoting a standby and turning the old primary
into a standby (or stopping it); DNS or a proxy then points at the new one. A client
whose connections still reach the old server sees every write refused with SQLSTATE
25006 (``cannot execute UPDATE in a read-only transaction``), its LISTEN refused
(``cannot execute LISTEN during recovery``) or, on a primary set read-only, heard by
nobody. Left alone, such a client keeps its connections (they are healthy) and
fails for ever (River issues 1225 and 973: stuck until restarted).

The driver reports each such refusal (:meth:`ReadOnlyWatch.signal`). On the first of
an episode the watch logs one warning and tells the client, which stops claiming,
gives up leadership and drops its LISTEN connection; the driver has already started
recycling the pool (every connection is closed when next free and opened again, so
it goes wherever the DSN points now). Then, until a write would succeed, the watch
recycles the pool and asks a fresh connection whether the server is writable
(``pg_writable``), backing off from 0.1 s to ``max_interval`` (1 s). When it is,
one more line is logged and the client resumes: producers claim, the completer writes
what waited, the notifier listens on the new primary, the elector stands again.

Nothing is lost meanwhile: running jobs go on, and their outcomes wait in the
completer, which retries them until they are written (a claim whose reply was lost
is given back by the producer). The bound on resuming, once the DSN reaches a
writable server: one probe interval (``max_interval``) plus a connection, then one
claim; measured in ``tests/faults/test_failover.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ._aio import cancel_and_wait
from ._backoff import reconnect_delays

__all__ = ["ReadOnlyWatch"]

log = logging.getLogger("pyriver_async.failover")

# While the episode lasts, a reminder at most this often (seconds).
REMIND_EVERY = 60.0


class ReadOnlyWatch:
    """Notices the server turned read-only, waits until it takes writes again.

    ``recycle()`` closes the pool's connections so new ones are made; ``writable()``
    asks a connection of the pool whether the server takes writes (an error counts as
    no); ``on_read_only()`` / ``on_writable()`` are the client's reactions.
    """

    def __init__(
        self,
        *,
        recycle: Callable[[], Awaitable[None]],
        writable: Callable[[], Awaitable[bool]],
        on_read_only: Callable[[], None],
        on_writable: Callable[[], None],
        max_interval: float = 1.0,
    ) -> None:
        self._recycle = recycle
        self._writable = writable
        self._on_read_only = on_read_only
        self._on_writable = on_writable
        self.max_interval = max_interval
        self._task: asyncio.Task[None] | None = None
        self.read_only = False
        #: Episodes so far, and how long the last one lasted (seconds).
        self.episodes = 0
        self.last_duration: float | None = None
        self._since = 0.0
        self._closed = False

    def signal(self, exc: BaseException) -> None:
        """A write (or LISTEN) was refused as read-only: start an episode if none is on."""
        if self.read_only or self._closed:
            return
        self.read_only = True
        self.episodes += 1
        self._since = time.monotonic()
        log.warning(
            "the database refuses writes as read-only (%s): a failover, or a standby. "
            "Claiming stops and leadership is given up; the connections are opened "
            "again until a server takes writes, then work resumes by itself",
            exc,
        )
        try:
            self._on_read_only()
        finally:
            self._task = asyncio.get_running_loop().create_task(
                self._wait_writable(), name="pyriver-failover"
            )

    async def _wait_writable(self) -> None:
        delays = reconnect_delays(0.1, self.max_interval)
        last_log = self._since
        attempts = 0
        while True:
            await asyncio.sleep(next(delays))
            attempts += 1
            try:
                await self._recycle()
                if await self._writable():
                    # Connections opened since the recycle, before the DSN pointed at
                    # the new primary, may still reach the old one: once more, so every
                    # connection from now on was opened after a writable server answered.
                    await self._recycle()
                    break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("failover: the server is not reachable yet (%s)", exc)
            now = time.monotonic()
            if now - last_log >= REMIND_EVERY:
                last_log = now
                log.warning(
                    "the database still refuses writes after %.0fs (%d checks); claiming "
                    "stays stopped",
                    now - self._since,
                    attempts,
                )
        self.last_duration = time.monotonic() - self._since
        self.read_only = False
        log.warning(
            "the database takes writes again after %.1fs: claiming and leadership resume",
            self.last_duration,
        )
        self._on_writable()

    async def close(self) -> None:
        """Stop waiting (the client is stopping); no more episodes start."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, log)
