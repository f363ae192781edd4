"""What each flow limit of a queue is using now, and what waits on it
(``client.flow_status()``; the query API and the UI show it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._claim import Claimer, FlowClaimer, Rule
from ._driver import Executor
from ._driver.records import FlowUsage
from ._flow import RateLimit

__all__ = ["KeyUse", "LimitStatus", "flow_status"]

#: Keys listed per limit, busiest first.
MAX_KEYS = 20


@dataclass(frozen=True, slots=True)
class KeyUse:
    """One key of a partitioned limit: jobs running with it, jobs waiting with it, and
    whether they wait on this limit (its cap reached, its rate bucket empty)."""

    key: Any
    running: int
    waiting: int
    at_limit: bool


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """One limit of a queue, as a moment's picture.

    - ``queue``, ``kind`` (None: every kind of the queue), ``setting`` (the
      ``QueueConfig`` / ``KindLimits`` field: ``global_limit``, ``local_limit``,
      ``partition_limit``, ``rate_limit`` or ``fair``), ``description`` (one line).
    - ``limit``: the running cap (per key for ``partition_limit``); ``rate``: the
      :class:`RateLimit`.
    - ``running``: jobs it covers that run now, in every process (``local_limit``:
      in this client).
    - ``waiting``: jobs it covers that are available and due; ``blocked``: how many of
      them wait on this limit now. Both count among the first ``scanned`` available
      jobs of the queue in claim order (``complete`` is False when the scan stopped
      there).
    - ``keys``: for a limit with a key, the busiest keys (running, then waiting).
    - ``next_start_at``: for a rate limit without a key, when it next lets a job
      start (None: now).
    """

    queue: str
    kind: str | None
    setting: str
    description: str
    limit: int | None
    rate: RateLimit | None
    running: int
    waiting: int
    blocked: int
    keys: tuple[KeyUse, ...]
    next_start_at: datetime | None
    scanned: int
    complete: bool


def _key_value(rule: Rule, text: str | None) -> Any:
    """A key as the user gave it: a field's value, a tuple of them, (kind, ...)."""
    if text is None:
        return None
    value = msgspec.json.decode(text)
    if rule.function is not None or rule.key is None or not isinstance(value, list):
        return value
    kind, *fields = value
    fields = fields[: max(len(rule.key.fields), 0)]
    parts = ([kind] if rule.key.kind else []) + fields
    return parts[0] if len(parts) == 1 else tuple(parts)


def _status(
    queue: str,
    rule: Rule,
    rows: Sequence[FlowUsage],
    scan: int,
    mine: Mapping[str, int],
    now: datetime,
) -> LimitStatus:
    scanned = rows[0].scanned if rows else 0
    keys: list[KeyUse] = []
    running = waiting = blocked = 0
    next_start: datetime | None = None
    for u in rows:
        run = u.running
        if rule.local:
            run = mine.get(rule.kind or "", 0)
        full = False
        if rule.cap is not None and run >= rule.cap:
            full = True
        if rule.rate is not None and u.next_start_at is not None and u.next_start_at > now:
            full = True
            if rule.key is None and rule.function is None:
                next_start = u.next_start_at
        running += run
        waiting += u.waiting
        if full:
            blocked += u.waiting
        if rule.src != "none":
            keys.append(KeyUse(_key_value(rule, u.key), run, u.waiting, full))
    if rule.local and not rows:
        running = mine.get(rule.kind or "", 0)
    return LimitStatus(
        queue=queue,
        kind=rule.kind,
        setting=rule.setting,
        description=rule.describe(),
        limit=rule.cap,
        rate=rule.rate,
        running=running,
        waiting=waiting,
        blocked=blocked,
        keys=tuple(keys[:MAX_KEYS]),
        next_start_at=next_start,
        scanned=scanned,
        complete=scanned < scan,
    )


async def flow_status(
    db: Executor,
    queue: str,
    claimer: Claimer,
    *,
    running_here: Mapping[str, int],
    scan: int = 10_000,
) -> list[LimitStatus]:
    """The status of every limit of ``queue`` (none for a queue without limits)."""
    if not isinstance(claimer, FlowClaimer) or not claimer.rules:
        return []
    rows = await db.flow_usage(
        queue=queue, kinds=claimer.kinds, rules=claimer.base_rules, scan=scan
    )
    by_rule: dict[int, list[FlowUsage]] = {}
    for u in rows:
        by_rule.setdefault(u.rule, []).append(u)
    now = datetime.now(UTC)
    return [
        _status(queue, rule, by_rule.get(i, []), scan, running_here, now)
        for i, rule in enumerate(claimer.rules, start=1)
    ]
