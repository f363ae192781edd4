"""OpenTelemetry, through ``opentelemetry-api`` only: spans, trace context, metrics.

:class:`Telemetry` is a middleware (a producer span per insert call, a consumer span
per work attempt) and a hook (outcome counters), plus observable gauges. The client
puts it outermost of the middleware when it starts (``Client(telemetry=True)``, the
default) if an SDK is configured, and leaves it out entirely otherwise: with no SDK
the hot paths run no telemetry code at all.

Trace context: the insert span's context is injected (global propagator, W3C
``traceparent`` by default) into the job's metadata under ``pyriver:otel``. Each work
attempt, in whichever process and after any retry, extracts it and starts its
consumer span as a *child* of the insert span, with a link to it as well. Parent,
because a job is the deferred rest of the request that inserted it (one message, one
creation context), so the request's trace shows its jobs; the link is what the
messaging conventions require of consumers, and keeps the relation visible in
backends that cut long traces. ``Telemetry(link_only=True)`` starts each attempt as
a new trace with only the link, for jobs that run so long after their insert that
one trace per request would grow unwieldy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ._errors import JobCancel, JobSnooze
from ._job import Job
from ._middleware import HookEvent, InsertBatch, InsertNext, WorkNext

if TYPE_CHECKING:
    from ._context import JobContext
    from ._insert import InsertResult

__all__ = ["TRACE_METADATA_KEY", "Telemetry", "resolve_telemetry", "sdk_configured"]

log = logging.getLogger("pyriver_async.telemetry")

#: Where the insert's trace context travels in a job's metadata.
TRACE_METADATA_KEY = "pyriver:otel"
SYSTEM = "pyriver"
_NAME = "pyriver_async"
# Histogram buckets in seconds, from a no-op job to an hour-long one (the SDK's
# default buckets are meant for milliseconds).
SECONDS_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
)  # fmt: skip


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pyriver-async")
    except Exception:  # pragma: no cover - not installed as a distribution
        return "0"


def sdk_configured() -> tuple[bool, bool]:
    """Whether an SDK set the global tracer provider, and the meter provider.

    With the API alone both are proxies (or no-op providers): nothing records.
    """
    tp = trace.get_tracer_provider()
    mp = metrics.get_meter_provider()
    tracing = not isinstance(tp, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    metering = type(mp).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")
    return tracing, metering


def resolve_telemetry(setting: bool | Telemetry) -> Telemetry | None:
    """What ``Client(telemetry=...)`` means now: a Telemetry, or None (off)."""
    if isinstance(setting, Telemetry):
        return setting
    if not setting:
        return None
    tracing, metering = sdk_configured()
    if not (tracing or metering):
        return None
    return Telemetry(tracing=tracing, metering=metering)


class Telemetry:
    """OpenTelemetry for a client: pass ``Client(telemetry=Telemetry(...))`` to give
    providers of its own (tests, several pipelines); by default the global ones.

    - ``tracer_provider`` / ``meter_provider``: default the global providers;
    - ``propagator``: default the global text map propagator (W3C trace context);
    - ``link_only``: start work spans as new traces linked to the insert (see the
      module's docstring) instead of as its children;
    - ``queue_depth_interval``: how often (seconds) the leader counts jobs per queue
      and state for the ``pyriver.queue.depth`` gauge (0: never).

    Spans follow OpenTelemetry's messaging conventions: ``insert <queue>``
    (PRODUCER, ``messaging.operation.type=send``) and ``work <queue>`` (CONSUMER,
    ``process``), with ``messaging.system=pyriver``, ``messaging.destination.name``
    (the queue), ``messaging.message.id`` (the job id), ``pyriver.job.kind`` and
    ``pyriver.job.attempt``. Metrics (attributes ``queue``, ``kind``, ``state``):
    counters ``pyriver.jobs.inserted|completed|failed|discarded|cancelled|snoozed``,
    histograms ``pyriver.job.duration`` and ``pyriver.job.queue_wait`` (seconds),
    observable gauges ``pyriver.queue.depth`` and ``pyriver.jobs.running``.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
        link_only: bool = False,
        queue_depth_interval: float = 15.0,
        tracing: bool = True,
        metering: bool = True,
    ) -> None:
        version = _version()
        self._tracing = tracing
        self._metering = metering
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_NAME, version)
        self._propagator = propagator
        self.link_only = link_only
        self.queue_depth_interval = queue_depth_interval
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(_NAME, version)
        self._inserted = meter.create_counter(
            "pyriver.jobs.inserted", unit="{job}", description="Jobs inserted"
        )
        self._counters = {
            point: meter.create_counter(
                f"pyriver.jobs.{name}", unit="{job}", description=f"Job attempts {name}"
            )
            for point, name in (
                ("on_completed", "completed"),
                ("on_failed", "failed"),
                ("on_discarded", "discarded"),
                ("on_cancelled", "cancelled"),
                ("on_snoozed", "snoozed"),
            )
        }
        self._duration = meter.create_histogram(
            "pyriver.job.duration",
            unit="s",
            description="Time a work attempt took",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._queue_wait = meter.create_histogram(
            "pyriver.job.queue_wait",
            unit="s",
            description="From when a job was due (scheduled_at) to its attempt's start",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        meter.create_observable_gauge(
            "pyriver.queue.depth",
            callbacks=[self._observe_depth],
            unit="{job}",
            description="Unfinished jobs per queue and state (reported by the leader)",
        )
        meter.create_observable_gauge(
            "pyriver.jobs.running",
            callbacks=[self._observe_running],
            unit="{job}",
            description="Jobs running in this process, per queue",
        )
        self._attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()
        self._depth: dict[tuple[str, str], int] = {}
        self._depth_tasks: dict[int, asyncio.Task[None]] = {}

    def _attributes(self, queue: str, kind: str) -> dict[str, str]:
        key = (queue, kind)
        a = self._attrs.get(key)
        if a is None:
            a = {"queue": queue, "kind": kind}
            if len(self._attrs) < 10_000:
                self._attrs[key] = a
        return a

    def _inject(self, ctx: Context) -> dict[str, str]:
        carrier: dict[str, str] = {}
        if self._propagator is not None:
            self._propagator.inject(carrier, context=ctx)
        else:
            propagate.inject(carrier, context=ctx)
        return carrier

    def _extract(self, carrier: Any) -> Context | None:
        if not isinstance(carrier, dict):
            return None
        if self._propagator is not None:
            return self._propagator.extract(carrier)
        return propagate.extract(carrier)

    # -- insert middleware ------------------------------------------------------------

    async def insert(self, batch: InsertBatch, call_next: InsertNext) -> list[InsertResult]:
        params = batch._params
        if self._tracing:
            results = await self._insert_traced(batch, call_next)
        else:
            results = await call_next()
        if self._metering:
            counts = Counter((p.queue, p.kind) for p in params)
            for (queue, kind), n in counts.items():
                self._inserted.add(n, self._attributes(queue, kind))
        return results

    async def _insert_traced(self, batch: InsertBatch, call_next: InsertNext) -> list[InsertResult]:
        queues = batch.queues
        queue = next(iter(queues)) if len(queues) == 1 else None
        attrs: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "insert",
        }
        if queue is not None:
            attrs["messaging.destination.name"] = queue
        kinds = batch.kinds
        if len(kinds) == 1:
            attrs["pyriver.job.kind"] = next(iter(kinds))
        if len(batch) > 1:
            attrs["messaging.batch.message_count"] = len(batch)
        name = f"insert {queue}" if queue is not None else "insert"
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.PRODUCER, attributes=attrs
        ) as span:
            if span.get_span_context().is_valid:
                carrier = self._inject(trace.set_span_in_context(span))
                if carrier:
                    batch._add_engine_metadata(TRACE_METADATA_KEY, carrier)
            results = await call_next()
            if len(results) == 1 and span.is_recording():
                span.set_attribute("messaging.message.id", str(results[0].job.id))
            return results

    # -- work middleware --------------------------------------------------------------

    async def work(self, ctx: JobContext, job: Job[Any], call_next: WorkNext) -> None:
        started = time.perf_counter()
        attrs = self._attributes(job.queue, job.kind)
        if self._metering and job.attempted_at is not None:
            wait = (job.attempted_at - job.scheduled_at).total_seconds()
            self._queue_wait.record(max(wait, 0.0), attrs)
        try:
            if self._tracing:
                await self._work_traced(job, call_next)
            else:
                await call_next()
        finally:
            if self._metering:
                self._duration.record(time.perf_counter() - started, attrs)

    async def _work_traced(self, job: Job[Any], call_next: WorkNext) -> None:
        parent = self._extract(job.metadata.get(TRACE_METADATA_KEY))
        links: list[Link] = []
        if parent is not None:
            sc = trace.get_current_span(parent).get_span_context()
            if sc.is_valid:
                links.append(Link(sc))
            else:
                parent = None
        with self._tracer.start_as_current_span(
            f"work {job.queue}",
            # An empty context (not None, the current one): a job never inherits
            # whatever the worker's task happens to hold.
            context=Context() if (parent is None or self.link_only) else parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "work",
                "messaging.destination.name": job.queue,
                "messaging.message.id": str(job.id),
                "pyriver.job.kind": job.kind,
                "pyriver.job.attempt": job.attempt,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await call_next()
            except JobSnooze as snooze:
                span.set_attribute("pyriver.job.snoozed_for", snooze.delay.total_seconds())
                raise
            except JobCancel as cancel:
                span.set_attribute("pyriver.job.cancelled", True)
                span.set_status(Status(StatusCode.ERROR, f"JobCancel: {cancel.reason}"))
                raise
            except asyncio.CancelledError:
                span.set_status(Status(StatusCode.ERROR, "cancelled (timeout, cancel or stop)"))
                raise
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise

    # -- hook: outcome counters ---------------------------------------------------------

    def _count(self, point: str, ev: HookEvent) -> None:
        if self._metering:
            self._counters[point].add(1, self._attributes(ev.job.queue, ev.job.kind))

    def on_completed(self, ev: HookEvent) -> None:
        self._count("on_completed", ev)

    def on_failed(self, ev: HookEvent) -> None:
        self._count("on_failed", ev)

    def on_discarded(self, ev: HookEvent) -> None:
        self._count("on_discarded", ev)

    def on_cancelled(self, ev: HookEvent) -> None:
        self._count("on_cancelled", ev)

    def on_snoozed(self, ev: HookEvent) -> None:
        self._count("on_snoozed", ev)

    # -- gauges -------------------------------------------------------------------------

    def observe_client(self, client: Any) -> None:
        """Report this started client's running jobs, and queue depth while it leads."""
        self._clients.add(client)
        if self._metering and self.queue_depth_interval > 0 and client.config.maintenance:
            task = asyncio.get_running_loop().create_task(
                self._count_depth(client), name="pyriver-telemetry-depth"
            )
            self._depth_tasks[id(client)] = task

    def forget_client(self, client: Any) -> None:
        self._clients.discard(client)
        task = self._depth_tasks.pop(id(client), None)
        if task is not None:
            task.cancel()

    async def _count_depth(self, client: Any) -> None:
        while True:
            if client.is_leader:
                with contextlib.suppress(Exception):
                    db = await client._db()
                    self._depth = await db.job_count_by_queue_state()
            await asyncio.sleep(self.queue_depth_interval)

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        if not any(c.is_leader for c in list(self._clients)):
            return []
        return [
            Observation(n, {"queue": queue, "state": state})
            for (queue, state), n in self._depth.items()
        ]

    def _observe_running(self, options: CallbackOptions) -> Iterator[Observation]:
        per_queue: Counter[str] = Counter()
        for c in list(self._clients):
            for name, p in list(c._producers.items()):
                per_queue[name] += len(p.running)
        for queue, n in per_queue.items():
            yield Observation(n, {"queue": queue})
