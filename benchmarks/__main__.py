"""Run the benchmark suite: ``python -m benchmarks`` (what ``make bench`` calls).

Quick by default (throughput, latency and insert at small sizes, 3 runs each: a few
minutes). ``--full`` uses the sizes of the performance plan and adds the
multi-process drains, scale, soak, the peer comparison and round two (issue 23's
table; about an hour on a 2-core machine). ``--only throughput,latency`` picks
benchmarks (``--only round2``: that table alone); anything after ``--`` is passed
to each of them. ``python -m benchmarks chaos`` runs the chaos matrix instead
(benchmarks/chaos.py). Each benchmark runs in its own process with its
own throwaway database and writes ``benchmarks/results/latest-<name>.json``; the
headline figures and the performance plan's targets are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

QUICK: dict[str, list[str]] = {
    "throughput": ["--jobs", "10000", "--workers", "10,100,1000"],
    "latency": ["--jobs", "500"],
    "insert": ["--single", "1000", "--batch-calls", "10", "--copy-rows", "100000"],
    "scale": ["--jobs", "10000", "--rows", "200000"],
    "soak": ["--jobs", "200000"],
    "compare": ["--jobs", "5000", "--procrastinate-jobs", "1500", "--latency-jobs", "300"],
    "round2": [],
    "horizon": ["--jobs", "5000", "--batches", "3"],
    "pooler": ["--single", "300", "--jobs", "5000"],
    "flow": ["--jobs", "10000", "--rate-seconds", "10", "--backlog", "20000"],
    "telemetry": ["--jobs", "10000", "--runs", "3"],
    "gin": ["--jobs", "10000", "--runs", "3"],
}
FULL: dict[str, list[str]] = {
    "throughput": ["--jobs", "20000,200000", "--workers", "10,100,1000", "--processes", "1,2,4"],
    "latency": ["--jobs", "2000"],
    "insert": [],
    "scale": [],
    "soak": [],
    "compare": [],
    "round2": [],
    "horizon": [],
    "pooler": [],
    "flow": ["--runs", "3"],
    "telemetry": [],
    "gin": [],
}
# --full runs at least this many rounds of these: the per-run ratio to pgqueuer moves
# by about ±10 % on a shared 2-core machine, so its median wants more than 3.
FULL_MIN_RUNS = {"compare": 5, "round2": 5}
QUICK_SET = ["throughput", "latency", "insert"]
ORDER = [
    "throughput",
    "latency",
    "insert",
    "scale",
    "soak",
    "compare",
    "round2",
    "horizon",
    "pooler",
    "flow",
    "telemetry",
    "gin",
]
# generous bounds per benchmark (seconds): a run past them is stopped
LIMITS = {
    "throughput": 2400,
    "latency": 900,
    "insert": 900,
    "scale": 2400,
    "soak": 2400,
    "compare": 2400,
    "round2": 2400,
    "horizon": 900,
    "pooler": 600,
    "flow": 1200,
    "telemetry": 900,
    "gin": 900,
}


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"latest-{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float) else math.nan


def _check(value: float, target: float, higher_is_better: bool = True) -> str:
    if math.isnan(value):
        return "-"
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "SHORT"


def headline(names: list[str]) -> None:
    rows: list[tuple[str, str, str, str]] = []
    t = _load("throughput") if "throughput" in names else None
    if t:
        m = t["medians"]
        for key, val in sorted(m.items()):
            if key.startswith("ratio_n") and key.endswith("_w100"):
                n = key[len("ratio_n") : -len("_w100")]
                rows.append(
                    (
                        f"drain {int(n):,} jobs, 100 workers",
                        f"{_num(val) * 100:.0f}% of "
                        f"ceiling ({_num(m.get(f'library_n{n}_w100')):,.0f} jobs/s)",
                        ">= 60%",
                        _check(_num(val), 0.60),
                    )
                )
    lat = _load("latency") if "latency" in names else None
    if lat:
        m = lat["medians"]
        p50 = _num(m.get("ratio_idle_p50_ms"))
        p99 = _num(m.get("ratio_idle_p99_ms"))
        rows.append(
            (
                "latency p50, idle",
                f"{_num(m.get('idle_p50_ms')):.2f} ms = {p50:.2f}x ceiling",
                "<= 1.5x",
                _check(p50, 1.5, False),
            )
        )
        rows.append(
            (
                "latency p99, idle",
                f"{_num(m.get('idle_p99_ms')):.2f} ms = {p99:.2f}x ceiling",
                "<= 3x",
                _check(p99, 3.0, False),
            )
        )
    ins = _load("insert") if "insert" in names else None
    if ins:
        m = ins["medians"]
        for key, label, target in (
            ("single", "single insert", 0.9),
            ("many_1000", "insert_many of 1,000", 0.75),
            ("many_copy", "insert_many, COPY path", 0.8),
        ):
            r = _num(m.get(f"ratio_{key}"))
            rows.append(
                (
                    label,
                    f"{r * 100:.0f}% of ceiling ({_num(m.get(key)):,.0f} jobs/s)",
                    f">= {target * 100:.0f}%",
                    _check(r, target),
                )
            )
    sc = _load("scale") if "scale" in names else None
    if sc:
        for key, label in (
            ("ratio_history", "drain beside completed rows"),
            ("ratio_backlog", "drain of a big backlog"),
        ):
            r = _num(sc["medians"].get(key))
            rows.append((label, f"{r * 100:.0f}% of clean", ">= 80%", _check(r, 0.8)))
    so = _load("soak") if "soak" in names else None
    if so:
        g = _num(so["medians"].get("rss_growth"))
        rows.append(
            ("soak RSS growth", f"{g * 100:+.1f}%", "within 10%", _check(abs(g), 0.10, False))
        )
    cmp_ = _load("compare") if "compare" in names else None
    if cmp_:
        r = _num(cmp_["medians"].get("ratio_pgqueuer_drain"))
        rows.append(("drain vs pgqueuer", f"{r:.2f}x", ">= 2x", _check(r, 2.0)))
    r2 = _load("round2") if "round2" in names else None
    if r2:
        for t in r2.get("extra", {}).get("targets", []):
            value = _num(t.get("value"))
            rows.append(
                (
                    f"round2: {t['target']}",
                    "-" if math.isnan(value) else f"{value:.2f}",
                    f"{'>=' if t['higher'] else '<='} {t['bound']:g}",
                    str(t["verdict"]),
                )
            )
    fl = _load("flow") if "flow" in names else None
    if fl:
        m = fl["medians"]
        for key, label, target in (
            ("global_ratio", "drain under global_limit=100", 0.90),
            ("keys_ratio", "drain, 1,000 keys x 1", 0.75),
        ):
            r = _num(m.get(key))
            rows.append((label, f"{r * 100:.0f}% of unlimited", f">= {target * 100:.0f}%",
                         _check(r, target)))  # fmt: skip
        rate = _num(m.get("rate_ratio"))
        rows.append(("rate limit, two processes", f"{rate:.4f} of the rate", "1 +- 5%",
                     _check(abs(rate - 1), 0.05, False)))  # fmt: skip
    tm = _load("telemetry") if "telemetry" in names else None
    if tm:
        m = tm["medians"]
        r = _num(m.get("ratio_no_sdk"))
        rows.append(("drain, telemetry on, no SDK", f"{r * 100:.0f}% of off", "~100%",
                     _check(r, 0.95)))  # fmt: skip
        r = _num(m.get("ratio_sdk"))
        rows.append(("drain, OpenTelemetry SDK", f"{r * 100:.0f}% of off", "(measured)", "-"))
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print("\nHeadline (latest results) against the performance plan's targets")
    for row in rows:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["chaos"]:
        # The chaos matrix: faults on throwaway clusters, not a speed measurement.
        from benchmarks import chaos

        return chaos.main(argv[1:])
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--full", action="store_true", help="the plan's sizes, every benchmark")
    p.add_argument("--only", default="", help="comma list of: " + ", ".join(ORDER))
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args(argv)
    names = (
        [n for n in args.only.split(",") if n] if args.only else (ORDER if args.full else QUICK_SET)
    )
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    sizes = FULL if args.full else QUICK
    failed: list[str] = []
    for name in names:
        cmd = [sys.executable, "-m", f"benchmarks.{name}", *sizes[name]]
        if name not in ("soak", "horizon"):
            runs = max(args.runs, FULL_MIN_RUNS.get(name, 0)) if args.full else args.runs
            cmd += ["--runs", str(runs)]
        if args.no_uvloop:
            cmd.append("--no-uvloop")
        cmd += ["--timeout", str(LIMITS[name] - 60), *extra]
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, timeout=LIMITS[name], check=False).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        print(
            f"=== {name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.monotonic() - t0:.0f}s",
            flush=True,
        )
        if rc != 0:
            failed.append(name)
    headline([n for n in names if n not in failed])
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
