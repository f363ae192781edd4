"""Claimers: how a producer takes jobs from its queue (River's "pilot" seam).

- :class:`PlainClaimer`: a queue without limits. One ``UPDATE ... FOR UPDATE SKIP
  LOCKED`` statement per batch (``job_claim``), as before flow control existed, with
  the kind filter of kind-aware claiming.
- :class:`FlowClaimer`: a queue with limits or sequences. One claim statement that
  passes the queue's gate: ``flow_claim_capped`` for a queue's global_limit alone,
  ``flow_claim_partitioned`` for one partition cap (and global_limit), ``flow_claim``
  for everything else; the limits are compiled once, here, into rules the statements
  read as arrays (the driver picks the statement).

Why a gate: a limit is a count of ``running`` rows, and two claims counting at once
would both see room for the same slot. Claims of one queue pass its gate (a row of
``pyriver_flow_state`` the statement upserts, which locks it) one at a time; under
READ COMMITTED a statement's snapshot is taken when it starts, before it waits at the
gate, so the gate also counts claims, and a claim that sees the count move since its
snapshot claims nothing and runs again in a transaction holding the gate, with a
fresh snapshot. The count is the job table itself: no running counter to keep in
step, so a rescue, a retry, a snooze, a completion by a River
process, or a job deleted by hand frees its slot as soon as its row leaves
``running``; a process that was SIGKILLed holds its slots until the rescuer takes its
jobs back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import msgspec

from ._args import JobArgs
from ._config import QueueConfig
from ._driver import Executor, JobRow
from ._driver.columns import ARGS, ID, KIND, METADATA, PRIORITY, SCHEDULED_AT
from ._driver.records import FlowRules
from ._flow import SEQUENCE_KEY, KeyFunction, KindLimits, PartitionKey, RateLimit
from ._rows import job_from_row
from ._workers import Workers

__all__ = ["ClaimResult", "Claimer", "FlowClaimer", "PlainClaimer", "Rule", "claimer_for"]

log = logging.getLogger("pyriver_async.producer")

#: How often (seconds) a claimer deletes the spent rows of its rate and fair rules.
PRUNE_EVERY = 300.0
#: While a backlog lasts, the longest (seconds) between two full claims of a queue
#: without limits: how long a job that became available behind the claim position
#: (see PlainClaimer) may wait behind jobs after it in claim order.
RESCAN_EVERY = 1.0

_json = msgspec.json.Encoder(order="deterministic").encode
# How a claimed row's metadata (JSON text) shows that the job is in a sequence.
_SEQUENCE_MARK = f'"{SEQUENCE_KEY}"'


def _in_sequence(metadata: Any) -> bool:
    if isinstance(metadata, str):
        return _SEQUENCE_MARK in metadata
    return isinstance(metadata, Mapping) and SEQUENCE_KEY in metadata


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Jobs claimed, whether jobs were left waiting on a limit (``limited``: claim
    again when a slot frees), and when a rate limit next has room (``refill_at``)."""

    rows: list[JobRow]
    limited: bool = False
    refill_at: datetime | None = None
    #: Ids of the claimed jobs that are in a sequence: when their outcome is written,
    #: the next job of their sequence may run.
    in_sequence: tuple[int, ...] = ()
    #: Claimed jobs whose key function failed: to be failed at once, with this error
    #: (a message, and what the function raised).
    failed: Mapping[int, tuple[str, BaseException]] = field(default_factory=dict)
    #: Claim again at once: the scan ran out behind keys this claim filled.
    more: bool = False


class Claimer(Protocol):
    """Takes up to ``limit`` available jobs of one queue and marks them running."""

    #: True when claims of this queue pass its gate one at a time (limits, sequences).
    locked: bool
    #: The kinds claimed (None: every kind).
    kinds: list[str] | None
    #: Whether claim() needs this client's running jobs per kind (local limits).
    counts_kinds: bool

    async def claim(
        self,
        db: Executor,
        *,
        limit: int,
        client_id: str,
        done: Sequence[int],
        running_kinds: Mapping[str, int],
    ) -> ClaimResult:
        """``done``: jobs of this client that have ended but whose outcome is not
        written yet (no longer running); ``running_kinds``: this client's running jobs
        of the queue per kind (for local limits)."""
        ...


class PlainClaimer:
    """The claim of a queue without limits: one statement, no lock.

    While the queue has a backlog (the last claim came back full), a claim starts
    where the last one ended in claim order (``job_claim_after``) instead of at the
    head of the claim index. Every job claimed leaves an index entry behind until
    VACUUM removes it, and while one old transaction pins the vacuum horizon none can
    be removed: a claim from the head would visit every one of them, its cost growing
    with the work done (measured: the fifth 20k-job drain behind a pinned horizon at
    0.28 of the unpinned rate). Jobs that become available behind the position (due
    retries, rescues, a job of a higher priority) are taken by a full claim, run when
    a positioned claim comes up short and at least every ``RESCAN_EVERY`` seconds:
    the bound on claim order while a backlog lasts.
    """

    locked = False
    counts_kinds = False

    def __init__(self, queue: str, kinds: list[str] | None) -> None:
        self.queue = queue
        self.kinds = kinds
        self._after: tuple[int, datetime, int] | None = None
        self._last_full = 0.0

    async def claim(
        self,
        db: Executor,
        *,
        limit: int,
        client_id: str,
        done: Sequence[int],
        running_kinds: Mapping[str, int],
    ) -> ClaimResult:
        rows: list[JobRow] = []
        now = time.monotonic()
        after = self._after
        if after is not None and now - self._last_full < RESCAN_EVERY:
            rows = await db.job_claim_after(
                queue=self.queue, limit=limit, client_id=client_id, kinds=self.kinds, after=after
            )
        if len(rows) < limit:
            # No position (no backlog), time to look from the head, or it came up short.
            rows += await db.job_claim(
                queue=self.queue, limit=limit - len(rows), client_id=client_id, kinds=self.kinds
            )
            self._last_full = now
        if len(rows) == limit:  # a backlog: the next claim goes on from here
            furthest = max((r[PRIORITY], r[SCHEDULED_AT], r[ID]) for r in rows)
            self._after = furthest if after is None or furthest > after else after
        else:
            self._after = None
        return ClaimResult(rows)


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit as the claim statement reads it (see ``_flow_rules`` in flow.sql)."""

    setting: str  # global_limit | local_limit | partition_limit | rate_limit | fair
    kind: str | None  # None: every kind of the queue
    key: PartitionKey | None = None
    cap: int | None = None
    local: bool = False
    rate: RateLimit | None = None
    #: Stable across processes and restarts: names a rate limit's rows and the keys
    #: a key function stamped on running jobs.
    name: str = ""
    function: KeyFunction | None = None

    @property
    def src(self) -> str:
        if self.function is not None:
            return "fn"
        if self.key is None:
            return "none"
        return self.key.source

    def field(self, i: int) -> str | None:
        fields = self.key.fields if self.key is not None else ()
        return fields[i] if i < len(fields) else None

    def key_json(self, kind: str | None, values: Sequence[Any]) -> str:
        """The claim's key (flow.sql `_flow_key`) of a job of ``kind`` whose key
        fields hold ``values``, as JSON (to compare with the database's)."""
        if self.key is None:
            return "null"
        vals = list(values) + [None] * (3 - len(values))
        return _json([kind if self.key.kind else None, *vals[:3]]).decode()

    def key_description(self) -> str:
        if self.function is not None:
            return f"{getattr(self.function, '__qualname__', repr(self.function))}(job)"
        return self.key.describe() if self.key is not None else ""

    def describe(self) -> str:
        scope = f"kind {self.kind!r}" if self.kind else "the queue"
        per_key = f" per key {self.key_description()}" if self.src != "none" else ""
        if self.setting == "rate_limit":
            assert self.rate is not None
            return f"rate_limit {self.rate.describe()}{per_key} on {scope}"
        if self.setting == "fair":
            return f"fair turns by {self.key_description()} on {scope}"
        return f"{self.setting} {self.cap}{per_key} on {scope}"


def compile_rules(queue: str, cfg: QueueConfig) -> tuple[list[Rule], int | None, Any]:
    """The rules of a queue's limits, the index (from 1) of the rule that drives
    fairness (None: none), and its weights (a mapping, or None)."""
    rules: list[Rule] = []
    fair_rule: int | None = None
    weights: Any = None

    def scope(kind: str | None, s: QueueConfig | KindLimits) -> None:
        nonlocal fair_rule, weights
        where = f"{queue}:{kind}" if kind else queue
        if s.global_limit is not None:
            rules.append(Rule("global_limit", kind, cap=s.global_limit, name=f"global:{where}"))
        if isinstance(s, KindLimits) and s.local_limit is not None:
            rules.append(
                Rule("local_limit", kind, cap=s.local_limit, local=True, name=f"local:{where}")
            )
        if s.partition_by is not None:
            key, fn = _key_or_function(s.partition_by)
            setting = "partition_limit" if s.partition_limit is not None else "fair"
            rules.append(
                Rule(setting, kind, key=key, cap=s.partition_limit, name=f"partition:{where}",
                     function=fn)
            )  # fmt: skip
            if s.fair:
                fair_rule = len(rules)
                weights = s.fair if isinstance(s.fair, Mapping) else None
        if s.rate_limit is not None:
            key, fn = _key_or_function(s.rate_limit.by)
            rules.append(
                Rule("rate_limit", kind, key=key, rate=s.rate_limit, name=f"rate:{where}",
                     function=fn)
            )  # fmt: skip

    scope(None, cfg)
    for kind, limits in cfg.kinds.items():
        scope(kind, limits)
    return rules, fair_rule, weights


def _key_or_function(spec: object) -> tuple[PartitionKey | None, KeyFunction | None]:
    """A key setting (normalised by the config's validation) as field key or function."""
    if spec is None or isinstance(spec, PartitionKey):
        return spec, None
    assert callable(spec)
    return None, spec


class _FunctionKeys:
    """The keys of candidates under key functions, computed here (flow.sql `@fk`).

    A key depends only on the job's args and metadata, so it is computed once per job
    and remembered (bounded). A function that raises, or returns a value that is not
    hashable or not JSON, fails that job: it is claimed and failed at once with the
    error recorded, and the other jobs go on.
    """

    MAX_CACHED = 50_000

    def __init__(self, rules: list[Rule], workers: Workers, queue_kinds: list[str] | None) -> None:
        self.rules = [r for r in rules if r.function is not None]
        covered = {r.kind for r in self.rules}
        if None in covered:
            self.kinds: list[str] = list(queue_kinds or workers.kinds)
        else:
            self.kinds = sorted(k for k in covered if k is not None)
        self._workers = workers
        self._cache: dict[int, dict[str, Any] | tuple[str, BaseException]] = {}
        #: Job id -> why its key could not be computed (for the claim just made).
        self.failed: dict[int, tuple[str, BaseException]] = {}

    def compute(self, rows: Sequence[Any]) -> tuple[str | None, list[int]]:
        keys: dict[str, dict[str, Any]] = {}
        forced: list[int] = []
        self.failed = {}
        for row in rows:
            job_id = row[ID]
            got = self._cache.get(job_id)
            if got is None:
                got = self._keys_of(row)
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[job_id] = got
            if isinstance(got, tuple):
                forced.append(job_id)
                self.failed[job_id] = got
            else:
                keys[str(job_id)] = got
        return _json(keys).decode(), forced

    def _keys_of(self, row: Any) -> dict[str, Any] | tuple[str, BaseException]:
        kind = row[KIND]
        job: Any = None
        out: dict[str, Any] = {}
        for rule in self.rules:
            if rule.kind is not None and rule.kind != kind:
                continue
            assert rule.function is not None
            fn_name = getattr(rule.function, "__qualname__", repr(rule.function))
            try:
                if job is None:
                    job = self._job(row)
                key = rule.function(job)
                hash(key)
                # The key as the database compares it (JSON; a tuple is an array).
                out[rule.name] = msgspec.json.decode(_json(key))
            except Exception as exc:
                message = (
                    f"the key function {fn_name} of {rule.describe()} failed on this job: "
                    f"{type(exc).__name__}: {exc}"
                )
                return message, exc
        return out

    def _job(self, row: Any) -> Any:
        reg = self._workers.get(row[KIND])
        args = reg.decoder.decode(row[ARGS]) if reg is not None else None
        return job_from_row(row, args)


def _has_sequences(workers: Workers, kinds: Iterable[str]) -> bool:
    for kind in kinds:
        reg = workers.get(kind)
        if reg is not None and reg.args_type.sequence_opts is not JobArgs.sequence_opts:
            return True
    return False


class FlowClaimer:
    """The claim of a queue with limits or sequences: one statement behind the gate."""

    locked = True

    def __init__(
        self,
        queue: str,
        cfg: QueueConfig,
        *,
        schema: str,
        kinds: list[str] | None,
        sequences: bool,
        workers: Workers | None = None,
    ) -> None:
        self.queue = queue
        self.kinds = kinds
        self.sequences = sequences
        # The row of pyriver_flow_state that serialises this queue's claims.
        self.gate = f"gate:{queue}"
        self.rules, self.fair_rule, weights = compile_rules(queue, cfg)
        # Where a fair rule keeps its keys' turns (rows of pyriver_flow_state).
        self.fair_name = f"fair:{queue}"
        self.state_names = [r.name for r in self.rules if r.rate is not None]
        if self.fair_rule is not None:
            self.state_names.append(self.fair_name)
        self._next_prune = time.monotonic() + PRUNE_EVERY
        #: Claims that found themselves stale and ran again behind the gate.
        self.retries = 0
        self._functions: _FunctionKeys | None = None
        if any(r.function is not None for r in self.rules):
            self._functions = _FunctionKeys(self.rules, workers or Workers(), kinds)
        self._local = [i for i, r in enumerate(self.rules) if r.local]
        self.counts_kinds = bool(self._local)
        self.base_rules = FlowRules(
            kind=[r.kind for r in self.rules],
            src=[r.src for r in self.rules],
            with_kind=[bool(r.key is not None and r.key.kind) for r in self.rules],
            f1=[r.field(0) for r in self.rules],
            f2=[r.field(1) for r in self.rules],
            f3=[r.field(2) for r in self.rules],
            name=[r.name for r in self.rules],
            cap=[r.cap for r in self.rules],
            local=[r.local for r in self.rules],
            rate_t=[r.rate.interval if r.rate else None for r in self.rules],
            rate_tau=[r.rate.tolerance if r.rate else None for r in self.rules],
        )
        self.weight_keys: list[str] = []
        self.weights: list[int] = []
        if weights and self.fair_rule is not None:
            rule = self.rules[self.fair_rule - 1]
            for key, w in weights.items():
                values = key if isinstance(key, tuple) else (key,)
                if rule.key is not None and rule.key.kind:
                    # (kind, field values...): the first element is the kind.
                    kind, values = values[0], values[1:]
                else:
                    kind = None
                self.weight_keys.append(rule.key_json(kind, values))
                self.weights.append(w)
        # Rules that look at keys, or at kinds, may pass over candidates; a wider scan
        # finds the ones behind them in the same statement.
        self._wide = any(r.key is not None or r.kind is not None for r in self.rules)

    def window(self, limit: int) -> int:
        return min(2 * limit + 32, 5000) if self._wide else limit

    def _rules_for(self, running_kinds: Mapping[str, int]) -> FlowRules:
        if not self._local:
            return self.base_rules
        cap = list(self.base_rules.cap)
        for i in self._local:
            rule = self.rules[i]
            assert rule.cap is not None and rule.kind is not None
            cap[i] = rule.cap - running_kinds.get(rule.kind, 0)
        b = self.base_rules
        return FlowRules(
            b.kind, b.src, b.with_kind, b.f1, b.f2, b.f3, b.name, cap, b.local, b.rate_t, b.rate_tau
        )

    async def claim(
        self,
        db: Executor,
        *,
        limit: int,
        client_id: str,
        done: Sequence[int],
        running_kinds: Mapping[str, int],
    ) -> ClaimResult:
        got = await db.flow_claim(
            gate=self.gate,
            queue=self.queue,
            limit=limit,
            client_id=client_id,
            kinds=self.kinds,
            done=done,
            window=self.window(limit),
            sequences=self.sequences,
            rules=self._rules_for(running_kinds),
            fair_rule=self.fair_rule,
            fair_name=self.fair_name,
            weight_keys=self.weight_keys,
            weights=self.weights,
            default_weight=1,
            keyed=self._functions,
        )
        self.retries += got.retried
        if self.state_names and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY
            await db.flow_prune(names=self.state_names)
        limited = got.blocked or got.candidates > len(got.rows)
        in_sequence: tuple[int, ...] = ()
        if self.sequences:
            in_sequence = tuple(r[ID] for r in got.rows if _in_sequence(r[METADATA]))
        failed: dict[int, tuple[str, BaseException]] = {}
        if self._functions is not None and self._functions.failed:
            failed = {
                r[ID]: self._functions.failed[r[ID]]
                for r in got.rows
                if r[ID] in self._functions.failed
            }
        return ClaimResult(
            got.rows,
            limited and len(got.rows) < limit,
            got.refill_at,
            in_sequence,
            failed,
            more=got.more and bool(got.rows),
        )


def claimer_for(queue: str, cfg: QueueConfig, workers: Workers, *, schema: str) -> Claimer:
    """The claimer of ``queue``: plain unless it has limits or sequenced kinds."""
    kinds = workers.kinds if cfg.registered_kinds_only else None
    sequences = _has_sequences(workers, workers.kinds)
    if (cfg.has_limits and compile_rules(queue, cfg)[0]) or sequences:
        return FlowClaimer(
            queue, cfg, schema=schema, kinds=kinds, sequences=sequences, workers=workers
        )
    return PlainClaimer(queue, kinds)
