"""Extending the engine: insert and work middleware, lifecycle hooks, the error handler.

Order of composition (``Client(middleware=[a, b], hooks=[h1, h2], error_handler=f)``):

- **Work middleware** wraps each attempt in the order given, the first outermost:
  ``a(ctx, job, next → b(ctx, job, next → work(ctx, job)))``. The chain is composed
  once per kind when the client starts (kept with the kind's registration), never per
  job. With telemetry on, the consumer span is opened outside every middleware, so a
  middleware's own spans and logs belong to the job's trace.
- **Insert middleware** wraps each ``insert`` / ``insert_many`` call in the same
  order; each sees the whole batch (:class:`InsertBatch`) after validation and
  before anything is written, and may amend it or raise to refuse it (nothing is then
  written). Telemetry's producer span is outermost; the trace context is put in the
  jobs' metadata after every middleware has run.
- **The error handler** runs for every failed attempt, after the work middleware saw
  the exception, before the retry is decided; it may override that decision.
- **Hooks** run after the completer wrote a batch of outcomes, in the order given,
  for what was actually written (a stale outcome the database ignored fires nothing).

Middleware and hooks are duck-typed against the Protocols below; :class:`Middleware`
and :class:`Hook` are convenient bases whose methods do nothing.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from ._args import InsertOpts, JobArgs, is_reserved_metadata_key
from ._errors import ConfigError, InvalidOptsError
from ._insert_params import encode_json
from ._job import AttemptError, Job, JobState

if TYPE_CHECKING:
    from ._context import JobContext
    from ._driver import InsertParams
    from ._insert import InsertResult

__all__ = [
    "ErrorHandler",
    "ErrorOverride",
    "Hook",
    "HookEvent",
    "HookSet",
    "InsertBatch",
    "InsertMiddleware",
    "JobInsert",
    "Middleware",
    "WorkFn",
    "WorkMiddleware",
    "compose_insert",
    "compose_work",
    "split_middleware",
]

log = logging.getLogger("pyriver_async.middleware")

WorkFn = Callable[["JobContext", Job[Any]], Awaitable[None]]
WorkNext = Callable[[], Awaitable[None]]
InsertNext = Callable[[], Awaitable[list["InsertResult"]]]
InsertFn = Callable[["InsertBatch"], Awaitable[list["InsertResult"]]]


# -- work middleware -----------------------------------------------------------------


@runtime_checkable
class WorkMiddleware(Protocol):
    """``async def mw(ctx, job, call_next) -> None``: wraps one attempt.

    ``await call_next()`` runs the rest of the chain and the worker; what it raises
    (the job's exception, ``JobSnooze``, ``JobCancel``, a cancellation) passes through
    the middleware, which may observe it, re-raise it or (rarely) swallow it, making
    the attempt a success. Not calling ``call_next`` skips the job's work.
    """

    async def __call__(self, ctx: JobContext, job: Job[Any], call_next: WorkNext) -> None: ...


@runtime_checkable
class InsertMiddleware(Protocol):
    """An object with ``async def insert(self, batch, call_next) -> list[InsertResult]``.

    ``batch`` holds every job of the call, validated; amend it (per job through
    ``batch.jobs``, or for all at once with ``batch.add_metadata``), then
    ``return await call_next()``. Raise to refuse the whole call: nothing is written.
    """

    async def insert(self, batch: InsertBatch, call_next: InsertNext) -> list[InsertResult]: ...


class Middleware:
    """A base for middleware objects that take part in inserts, work, or both.

    Override ``insert`` and/or ``work``; the one left alone adds no layer.
    """

    async def insert(self, batch: InsertBatch, call_next: InsertNext) -> list[InsertResult]:
        return await call_next()

    async def work(self, ctx: JobContext, job: Job[Any], call_next: WorkNext) -> None:
        await call_next()


def _overrides(obj: object, name: str) -> bool:
    fn = getattr(type(obj), name, None)
    return fn is not None and fn is not getattr(Middleware, name)


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def split_middleware(
    middleware: Sequence[object],
) -> tuple[list[InsertMiddleware], list[WorkMiddleware]]:
    """Sort ``Client(middleware=...)`` into insert and work middleware, in order.

    An object with an ``insert`` method takes part in inserts; one with a ``work``
    method, or a plain ``async def (ctx, job, call_next)``, in work.
    """
    inserts: list[InsertMiddleware] = []
    works: list[WorkMiddleware] = []
    for m in middleware:
        has_insert = callable(getattr(m, "insert", None)) and (
            not isinstance(m, Middleware) or _overrides(m, "insert")
        )
        has_work = callable(getattr(m, "work", None)) and (
            not isinstance(m, Middleware) or _overrides(m, "work")
        )
        if has_insert:
            if not _is_async(m.insert):  # type: ignore[attr-defined]
                raise ConfigError(f"middleware {m!r}: insert() must be an `async def` method")
            inserts.append(m)  # type: ignore[arg-type]
        if has_work:
            work = m.work  # type: ignore[attr-defined]
            if not _is_async(work):
                raise ConfigError(f"middleware {m!r}: work() must be an `async def` method")
            works.append(work)
        if isinstance(m, Middleware) or has_insert or has_work:
            continue
        if callable(m) and _is_async(m):
            works.append(m)
            continue
        raise ConfigError(
            f"middleware {m!r} is neither `async def (ctx, job, call_next)` nor an object "
            "with async insert()/work() methods"
        )
    return inserts, works


def _layer(mw: WorkMiddleware, inner: WorkFn) -> WorkFn:
    async def run(ctx: JobContext, job: Job[Any]) -> None:
        await mw(ctx, job, partial(inner, ctx, job))

    return run


def compose_work(middleware: Sequence[WorkMiddleware], work: WorkFn) -> WorkFn:
    """The worker wrapped by ``middleware`` (first outermost); ``work`` itself when none."""
    fn = work
    for mw in reversed(middleware):
        fn = _layer(mw, fn)
    return fn


def _insert_layer(mw: InsertMiddleware, inner: InsertFn) -> InsertFn:
    async def run(batch: InsertBatch) -> list[InsertResult]:
        return await mw.insert(batch, partial(inner, batch))

    return run


async def _write_batch(batch: InsertBatch) -> list[InsertResult]:
    return await batch._write()


def compose_insert(middleware: Sequence[InsertMiddleware]) -> InsertFn | None:
    """The insert middleware chain (first outermost) ending in the batch's own write;
    None without middleware. Composed once by the client."""
    if not middleware:
        return None
    fn: InsertFn = _write_batch
    for mw in reversed(middleware):
        fn = _insert_layer(mw, fn)
    return fn


# -- the batch insert middleware sees ---------------------------------------------------

_metadata_decoder = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder(order="deterministic").encode


class JobInsert:
    """One job of an :class:`InsertBatch`, as it will be written; assign to amend it.

    ``queue``, ``priority``, ``max_attempts``, ``scheduled_at``, ``tags`` and
    ``metadata`` (a dict, changed in place or replaced) are checked as
    :class:`InsertOpts` checks them once the middleware chain hands the batch on.
    A unique job keeps the unique key its options gave before any middleware ran.
    """

    __slots__ = (
        "_engine_keys",
        "_metadata",
        "_params",
        "max_attempts",
        "priority",
        "queue",
        "scheduled_at",
        "tags",
    )

    def __init__(self, params: InsertParams) -> None:
        self._params = params
        self.queue: str = params.queue
        self.priority: int = params.priority
        self.max_attempts: int = params.max_attempts
        self.scheduled_at: datetime | None = params.scheduled_at
        self.tags: list[str] = list(params.tags)
        self._metadata: dict[str, Any] | None = None
        # Keys the engine set (pyriver:ephemeral...): kept out of what middleware sees
        # and edits, so the user's keys are checked as InsertOpts checks them and the
        # engine's come back unchanged.
        self._engine_keys: dict[str, Any] = {}

    @property
    def args(self) -> JobArgs:
        a: JobArgs = self._params.args
        return a

    @property
    def kind(self) -> str:
        return self._params.kind

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            raw = self._params.metadata
            meta: dict[str, Any] = _metadata_decoder.decode(raw) if raw != "{}" else {}
            self._engine_keys = {k: meta.pop(k) for k in list(meta) if is_reserved_metadata_key(k)}
            self._metadata = meta
        return self._metadata

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        self.metadata  # noqa: B018 - sets the engine's keys aside, as the getter does
        self._metadata = dict(value)

    def _apply(self) -> None:
        p = self._params
        changed = (
            self.queue != p.queue
            or self.priority != p.priority
            or self.max_attempts != p.max_attempts
            or self.scheduled_at != p.scheduled_at
            or list(p.tags) != self.tags
        )
        if changed or self._metadata is not None:
            opts = InsertOpts(
                queue=self.queue,
                priority=self.priority,
                max_attempts=self.max_attempts,
                scheduled_at=self.scheduled_at,
                tags=self.tags,
                metadata=self._metadata,
            )
            p.queue = self.queue
            p.priority = self.priority
            p.max_attempts = self.max_attempts
            p.scheduled_at = self.scheduled_at
            p.tags = list(opts.tags or ())
        if self._metadata is not None:
            p.metadata = _encode_metadata({**self._metadata, **self._engine_keys}, p.kind)


def _encode_metadata(metadata: Mapping[str, Any], kind: str) -> str:
    raw, why = encode_json(dict(metadata))
    if raw is None:
        raise InvalidOptsError(f"metadata of a {kind!r} job cannot be stored: {why}")
    return raw.decode()


def merge_metadata(metadata: str, extra: str) -> str:
    """The JSON object ``metadata`` with the keys of the JSON object ``extra`` set."""
    if metadata == "{}":
        return extra
    merged = _metadata_decoder.decode(metadata)
    merged.update(_metadata_decoder.decode(extra))
    return _encode(merged).decode()


class InsertBatch:
    """The jobs of one ``insert`` (one job) or ``insert_many`` call, validated, in order.

    - ``len(batch)``, ``batch.args``: what is being inserted;
    - ``batch.jobs``: a :class:`JobInsert` per job, to amend one job's options or
      metadata (made on first access: a middleware that never looks costs nothing);
    - ``batch.add_metadata({...})``: set keys in every job's metadata at once (encoded
      once: the cheap way to stamp a tenant or a request id on a large batch);
    - ``batch.in_transaction``: whether a transaction was open on ``conn`` as the
      insert began. False for an insert without ``conn``, in autocommit mode
      (committed at once), and also where the library opens the caller's transaction
      at the first statement (psycopg outside autocommit, SQLAlchemy's autobegin: the
      job joins it and the caller commits); see :meth:`Client.insert`.
    """

    __slots__ = ("_engine_extra", "_extra", "_jobs", "_params", "_write", "in_transaction")

    def __init__(
        self,
        params: list[InsertParams],
        write: Callable[[], Awaitable[list[InsertResult]]],
        *,
        in_transaction: bool = False,
    ) -> None:
        self._params = params
        self._write = write
        self._jobs: list[JobInsert] | None = None
        self._extra: dict[str, Any] = {}
        self._engine_extra: dict[str, Any] = {}
        self.in_transaction = in_transaction

    def __len__(self) -> int:
        return len(self._params)

    @property
    def args(self) -> list[JobArgs]:
        return [p.args for p in self._params]

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self._params}

    @property
    def queues(self) -> set[str]:
        if self._jobs is not None:
            return {j.queue for j in self._jobs}
        return {p.queue for p in self._params}

    @property
    def jobs(self) -> list[JobInsert]:
        if self._jobs is None:
            self._jobs = [JobInsert(p) for p in self._params]
        return self._jobs

    def add_metadata(self, values: Mapping[str, Any]) -> None:
        """Set these keys in the metadata of every job of the batch (reserved keys,
        as :class:`InsertOpts` lists them, are refused)."""
        reserved = sorted(
            str(k) for k in values if not isinstance(k, str) or is_reserved_metadata_key(k)
        )
        if reserved:
            raise InvalidOptsError(f"metadata keys {reserved} are reserved; use other names")
        self._extra.update(values)

    def _add_engine_metadata(self, key: str, value: Any) -> None:
        """The engine's own keys (trace context), set after every check."""
        self._engine_extra[key] = value

    def _apply(self) -> list[InsertParams]:
        """Write the middleware's amendments into the params, checked; return them."""
        params = self._params
        if self._jobs is not None:
            for j in self._jobs:
                j._apply()
        extra = {**self._extra, **self._engine_extra}
        if extra:
            raw = _encode_metadata(extra, "batch")
            for p in params:
                p.metadata = merge_metadata(p.metadata, raw)
        return params


# -- the error handler -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorOverride:
    """What an error handler may decide instead of the usual retry policy.

    ``ErrorOverride(retry_at=when)``: run again at ``when`` (timezone-aware), while
    attempts remain (the last attempt still ends ``discarded``);
    ``ErrorOverride(discard=True)``: discard the job now, attempts left or not.
    """

    retry_at: datetime | None = None
    discard: bool = False

    def __post_init__(self) -> None:
        if (self.retry_at is None) == (not self.discard):
            raise ConfigError("ErrorOverride takes retry_at=datetime or discard=True (one)")
        if self.retry_at is not None and (
            not isinstance(self.retry_at, datetime) or self.retry_at.utcoffset() is None
        ):
            raise ConfigError("ErrorOverride.retry_at must be a timezone-aware datetime")


class ErrorHandler(Protocol):
    """``def handler(job, exc) -> ErrorOverride | None`` (or ``async def``).

    Called for every failed attempt: the exception a job raised (``SystemExit``
    and other ``BaseException`` subclasses included), :class:`JobTimeoutError`,
    :class:`InvalidArgsError` for args that do not decode (``job.args`` is then the
    plain JSON), :class:`UnknownKindError` for a kind with no worker here. Return
    ``None`` for the usual retry, or an :class:`ErrorOverride`. A handler that raises
    is logged and ignored; an async one is given ``ERROR_HANDLER_TIMEOUT`` seconds.
    """

    def __call__(
        self, job: Job[Any], exc: BaseException
    ) -> ErrorOverride | Awaitable[ErrorOverride | None] | None: ...


# -- hooks -------------------------------------------------------------------------------


class HookEvent(msgspec.Struct, frozen=True):
    """What a hook receives: one attempt's outcome, as the completer wrote it.

    - ``job``: the job as its attempt saw it (``job.state`` is still ``running``);
    - ``state``: the state written (``completed``, ``retryable``, ``discarded``,
      ``cancelled``, ``scheduled``/``available`` for a snooze or a job given back);
    - ``error``: the error recorded for this attempt, if any;
    - ``exception``: the exception behind it when this process saw one;
    - ``output``: what the job recorded with ``ctx.record_output`` (decoded JSON);
    - ``scheduled_at``: when it runs next (retried, snoozed or given back).
    """

    job: Job[Any]
    state: JobState
    error: AttemptError | None = None
    exception: BaseException | None = None
    output: Any = None
    scheduled_at: datetime | None = None


HookFn = Callable[[HookEvent], Awaitable[None] | None]

# The lifecycle points, as method names of a hook.
HOOK_POINTS = (
    "on_completed",
    "on_failed",
    "on_discarded",
    "on_snoozed",
    "on_cancelled",
    "on_interrupted",
)


class Hook:
    """A base for hooks: override the points you need (sync or ``async def``).

    - ``on_completed``: the job succeeded;
    - ``on_failed``: the attempt failed and the job will be retried;
    - ``on_discarded``: it failed for the last time (or was discarded);
    - ``on_snoozed``: it raised ``JobSnooze``;
    - ``on_cancelled``: ``JobCancel`` or ``client.cancel``;
    - ``on_interrupted``: this client's shutdown gave it back (its attempt restored).

    ``kinds``: the job kinds this hook is for (``None``: every kind).

    A hook runs after the outcome is written, in the completer's task: keep it quick.
    An ``async def`` hook is run as a task of its own; shutdown waits for it up to
    ``hard_stop_timeout``, then cancels it and waits as long again, then abandons it
    (logged) if it ignores cancellation. A synchronous hook must never block. A hook
    that raises is logged (first time with its traceback, then at most once a
    minute) and never stops the engine.

    Hooks are best-effort notifications, not a record: normally a hook is called once
    for each outcome written, but when the reply to a write is lost (the connection
    dropped after the server committed) the completer writes again, and then a hook
    may be called twice for one outcome, or never for an outcome that the later write
    found already recorded (its row no longer running) and so ignored. A process that
    dies, or a shutdown that abandons a hook, also loses calls. Make hooks idempotent,
    and read the job (``client.get``) where the outcome must be known for sure.
    """

    kinds: Collection[str] | None = None

    def on_completed(self, event: HookEvent) -> Awaitable[None] | None:
        return None

    def on_failed(self, event: HookEvent) -> Awaitable[None] | None:
        return None

    def on_discarded(self, event: HookEvent) -> Awaitable[None] | None:
        return None

    def on_snoozed(self, event: HookEvent) -> Awaitable[None] | None:
        return None

    def on_cancelled(self, event: HookEvent) -> Awaitable[None] | None:
        return None

    def on_interrupted(self, event: HookEvent) -> Awaitable[None] | None:
        return None


class _Registered:
    __slots__ = ("fn", "kinds", "last_log", "name", "suppressed")

    def __init__(self, fn: HookFn, kinds: frozenset[str] | None, name: str) -> None:
        self.fn = fn
        self.kinds = kinds
        self.name = name
        self.last_log = 0.0
        self.suppressed = 0


class HookSet:
    """Hooks by lifecycle point, each with the kinds it is for; built once."""

    LOG_EVERY = 60.0

    def __init__(self, hooks: Sequence[object]) -> None:
        self.by_point: dict[str, list[_Registered]] = {p: [] for p in HOOK_POINTS}
        for h in hooks:
            kinds_attr = getattr(h, "kinds", None)
            if kinds_attr is not None and (
                isinstance(kinds_attr, str) or not all(isinstance(k, str) for k in kinds_attr)
            ):
                raise ConfigError(f"hook {h!r}: kinds must be a collection of kind names")
            kinds = frozenset(kinds_attr) if kinds_attr is not None else None
            found = False
            for point in HOOK_POINTS:
                fn = getattr(h, point, None)
                if fn is None:
                    continue
                if not callable(fn):
                    raise ConfigError(f"hook {h!r}: {point} is not callable")
                found = True
                if isinstance(h, Hook) and getattr(type(h), point) is getattr(Hook, point):
                    continue  # the base's no-op: no call per job
                name = f"{type(h).__qualname__}.{point}"
                self.by_point[point].append(_Registered(fn, kinds, name))
            if not found:
                raise ConfigError(
                    f"hook {h!r} has none of the methods {', '.join(HOOK_POINTS)} (see Hook)"
                )

    def __bool__(self) -> bool:
        return any(self.by_point.values())

    def wants(self, point: str, kind: str) -> list[_Registered]:
        return [r for r in self.by_point[point] if r.kinds is None or kind in r.kinds]

    def failed(self, reg: _Registered, exc: BaseException, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if reg.last_log == 0.0:
            log.error("hook %s failed; the engine goes on", reg.name, exc_info=exc, extra=fields)
            reg.last_log = now
        elif now - reg.last_log >= self.LOG_EVERY:
            log.error(
                "hook %s failed %d more times (last: %s: %s)",
                reg.name,
                reg.suppressed + 1,
                type(exc).__name__,
                exc,
                extra=fields,
            )
            reg.last_log = now
            reg.suppressed = 0
        else:
            reg.suppressed += 1
