"""The vacuumer (leader only): VACUUMs the job table when dead row versions pile up.

Every job leaves two dead row versions behind (claimed, then finished), and their
entries stay in the claim's index until a VACUUM removes them: each claim walks
past all of them to the first available job. Measured on the development machine
(autovacuum off): after 400,000 jobs went through, a drain ran at 59% of a clean
table's rate; one ``VACUUM`` of 0.5 s brought it back to 103%. Autovacuum does
this job on most servers, but it looks at a database once a minute
(``autovacuum_naptime``) and waits for 20% of a table to be dead, while a busy
queue makes millions of dead rows a minute.

So every ``interval`` (5 s) the leader reads the table's statistics and, when more
than ``max(dead_tuples, 20% of the live rows)`` row versions died since the last
VACUUM left it, runs ``VACUUM (SKIP_LOCKED, ANALYZE)`` on it. The 20% keeps it from
vacuuming a big table (whose indexes every VACUUM reads whole) more often than
autovacuum's default would; counting from what the last VACUUM left keeps it from
vacuuming again and again when old transactions (or a lagging replication slot)
keep dead rows from being removed.

What it does not do: run with a pool under 4 connections (a VACUUM holds one for
its whole length, and the notifier holds another); retry soon after a VACUUM was
cancelled by a ``statement_timeout`` (it waits 10 minutes); vacuum a table its role
may not (not the table's or the database's owner: it says so once and stops
trying). Unlike autovacuum, a VACUUM does not give way to DDL: a migration that
alters ``river_job`` waits for it to end. ``Client(vacuum_dead_tuples=0)`` turns it
off.
"""

from __future__ import annotations

import time

from .._driver import Executor
from .._errors import TransientDatabaseError
from .service import Service

__all__ = ["Vacuumer"]

DEFAULT_DEAD_TUPLES = 100_000
LIVE_FRACTION = 0.2
MIN_POOL_SIZE = 4
PAUSE_AFTER_TIMEOUT = 600.0


class Vacuumer(Service):
    name = "vacuumer"

    def __init__(
        self,
        executor: Executor,
        *,
        pool_size: int,
        dead_tuples: int = DEFAULT_DEAD_TUPLES,
        interval: float = 5.0,
    ) -> None:
        super().__init__(interval=interval)
        if dead_tuples < 1:
            raise ValueError("dead_tuples must be at least 1")
        self._executor = executor
        self._pool_size = pool_size
        self.dead_tuples = dead_tuples
        self.allowed = True
        self.vacuums = 0
        # Dead row versions the last VACUUM could not remove; new ones count from there.
        self.left_behind = 0
        self._paused_until = 0.0

    def threshold(self, live: int) -> int:
        """Dead row versions beyond which the table is vacuumed, for ``live`` rows."""
        return max(self.dead_tuples, int(LIVE_FRACTION * live))

    async def run_once(self) -> None:
        await self.vacuum_if_needed()

    async def vacuum_if_needed(self) -> bool:
        """Vacuum now when the statistics say so; True when a VACUUM ran."""
        if not self.allowed or time.monotonic() < self._paused_until:
            return False
        if self._pool_size < MIN_POOL_SIZE:
            self.allowed = False
            self.log.info(
                "the pool has fewer than %d connections: river_job is left to autovacuum",
                MIN_POOL_SIZE,
            )
            return False
        async with self._executor.session() as ex:
            row = await ex.pg_job_table_stats()
            if row is None:
                return False
            if not row.can_vacuum:
                self.allowed = False
                self.log.info(
                    "this role does not own river_job and cannot VACUUM it; dead row "
                    "versions are left to autovacuum"
                )
                return False
            live, dead = row.live, row.dead
            self.left_behind = min(self.left_behind, dead)
            if dead - self.left_behind <= self.threshold(live):
                return False
            try:
                await ex.pg_vacuum_jobs()
            except TransientDatabaseError as exc:
                if exc.sqlstate != "57014":  # only a cancelled VACUUM pauses the vacuumer
                    raise
                self._paused_until = time.monotonic() + PAUSE_AFTER_TIMEOUT
                self.log.warning(
                    "VACUUM of river_job was cancelled (%s); trying again in %d minutes",
                    exc,
                    PAUSE_AFTER_TIMEOUT // 60,
                )
                return False
            after = await ex.pg_job_table_stats()
        self.left_behind = after.dead if after is not None else 0
        self.vacuums += 1
        self.log.debug(
            "VACUUM of river_job: %d dead row versions before, %d after, %d live rows",
            dead,
            self.left_behind,
            live,
        )
        return True
