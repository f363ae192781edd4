"""The horizon watch (leader only): names what pins the vacuum horizon.

One long transaction anywhere in the database (an analytics query, a session left
``idle in transaction``, a forgotten ``BEGIN`` in a console, ``pg_dump``), a
prepared transaction or an inactive replication slot keeps VACUUM from removing
any row version that died after it began. A queue makes dead row versions fast
(two per job), and each claim walks past the ones left in its index: while the
horizon is pinned, claims grow slower with every job done (measured in
``benchmarks/horizon.py``; see docs/operations.md). The vacuumer cannot help, and
nothing in the queue's own logs says why it slows down.

So every ``interval`` (30 s) the leader asks PostgreSQL what holds the horizon
(``pg_stat_activity.backend_xmin``/``backend_xid``, ``pg_prepared_xacts``,
``pg_replication_slots``) for longer than ``older_than`` (``Client(horizon_warning_after=)``,
60 s), and logs one warning per holder naming its pid, application, role, age and
query, with the way to end it; a reminder every 10 minutes while it lasts.
:func:`horizon_holders` is the same question for the query API and the UI
(``client.horizon_holders()``).
"""

from __future__ import annotations

import time

from .._driver import Executor, HorizonHolder
from .service import Service

__all__ = ["HorizonWatch", "horizon_holders"]

DEFAULT_OLDER_THAN = 60.0
REMIND_EVERY = 600.0
MAX_HOLDERS = 20


async def horizon_holders(
    executor: Executor, *, older_than: float = DEFAULT_OLDER_THAN, limit: int = MAX_HOLDERS
) -> list[HorizonHolder]:
    """What holds this database's vacuum horizon for longer than ``older_than``
    seconds (inactive replication slots whatever their age), oldest first."""
    return await executor.pg_horizon_holders(older_than=older_than, limit=limit)


def _key(h: HorizonHolder) -> tuple[str, int | str | None, float | None]:
    # A session is the same holder while its transaction is: pid and its start.
    start = None if h.age_s is None else round(time.time() - h.age_s)
    return (h.kind, h.pid if h.kind == "session" else h.name, start)


def _advice(h: HorizonHolder) -> str:
    if h.kind == "session":
        return (
            f"end it (COMMIT or ROLLBACK in that session, or SELECT pg_terminate_backend({h.pid}))"
        )
    # The advice is SQL to paste: names as SQL literals (a gid may hold a quote).
    name = "'" + (h.name or "").replace("'", "''") + "'"
    if h.kind == "prepared_transaction":
        return f"COMMIT PREPARED or ROLLBACK PREPARED {name}"
    return f"drop it if nothing consumes it (SELECT pg_drop_replication_slot({name}))"


class HorizonWatch(Service):
    name = "horizon"

    def __init__(
        self, executor: Executor, *, older_than: float = DEFAULT_OLDER_THAN, interval: float = 30.0
    ) -> None:
        super().__init__(interval=interval)
        self._executor = executor
        self.older_than = older_than
        #: Holders seen on the last pass.
        self.holders: list[HorizonHolder] = []
        self.warnings = 0
        # holder key -> when it was last logged (monotonic)
        self._logged: dict[tuple[str, int | str | None, float | None], float] = {}

    async def run_once(self) -> None:
        self.holders = await horizon_holders(self._executor, older_than=self.older_than)
        now = time.monotonic()
        seen = set()
        for h in self.holders:
            key = _key(h)
            # The start is rounded to the second from two clocks: accept a neighbour.
            known = next(
                (k for k in self._logged if k[:2] == key[:2] and _near(k[2], key[2])), None
            )
            if known is not None:
                seen.add(known)
                if now - self._logged[known] < REMIND_EVERY:
                    continue
                key = known
            seen.add(key)
            self._logged[key] = now
            self.warnings += 1
            self.log.warning(
                "the vacuum horizon is held back by %s: no dead row version newer than "
                "it can be removed, so claims slow down as jobs go through; %s. Query: %s",
                h.describe(),
                _advice(h),
                (h.query or "-")[:200],
                extra={
                    "action": "horizon_held",
                    "holder_kind": h.kind,
                    "pid": h.pid,
                    "application_name": h.application_name,
                    "age_s": h.age_s,
                    "xid_age": h.xid_age,
                },
            )
        for k in list(self._logged):
            if k not in seen:
                del self._logged[k]


def _near(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and abs(a - b) <= 2)
