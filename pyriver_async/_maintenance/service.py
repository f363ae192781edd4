"""The start/stop shape every maintenance service shares.

A service is one loop in one task that it owns: ``start()`` creates the task,
``stop()`` cancels it and waits for it to end. Each pass is :meth:`Service.run_once`;
a pass that fails (the database is away, a statement times out) is logged and tried
again after a growing, jittered delay, so a service outlives any outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import ClassVar

from .._aio import cancel_and_wait, wait_event
from .._backoff import reconnect_delays
from .._errors import DatabaseError, MigrationError

__all__ = ["Service", "cancel_and_wait", "wait_event"]

# Failures of these kinds are the database being away or busy: one line, no traceback.
_EXPECTED_ERRORS = (DatabaseError, MigrationError, TimeoutError)
# While a service keeps failing, a reminder at most this often (seconds).
REMIND_EVERY = 60.0


class Service:
    """Runs :meth:`run_once` every ``interval`` seconds until stopped.

    ``runs`` counts passes that succeeded and ``failures`` passes that raised; tests
    and diagnostics read them. :meth:`wake` starts the next pass at once.
    """

    name: ClassVar[str] = "service"

    def __init__(self, *, interval: float, max_backoff: float = 10.0) -> None:
        if not interval > 0:
            raise ValueError(f"{self.name}: interval must be positive, got {interval!r}")
        self.interval = float(interval)
        self.max_backoff = max(float(max_backoff), self.interval)
        self.log = logging.getLogger(f"pyriver_async.maintenance.{self.name}")
        self.runs = 0
        self.failures = 0
        # When set, a pass runs only while it returns True (leader-only services: the
        # term may end while this task waits, before the elector gets to stop it).
        self.guard: Callable[[], bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop in a new task (no-op when already running)."""
        if self.running:
            return
        self._wake.clear()
        self._task = asyncio.create_task(self._loop(), name=f"pyriver-maintenance-{self.name}")

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, self.log)

    def wake(self) -> None:
        """Run the next pass now instead of at the end of the current wait."""
        self._wake.set()

    async def run_once(self) -> None:
        """One pass of the service's work."""
        raise NotImplementedError

    def next_wait(self) -> float:
        """Seconds to wait after a successful pass (the interval, unless overridden)."""
        return self.interval

    async def _loop(self) -> None:
        self.log.debug("%s started", self.name)
        delays: Iterator[float] | None = None
        # A failing stretch (the database away, read-only, a partition) is logged when
        # it starts, every REMIND_EVERY seconds while it lasts, and when it ends.
        failing_since: float | None = None
        last_log = 0.0
        failures = 0
        try:
            while True:
                self._wake.clear()
                if self.guard is not None and not self.guard():
                    await wait_event(self._wake, self.interval)
                    continue
                try:
                    await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.failures += 1
                    failures += 1
                    if delays is None:
                        delays = reconnect_delays(min(self.interval, 1.0), self.max_backoff)
                    wait = next(delays)
                    now = time.monotonic()
                    expected = isinstance(exc, _EXPECTED_ERRORS)
                    if failing_since is None or not expected or now - last_log >= REMIND_EVERY:
                        last_log = now
                        self.log.warning(
                            "%s failed (%s: %s)%s; trying again with backoff",
                            self.name,
                            type(exc).__name__,
                            exc,
                            ""
                            if failing_since is None
                            else f" for {now - failing_since:.0f}s, {failures} attempts",
                            exc_info=not expected,
                        )
                    else:
                        self.log.debug("%s failed again (%s)", self.name, exc)
                    if failing_since is None:
                        failing_since = now
                else:
                    if failing_since is not None:
                        self.log.info(
                            "%s works again after %d failed attempts over %.1fs",
                            self.name,
                            failures,
                            time.monotonic() - failing_since,
                        )
                    failing_since, failures, delays = None, 0, None
                    self.runs += 1
                    wait = self.next_wait()
                if wait > 0:
                    await wait_event(self._wake, wait)
        finally:
            self.log.debug("%s stopped", self.name)
