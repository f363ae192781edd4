"""The sampler: one task per UI process that reads, every few seconds, what finished
since its last tick (index range on finalized_at, so its cost follows throughput,
not table size or the number of open tabs), the newest id (inserts, roughly) and
each queue's backlog, into per-minute ring buffers for 24 hours. The overview's
charts, the queues' sparklines and the kinds page read those buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._errors import DatabaseError
from .._insights import DURATION_BOUNDS_MS, QueueStats
from .._job import JobState

if TYPE_CHECKING:
    from .app import UIApp

__all__ = ["KindStats", "Minute", "Sampler"]

log = logging.getLogger("pyriver_async.ui.sampler")

MINUTE = 60
KEEP_MINUTES = 24 * 60
MAX_PAIRS = 200
BREAKDOWN_LIMIT = 100_000
SAFETY = timedelta(seconds=2)  # a job's finalized_at is its statement's start: let it commit
NBUCKETS = len(DURATION_BOUNDS_MS) + 1


@dataclass
class KindStats:
    """Jobs of one (queue, kind) finalized in some minutes, with timing histograms."""

    completed: int = 0
    cancelled: int = 0
    discarded: int = 0
    run: list[int] = field(default_factory=lambda: [0] * NBUCKETS)
    wait: list[int] = field(default_factory=lambda: [0] * NBUCKETS)

    def add(self, other: KindStats) -> None:
        self.completed += other.completed
        self.cancelled += other.cancelled
        self.discarded += other.discarded
        self.run = [a + b for a, b in zip(self.run, other.run, strict=True)]
        self.wait = [a + b for a, b in zip(self.wait, other.wait, strict=True)]

    @property
    def total(self) -> int:
        return self.completed + self.cancelled + self.discarded


@dataclass
class Minute:
    """One minute of samples (UTC start)."""

    start: datetime
    completed: int = 0
    cancelled: int = 0
    discarded: int = 0
    inserted: int | None = None
    backlog: dict[str, int] = field(default_factory=dict)
    kinds: dict[tuple[str, str], KindStats] = field(default_factory=dict)
    sampled: bool = False


def _minute(at: datetime) -> datetime:
    ts = int(at.timestamp()) // MINUTE * MINUTE
    return datetime.fromtimestamp(ts, UTC)


class Sampler:
    def __init__(self, ui: UIApp) -> None:
        self._ui = ui
        self.minutes: OrderedDict[datetime, Minute] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.last_until: datetime | None = None
        self.last_max_id: int | None = None
        self.queues: list[QueueStats] = []
        self.started_at: datetime | None = None
        self.backfilled_from: datetime | None = None
        self.ticks = 0
        self.last_tick_ms: float | None = None
        self.ticked = asyncio.Event()
        self._backfill_lock: asyncio.Lock | None = None

    def start(self) -> None:
        if self._task is None:
            self.ticked = asyncio.Event()
            self._backfill_lock = asyncio.Lock()
            now = datetime.now(UTC)
            self.started_at = now
            self.last_until = now - SAFETY
            self._task = asyncio.create_task(self._loop(), name="pyriver-ui-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _get(self, start: datetime) -> Minute:
        m = self.minutes.get(start)
        if m is None:
            m = self.minutes[start] = Minute(start)
            # Minutes arrive in order except during backfill, which fills older ones.
            if len(self.minutes) > 1 and next(reversed(self.minutes)) != start:
                self.minutes = OrderedDict(sorted(self.minutes.items()))
            while len(self.minutes) > KEEP_MINUTES:
                self.minutes.popitem(last=False)
        return m

    async def _loop(self) -> None:
        interval = self._ui.settings.sample_interval
        try:
            await self.backfill(timedelta(minutes=60))
        except DatabaseError as exc:
            log.warning("sampler backfill skipped: %s", exc)
        while True:
            t0 = time.monotonic()
            try:
                await self.tick()
            except DatabaseError as exc:
                log.warning("sampler tick failed: %s", exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sampler tick failed")
            await asyncio.sleep(max(interval - (time.monotonic() - t0), 0.1))

    async def backfill(self, span: timedelta) -> None:
        """Totals per minute for ``span`` before the sampler started (Q-throughput);
        once per range (a page asking for 24 hours waits for the loop's first hour)."""
        assert self.started_at is not None and self._backfill_lock is not None
        async with self._backfill_lock:
            await self._backfill(span)

    async def _backfill(self, span: timedelta) -> None:
        assert self.started_at is not None
        start_until = self.started_at - SAFETY
        since = _minute(datetime.now(UTC) - span)
        if self.backfilled_from is not None and since >= self.backfilled_from:
            return
        until = self.backfilled_from or start_until
        bins = await self._ui.timed(
            None,
            "backfill",
            lambda conn: self._ui.insights.throughput(
                since, until, bin=timedelta(minutes=1), conn=conn
            ),
        )
        for b in bins:
            # [since, until) is disjoint from what the ticks count (from last_until on).
            m = self._get(b.start)
            m.completed += b.completed
            m.cancelled += b.cancelled
            m.discarded += b.discarded
        self.backfilled_from = since

    async def tick(self) -> None:
        """One sample: what finished since the last tick, the newest id, the backlog."""
        ui = self._ui
        assert self.last_until is not None
        since = self.last_until
        until = datetime.now(UTC) - SAFETY
        t0 = time.perf_counter()

        async def read(conn: Any) -> tuple[Any, int | None, list[QueueStats]]:
            bd = await ui.insights.breakdown(since, until, limit=BREAKDOWN_LIMIT, conn=conn)
            max_id = await ui.insights.max_id(conn=conn)
            queues = await ui.insights.queue_stats(cap=ui.settings.count_cap, conn=conn)
            return bd, max_id, queues

        breakdown, max_id, queues = await ui.timed(None, "sample", read)
        self.last_tick_ms = (time.perf_counter() - t0) * 1000
        finished = 0
        for row in breakdown.rows:
            m = self._get(row.minute)
            setattr(m, row.state.value, getattr(m, row.state.value) + row.n)
            finished += row.n
            key = (row.queue, row.kind)
            ks = m.kinds.get(key)
            if ks is None:
                if len(m.kinds) >= MAX_PAIRS:
                    key = ("", "other")
                ks = m.kinds.setdefault(key, KindStats())
            setattr(ks, row.state.value, getattr(ks, row.state.value) + row.n)
            if row.run_bucket is not None:
                ks.run[min(row.run_bucket, NBUCKETS - 1)] += row.n
            if row.wait_bucket is not None:
                ks.wait[min(row.wait_bucket, NBUCKETS - 1)] += row.n
            m.sampled = m.sampled or breakdown.sampled
        now_minute = self._get(_minute(until))
        if max_id is not None and self.last_max_id is not None and max_id >= self.last_max_id:
            now_minute.inserted = (now_minute.inserted or 0) + (max_id - self.last_max_id)
        inserted = max_id != self.last_max_id
        self.last_max_id = max_id
        backlog_changed = [(q.name, dict(q.counts)) for q in queues] != [
            (q.name, dict(q.counts)) for q in self.queues
        ]
        self.queues = queues
        now_minute.backlog = {q.name: q.counts.get(JobState.AVAILABLE, 0) for q in queues}
        self.last_until = until
        self.ticks += 1
        events = ["stats"]
        if finished or inserted or backlog_changed:
            ui.cache.clear()
            events += ["jobs", "queues"]
        ui.live.publish(*events)
        self.ticked.set()
        self.ticked = asyncio.Event()

    # -- reading ----------------------------------------------------------------------

    def window(self, span: timedelta) -> list[Minute]:
        """The minutes of the last ``span`` (oldest first), empty ones included."""
        end = _minute(self.last_until or datetime.now(UTC))
        start = end - span + timedelta(minutes=1)
        out = []
        t = start
        while t <= end:
            out.append(self.minutes.get(t) or Minute(t))
            t += timedelta(minutes=1)
        return out

    def kind_stats(self, span: timedelta) -> dict[tuple[str, str], KindStats]:
        """Per (queue, kind) totals over the last ``span``."""
        out: dict[tuple[str, str], KindStats] = {}
        for m in self.window(span):
            for key, ks in m.kinds.items():
                out.setdefault(key, KindStats()).add(ks)
        return out

    @property
    def covers_since(self) -> datetime | None:
        """Since when the kind breakdown is known (the sampler's start)."""
        return self.started_at
