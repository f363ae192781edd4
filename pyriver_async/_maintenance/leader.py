"""Leader election: one row in ``river_leader`` (River's table), with an expiry.

- A follower deletes an expired row, then tries to insert its own
  (``ON CONFLICT DO NOTHING``: one of several racing clients wins). It tries again
  every ``ttl / 2``, right after the current leader's row would expire, and at once
  when a leader announces that it resigned.
- The leader renews its term every ``ttl / 3``: an update that matches its id, its
  term (``elected_at``) and a row not yet expired.
- The leader's own view of its term ends a little before the row can expire, counted
  from the moment it *sent* the election or renewal (the row's expiry is later than
  that), so two clients never both believe they lead. When a renewal fails or does
  not answer in time, the leader-only services stop at once.
- A stopping leader deletes its row and NOTIFYs ``{"action": "resigned"}`` on the
  leadership channel; ``{"action": "request_resign"}`` makes the leader do the same
  and stay out of the next election round.

River's Go clients use the same table and messages, so a mixed cluster has one leader.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

from .._backoff import reconnect_delays
from .._driver import Executor
from .service import cancel_and_wait, wait_event

__all__ = ["LeaderElector"]

log = logging.getLogger("pyriver_async.maintenance.leader")

Callback = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class LeaderElector:
    """Wins, keeps and gives up leadership for one client.

    ``on_elected`` is awaited when this client becomes leader (start the leader-only
    services there) and ``on_lost`` when it stops being leader for any reason (stop
    them). ``is_leader`` is true only while the current term is certainly valid.
    """

    def __init__(
        self,
        executor: Executor,
        client_id: str,
        *,
        ttl: float = 15.0,
        on_elected: Callback = _nothing,
        on_lost: Callback = _nothing,
        elect_interval: float | None = None,
        renew_interval: float | None = None,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"leader ttl must be positive, got {ttl!r}")
        self._executor = executor
        self.client_id = client_id
        self.ttl = float(ttl)
        self.elect_interval = elect_interval if elect_interval is not None else self.ttl / 2
        self.renew_interval = renew_interval if renew_interval is not None else self.ttl / 3
        # The term as this client counts it ends this much before the row's expiry.
        self.margin = self.ttl * 0.1
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._leader = False
        self._term: datetime | None = None  # elected_at of my row
        self._deadline = 0.0  # monotonic time my term ends, as I count it
        self._next_renewal = 0.0
        self._resign_requested = False
        self._stay_out_until = 0.0
        # While held (the database is read-only: a failover), this client neither leads
        # nor stands for election.
        self._held = False
        self._released = asyncio.Event()
        self.terms = 0  # how many times this client was elected
        self.renewals = 0  # successful renewals, over all terms

    # -- public -----------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.is_leader_now()

    def is_leader_now(self) -> bool:
        """``is_leader`` as a callable (a guard for the leader-only services)."""
        return self._leader and time.monotonic() < self._deadline

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="pyriver-maintenance-leader")

    async def stop(self, *, resign_timeout: float = 5.0) -> None:
        """Stop electing; when leader, stop the leader services and resign."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, log)
        if self._leader:
            await self._resign(timeout=resign_timeout)

    def hold(self, held: bool) -> None:
        """Give up leadership and stay out of elections (``True``), or stand again."""
        self._held = held
        if held:
            self._released.clear()
        else:
            self._released.set()
        self._wake.set()

    def on_message(self, msg: dict[str, Any]) -> None:
        """A message from the leadership channel."""
        action = msg.get("action")
        if action == "resigned":
            if msg.get("leader_id") != self.client_id and not self._leader:
                self._wake.set()
        elif action == "request_resign" and self._leader:
            log.info("leadership: resignation requested")
            self._resign_requested = True
            self._wake.set()

    # -- loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            try:
                if self._held:
                    if self._leader:
                        # Resigning would be a write, refused: the row expires by itself.
                        await self._lose("the database is read-only")
                    await self._released.wait()
                elif self._leader:
                    await self._lead()
                else:
                    await self._follow()
                delays = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Only reached when a callback fails: the election steps handle their
                # own database errors.
                if delays is None:
                    delays = reconnect_delays(0.1, max(self.elect_interval, 1.0))
                log.exception("leadership: unexpected error (%s)", exc)
                await self._sleep(next(delays))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless a leadership message wakes us first."""
        if seconds > 0:
            await wait_event(self._wake, seconds)

    async def _follow(self) -> None:
        now = time.monotonic()
        if now < self._stay_out_until:
            await asyncio.sleep(self._stay_out_until - now)
        self._wake.clear()
        if self._held:
            return
        sent = time.monotonic()
        try:
            # A hung connection must not hold the loop: the attempt is abandoned
            # after a ttl (a row it may have written then simply expires).
            async with asyncio.timeout(self.ttl):
                term, remaining = await self._attempt_elect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            wait = min(self.elect_interval, 5.0) * random.uniform(0.5, 1.0)
            log.warning(
                "leadership: election attempt failed (%s: %s); trying again in %.1fs",
                type(exc).__name__,
                exc,
                wait,
            )
            await self._sleep(wait)
            return
        if term is not None:
            self._term = term
            self._deadline = sent + self.ttl - self.margin
            self._next_renewal = sent + self.renew_interval
            self._leader = True
            self.terms += 1
            log.info("leadership: %s elected leader", self.client_id)
            await self._on_elected()
            return
        wait = self.elect_interval
        if remaining is not None:
            # Look again just after the current term would expire, if that is sooner.
            wait = min(wait, max(remaining, 0.0) + random.uniform(0.01, 0.05))
        await self._sleep(wait)

    async def _lead(self) -> None:
        await self._sleep(self._next_renewal - time.monotonic())
        self._wake.clear()
        if self._held:
            return
        if self._resign_requested:
            self._resign_requested = False
            await self._resign(timeout=min(self.ttl, 5.0))
            # Let another client win the next round.
            self._stay_out_until = time.monotonic() + self.elect_interval
            return
        sent = time.monotonic()
        left = self._deadline - sent
        if left <= 0:
            await self._lose("the term ended before it could be renewed")
            return
        try:
            async with asyncio.timeout(left):
                renewed = await self._attempt_reelect()
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            await self._lose("renewal did not answer before the term ended")
            return
        except Exception as exc:
            retry = min(0.1 + random.uniform(0, 0.2) * self.renew_interval, left)
            log.warning(
                "leadership: renewal failed (%s: %s); trying again in %.2fs (term ends in %.1fs)",
                type(exc).__name__,
                exc,
                retry,
                left,
            )
            self._next_renewal = time.monotonic() + retry
            return
        if renewed:
            self._deadline = sent + self.ttl - self.margin
            self._next_renewal = sent + self.renew_interval
            self.renewals += 1
        else:
            await self._lose("the term expired or another client holds the row")

    # -- transitions ------------------------------------------------------------------

    async def _lose(self, why: str) -> None:
        log.warning("leadership: %s lost leadership: %s", self.client_id, why)
        self._leader = False
        self._term = None
        await self._on_lost()

    async def _resign(self, *, timeout: float) -> None:
        term = self._term
        self._leader = False
        self._term = None
        # Services first, row second: the next leader must not overlap with ours.
        await self._on_lost()
        if term is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._executor.leader_resign(leader_id=self.client_id, elected_at=term)
        except Exception as exc:
            log.warning(
                "leadership: could not resign (%s: %s); the row expires by itself",
                type(exc).__name__,
                exc,
            )
        else:
            log.info("leadership: %s resigned", self.client_id)

    # -- SQL --------------------------------------------------------------------------

    async def _attempt_elect(self) -> tuple[datetime | None, float | None]:
        """Try to become leader. Returns (my term, None) or (None, seconds left to the
        current leader's term, when known)."""
        ex = self._executor
        term = await ex.leader_attempt_elect(leader_id=self.client_id, ttl=self.ttl)
        if term is not None:
            return term, None
        row = await ex.leader_get()
        return None, (0.0 if row is None else row.remaining)

    async def _attempt_reelect(self) -> bool:
        assert self._term is not None
        return await self._executor.leader_attempt_reelect(
            leader_id=self.client_id, elected_at=self._term, ttl=self.ttl
        )
