"""Flow control over asyncpg: the claim of a queue with limits (lock, then claim, in
one transaction) and the queries of the status API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..columns import JOB_COLUMNS
from ..records import FlowClaimed, FlowRules, FlowUsage, KeyedCandidates
from ._base import Base, rowcount

__all__ = ["FlowQueries"]

_N = len(JOB_COLUMNS)  # flow_claim: job columns, then _candidates, _blocked, _refill_at


class FlowQueries(Base):
    __slots__ = ()

    async def flow_claim(
        self,
        *,
        lock_key: int,
        queue: str,
        limit: int,
        client_id: str,
        kinds: Sequence[str] | None,
        done: Sequence[int],
        window: int,
        sequences: bool,
        rules: FlowRules,
        fair_rule: int | None,
        fair_name: str,
        weight_keys: Sequence[str],
        weights: Sequence[int],
        default_weight: int,
        keyed: KeyedCandidates | None = None,
    ) -> FlowClaimed:
        lock = self._queries.flow_lock
        q = self._queries.flow_claim
        values = dict(
            queue=queue,
            limit=limit,
            client_id=client_id,
            kinds=list(kinds) if kinds is not None else None,
            done=list(done),
            window=window,
            sequences=sequences,
            r_kind=rules.kind,
            r_src=rules.src,
            r_with_kind=rules.with_kind,
            r_f1=rules.f1,
            r_f2=rules.f2,
            r_f3=rules.f3,
            r_name=rules.name,
            r_cap=rules.cap,
            r_local=rules.local,
            r_rate_t=rules.rate_t,
            r_rate_tau=rules.rate_tau,
            fair_rule=fair_rule,
            fair_name=fair_name,
            w_key=list(weight_keys),
            w_weight=list(weights),
            w_default=default_weight,
        )
        async with self.transaction():
            await self._execute(lock, lock.bind(key=lock_key))
            fk: str | None = None
            forced: list[int] = []
            if keyed is not None:
                c = self._queries.flow_candidates
                rows = await self._fetch(
                    c, c.bind(queue=queue, kinds=list(keyed.kinds), window=window)
                )
                fk, forced = keyed.compute(rows)
            records: list[Any] = await self._fetch(q, q.bind(**values, fk=fk, forced=forced))
        info = records.pop()  # the last row: what the claim saw
        return FlowClaimed(
            rows=records,
            candidates=int(info[_N] or 0),
            blocked=bool(info[_N + 1]),
            refill_at=info[_N + 2],
        )

    async def flow_usage(
        self, *, queue: str, kinds: Sequence[str] | None, rules: FlowRules, scan: int
    ) -> list[FlowUsage]:
        q = self._queries.flow_usage
        records = await self._fetch(
            q,
            q.bind(
                queue=queue,
                kinds=list(kinds) if kinds is not None else None,
                scan=scan,
                fk=None,
                r_kind=rules.kind,
                r_src=rules.src,
                r_with_kind=rules.with_kind,
                r_f1=rules.f1,
                r_f2=rules.f2,
                r_f3=rules.f3,
                r_name=rules.name,
                r_cap=rules.cap,
                r_local=rules.local,
                r_rate_t=rules.rate_t,
                r_rate_tau=rules.rate_tau,
            ),
        )
        return [
            FlowUsage(
                rule=r["rule"],
                key=r["key"],
                running=r["running"],
                waiting=r["waiting"],
                next_start_at=r["next_start_at"],
                scanned=r["scanned"],
            )
            for r in records
        ]

    async def flow_unclaimed_kinds(
        self, *, queue: str, kinds: Sequence[str], older_than: float
    ) -> list[tuple[str, int, Any]]:
        q = self._queries.flow_unclaimed_kinds
        records = await self._fetch(
            q, q.bind(queue=queue, kinds=list(kinds), older_than=older_than)
        )
        return [(r["kind"], r["n"], r["since"]) for r in records]

    async def flow_prune(self, *, names: Sequence[str]) -> int:
        q = self._queries.flow_prune
        return rowcount(await self._execute(q, q.bind(names=list(names))))
