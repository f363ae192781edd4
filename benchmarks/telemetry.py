"""What OpenTelemetry costs a drain (issue 19): three arms, alternating, one invocation.

- ``off``: ``Client(telemetry=False)``, no instrumentation at all.
- ``no_sdk``: ``Client(telemetry=True)`` (the default) with no SDK configured, which is
  what every user without OpenTelemetry runs: the library sees the API's no-op
  providers and instruments nothing. Target: within the noise of ``off`` (~1.00).
- ``sdk``: ``Client(telemetry=Telemetry(tracer_provider=..., meter_provider=...))``
  with the real SDK: a ``BatchSpanProcessor`` into an in-memory span exporter (what a
  production OTLP exporter's processor does, minus the network) and a periodic-free
  in-memory metric reader. Every job gets a work span and its metric points. Reported,
  not a target: the price of tracing every job.

The SDK's providers are given to the client (not installed globally), so the three
arms can alternate in one process. Each drain is ``--jobs`` pre-inserted no-op jobs at
100 workers through a pool made like ``Client(dsn)``'s, timed from ``client.start()``
to the commit of the last outcome (as benchmarks/throughput). Ratios are medians of
per-round ratios to ``off``.

    python -m benchmarks.telemetry [--jobs 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import asyncpg

from benchmarks._common import (
    FlushProbe,
    Progress,
    Results,
    add_common_args,
    checkpoint,
    fmt_int,
    fmt_ratio,
    load_jobs,
    make_pool,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    temp_database,
)
from benchmarks.throughput import make_client
from pyriver_async import Telemetry

ARMS = ("off", "no_sdk", "sdk")
WORKERS = 100


class _Sdk:
    """The SDK pipeline of the ``sdk`` arm, made fresh for each drain."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        self.spans = InMemorySpanExporter()
        self.processor = BatchSpanProcessor(self.spans)
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(self.processor)
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self) -> Telemetry:
        return Telemetry(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            queue_depth_interval=0,
        )

    def close(self) -> int:
        """Flush and shut down; the number of spans exported (a check that it traced)."""
        self.processor.force_flush()
        n = len(self.spans.get_finished_spans())
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        return n


async def drain(url: str, n: int, arm: str, timeout: float) -> tuple[float, int]:
    """One drain of ``n`` jobs under ``arm``; (jobs/s, spans exported)."""
    pool = await make_pool(url, 10)
    sdk = _Sdk() if arm == "sdk" else None
    telemetry: Any = sdk.telemetry() if sdk is not None else arm == "no_sdk"
    try:
        client = make_client(pool, WORKERS, maintenance=False, telemetry=telemetry)
        probe = FlushProbe(target=n)
        probe.attach(client)
        t0 = time.monotonic()
        await client.start()
        try:
            await asyncio.wait_for(probe.reached.wait(), timeout)
        finally:
            await client.stop()
        if probe.count != n:
            raise RuntimeError(f"{arm}: {probe.count} outcomes written for {n} jobs")
        return probe.count / (probe.last - t0), sdk.close() if sdk is not None else 0
    finally:
        await pool.close()


async def _main(args: argparse.Namespace, loop: str) -> None:
    res = Results("telemetry", vars(args), loop)
    prog = Progress("telemetry", args.runs * len(ARMS))
    spans: list[int] = []
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        try:
            for r in range(args.runs):
                # The order rotates each round, so no arm always follows the same one.
                order = ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]
                for arm in order:
                    prog.step(f"{arm}, round {r + 1}")
                    await reset_jobs(admin)
                    await load_jobs(admin, args.jobs)
                    await checkpoint(admin)
                    rate, exported = await drain(url, args.jobs, arm, args.timeout)
                    res.add_run(arm, round(rate, 1))
                    if arm == "sdk":
                        spans.append(exported)
                    prog.advance()
        finally:
            await admin.close()
    prog.finish()
    base = res.runs["off"]
    rows: list[list[object]] = []
    for arm in ARMS:
        runs = res.runs[arm]
        ratio = statistics.median(x / b for x, b in zip(runs, base, strict=True))
        res.medians[arm] = statistics.median(runs)
        res.medians[f"ratio_{arm}"] = ratio
        rows.append([arm, fmt_int(statistics.median(runs)), fmt_ratio(ratio)])
    res.medians["sdk_spans_per_drain"] = statistics.median(spans) if spans else 0
    print_table(
        f"Drain of {args.jobs:,} no-op jobs, {WORKERS} workers (medians of {args.runs}; "
        "ratio: median per-round ratio to off)",
        ["telemetry", "jobs/s", "of off"],
        rows,
    )
    print(f"spans exported per sdk drain: {res.medians['sdk_spans_per_drain']:,.0f}")
    if not args.no_json:
        print(f"\nresults: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=20000, help="jobs per drain (default 20000)")
    add_common_args(p, runs=5)
    args = p.parse_args(argv)
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
