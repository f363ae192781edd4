"""Periodic jobs: cron or interval schedules, enqueued by the leader once per run.

What a user writes::

    PeriodicJob("0 9 * * MON-FRI", MakeReport, tz=ZoneInfo("Europe/Paris"))
    PeriodicJob(timedelta(minutes=5), Ping, run_on_start=True)

and passes them to ``Client(periodic_jobs=[...])``, or adds them while the client
runs with ``client.periodic_jobs.add(job)`` (which returns a handle for ``remove``).

Schedules
    A cron string (five fields, or anything croniter reads) is evaluated in ``tz``
    (default UTC). Daylight saving: a wall time skipped by a spring-forward runs at
    the moment the clock jumps (``30 2 * * *`` runs at 03:00 in Paris that day); a wall
    time repeated by a fall-back runs once, at its first occurrence, unless the hour
    field is ``*`` (``0 * * * *`` runs in both 02:00 hours, an hour apart, as real time
    passes). An interval (``timedelta`` or seconds) runs at every multiple of itself
    counted from the Unix epoch (UTC): every 5 minutes means :00, :05, :10..., so that
    every process computes the same run times.

Once per run, across the cluster
    Only the leader inserts runs. Each run is inserted with a unique key made of the
    periodic job's id and the run's scheduled time, valid in every job state, so a
    second leader, a restarted one, or a retry of a failed insert finds the run already
    there and does not double it. Each run carries ``river:periodic_job_id`` (and
    ``pyriver:periodic_run_at``) in its metadata.

Catch-up rule (leader changes and restarts)
    When a client becomes leader, for each periodic job it inserts the most recent run
    whose time has passed, if that run is at most ``CATCH_UP_WINDOW`` (one hour) old,
    or less when a finalized-job retention is shorter (a run already deleted by the
    cleaner must not come back). If the previous leader inserted it, the unique key
    makes this a no-op; if it was missed while no leader was up, it runs now. Older
    missed runs are not replayed, and when the leader falls behind (a long pause),
    only the latest due run is inserted. A job added at runtime starts with its next
    run (there is nothing it could have missed). ``run_on_start`` inserts one run each
    time a leader starts the job, instead of the catch-up run.

Ids
    ``id`` names the periodic job across processes and restarts: it goes into each run's
    unique key and metadata. The default is ``"<kind>@<schedule>"``, the schedule being
    the cron string with single spaces plus `` <tz>`` when a time zone other than UTC is
    given, or ``every <n>s``, for example ``"send_report@0 9 * * MON-FRI Europe/Paris"``
    or ``"ping@every 300s"``. Give an explicit id when two periodic jobs share a kind
    and a schedule, or to keep a job's identity when its schedule changes.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import msgspec
from croniter import croniter

from ._args import InsertOpts, JobArgs
from ._driver import InsertParams
from ._errors import ConfigError, InvalidArgsError

__all__ = [
    "CATCH_UP_WINDOW",
    "CronSchedule",
    "IntervalSchedule",
    "PeriodicJob",
    "PeriodicJobHandle",
    "PeriodicJobs",
    "as_run",
    "periodic_unique_key",
    "utc_text",
]

CATCH_UP_WINDOW = 3600.0
# Every state: a run, once inserted, is never inserted again while its row exists.
ALL_STATES_MASK = 0xFF
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def utc_text(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class IntervalSchedule:
    """Runs at every multiple of ``every`` since the Unix epoch (UTC)."""

    def __init__(self, every: timedelta) -> None:
        if every < _MICRO:
            raise ConfigError(f"a periodic interval must be positive, got {every!r}")
        self.every = every

    def describe(self) -> str:
        return f"every {self.every.total_seconds():g}s"

    def latest_at_or_before(self, t: datetime) -> datetime:
        return _EPOCH + ((t - _EPOCH) // self.every) * self.every

    def next_after(self, t: datetime) -> datetime:
        return self.latest_at_or_before(t) + self.every


class CronSchedule:
    """A cron expression evaluated in a time zone (see the module docstring for DST)."""

    def __init__(self, expr: str, tz: tzinfo | None) -> None:
        if not isinstance(expr, str) or not croniter.is_valid(expr):
            raise ConfigError(f"invalid cron expression {expr!r}")
        self.expr = " ".join(expr.split())
        self.tz: tzinfo = tz if tz is not None else UTC
        fields = self.expr.split()
        if self.expr.startswith("@"):
            self._hour_is_wildcard = self.expr.lower() == "@hourly"
        else:
            self._hour_is_wildcard = len(fields) > 1 and fields[1] == "*"

    def describe(self) -> str:
        name = str(self.tz)
        return self.expr if name in ("UTC", "UTC+00:00", "Etc/UTC") else f"{self.expr} {name}"

    def _is_repeated_wall_time(self, t: datetime) -> bool:
        """True for the second occurrence of a wall time repeated by a fall-back."""
        local = t.astimezone(self.tz)
        if local.fold != 1:
            return False
        naive = local.replace(tzinfo=None)
        first = naive.replace(tzinfo=self.tz, fold=0).utcoffset()
        second = naive.replace(tzinfo=self.tz, fold=1).utcoffset()
        return first != second

    def _accept(self, t: datetime) -> bool:
        return self._hour_is_wildcard or not self._is_repeated_wall_time(t)

    def next_after(self, t: datetime) -> datetime:
        """The first run strictly after ``t`` (UTC)."""
        it = croniter(self.expr, t.astimezone(self.tz))
        for _ in range(10_000):
            c: datetime = it.get_next(datetime)
            c = c.astimezone(UTC)
            # croniter can hand back the jump moment of a spring-forward more than once.
            if c > t and self._accept(c):
                return c
        raise ConfigError(f"cron expression {self.expr!r} never fires")  # pragma: no cover

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        """The last run at or before ``t`` (UTC), or None if there is none in 400 days."""
        # croniter's previous compares wall times, so in a repeated hour it can land a
        # day early; it only gives a starting point, from which next_after walks
        # forward. Its previous is strictly before the start, in whole seconds.
        start = t.astimezone(self.tz).replace(microsecond=0) + timedelta(seconds=1)
        it = croniter(self.expr, start)
        horizon = t - timedelta(days=400)
        for _ in range(1000):
            raw: datetime = it.get_prev(datetime)
            raw = raw.astimezone(UTC)
            if raw < horizon:
                return None
            if raw > t:
                continue
            best: datetime | None = None
            run = self.next_after(raw - _MICRO)
            for _ in range(100_000):
                if run > t:
                    break
                best = run
                run = self.next_after(run)
            if best is not None:
                return best
            # raw is a time this schedule skips (a repeated wall time): look further back.
        return None  # pragma: no cover


Schedule = CronSchedule | IntervalSchedule


class PeriodicJob:
    """A job inserted on a schedule, by the leader, once per run.

    - ``schedule``: a cron string (evaluated in ``tz``, default UTC), or an interval as
      a ``timedelta`` or seconds.
    - ``args_factory``: called for each run, returns the ``JobArgs`` to insert. A
      ``JobArgs`` class whose fields all have defaults works as is.
    - ``opts``: ``InsertOpts`` for each run (queue, priority, tags, metadata...). Each
      run is already unique, so ``opts.unique`` is refused.
    - ``run_on_start``: also insert one run whenever a leader starts this job.
    - ``id``: stable name across processes (default: ``"<kind>@<schedule>"``, see the
      module docstring).

    The full rules (DST, catch-up after a leader change) are in this module's docstring.
    """

    def __init__(
        self,
        schedule: str | timedelta | float,
        args_factory: Callable[[], JobArgs],
        *,
        opts: InsertOpts | None = None,
        run_on_start: bool = False,
        tz: tzinfo | None = None,
        id: str | None = None,
    ) -> None:
        if tz is not None and not isinstance(tz, tzinfo):
            raise ConfigError(f"tz must be a tzinfo such as ZoneInfo('Europe/Paris'), got {tz!r}")
        self.schedule: Schedule
        if isinstance(schedule, str):
            self.schedule = CronSchedule(schedule, tz)
        elif isinstance(schedule, timedelta):
            if tz is not None:
                raise ConfigError("tz applies to cron schedules; an interval needs none")
            self.schedule = IntervalSchedule(schedule)
        elif isinstance(schedule, int | float) and not isinstance(schedule, bool):
            if tz is not None:
                raise ConfigError("tz applies to cron schedules; an interval needs none")
            if not math.isfinite(schedule):
                raise ConfigError(f"a periodic interval must be finite, got {schedule!r}")
            self.schedule = IntervalSchedule(timedelta(seconds=schedule))
        else:
            raise ConfigError(
                "schedule must be a cron string, a timedelta or a number of seconds, "
                f"got {schedule!r}"
            )
        if not callable(args_factory):
            raise ConfigError("args_factory must be callable (a JobArgs class or a function)")
        if opts is not None:
            if not isinstance(opts, InsertOpts):
                raise ConfigError(f"opts must be an InsertOpts, got {type(opts).__name__}")
            if opts.unique is not None:
                raise ConfigError(
                    "a periodic job's runs are already unique (one per scheduled time); "
                    "remove opts.unique"
                )
        if id is not None and (not isinstance(id, str) or not id.strip()):
            raise ConfigError(f"a periodic job id must be a non-empty string, got {id!r}")
        self.args_factory = args_factory
        self.opts = opts
        self.run_on_start = bool(run_on_start)
        self._explicit_id = id
        kind = getattr(args_factory, "kind", None) if isinstance(args_factory, type) else None
        self._id: str | None = (
            id
            if id is not None
            else (f"{kind}@{self.schedule.describe()}" if isinstance(kind, str) else None)
        )

    @property
    def id(self) -> str:
        """The stable id; a factory that is not a JobArgs class is called once to learn the kind."""
        if self._id is None:
            self._resolve_id(self.args_factory())
        assert self._id is not None
        return self._id

    def _resolve_id(self, args: object) -> None:
        if self._id is None:
            kind = getattr(type(args), "kind", None)
            if not isinstance(kind, str):
                raise InvalidArgsError(
                    f"the args_factory of a periodic job returned {type(args).__name__}, "
                    "not a JobArgs"
                )
            self._id = f"{kind}@{self.schedule.describe()}"

    @property
    def known_id(self) -> str | None:
        """The id when it is known without calling the factory."""
        return self._id

    def __repr__(self) -> str:
        return f"PeriodicJob({self._id or self.schedule.describe()!r})"


@dataclass(frozen=True, slots=True)
class PeriodicJobHandle:
    """What :meth:`PeriodicJobs.add` returns; give it to :meth:`PeriodicJobs.remove`."""

    serial: int
    job: PeriodicJob = field(compare=False)


_serials = itertools.count(1)


class PeriodicJobs:
    """The periodic jobs of a client; change it at any time, the leader follows at once.

    ``handle = client.periodic_jobs.add(PeriodicJob(...))``,
    ``client.periodic_jobs.remove(handle)``. Call these from the event loop's thread.
    Only the leader inserts runs, from its own collection: give every client the same
    periodic jobs, so that whichever leads inserts them.
    """

    def __init__(self, jobs: Iterable[PeriodicJob] = ()) -> None:
        self._jobs: dict[int, PeriodicJobHandle] = {}
        self._listeners: list[Callable[[], None]] = []
        for job in jobs:
            self.add(job)

    def add(self, job: PeriodicJob) -> PeriodicJobHandle:
        """Add a periodic job; returns its handle. Its first run is its next scheduled one."""
        if not isinstance(job, PeriodicJob):
            raise ConfigError(f"expected a PeriodicJob, got {type(job).__name__}")
        known = job.known_id
        if known is not None:
            for h in self._jobs.values():
                if h.job.known_id == known:
                    raise ConfigError(
                        f"two periodic jobs have the id {known!r}; give one an explicit id="
                    )
        handle = PeriodicJobHandle(next(_serials), job)
        self._jobs[handle.serial] = handle
        self._changed()
        return handle

    def add_many(self, jobs: Iterable[PeriodicJob]) -> list[PeriodicJobHandle]:
        return [self.add(j) for j in jobs]

    def remove(self, handle: PeriodicJobHandle) -> bool:
        """Remove a periodic job (no more runs are inserted). False if it was not there."""
        if self._jobs.pop(handle.serial, None) is None:
            return False
        self._changed()
        return True

    def clear(self) -> None:
        self._jobs.clear()
        self._changed()

    def handles(self) -> list[PeriodicJobHandle]:
        return list(self._jobs.values())

    def __iter__(self) -> Iterator[PeriodicJob]:
        return iter([h.job for h in self._jobs.values()])

    def __len__(self) -> int:
        return len(self._jobs)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe


def periodic_unique_key(periodic_id: str, run_at: datetime) -> bytes:
    """The unique key of one run: the same in every process that computes it."""
    text = f"&periodic={periodic_id}&at={utc_text(run_at)}"
    return hashlib.sha256(text.encode()).digest()


def as_run(params: InsertParams, periodic_id: str, run_at: datetime) -> InsertParams:
    metadata: dict[str, Any] = msgspec.json.decode(params.metadata) if params.metadata else {}
    metadata["river:periodic_job_id"] = periodic_id
    metadata["pyriver:periodic_run_at"] = utc_text(run_at)
    return msgspec.structs.replace(
        params,
        metadata=msgspec.json.encode(metadata).decode(),
        unique_key=periodic_unique_key(periodic_id, run_at),
        unique_states=ALL_STATES_MASK,
    )
