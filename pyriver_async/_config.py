"""Settings: a queue's (public :class:`QueueConfig`) and a client's (:class:`ClientConfig`),
validated once at construction, defaults written once, one duration converter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ._errors import ConfigError, typed_init_errors
from ._flow import KeySpec, KindLimits, RateLimit, validate_queue_flow

__all__ = ["POOLERS", "ClientConfig", "QueueConfig", "to_seconds", "to_timeout"]

#: What ``Client(pooler=...)`` accepts: None (straight to PostgreSQL, or a pooler in
#: session mode) or ``"transaction"`` (PgBouncer's pool_mode=transaction and the like).
POOLERS = (None, "transaction")


def to_seconds(
    value: timedelta | float | None, what: str, *, allow_none: bool = False, positive: bool = False
) -> float | None:
    """A duration setting (a ``timedelta`` or a number of seconds) as float seconds."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{what} must be set")
    if isinstance(value, timedelta):
        s = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    else:
        s = float(value)
    if math.isnan(s) or s < 0:
        raise ConfigError(f"{what} must not be negative, got {value!r}")
    if positive and s == 0:
        raise ConfigError(f"{what} must be positive")
    return s


def to_timeout(value: timedelta | float | None, what: str) -> timedelta | None:
    """A job timeout: positive, or None for none."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        t = value
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a timedelta, a number of seconds or None")
    else:
        try:
            t = timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise ConfigError(f"{what} is out of range: {value!r}") from None
    if t <= timedelta(0):
        raise ConfigError(f"{what} must be positive (use None for no timeout)")
    return t


def _int_in(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an int from {low} to {high}, got {value!r}")
    return value


@typed_init_errors(ConfigError)
@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Settings of one queue this client works.

    - ``max_workers``: how many of its jobs run at once in this process (the local
      limit).
    - ``ephemeral``: jobs of this queue that complete here are deleted instead of kept
      as ``completed`` rows (as ``InsertOpts(ephemeral=True)`` does for one job).
    - ``max_threads``: of those, how many blocking (plain ``def``) workers run at once
      in threads (default ``None``: as many as ``max_workers``, so a claimed job never
      waits for a thread; lower it to bound the threads of a queue that mixes kinds).

    Flow control (``docs/flow-control.md``), enforced exactly across processes by every
    client of the queue that configures it:

    - ``global_limit``: at most this many of the queue's jobs run at once, cluster-wide.
    - ``partition_by`` / ``partition_limit``: at most ``partition_limit`` running per
      key (args fields such as ``("customer_id",)``, a :class:`PartitionKey`, or a
      function of the job).
    - ``rate_limit``: a :class:`RateLimit` on the queue's job starts.
    - ``fair``: keys of ``partition_by`` take turns (True, or a mapping of key to weight).
    - ``kinds``: limits of one kind of job in the queue: ``{"export": KindLimits(...)}``.
    - ``registered_kinds_only`` (default True): claim only jobs of the kinds this
      client has workers for, so that during a rolling deploy an old worker leaves a
      new kind to the new workers instead of failing it.
    """

    max_workers: int = 100
    ephemeral: bool = False
    # -- blocking workers (issue 19) --
    max_threads: int | None = None
    # -- flow control (issue 21; _flow.py, _claim.py) --
    global_limit: int | None = None
    partition_by: KeySpec | None = None
    partition_limit: int | None = None
    rate_limit: RateLimit | None = None
    fair: bool | Mapping[Any, int] = False
    kinds: Mapping[Any, KindLimits] = field(default_factory=dict)
    registered_kinds_only: bool = True

    def __post_init__(self) -> None:
        _int_in(self.max_workers, "max_workers", 1, 10_000)
        if not isinstance(self.ephemeral, bool):
            raise ConfigError(f"ephemeral must be True or False, got {self.ephemeral!r}")
        if self.max_threads is not None:
            _int_in(self.max_threads, "max_threads", 1, 10_000)
        validate_queue_flow(self)

    @property
    def thread_limit(self) -> int:
        """How many blocking jobs of this queue run at once."""
        return self.max_threads if self.max_threads is not None else self.max_workers

    @property
    def has_limits(self) -> bool:
        """Whether any flow limit is set (claims then pass the queue's gate)."""
        return bool(
            self.global_limit
            or self.partition_by is not None
            or self.rate_limit is not None
            or self.kinds
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Every client setting, in seconds, validated (built by ``Client.__init__``)."""

    schema: str = "public"
    job_timeout: timedelta | None = timedelta(seconds=60)
    fetch_cooldown: float = 0.001
    fetch_poll_interval: float = 1.0
    soft_stop_timeout: float | None = 25.0
    hard_stop_timeout: float = 5.0
    completer_flush_interval: float = 0.002
    completer_batch_size: int = 1000
    rescue_stuck_jobs_after: float = 3600.0
    heartbeat_interval: float = 5.0
    dead_client_after: float = 30.0
    retention: Mapping[str, float] = field(
        default_factory=lambda: {
            "completed": 86400.0,
            "cancelled": 86400.0,
            "discarded": 7 * 86400.0,
        }
    )
    leader_ttl: float = 15.0
    vacuum_dead_tuples: int = 100_000
    maintenance: bool = True
    pool_max_size: int = 10
    check_schema: bool = True
    #: Bounds every engine statement and wait for a pool connection (seconds).
    statement_timeout: float = 30.0
    # -- poolers, failover, the vacuum horizon (issue 22) ---------------------------------
    #: ``"transaction"``: the client's connections go through a transaction-mode pooler.
    pooler: str | None = None
    #: A direct connection for LISTEN (when the pool's go through a pooler).
    listen_database_url: str | None = None
    #: The leader warns of a transaction holding the vacuum horizon this long (0: off).
    horizon_warning_after: float = 60.0

    @classmethod
    def build(
        cls,
        *,
        schema: str,
        job_timeout: timedelta | float | None,
        fetch_cooldown: timedelta | float,
        fetch_poll_interval: timedelta | float,
        soft_stop_timeout: timedelta | float | None,
        hard_stop_timeout: timedelta | float,
        completer_flush_interval: timedelta | float,
        completer_batch_size: int,
        rescue_stuck_jobs_after: timedelta | float,
        heartbeat_interval: timedelta | float,
        dead_client_after: timedelta | float,
        completed_job_retention: timedelta | float,
        cancelled_job_retention: timedelta | float,
        discarded_job_retention: timedelta | float,
        leader_ttl: timedelta | float,
        vacuum_dead_tuples: int,
        maintenance: bool,
        pool_max_size: int,
        check_schema: bool,
        statement_timeout: timedelta | float,
        pooler: str | None = None,
        listen_database_url: str | None = None,
        horizon_warning_after: timedelta | float = 60.0,
    ) -> ClientConfig:
        """Validate and convert what a user passed to ``Client(...)``."""

        def secs(value: timedelta | float, what: str, *, positive: bool = False) -> float:
            s = to_seconds(value, what, positive=positive)
            assert s is not None
            return s

        if isinstance(vacuum_dead_tuples, bool) or not isinstance(vacuum_dead_tuples, int):
            raise ConfigError(f"vacuum_dead_tuples must be an int, got {vacuum_dead_tuples!r}")
        if vacuum_dead_tuples < 0:
            raise ConfigError("vacuum_dead_tuples must be 0 (off) or positive")
        if pooler not in POOLERS:
            raise ConfigError(
                f"pooler must be one of {', '.join(repr(p) for p in POOLERS)}, got {pooler!r}"
            )
        if listen_database_url is not None and (
            not isinstance(listen_database_url, str) or not listen_database_url
        ):
            raise ConfigError(
                f"listen_database_url must be a DSN string, got {listen_database_url!r}"
            )
        return cls(
            schema=schema,
            job_timeout=to_timeout(job_timeout, "job_timeout"),
            fetch_cooldown=secs(fetch_cooldown, "fetch_cooldown"),
            fetch_poll_interval=secs(fetch_poll_interval, "fetch_poll_interval", positive=True),
            soft_stop_timeout=to_seconds(soft_stop_timeout, "soft_stop_timeout", allow_none=True),
            hard_stop_timeout=secs(hard_stop_timeout, "hard_stop_timeout"),
            completer_flush_interval=secs(completer_flush_interval, "completer_flush_interval"),
            completer_batch_size=_int_in(completer_batch_size, "completer_batch_size", 1, 100_000),
            rescue_stuck_jobs_after=secs(
                rescue_stuck_jobs_after, "rescue_stuck_jobs_after", positive=True
            ),
            heartbeat_interval=secs(heartbeat_interval, "heartbeat_interval", positive=True),
            dead_client_after=secs(dead_client_after, "dead_client_after", positive=True),
            retention={
                "completed": secs(completed_job_retention, "completed_job_retention"),
                "cancelled": secs(cancelled_job_retention, "cancelled_job_retention"),
                "discarded": secs(discarded_job_retention, "discarded_job_retention"),
            },
            leader_ttl=secs(leader_ttl, "leader_ttl", positive=True),
            vacuum_dead_tuples=vacuum_dead_tuples,
            maintenance=bool(maintenance),
            pool_max_size=_int_in(pool_max_size, "pool_max_size", 1, 10_000),
            check_schema=bool(check_schema),
            statement_timeout=secs(statement_timeout, "statement_timeout", positive=True),
            pooler=pooler,
            listen_database_url=listen_database_url,
            horizon_warning_after=secs(horizon_warning_after, "horizon_warning_after"),
        )
