"""Flow control settings: cluster-wide running caps, partitioned caps, rate limits,
fairness across keys and sequences (public types, validated at construction).

A queue's limits are given on its :class:`~pyriver_async.QueueConfig` (``global_limit``,
``partition_by`` / ``partition_limit``, ``rate_limit``, ``fair``) and per kind in
``QueueConfig(kinds={"export": KindLimits(...)})``. Sequences are a property of the
job's kind, so that the key is known when the job is inserted: a ``JobArgs`` class
returns a :class:`SequenceOpts` from ``sequence_opts()``.

How the claim enforces them is in :mod:`._claim` and ``_driver/sql/flow.sql``;
``docs/flow-control.md`` is the user's page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeAlias

import msgspec

from ._args import JobArgs, validate_kind
from ._errors import ConfigError, InvalidOptsError, KindConflictError, typed_init_errors

__all__ = [
    "MAX_KEY_FIELDS",
    "KeyFunction",
    "KeySpec",
    "KindLimits",
    "PartitionKey",
    "RateLimit",
    "SequenceOpts",
    "as_partition_key",
    "check_limit",
    "sequence_metadata",
    "validate_queue_flow",
]

#: A key is built from at most this many fields of the args or the metadata.
MAX_KEY_FIELDS = 3
#: Limits above this are refused: a cap so large is no cap (and a typo).
MAX_LIMIT = 1_000_000

#: A function of the job giving its key (any hashable, JSON-encodable value).
KeyFunction: TypeAlias = Callable[[Any], Hashable]


def check_limit(value: object, what: str, *, allow_none: bool = True) -> int | None:
    """An int from 1 to MAX_LIMIT (or None when allowed): ConfigError otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an int of at least 1, got {value!r}")
    if not 1 <= value <= MAX_LIMIT:
        raise ConfigError(f"{what} must be from 1 to {MAX_LIMIT:,}, got {value!r}")
    return value


def _field_names(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Seq) or isinstance(value, bytes):
        raise ConfigError(f"{what} must be a field name or a tuple of field names, got {value!r}")
    names = tuple(value)
    for n in names:
        if not isinstance(n, str) or not n or "\x00" in n:
            raise ConfigError(f"{what}: field names are non-empty strings, got {n!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{what}: a field is named twice in {names!r}")
    return names


@typed_init_errors(ConfigError)
@dataclass(frozen=True, slots=True)
class PartitionKey:
    """Where a limit's key comes from: up to three top-level fields of the job's
    ``args`` or of its ``metadata`` (not both), and optionally its kind.

    ``partition_by=("customer_id",)`` is short for
    ``PartitionKey(args=("customer_id",))``; ``PartitionKey(metadata=("tenant",))``
    reads the metadata; ``PartitionKey(kind=True)`` gives each kind its own bucket.
    Jobs whose fields are missing share the key of a JSON ``null``.
    """

    args: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    kind: bool = False

    def __post_init__(self) -> None:
        args = _field_names(self.args, "PartitionKey.args")
        metadata = _field_names(self.metadata, "PartitionKey.metadata")
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "metadata", metadata)
        if not isinstance(self.kind, bool):
            raise ConfigError("PartitionKey.kind must be True or False")
        if args and metadata:
            raise ConfigError(
                "PartitionKey takes fields of the args or of the metadata, not both "
                "(copy what you need into the metadata at insert)"
            )
        if len(args) > MAX_KEY_FIELDS or len(metadata) > MAX_KEY_FIELDS:
            raise ConfigError(f"a PartitionKey has at most {MAX_KEY_FIELDS} fields")
        if not (args or metadata or self.kind):
            raise ConfigError("an empty PartitionKey: name args or metadata fields, or kind=True")

    @property
    def source(self) -> str:
        """'args', 'metadata', or 'kind' (the kind alone)."""
        return "args" if self.args else "metadata" if self.metadata else "kind"

    @property
    def fields(self) -> tuple[str, ...]:
        return self.args or self.metadata

    def describe(self) -> str:
        parts = [f"args.{f}" for f in self.args] + [f"metadata.{f}" for f in self.metadata]
        if self.kind:
            parts.insert(0, "kind")
        return "(" + ", ".join(parts) + ")"


#: What ``partition_by`` and ``RateLimit(by=...)`` take: an args field name, a tuple of
#: them, a :class:`PartitionKey`, or a function of the job.
KeySpec: TypeAlias = str | Seq[str] | PartitionKey | KeyFunction


def as_partition_key(value: object, what: str) -> PartitionKey | KeyFunction | None:
    """Normalise a key setting (None stays None)."""
    if value is None or isinstance(value, PartitionKey):
        return value
    if isinstance(value, str | tuple | list):
        return PartitionKey(args=tuple(value) if not isinstance(value, str) else (value,))
    if callable(value):
        if isinstance(value, type):
            raise ConfigError(f"{what} takes a function of the job, not the class {value!r}")
        return value
    raise ConfigError(
        f"{what} must be an args field name, a tuple of them, a PartitionKey or a "
        f"function of the job, got {value!r}"
    )


def _seconds(value: object, what: str) -> float:
    if isinstance(value, timedelta):
        s = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    else:
        s = float(value)
    if math.isnan(s) or math.isinf(s) or s <= 0:
        raise ConfigError(f"{what} must be a positive duration, got {value!r}")
    return s


@typed_init_errors(ConfigError)
@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` job starts per ``per``, across every process (and restarts).

    ``by`` gives each key its own budget (``RateLimit(100, per=timedelta(minutes=1),
    by=("token",))``: 100 a minute per API token). ``burst`` (default ``limit``) is
    how many may start at once after a quiet spell.

    The algorithm is GCRA (a token bucket of ``burst`` tokens refilled at
    ``limit / per``), with its state in the ``pyriver_flow_state`` table: over any
    stretch of time ``t``, at most ``burst + t * limit / per`` jobs start, and a
    steady backlog starts exactly ``limit`` per ``per``. A start counts when the job is
    claimed: a retry, a rescue or a snooze that runs the job again counts again.
    """

    limit: int
    per: timedelta | float = timedelta(seconds=1)
    by: KeySpec | None = None
    burst: int | None = None

    def __post_init__(self) -> None:
        check_limit(self.limit, "RateLimit.limit", allow_none=False)
        per = _seconds(self.per, "RateLimit.per")
        object.__setattr__(self, "per", timedelta(seconds=per))
        object.__setattr__(self, "by", as_partition_key(self.by, "RateLimit.by"))
        if self.burst is not None:
            check_limit(self.burst, "RateLimit.burst")
        if self.interval <= 1e-6:
            raise ConfigError(f"RateLimit of {self.limit} per {per}s is faster than 1,000,000/s")

    @property
    def interval(self) -> float:
        """Seconds between two starts at the steady rate (GCRA's emission interval)."""
        per = self.per.total_seconds() if isinstance(self.per, timedelta) else float(self.per)
        return per / self.limit

    @property
    def tolerance(self) -> float:
        """GCRA's burst tolerance in seconds: ``(burst - 1)`` intervals."""
        burst = self.burst if self.burst is not None else self.limit
        return (burst - 1) * self.interval

    def describe(self) -> str:
        per = self.per.total_seconds() if isinstance(self.per, timedelta) else float(self.per)
        return f"{self.limit} per {per:g}s"


def _fair_weights(value: object, what: str) -> bool | Mapping[Any, int]:
    if isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        out: dict[Any, int] = {}
        for k, w in value.items():
            check_limit(w, f"{what}: the weight of {k!r}", allow_none=False)
            try:
                msgspec.json.encode(k)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{what}: key {k!r} is not a JSON value (a key is a field's value, "
                    "or a tuple of them)"
                ) from None
            out[k] = w
        return out
    raise ConfigError(f"{what} must be True, False or a mapping of key to weight, got {value!r}")


@typed_init_errors(ConfigError)
@dataclass(frozen=True, slots=True, kw_only=True)
class KindLimits:
    """The limits of one kind of job within a queue (``QueueConfig(kinds={...})``).

    - ``global_limit``: at most this many of its jobs run at once across every process.
    - ``local_limit``: at most this many in this process (within ``max_workers``).
    - ``partition_by`` / ``partition_limit``: at most ``partition_limit`` running per key.
    - ``rate_limit``: a :class:`RateLimit` on its starts.
    - ``fair``: keys of ``partition_by`` take turns (``True``: round robin; a mapping of
      key to weight: that many jobs per turn, 1 for keys not listed).
    """

    global_limit: int | None = None
    local_limit: int | None = None
    partition_by: KeySpec | None = None
    partition_limit: int | None = None
    rate_limit: RateLimit | None = None
    fair: bool | Mapping[Any, int] = False

    def __post_init__(self) -> None:
        validate_scope(self, "KindLimits")


def validate_scope(s: Any, what: str) -> None:
    """Check the limit settings shared by QueueConfig and KindLimits (``s``)."""
    check_limit(s.global_limit, f"{what}.global_limit")
    check_limit(s.partition_limit, f"{what}.partition_limit")
    if getattr(s, "local_limit", None) is not None:
        check_limit(s.local_limit, f"{what}.local_limit")
    object.__setattr__(s, "partition_by", as_partition_key(s.partition_by, f"{what}.partition_by"))
    if s.rate_limit is not None and not isinstance(s.rate_limit, RateLimit):
        raise ConfigError(f"{what}.rate_limit must be a RateLimit, got {s.rate_limit!r}")
    object.__setattr__(s, "fair", _fair_weights(s.fair, f"{what}.fair"))
    if s.partition_limit is not None and s.partition_by is None:
        raise ConfigError(f"{what}.partition_limit needs partition_by (the key to count by)")
    if s.partition_by is not None and s.partition_limit is None and not s.fair:
        raise ConfigError(
            f"{what}.partition_by needs partition_limit (how many may run per key), or fair"
        )
    if s.fair and s.partition_by is None:
        raise ConfigError(f"{what}.fair needs partition_by: the keys that take turns")
    if (
        s.global_limit is not None
        and s.partition_limit is not None
        and s.partition_limit > s.global_limit
    ):
        raise ConfigError(
            f"{what}: partition_limit {s.partition_limit} is above global_limit "
            f"{s.global_limit}, so it can never apply; lower it or drop it"
        )
    if isinstance(s.fair, Mapping) and s.fair and not isinstance(s.partition_by, PartitionKey):
        raise ConfigError(f"{what}.fair weights need a PartitionKey (fields), not a function")


def validate_queue_flow(cfg: Any) -> None:
    """Check and normalise the flow settings of a QueueConfig (``cfg``), and refuse
    limits that conflict: a kind's cap above the queue's, a local limit above
    max_workers, one kind given twice, more than one fairness setting."""
    validate_scope(cfg, "QueueConfig")
    if not isinstance(cfg.kinds, Mapping):
        raise ConfigError(f"QueueConfig.kinds must map kinds to KindLimits, got {cfg.kinds!r}")
    kinds: dict[str, KindLimits] = {}
    for key, limits in cfg.kinds.items():
        name = kind_name(key)
        if not isinstance(limits, KindLimits):
            raise ConfigError(f"QueueConfig.kinds[{name!r}] must be a KindLimits, got {limits!r}")
        if name in kinds:
            raise ConfigError(
                f"conflicting limits: kind {name!r} is given twice in QueueConfig.kinds "
                "(once by name, once by class?)"
            )
        where = f"QueueConfig.kinds[{name!r}]"
        if (
            limits.global_limit is not None
            and cfg.global_limit is not None
            and limits.global_limit > cfg.global_limit
        ):
            raise ConfigError(
                f"conflicting limits: {where}.global_limit {limits.global_limit} is above "
                f"the queue's global_limit {cfg.global_limit}, so it can never apply"
            )
        if limits.local_limit is not None and limits.local_limit > cfg.max_workers:
            raise ConfigError(
                f"conflicting limits: {where}.local_limit {limits.local_limit} is above "
                f"max_workers {cfg.max_workers}, so it can never apply"
            )
        kinds[name] = limits
    fair = [n for n, k in kinds.items() if k.fair] + (["the queue"] if cfg.fair else [])
    if len(fair) > 1:
        raise ConfigError(
            f"conflicting limits: fairness is set for {', '.join(map(repr, fair))}; "
            "one queue takes turns by one key"
        )
    object.__setattr__(cfg, "kinds", kinds)
    if not isinstance(cfg.registered_kinds_only, bool):
        raise ConfigError("QueueConfig.registered_kinds_only must be True or False")


def kind_name(key: object) -> str:
    """A kind given as a name or as its JobArgs class."""
    if isinstance(key, type) and issubclass(key, JobArgs):
        return key.kind
    try:
        return validate_kind(key)
    except KindConflictError as exc:
        raise ConfigError(str(exc)) from None


@typed_init_errors(ConfigError)
@dataclass(frozen=True, slots=True, kw_only=True)
class SequenceOpts:
    """Jobs of one sequence run one at a time, in insertion order (by id).

    Returned by a ``JobArgs`` class's ``sequence_opts()``; the sequence's key is
    computed when the job is inserted and stored in its metadata, so every process
    agrees on it. ``by`` names the args fields the key is made of (``()`` : one
    sequence for the whole kind); ``key`` gives it directly instead (any JSON value,
    e.g. computed by ``sequence_opts()`` from the args). ``name`` lets jobs of several
    kinds share sequences (default: the kind).

    A job that fails holds its sequence: while it waits for its retry, and after it is
    discarded (until it is retried or deleted), the jobs behind it wait.
    ``continue_on_failure=True`` lets the sequence go on past a discarded job (a
    retrying one still holds it: it will run again, in its place). A cancelled job
    never holds its sequence.
    """

    by: tuple[str, ...] = ()
    key: Any = None
    name: str | None = None
    continue_on_failure: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "by", _field_names(self.by, "SequenceOpts.by"))
        if self.key is not None and self.by:
            raise ConfigError("SequenceOpts takes `by` fields or a `key`, not both")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ConfigError("SequenceOpts.name must be a non-empty string")
        if not isinstance(self.continue_on_failure, bool):
            raise ConfigError("SequenceOpts.continue_on_failure must be True or False")


#: Metadata keys of a job in a sequence (written at insert; reserved, so a user's
#: metadata cannot forge them).
SEQUENCE_KEY = "pyriver:sequence"
SEQUENCE_CONTINUE = "pyriver:sequence_continue"
_seq_json = msgspec.json.Encoder(order="deterministic").encode


def sequence_metadata(args: JobArgs) -> dict[str, Any] | None:
    """The metadata that puts a job in its sequence (None: not in one).

    Calls the args' ``sequence_opts()``; anything wrong is the insert's error,
    raised before anything is written.
    """
    kind = type(args).kind
    try:
        opts = args.sequence_opts()
    except Exception as exc:
        raise InvalidOptsError(
            f"sequence_opts() of kind {kind!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if opts is None:
        return None
    if not isinstance(opts, SequenceOpts):
        raise InvalidOptsError(
            f"sequence_opts() of kind {kind!r} must return a SequenceOpts or None, "
            f"got {type(opts).__name__}"
        )
    if opts.by:
        missing = [f for f in opts.by if not hasattr(args, f)]
        if missing:
            raise InvalidOptsError(
                f"SequenceOpts.by of kind {kind!r} names fields the args lack: {missing}"
            )
        key: Any = [getattr(args, f) for f in opts.by]
    else:
        key = opts.key
    try:
        text = _seq_json([opts.name or kind, key]).decode()
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidOptsError(
            f"the sequence key of a {kind!r} job cannot be encoded as JSON: {exc}"
        ) from None
    out: dict[str, Any] = {SEQUENCE_KEY: text}
    if opts.continue_on_failure:
        out[SEQUENCE_CONTINUE] = True
    return out
