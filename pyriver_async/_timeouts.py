"""Job timeouts: the running jobs that share one timeout, expired by a single loop timer."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

__all__ = ["TimeoutQueue"]


class TimeoutQueue:
    """The running jobs that share one timeout, expired by a single loop timer.

    Arming and cancelling a timer per job cost ~2 us with uvloop, a sixth of the
    engine's CPU per no-op job. Jobs with the same timeout expire in the order they
    started, so they wait in a FIFO of ``[deadline, job_id, task]`` entries with one
    timer armed at the head's deadline; a job that ends blanks its entry (task None),
    and blank entries are dropped from the head as they come, or all at once when
    they outnumber the live ones (a long job at the head holds the others back).
    """

    __slots__ = ("entries", "expire", "live", "loop", "seconds", "timer")

    def __init__(
        self,
        seconds: float,
        loop: asyncio.AbstractEventLoop,
        expire: Callable[[int, Any], None],
    ) -> None:
        self.seconds = seconds
        self.loop = loop
        self.expire = expire
        self.entries: collections.deque[list[Any]] = collections.deque()
        self.live = 0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, job_id: int, task: Any) -> list[Any]:
        entry: list[Any] = [self.loop.time() + self.seconds, job_id, task]
        self.entries.append(entry)
        self.live += 1
        if self.timer is None:
            self.timer = self.loop.call_at(entry[0], self._fire)
        return entry

    def finish(self, entry: list[Any]) -> None:
        if entry[2] is None:
            return  # expired: _fire took it off
        entry[2] = None
        self.live -= 1
        entries = self.entries
        while entries and entries[0][2] is None:
            entries.popleft()
        # The timer stays armed when the last job ends (a no-op job ends in the step it
        # started: cancelling would cost a timer per job again); it fires once, finds
        # nothing, and is not re-armed. close() cancels it.
        if len(entries) > 2 * self.live + 1024:
            self.entries = collections.deque(e for e in entries if e[2] is not None)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fire(self) -> None:
        self.timer = None
        entries = self.entries
        now = self.loop.time()
        while entries:
            entry = entries[0]
            task = entry[2]
            if task is not None:
                if entry[0] > now:
                    break
                entry[2] = None
                self.live -= 1
                self.expire(entry[1], task)
            entries.popleft()
        if entries:
            self.timer = self.loop.call_at(entries[0][0], self._fire)
