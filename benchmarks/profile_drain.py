"""Where a drain's time goes: the 100-worker drain of throughput.py under a profiler.

Default: py-spy (sampling from outside the process, so the drain runs at full speed)
attached to a child process that drains ``--jobs`` pre-inserted no-op jobs with one
Client. py-spy samples without stopping the process; ``--native`` adds C frames
(asyncpg's and uvloop's code, the epoll wait) but has to stop the process per
sample, which slows the drain by an order of magnitude. The summary groups samples
by what the process was doing (leaf frame) and by the innermost pyriver_async
function on the stack, and reports the CPU used by the Python process, by the
database's backends and by everything else on the machine during the drain (a Python
process at ~100% of a core is CPU-bound; well below means it waits on PostgreSQL).

``--pyinstrument`` profiles in-process instead (higher overhead; a readable tree).

    python -m benchmarks.profile_drain [--jobs 50000] [--workers 100] [--pyinstrument]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

if __package__ in (None, ""):  # `python benchmarks/profile_drain.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    RESULTS_DIR,
    CpuMeter,
    Results,
    add_common_args,
    checkpoint,
    load_jobs,
    print_table,
    reset_jobs,
    run_main,
    server_info,
    stdin_lines,
    temp_database,
)
from benchmarks.throughput import REPO_ROOT, library_drain


async def drain_once(url: str, n: int, workers: int, pool_size: int) -> dict[str, float]:
    meter = CpuMeter()
    d = await library_drain(url, n, workers, pool_size=pool_size, meter=meter)
    return {"jobs": d.jobs, "seconds": d.seconds, "jobs_per_s": d.jobs_per_s} | meter.result


async def _child(args: argparse.Namespace) -> None:
    stdin = await stdin_lines()
    print("READY", flush=True)
    await stdin.readline()
    out = await drain_once(args.url, args.jobs, args.workers, args.pool_size)
    print("DONE " + " ".join(f"{k}={v!r}" for k, v in out.items()), flush=True)


# -- aggregation of py-spy's raw (collapsed) stacks ---------------------------------------

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<where>[^()]*)\)$")


@dataclass
class Frame:
    func: str
    where: str

    @property
    def file(self) -> str:
        return self.where.rsplit(":", 1)[0]


def parse_frame(text: str) -> Frame:
    m = _FRAME_RE.match(text)
    if m is None:
        return Frame(text, "")
    return Frame(m["func"], m["where"])


def category(f: Frame) -> str:
    """What a leaf frame is doing."""
    w, fn = f.file, f.func
    if "epoll_wait" in fn or "epoll_pwait" in fn or fn in ("poll", "select", "__poll"):
        return "waiting for I/O (epoll)"
    if fn.rsplit(".", 1)[-1] in ("run", "run_until_complete", "run_forever") and (
        "runners.py" in w or "base_events.py" in w or "uvloop" in w
    ):
        return "event loop C code, or waiting for I/O (no Python frame)"
    if "pyriver_async" in w:
        return "pyriver_async (Python)"
    if "asyncpg" in w or "asyncpg" in fn:
        return "asyncpg (protocol, codecs)"
    if "msgspec" in w or "msgspec" in fn:
        return "msgspec"
    if "uvloop" in w or "uv__" in fn or "uv_" in fn or "libuv" in w:
        return "uvloop / libuv"
    if "asyncio" in w or "task_step" in fn or "TaskStep" in fn or "_asyncio" in w:
        return "asyncio (tasks, events, futures)"
    if w.endswith(".py") or ".py:" in f.where:
        return "other Python (stdlib, ...)"
    if "python" in w.lower() or fn.startswith(("_Py", "Py")):
        return "CPython interpreter"
    if w.startswith(("libc", "/lib", "/usr/lib")) or "libc" in w or "vdso" in w:
        return "libc / kernel calls (sockets, memory)"
    return "other native"


def _library_name(f: Frame) -> str | None:
    m = re.search(r"pyriver_async/(.+?\.py)", f.where)
    if m is None:
        return None
    return f"{m.group(1)}:{f.func}"


@dataclass
class Summary:
    samples: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    by_library_innermost: Counter[str] = field(default_factory=Counter)
    library_inclusive: Counter[str] = field(default_factory=Counter)
    library_self: Counter[str] = field(default_factory=Counter)
    under_library: Counter[tuple[str, str]] = field(default_factory=Counter)
    leaves: Counter[str] = field(default_factory=Counter)


def summarize_raw(text: str) -> Summary:
    s = Summary()
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack_text, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [parse_frame(x) for x in stack_text.split(";") if x]
        # drop py-spy's thread / process header frames ("process 123:..." / "thread ...")
        frames = [f for f in frames if not f.func.startswith(("process ", "thread "))]
        if not frames:
            continue
        s.samples += count
        leaf = frames[-1]
        cat = category(leaf)
        s.by_category[cat] += count
        s.leaves[f"{leaf.func} ({leaf.where})"] += count
        lib = [n for n in (_library_name(f) for f in frames) if n is not None]
        for name in set(lib):
            s.library_inclusive[name] += count
        if lib:
            s.by_library_innermost[lib[-1]] += count
            s.under_library[(lib[-1], cat)] += count
            if _library_name(leaf) is not None:
                s.library_self[lib[-1]] += count
    return s


def print_summary(s: Summary, top: int = 15) -> dict[str, Any]:
    total = max(s.samples, 1)

    def pct(x: int) -> str:
        return f"{100.0 * x / total:.1f}%"

    print_table(
        f"Where the time goes (py-spy, {s.samples} samples, leaf frame)",
        ["what the process was doing", "share"],
        [[k, pct(v)] for k, v in s.by_category.most_common()],
    )
    print_table(
        "Time by innermost pyriver_async function on the stack (its own code plus the "
        "asyncpg / asyncio / msgspec work it called)",
        ["pyriver_async function", "share", "of it in its own Python"],
        [[k, pct(v), pct(s.library_self[k])] for k, v in s.by_library_innermost.most_common(top)],
    )
    print_table(
        "Inclusive time of pyriver_async functions",
        ["pyriver_async function", "share"],
        [[k, pct(v)] for k, v in s.library_inclusive.most_common(top)],
    )
    print_table(
        "Hottest leaf frames",
        ["frame", "share"],
        [[k[:110], pct(v)] for k, v in s.leaves.most_common(top)],
    )
    return {
        "samples": s.samples,
        "by_category": {k: round(v / total, 4) for k, v in s.by_category.most_common()},
        "by_library_innermost": {
            k: round(v / total, 4) for k, v in s.by_library_innermost.most_common(40)
        },
        "library_self": {k: round(v / total, 4) for k, v in s.library_self.most_common(40)},
        "library_inclusive": {
            k: round(v / total, 4) for k, v in s.library_inclusive.most_common(40)
        },
        "under_library": {
            f"{k[0]} -> {k[1]}": round(v / total, 4) for k, v in s.under_library.most_common(60)
        },
        "top_leaves": {k: round(v / total, 4) for k, v in s.leaves.most_common(40)},
    }


# -- command line ----------------------------------------------------------------------


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


async def _main(args: argparse.Namespace, loop: str) -> None:
    res = Results("profile-drain", vars(args), loop)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    async with temp_database() as url:
        res.server = await server_info(url)
        admin = await asyncpg.connect(url)
        try:
            await reset_jobs(admin)
            await load_jobs(admin, args.jobs)
            await checkpoint(admin)
        finally:
            await admin.close()
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001, async_mode="disabled")
            profiler.start()
            out = await drain_once(url, args.jobs, args.workers, args.pool_size)
            profiler.stop()
            text = profiler.output_text(unicode=True, color=False, show_all=False)
            path = RESULTS_DIR / f"profile-drain-{stamp}.pyinstrument.txt"
            path.write_text(text, encoding="utf-8")
            print(text[:20000])
            res.extra["profile_file"] = path.name
            res.medians.update(out)
        else:
            spy = _py_spy()
            if spy is None:
                raise SystemExit("py-spy is not installed: pip install 'pyriver-async[bench]'")
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.profile_drain",
                "--child",
                "--url",
                url,
                "--jobs",
                str(args.jobs),
                "--workers",
                str(args.workers),
                "--pool-size",
                str(args.pool_size),
            ]
            if args.no_uvloop:
                cmd.append("--no-uvloop")
            child = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT
            )
            assert child.stdout is not None and child.stdin is not None
            assert (await child.stdout.readline()).strip() == b"READY"
            raw = RESULTS_DIR / f"profile-drain-{stamp}.pyspy.txt"
            spy_cmd = [
                spy,
                "record",
                "--pid",
                str(child.pid),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "-o",
                str(raw),
            ]
            if args.idle:
                spy_cmd.append("--idle")
            # --native has to stop the process for every sample, which slows a drain
            # down by an order of magnitude; without it the sampling does not pause it.
            spy_cmd.append("--native" if args.native else "--nonblocking")
            recorder = await asyncio.create_subprocess_exec(
                *spy_cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            await asyncio.sleep(1.0)  # let py-spy attach
            child.stdin.write(b"GO\n")
            await child.stdin.drain()
            done = (await child.stdout.readline()).decode().strip()
            await child.wait()
            _, err = await recorder.communicate()
            if not raw.exists():
                raise SystemExit(f"py-spy wrote nothing: {err.decode()[-2000:]}")
            out = {}
            for part in done.split()[1:]:
                k, _, v = part.partition("=")
                out[k] = float(v)
            res.medians.update(out)
            res.extra["profile_file"] = raw.name
            res.extra["summary"] = print_summary(summarize_raw(raw.read_text(encoding="utf-8")))
            print(f"\nraw stacks (flamegraph.pl / speedscope input): {raw}")
    m = res.medians
    print(
        f"\ndrain: {m.get('jobs', 0):,.0f} jobs in {m.get('seconds', 0):.2f}s "
        f"= {m.get('jobs_per_s', 0):,.0f} jobs/s; CPU as a share of one core: Python "
        f"process {m.get('python_process_core_share', 0) * 100:.0f}%, this database's "
        f"PostgreSQL backends {m.get('postgres_core_share', 0) * 100:.0f}%, everything else "
        f"on the machine {m.get('others_core_share', 0) * 100:.0f}%"
        + (" (profiler overhead included)" if args.pyinstrument else "")
    )
    if not args.no_json:
        print(f"results: {res.write()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=50_000, help="jobs to drain (default 50000)")
    p.add_argument("--workers", type=int, default=100, help="max_workers (default 100)")
    p.add_argument("--pool-size", type=int, default=10)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument(
        "--native",
        action="store_true",
        help="py-spy with native frames (pauses the process per sample: slow)",
    )
    p.add_argument(
        "--idle",
        action="store_true",
        help="py-spy: also sample while the process waits (default: CPU time only)",
    )
    p.add_argument("--pyinstrument", action="store_true", help="profile in-process instead")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    add_common_args(p, runs=1)
    args = p.parse_args(argv)
    if args.child:
        run_main(lambda _loop: _child(args), no_uvloop=args.no_uvloop, timeout=args.timeout)
        return
    run_main(lambda loop: _main(args, loop), no_uvloop=args.no_uvloop, timeout=args.timeout)


if __name__ == "__main__":
    main()
