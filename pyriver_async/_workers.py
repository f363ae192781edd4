"""Workers: what runs a job of each kind, and with which settings."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, overload

import msgspec

from ._args import JobArgs
from ._config import to_timeout
from ._context import JobContext
from ._errors import ConfigError
from ._job import Job

__all__ = ["UNSET", "Registration", "Worker", "Workers", "to_timeout"]

ArgsT = TypeVar("ArgsT", bound=JobArgs)

WorkFn = Callable[[JobContext, Job[ArgsT]], Awaitable[None]]
# A blocking worker: a plain `def`, run in a worker thread (see docs/blocking-workers.md).
BlockingWorkFn = Callable[[JobContext, Job[ArgsT]], None]


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class Worker(Generic[ArgsT]):
    """Base class for a worker with overridable settings.

    ``work`` does the job (``async def``, or a plain ``def`` that runs in a worker
    thread); ``timeout`` may return a per-job timeout (``UNSET``, the
    default, means the client's; ``None`` means none); ``next_retry`` may return when
    a failed job should run again (``None`` means the client's retry policy).
    """

    async def work(self, ctx: JobContext, job: Job[ArgsT]) -> None:  # or a plain def
        raise NotImplementedError

    def timeout(self, job: Job[ArgsT]) -> timedelta | float | None:
        return UNSET  # type: ignore[no-any-return]

    def next_retry(self, job: Job[ArgsT]) -> datetime | None:
        return None


@dataclass(frozen=True, slots=True)
class Registration:
    """A kind's worker and settings. ``work`` is the user's function; the executor
    keeps its own copy with ``work`` wrapped (middleware, a thread for ``blocking``)."""

    args_type: type[JobArgs]
    kind: str
    work: Callable[[JobContext, Job[Any]], Any]
    decoder: msgspec.json.Decoder[Any]
    timeout: Callable[[Job[Any]], timedelta | float | None] | None
    default_timeout: Any  # timedelta | None | UNSET
    next_retry: Callable[[Job[Any]], datetime | None] | None
    name: str
    # A plain `def` worker: run in a thread of its queue's limiter, off the event loop.
    blocking: bool = False


class Workers:
    """The registry of workers a client runs, by job kind."""

    def __init__(self) -> None:
        self._by_kind: dict[str, Registration] = {}

    @overload
    def register(
        self,
        args_type: type[ArgsT],
        work: None = None,
        *,
        timeout: timedelta | float | None = ...,
    ) -> Callable[[WorkFn[ArgsT]], WorkFn[ArgsT]]: ...

    @overload
    def register(
        self,
        args_type: type[ArgsT],
        work: WorkFn[ArgsT] | BlockingWorkFn[ArgsT] | Worker[ArgsT],
        *,
        timeout: timedelta | float | None = ...,
    ) -> WorkFn[ArgsT] | BlockingWorkFn[ArgsT] | Worker[ArgsT]: ...

    def register(
        self,
        args_type: type[ArgsT],
        work: WorkFn[ArgsT] | BlockingWorkFn[ArgsT] | Worker[ArgsT] | None = None,
        *,
        timeout: timedelta | float | None = UNSET,
    ) -> Any:
        """Register the worker of ``args_type``'s kind; usable as a decorator.

        An ``async def`` worker runs on the event loop. A plain ``def`` worker (or a
        ``Worker`` whose ``work`` is a plain ``def``) is *blocking*: it runs in a worker
        thread, at most ``QueueConfig.max_threads`` at once per queue, so blocking
        code (requests, boto3, pandas) never stalls the loop. ``timeout`` overrides
        the client's job timeout for this kind (``None``: no timeout).
        """
        if not (isinstance(args_type, type) and issubclass(args_type, JobArgs)):
            raise ConfigError(f"register() takes a JobArgs subclass, got {args_type!r}")
        kind = getattr(args_type, "kind", None)
        if not kind:
            raise ConfigError(f"{args_type.__name__} has no kind")
        default_timeout = UNSET if timeout is UNSET else to_timeout(timeout, "timeout")

        def add(w: Any) -> Any:
            if kind in self._by_kind:
                raise ConfigError(f"a worker for kind {kind!r} is already registered")
            if isinstance(w, Worker):
                work_fn: Any = w.work
                timeout_fn: Any = w.timeout if type(w).timeout is not Worker.timeout else None
                retry_fn: Any = (
                    w.next_retry if type(w).next_retry is not Worker.next_retry else None
                )
                name = type(w).__qualname__
            elif callable(w):
                work_fn, timeout_fn, retry_fn = w, None, None
                name = getattr(w, "__qualname__", repr(w))
            else:
                raise ConfigError(f"worker must be an async function or a Worker, got {w!r}")
            if inspect.isgeneratorfunction(work_fn) or inspect.isasyncgenfunction(work_fn):
                raise ConfigError(
                    f"worker {name} is a generator function; a worker is an `async def` "
                    "function (or a plain `def`, run in a thread) that returns nothing"
                )
            blocking = not (
                inspect.iscoroutinefunction(work_fn)
                or inspect.iscoroutinefunction(getattr(work_fn, "__call__", None))  # noqa: B004
            )
            self._by_kind[kind] = Registration(
                args_type=args_type,
                kind=kind,
                work=work_fn,
                decoder=msgspec.json.Decoder(args_type),
                timeout=timeout_fn,
                default_timeout=default_timeout,
                next_retry=retry_fn,
                name=name,
                blocking=blocking,
            )
            return w

        if work is None:
            return add
        return add(work)

    def get(self, kind: str) -> Registration | None:
        return self._by_kind.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._by_kind)

    def __len__(self) -> int:
        return len(self._by_kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind
