"""Job timeouts that share one timer: expiry order, finished jobs, bounded memory."""

from __future__ import annotations

import asyncio
from typing import Any

from pyriver_async._timeouts import TimeoutQueue as _TimeoutQueue


class Expired:
    def __init__(self, want: int) -> None:
        self.ids: list[int] = []
        self.want = want
        self.done = asyncio.Event()

    def __call__(self, job_id: int, task: Any) -> None:
        self.ids.append(job_id)
        if len(self.ids) >= self.want:
            self.done.set()


async def test_jobs_expire_in_order_and_a_finished_job_never_expires() -> None:
    expired = Expired(want=2)
    q = _TimeoutQueue(0.05, asyncio.get_running_loop(), expired)
    entries = [q.add(job_id, object()) for job_id in (1, 2, 3)]
    q.finish(entries[1])
    await asyncio.wait_for(expired.done.wait(), 5)
    assert expired.ids == [1, 3]
    assert q.live == 0 and q.timer is None and not q.entries
    q.finish(entries[0])  # the job ends after its expiry was handled: nothing happens
    assert q.live == 0


async def test_a_job_added_after_the_timer_fired_gets_its_own_expiry() -> None:
    expired = Expired(want=1)
    q = _TimeoutQueue(0.02, asyncio.get_running_loop(), expired)
    q.add(1, object())
    await asyncio.wait_for(expired.done.wait(), 5)
    expired.done.clear()
    q.add(2, object())
    await asyncio.wait_for(expired.done.wait(), 5)
    assert expired.ids == [1, 2]


async def test_finished_entries_behind_a_long_job_do_not_pile_up() -> None:
    q = _TimeoutQueue(3600.0, asyncio.get_running_loop(), Expired(want=1))
    head = q.add(0, object())
    for job_id in range(1, 50_001):
        q.finish(q.add(job_id, object()))
    assert q.live == 1
    assert len(q.entries) <= 2 * q.live + 1025
    q.finish(head)
    assert q.live == 0 and not q.entries
    q.close()
    assert q.timer is None
