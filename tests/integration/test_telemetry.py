"""OpenTelemetry (issue 19), with the SDK's in-memory exporters.

- a producer span per insert and a consumer span per attempt, with the messaging
  attributes; the work span of a job inserted by one client and worked by another
  is a child of (and linked to) the insert span, on every retry;
- counters, histograms and gauges carry the values of what happened;
- with no SDK configured, the client adds no telemetry code to its paths at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pyriver_async import (
    Client,
    InsertOpts,
    Job,
    JobArgs,
    JobContext,
    QueueConfig,
    Telemetry,
    Workers,
)
from pyriver_async._telemetry import TRACE_METADATA_KEY, resolve_telemetry
from tests._support import eventually, next_event


class Traced(JobArgs, kind="otel_traced"):
    fail_first: bool = False


def _workers() -> Workers:
    w = Workers()

    @w.register(Traced)
    async def traced(ctx: JobContext, job: Job[Traced]) -> None:
        if job.args.fail_first and job.attempt == 1:
            raise ValueError("first attempt fails")

    return w


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader, Telemetry]]:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    yield spans, reader, Telemetry(tracer_provider=tp, meter_provider=mp)
    mp.shutdown()
    tp.shutdown()


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    out: list[Any] = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(m.data.data_points)
    return out


async def test_work_span_is_a_child_of_the_insert_span_across_clients_and_retries(
    pool: asyncpg.Pool, otel: tuple[InMemorySpanExporter, InMemoryMetricReader, Telemetry]
) -> None:
    spans, _reader, tel = otel
    web = Client(pool, telemetry=tel)  # inserts only: another process in real life
    worker = Client(
        pool,
        workers=_workers(),
        queues={"default": QueueConfig(max_workers=2)},
        maintenance=True,  # the scheduler brings the retry back
        retry_policy=lambda job, now: now,
        telemetry=tel,
    )
    job = (await web.insert(Traced(fail_first=True))).job
    assert TRACE_METADATA_KEY in job.metadata
    async with worker:
        await eventually(
            lambda: len([s for s in spans.get_finished_spans() if s.name == "work default"]) == 2
        )
    by_name: dict[str, list[Any]] = {}
    for s in spans.get_finished_spans():
        by_name.setdefault(s.name, []).append(s)
    (insert,) = by_name["insert default"]
    assert insert.kind is SpanKind.PRODUCER
    assert insert.attributes is not None
    assert insert.attributes["messaging.system"] == "pyriver"
    assert insert.attributes["messaging.operation.type"] == "send"
    assert insert.attributes["messaging.destination.name"] == "default"
    assert insert.attributes["messaging.message.id"] == str(job.id)
    works = sorted(by_name["work default"], key=lambda s: s.attributes["pyriver.job.attempt"])
    for attempt, w in enumerate(works, start=1):
        assert w.kind is SpanKind.CONSUMER
        assert w.context.trace_id == insert.context.trace_id
        assert w.parent is not None and w.parent.span_id == insert.context.span_id
        assert [link.context.span_id for link in w.links] == [insert.context.span_id]
        assert w.attributes["messaging.message.id"] == str(job.id)
        assert w.attributes["messaging.operation.type"] == "process"
        assert w.attributes["pyriver.job.kind"] == "otel_traced"
        assert w.attributes["pyriver.job.attempt"] == attempt
    assert works[0].status.status_code.name == "ERROR"
    assert [e.name for e in works[0].events] == ["exception"]
    assert works[1].status.status_code.name == "UNSET"
    await web.close()


async def test_link_only_starts_a_new_trace_linked_to_the_insert(
    pool: asyncpg.Pool, otel: tuple[InMemorySpanExporter, InMemoryMetricReader, Telemetry]
) -> None:
    spans, _reader, tel = otel
    tel.link_only = True
    client = Client(
        pool,
        workers=_workers(),
        queues={"default": QueueConfig(max_workers=2)},
        maintenance=False,
        telemetry=tel,
    )
    async with client, client.subscribe() as events:
        job = (await client.insert(Traced())).job
        await next_event(events, job.id)
    await eventually(lambda: any(s.name == "work default" for s in spans.get_finished_spans()))
    insert = next(s for s in spans.get_finished_spans() if s.name == "insert default")
    work = next(s for s in spans.get_finished_spans() if s.name == "work default")
    assert work.parent is None and work.context.trace_id != insert.context.trace_id
    assert [link.context.span_id for link in work.links] == [insert.context.span_id]


async def test_metrics_count_what_happened(
    pool: asyncpg.Pool, otel: tuple[InMemorySpanExporter, InMemoryMetricReader, Telemetry]
) -> None:
    _spans, reader, tel = otel
    client = Client(
        pool,
        workers=_workers(),
        queues={"default": QueueConfig(max_workers=5)},
        maintenance=False,
        retry_policy=lambda job, now: now.replace(year=now.year + 1),
        telemetry=tel,
    )
    async with client, client.subscribe() as events:
        ok = await client.insert_many([Traced() for _ in range(3)])
        bad = (await client.insert(Traced(fail_first=True), InsertOpts(queue="default"))).job
        for r in ok:
            await next_event(events, r.job.id)
        await next_event(events, bad.id)
        await eventually(
            lambda: sum(p.value for p in _points(reader, "pyriver.jobs.completed")) == 3
        )
        running = _points(reader, "pyriver.jobs.running")
        assert running and running[0].attributes == {"queue": "default"}

    def total(name: str) -> float:
        return float(sum(p.value for p in _points(reader, name)))

    assert total("pyriver.jobs.inserted") == 4
    assert total("pyriver.jobs.completed") == 3
    assert total("pyriver.jobs.failed") == 1
    (inserted,) = _points(reader, "pyriver.jobs.inserted")
    assert inserted.attributes == {"queue": "default", "kind": "otel_traced"}
    (duration,) = _points(reader, "pyriver.job.duration")
    assert duration.count == 4 and duration.attributes == {
        "queue": "default",
        "kind": "otel_traced",
    }
    (wait,) = _points(reader, "pyriver.job.queue_wait")
    assert wait.count == 4 and wait.min >= 0


async def test_queue_depth_gauge_is_reported_by_the_leader(
    pool: asyncpg.Pool, otel: tuple[InMemorySpanExporter, InMemoryMetricReader, Telemetry]
) -> None:
    _spans, reader, tel = otel
    tel.queue_depth_interval = 0.1
    client = Client(
        pool,
        workers=_workers(),
        queues={"default": QueueConfig(max_workers=1)},
        maintenance=True,
        telemetry=tel,
    )
    await client.insert_many([(Traced(), InsertOpts(queue="backlog")) for _ in range(7)])
    async with client:
        await eventually(lambda: client.is_leader)

        def depth() -> dict[tuple[str, str], float]:
            return {
                (p.attributes["queue"], p.attributes["state"]): p.value
                for p in _points(reader, "pyriver.queue.depth")
            }

        await eventually(lambda: depth().get(("backlog", "available")) == 7)


async def test_without_an_sdk_no_telemetry_code_runs(pool: asyncpg.Pool) -> None:
    # This process never sets a global SDK provider: the API's proxies record nothing.
    assert resolve_telemetry(True) is None
    client = Client(
        pool, workers=_workers(), queues={"default": QueueConfig(max_workers=1)}, maintenance=False
    )
    async with client, client.subscribe() as events:
        job = (await client.insert(Traced())).job
        await next_event(events, job.id)
        assert client._executor is not None
        reg = client._executor.registration(Traced.kind)
        plain = client.workers.get(Traced.kind)
        assert reg is not None and plain is not None
        assert reg.work is plain.work  # not even a middleware layer
        assert client._insert_chain is None
    assert TRACE_METADATA_KEY not in job.metadata
