"""Helpers for the tests of an application that uses pyriver_async (public API).

Inside a test's own transaction (rolled back at the end, never committed):

- :func:`require_inserted` asserts that a job of a kind, with args matching a subset
  and with the given options, was inserted, and returns it;
  :func:`require_not_inserted` asserts the opposite; :func:`inserted_jobs` lists them.

Without a database:

- :func:`work_job` runs the registered worker of a job's kind on given args, as the
  engine would (args decoded from their JSON, the worker's timeout applied), and
  returns how it ended: :class:`WorkResult` (``completed``, ``error``, ``snooze`` or
  ``cancel``).

With real rows, without timing:

- :func:`drain` works every available job of a client's queues (and the jobs those
  jobs insert) once, to completion, writing their outcomes, and returns their events.

:mod:`pyriver_async.testing.db` makes throwaway databases. ``docs/testing.md`` has a
pytest example that is itself a test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .._args import JobArgs
from .._driver.columns import ATTEMPT, ATTEMPTED_AT, ID, QUEUE
from .._driver.connections import InsertConnection
from .._driver.queries import Queries
from .._driver.resolve import executor_for
from .._errors import ConfigError, JobCancel, JobSnooze, UnknownKindError
from .._events import JobEvent
from .._executor import Executor, timeout_error
from .._job import Job, JobState
from .._outcome import CancelReason, Outcome
from .._workers import Workers

if TYPE_CHECKING:
    from .._client import Client
    from .._insert import InsertResult

__all__ = [
    "WorkResult",
    "drain",
    "inserted_jobs",
    "require_inserted",
    "require_not_inserted",
    "work_job",
]

log = logging.getLogger("pyriver_async.testing")

_UNSET: Any = object()


# -- inserted jobs -----------------------------------------------------------------------


def _kind(kind: str | type[JobArgs] | JobArgs) -> str:
    if isinstance(kind, str):
        return kind
    name = getattr(kind, "kind", None)
    if not isinstance(name, str):
        raise TypeError(f"expected a kind, a JobArgs class or JobArgs, got {kind!r}")
    return name


async def inserted_jobs(
    conn: InsertConnection,
    kind: str | type[JobArgs] | None = None,
    *,
    schema: str = "public",
) -> list[Job[Any]]:
    """The jobs ``conn`` sees (its own transaction's included), oldest first; only
    those of ``kind`` when given."""
    from .._control import JobFilter, build_spec, list_jobs

    ex = executor_for(conn, Queries.for_schema(schema))
    f = JobFilter(kinds=[_kind(kind)]) if kind is not None else JobFilter()
    jobs: list[Job[Any]] = []
    cursor: str | None = None
    while True:
        page = await list_jobs(
            ex, build_spec(f, descending=False, limit=1000, cursor=cursor, scan_budget=100_000)
        )
        jobs += page.jobs
        if page.next_cursor is None:
            return jobs
        cursor = page.next_cursor


def _subset(want: Any, got: Any) -> bool:
    """``want`` is found in ``got``: objects by key (recursively), the rest by equality."""
    if isinstance(want, Mapping):
        return isinstance(got, Mapping) and all(
            k in got and _subset(v, got[k]) for k, v in want.items()
        )
    return bool(want == got)


def _matches(job: Job[Any], args: Mapping[str, Any] | None, opts: Mapping[str, Any]) -> bool:
    if args is not None and not _subset(args, msgspec.to_builtins(job.args)):
        return False
    for name, value in opts.items():
        have = getattr(job, name)
        if name == "tags":
            if sorted(have) != sorted(value):
                return False
        elif name == "metadata":
            if not _subset(value, have):
                return False
        elif name == "state":
            if have is not JobState(value):
                return False
        elif have != value:
            return False
    return True


def _describe(jobs: Sequence[Job[Any]]) -> str:
    if not jobs:
        return "none"
    shown = [
        f"job {j.id} args={msgspec.json.encode(j.args).decode()} queue={j.queue!r} "
        f"priority={j.priority} state={j.state.value}"
        for j in jobs[-10:]
    ]
    more = f" (and {len(jobs) - 10} more)" if len(jobs) > 10 else ""
    return "; ".join(shown) + more


async def require_inserted(
    conn: InsertConnection,
    kind: str | type[JobArgs] | JobArgs,
    args: Mapping[str, Any] | JobArgs | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    tags: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    state: JobState | str | None = None,
    scheduled_at: datetime | None = None,
    schema: str = "public",
) -> Job[Any]:
    """Assert that a job of ``kind`` was inserted (``conn`` sees it: typically the
    test's own uncommitted transaction) whose args contain ``args`` (a mapping
    matched as a subset, or JobArgs matched field by field) and whose options equal
    the ones given (``metadata`` as a subset, ``tags`` in any order). Returns the
    newest such job; raises ``AssertionError`` listing the jobs of that kind otherwise.
    """
    name = _kind(kind)
    if args is None and isinstance(kind, JobArgs):
        args = kind
    want = msgspec.to_builtins(args) if isinstance(args, JobArgs) else args
    opts = {
        k: v
        for k, v in {
            "queue": queue,
            "priority": priority,
            "max_attempts": max_attempts,
            "tags": tags,
            "metadata": metadata,
            "state": state,
            "scheduled_at": scheduled_at,
        }.items()
        if v is not None
    }
    jobs = await inserted_jobs(conn, name, schema=schema)
    found = [j for j in jobs if _matches(j, want, opts)]
    if not found:
        wanted = f" with args {want!r}" if want is not None else ""
        wanted += f" and {opts!r}" if opts else ""
        raise AssertionError(
            f"no {name!r} job{wanted} was inserted; {name!r} jobs: {_describe(jobs)}"
        )
    return found[-1]


async def require_not_inserted(
    conn: InsertConnection,
    kind: str | type[JobArgs] | JobArgs,
    args: Mapping[str, Any] | JobArgs | None = None,
    *,
    schema: str = "public",
    **opts: Any,
) -> None:
    """Assert that no job :func:`require_inserted` would find was inserted."""
    try:
        job = await require_inserted(conn, kind, args, schema=schema, **opts)
    except AssertionError:
        return
    raise AssertionError(f"job {job.id} ({job.kind!r}) was inserted: {_describe([job])}")


# -- one job inline ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkResult:
    """How :func:`work_job` ended.

    - ``completed``: the worker returned;
    - ``error``: it raised (``error``), or ran past its timeout (``timed_out``, and
      ``error`` is the :class:`JobTimeoutError` the engine would record). A
      ``TimeoutError`` the job raises itself is not a timeout of the job, as in the
      engine: ``timed_out`` is then False;
    - ``snooze``: it raised ``JobSnooze`` (``snooze`` is the delay);
    - ``cancel``: it raised ``JobCancel`` (``cancel_reason``).
    """

    outcome: Literal["completed", "error", "snooze", "cancel"]
    job: Job[Any]
    error: BaseException | None = None
    timed_out: bool = False
    snooze: timedelta | None = None
    cancel_reason: str = ""


class _NoClient:
    """``ctx.client`` of :func:`work_job` run without ``client=``: no database."""

    def _refuse(self) -> Any:
        raise ConfigError("this job uses ctx.client, which work_job() only has when given client=")

    async def insert(self, *a: Any, **kw: Any) -> InsertResult:
        return self._refuse()  # type: ignore[no-any-return]

    async def insert_many(self, *a: Any, **kw: Any) -> list[InsertResult]:
        return self._refuse()  # type: ignore[no-any-return]

    async def get(self, *a: Any, **kw: Any) -> Job[Any]:
        return self._refuse()  # type: ignore[no-any-return]

    async def cancel(self, *a: Any, **kw: Any) -> Job[Any]:
        return self._refuse()  # type: ignore[no-any-return]

    @property
    def pool(self) -> Any:
        return self._refuse()


async def work_job(
    workers: Workers | Client,
    args: JobArgs,
    *,
    job_id: int = 1,
    attempt: int = 1,
    max_attempts: int = 25,
    queue: str = "default",
    metadata: Mapping[str, Any] | None = None,
    timeout: timedelta | float | None = _UNSET,
    client: Client | None = None,
) -> WorkResult:
    """Run the worker registered for ``args``'s kind on them, as the engine would,
    without a client, a database or polling: the args go through their JSON encoding
    (so what a worker could not decode fails here too), and the worker's timeout
    applies (its own, else ``timeout``, else 60 s; ``None``: none).

    ``workers`` is a :class:`Workers` registry or a Client (its registry and job
    timeout). ``client`` becomes ``ctx.client`` (for a job that inserts follow-ups).
    """
    from .._client import Client as _Client

    if isinstance(workers, _Client):
        client = client or workers
        registry = workers.workers
        default_timeout = workers.config.job_timeout
    else:
        registry = workers
        default_timeout = timedelta(seconds=60)
    if timeout is not _UNSET:
        default_timeout = (
            None
            if timeout is None
            else timeout
            if isinstance(timeout, timedelta)
            else timedelta(seconds=timeout)
        )
    kind = getattr(type(args), "kind", None)
    reg = registry.get(kind) if isinstance(kind, str) else None
    if reg is None:
        raise UnknownKindError(f"no worker is registered for job kind {kind!r}")
    decoded = reg.decoder.decode(msgspec.json.encode(args))
    now = datetime.now(UTC)
    job: Job[Any] = Job(
        id=job_id,
        args=decoded,
        kind=reg.kind,
        queue=queue,
        state=JobState.RUNNING,
        priority=1,
        attempt=attempt,
        max_attempts=max_attempts,
        scheduled_at=now,
        created_at=now,
        attempted_at=now,
        metadata=dict(metadata or {}),
    )
    engine = Executor(_NoClient(), registry, job_timeout=default_timeout, retry_policy=None)
    limit = engine._timeout_for(reg, job)
    from .._context import JobContext

    ctx = JobContext(
        client if client is not None else _NoClient(),
        job_id,
        logging.LoggerAdapter(logging.getLogger("pyriver_async.job"), {"job_id": job_id}),
        now + limit if limit is not None else None,
    )
    deadline = asyncio.timeout(limit.total_seconds() if limit is not None else None)
    try:
        async with deadline:
            await reg.work(ctx, job)
    except JobSnooze as s:
        return WorkResult("snooze", job, snooze=s.delay)
    except JobCancel as c:
        return WorkResult("cancel", job, cancel_reason=c.reason)
    except TimeoutError as exc:
        # Timed out as the engine decides it: the deadline cancelled the job and the
        # job let that cancellation out (asyncio.timeout turned it into this error). A
        # TimeoutError the job raised itself (its own wait_for) is a plain failure.
        if deadline.expired() and isinstance(exc.__cause__, asyncio.CancelledError):
            error = timeout_error(limit, reg.name)
            error.__cause__ = exc
            return WorkResult("error", job, error=error, timed_out=True)
        return WorkResult("error", job, error=exc)
    except Exception as exc:
        return WorkResult("error", job, error=exc)
    return WorkResult("completed", job)


# -- drain ------------------------------------------------------------------------------


class _Runner:
    __slots__ = ("reason", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.reason: CancelReason | None = None

    def cancel(self, reason: CancelReason) -> None:
        self.reason = reason
        if self.task is not None:
            self.task.cancel()


async def drain(client: Client, *, timeout: float = 60.0) -> list[JobEvent]:
    """Work every job available now in ``client``'s queues, and the jobs they make
    available (follow-ups, short snoozes), each once, to completion; write their
    outcomes and return one :class:`JobEvent` per job worked, in the order they ended.

    The client must not be started: this is what ``start()`` would do, without
    producers, timing or polling, for integration tests that want real rows. A job
    that comes back available after it was worked here is given back untouched
    (attempt restored) rather than worked twice. Raises ``TimeoutError`` after
    ``timeout`` seconds.
    """
    if client._started:
        raise ConfigError("drain() works jobs itself: call it on a client that is not started")
    if not client.queues:
        raise ConfigError("drain() needs a client with queues (and their workers)")
    async with asyncio.timeout(timeout):
        return await _drain(client)


async def _drain(client: Client) -> list[JobEvent]:
    from .._completer import Completer

    await client._driver.open()
    db = client._driver.executor()
    cfg = client.config
    engine = Executor(client, client.workers, job_timeout=cfg.job_timeout, retry_policy=None)
    completer = Completer(db, flush_interval=0.001)
    completer.start()
    events: list[JobEvent] = []
    worked: set[int] = set()
    try:
        while True:
            fresh = 0
            for name, qcfg in client.queues.items():
                while True:
                    rows = await db.job_claim(
                        queue=name, limit=qcfg.max_workers, client_id=client.id
                    )
                    if not rows:
                        break
                    again = [r for r in rows if r[ID] in worked]
                    new = [r for r in rows if r[ID] not in worked]
                    for r in again:  # given back, attempt restored
                        back = Outcome.interrupted(r[ID], r[ATTEMPT], r[QUEUE])
                        back.attempted_at = r[ATTEMPTED_AT]
                        completer.add(back)
                    outcomes = await asyncio.gather(*(_run(engine, r) for r in new))
                    for o in outcomes:
                        completer.add(o)
                        worked.add(o.job_id)
                        events.append(
                            JobEvent(
                                job_id=o.job_id, queue=o.queue, state=o.state, attempt=o.attempt
                            )
                        )
                    fresh += len(new)
                    await completer.wait_idle()
                    if not new:
                        break
            if not fresh:
                return events
    finally:
        await completer.stop()
        engine.close()


async def _run(engine: Executor, row: Any) -> Outcome:
    runner = _Runner()
    runner.task = asyncio.current_task()
    outcome = await engine.execute(row, runner)
    outcome.attempted_at = row[ATTEMPTED_AT]  # names the claim, as the producer does
    return outcome
