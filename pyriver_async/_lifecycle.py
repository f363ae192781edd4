"""What happens once the completer has written a batch of outcomes: hooks fire, event
subscribers and local waiters hear of it. Everything here reports what the database
took (the completer passes only the outcomes it wrote, with the state written).

Delivery is best effort, at most as reliable as the completer's view of its writes:
after a write whose reply was lost, the completer's retry may report an outcome
twice, or find it recorded already and ignore it (nothing reported). See ``Hook``."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ._events import JobEvent, Subscription
from ._job import AttemptError, JobState
from ._middleware import HookEvent, HookSet
from ._outcome import Outcome

__all__ = ["FINALIZED", "Lifecycle", "hook_point"]

log = logging.getLogger("pyriver_async.hooks")

FINALIZED = frozenset({"completed", "cancelled", "discarded"})
_STATES = {s.value: s for s in JobState}
_POINTS = {
    "completed": "on_completed",
    "retryable": "on_failed",
    "discarded": "on_discarded",
    "cancelled": "on_cancelled",
}
_error_decoder = msgspec.json.Decoder(AttemptError)


def hook_point(o: Outcome) -> str | None:
    """The lifecycle point of a written outcome (its ``state`` is the one written)."""
    if o.snoozed:
        return "on_snoozed"
    point = _POINTS.get(o.state)
    if point is None and o.state == "available" and o.give_back:
        return "on_interrupted"
    return point


def _output(o: Outcome) -> Any:
    return msgspec.json.decode(o.output) if o.output is not None else None


class Lifecycle:
    """Fans written outcomes out to hooks, subscriptions and waiters (``wake``)."""

    def __init__(
        self,
        hooks: HookSet,
        subscriptions: list[Subscription],
        wake: Callable[[int], None] | None = None,
        has_waiters: Callable[[], bool] | None = None,
    ) -> None:
        self._hooks = hooks
        self._subscriptions = subscriptions
        self._wake = wake
        self._has_waiters = has_waiters
        # Async hooks still running, each with what it was called for (for the log at
        # shutdown if it has to be abandoned).
        self._tasks: dict[asyncio.Task[None], str] = {}

    def on_flushed(self, outcomes: Sequence[Outcome]) -> None:
        if self._subscriptions:
            for o in outcomes:
                job = o.job
                ev = JobEvent(
                    job_id=o.job_id,
                    queue=o.queue,
                    state=o.state,
                    attempt=o.attempt,
                    kind=job.kind if job is not None else "",
                    output=_output(o),
                )
                for s in self._subscriptions:
                    s.put(ev)
        if self._wake is not None and self._has_waiters is not None and self._has_waiters():
            for o in outcomes:
                if o.state in FINALIZED:
                    self._wake(o.job_id)
        if self._hooks:
            self._fire(outcomes)

    def _fire(self, outcomes: Sequence[Outcome]) -> None:
        hooks = self._hooks
        for o in outcomes:
            point = hook_point(o)
            job = o.job
            if point is None or job is None:
                continue
            regs = hooks.wants(point, job.kind)
            if not regs:
                continue
            ev = HookEvent(
                job=job,
                state=_STATES.get(o.state, JobState.AVAILABLE),
                error=_error_decoder.decode(o.error) if o.error else None,
                exception=o.exception,
                output=_output(o),
                scheduled_at=o.scheduled_at if o.state not in FINALIZED else None,
            )
            for r in regs:
                try:
                    result = r.fn(ev)
                    if inspect.isawaitable(result):
                        self._spawn(result, r, ev)
                except Exception as exc:
                    hooks.failed(r, exc, _fields(ev))

    def _spawn(self, awaitable: Any, reg: Any, ev: HookEvent) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception as exc:
                self._hooks.failed(reg, exc, _fields(ev))

        task = asyncio.get_running_loop().create_task(run(), name=f"pyriver-hook-{reg.name}")
        self._tasks[task] = f"{reg.name} for job {ev.job.id} ({ev.state.value})"
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def stop(self, timeout: float) -> None:
        """Let async hooks still running finish (up to half of ``timeout``), then cancel
        them and wait for them to end (the other half). A hook still running after that
        (it ignores cancellation) is logged by name and abandoned, so that shutdown
        never waits on it. The outcomes the hooks were called for are written already:
        abandoning a hook loses nothing but the hook's own work."""
        if not self._tasks:
            return
        half = timeout / 2
        _done, pending = await asyncio.wait(set(self._tasks), timeout=half)
        if not pending:
            return
        log.warning(
            "%d async hooks still running %.1fs into shutdown; cancelling them: %s",
            len(pending),
            half,
            ", ".join(sorted(self._tasks.get(t, t.get_name()) for t in pending)),
        )
        for t in pending:
            t.cancel()
        _done, stuck = await asyncio.wait(pending, timeout=half)
        for t in stuck:
            log.error(
                "async hook %s ignores cancellation; shutdown abandons it still running",
                self._tasks.get(t, t.get_name()),
            )


def _fields(ev: HookEvent) -> dict[str, Any]:
    j = ev.job
    return {
        "job_id": j.id,
        "job_kind": j.kind,
        "job_queue": j.queue,
        "job_attempt": j.attempt,
        "job_max_attempts": j.max_attempts,
    }
