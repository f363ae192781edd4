"""Flow control over asyncpg: the claim of a queue with limits (lock, then claim, in
one transaction) and the queries of the status API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..columns import JOB_COLUMNS
from ..queries import Query
from ..records import FlowClaimed, FlowRules, FlowUsage, KeyedCandidates
from ._base import Base, rowcount

__all__ = ["FlowQueries"]

# flow_claim: job columns, then _stale, _candidates, _blocked, _refill_at, _more
_N = len(JOB_COLUMNS)


def _rule_params(rules: FlowRules) -> dict[str, Any]:
    """The limits' rules as the flow statements' ``r_*`` parameters (parallel arrays)."""
    return {
        "r_kind": rules.kind,
        "r_src": rules.src,
        "r_with_kind": rules.with_kind,
        "r_f1": rules.f1,
        "r_f2": rules.f2,
        "r_f3": rules.f3,
        "r_name": rules.name,
        "r_cap": rules.cap,
        "r_local": rules.local,
        "r_rate_t": rules.rate_t,
        "r_rate_tau": rules.rate_tau,
    }


def _capped_only(
    rules: FlowRules, fair_rule: int | None, sequences: bool, keyed: KeyedCandidates | None
) -> int | None:
    """The cap when the only limit is the queue's global_limit (flow_claim_capped)."""
    if len(rules.kind) != 1 or fair_rule is not None or sequences or keyed is not None:
        return None
    if rules.kind[0] is None and rules.src[0] == "none" and rules.rate_t[0] is None:
        return rules.cap[0]
    return None


def _partitioned_only(
    rules: FlowRules, fair_rule: int | None, sequences: bool, keyed: KeyedCandidates | None
) -> tuple[int, int | None] | None:
    """(index of the partition rule, the queue's cap or None) when the limits are one
    queue-wide partition cap and at most the queue's global_limit (flow_claim_partitioned)."""
    if fair_rule is not None or sequences or keyed is not None or not 1 <= len(rules.kind) <= 2:
        return None
    if any(k is not None for k in rules.kind) or any(t is not None for t in rules.rate_t):
        return None
    if any(local for local in rules.local):
        return None
    keyed_rules = [i for i, src in enumerate(rules.src) if src in ("args", "metadata", "kind")]
    plain = [i for i, src in enumerate(rules.src) if src == "none"]
    if len(keyed_rules) != 1 or len(keyed_rules) + len(plain) != len(rules.src):
        return None
    i = keyed_rules[0]
    if rules.cap[i] is None:
        return None
    return i, (rules.cap[plain[0]] if plain else None)


class FlowQueries(Base):
    __slots__ = ()

    async def flow_claim(
        self,
        *,
        gate: str,
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
        # What every flow statement takes: its gate, the queue, the claim's size.
        common: dict[str, Any] = {
            "gate": gate,
            "queue": queue,
            "limit": limit,
            "client_id": client_id,
            "kinds": list(kinds) if kinds is not None else None,
            "done": list(done),
        }
        capped = _capped_only(rules, fair_rule, sequences, keyed)
        if capped is not None:
            q = self._queries.flow_claim_capped
            args = q.bind(
                **common,
                cap=capped,
            )
            return await self._run_flow_claim(q, args, gate)
        part = _partitioned_only(rules, fair_rule, sequences, keyed)
        if part is not None:
            i, cap = part
            q = self._queries.flow_claim_partitioned
            args = q.bind(
                **common,
                window=window,
                cap=cap,
                part_cap=rules.cap[i],
                src=rules.src[i],
                with_kind=rules.with_kind[i],
                f1=rules.f1[i],
                f2=rules.f2[i],
                f3=rules.f3[i],
            )
            return await self._run_flow_claim(q, args, gate)
        q = self._queries.flow_claim
        fk: str | None = None
        forced: list[int] = []
        if keyed is not None:
            c = self._queries.flow_candidates
            rows = await self._fetch(c, c.bind(queue=queue, kinds=list(keyed.kinds), window=window))
            fk, forced = keyed.compute(rows)
        args = q.bind(
            **common,
            window=window,
            sequences=sequences,
            **_rule_params(rules),
            fair_rule=fair_rule,
            fair_name=fair_name,
            w_key=list(weight_keys),
            w_weight=list(weights),
            w_default=default_weight,
            fk=fk,
            forced=forced,
            simple=all(
                k is None and src == "none" for k, src in zip(rules.kind, rules.src, strict=True)
            )
            and fair_rule is None,
        )
        return await self._run_flow_claim(q, args, gate)

    async def _run_flow_claim(self, q: Query, args: tuple[Any, ...], gate: str) -> FlowClaimed:
        records: list[Any] = await self._fetch(q, args)
        stale = bool(records[-1][_N])
        if stale:
            # Another claim committed while this one waited for the gate: run it again
            # holding the gate, with a snapshot taken after it is held.
            gq = self._queries.flow_gate
            async with self.session() as bound, bound.transaction():
                await bound._execute(gq, gq.bind(gate=gate))
                records = await bound._fetch(q, args)
        info = records.pop()  # the last row: what the claim saw
        return FlowClaimed(
            rows=records,
            candidates=int(info[_N + 1] or 0),
            blocked=bool(info[_N + 2]),
            refill_at=info[_N + 3],
            retried=stale,
            more=bool(info[_N + 4]),
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
                **_rule_params(rules),
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
