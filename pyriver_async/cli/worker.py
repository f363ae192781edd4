"""``pyriver worker module:attribute``: run a client until SIGTERM or SIGINT.

The attribute is a :class:`~pyriver_async.Client`, or a function taking no argument
(sync or async) that returns one. The process runs ``client.run()``: the first
SIGTERM/SIGINT stops softly (running jobs finish, outcomes written), a second stops
hard (running jobs cancelled and returned to ``available``, attempt restored). It
logs when ready and when stopped, and exits 0 after a clean stop, 1 when the client
could not start or crashed, 2 for a bad command line or target.

``--processes N`` runs N such worker processes under this one, which forwards each
signal to them (so the second signal still means a hard stop) and restarts a worker
that died, after a backoff (1 s doubling to 30 s, back to 1 s once a worker lived a
minute); a worker that exits 2 (its target does not load) stops them all. The
workers are started in their own process group, so a terminal's Ctrl-C reaches them
once, through the supervisor.
"""

from __future__ import annotations

__all__ = ["load_client", "register"]

import argparse
import dataclasses
import importlib
import inspect
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any

from pyriver_async import Client, QueueConfig
from pyriver_async._args import validate_queue
from pyriver_async._errors import PyRiverError

from ._common import CommandError, add_connection_options, run

log = logging.getLogger("pyriver_async.cli.worker")

_LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="run a client until SIGTERM/SIGINT (the first drains, a second stops hard)",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        epilog=(
            "--database-url is exported as DATABASE_URL before the target is imported, "
            "for a target that reads it; --schema refuses a client of another schema."
        ),
    )
    p.add_argument("target", help="module:attribute, a Client or a factory returning one")
    p.add_argument(
        "--queue",
        action="append",
        metavar="NAME[:MAX_WORKERS]",
        help=(
            "work these queues instead of the client's own (repeatable); a queue the "
            "client configures keeps its settings, MAX_WORKERS (a positive integer, "
            "after the last ':') replacing its max_workers"
        ),
    )
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    add_connection_options(p)
    p.set_defaults(handler=_worker)


def _queues(values: list[str] | None) -> dict[str, int | None] | None:
    """``--queue NAME[:MAX_WORKERS]`` values, checked: a name, and a positive count."""
    if not values:
        return None
    out: dict[str, int | None] = {}
    for v in values:
        name, sep, n = v.rpartition(":") if ":" in v else (v, "", "")
        if not name:
            raise CommandError(f"--queue {v!r}: a queue name is needed", 2)
        try:
            validate_queue(name)
        except PyRiverError as exc:
            raise CommandError(f"--queue {v!r}: {exc}", 2) from None
        if sep:
            if not n.isascii() or not n.isdigit() or int(n) < 1:
                raise CommandError(
                    f"--queue {v!r}: MAX_WORKERS must be a positive integer (NAME:N, N >= 1)",
                    2,
                )
            out[name] = int(n)
        else:
            out[name] = None
    return out


def _with_queues(client: Client, queues: dict[str, int | None]) -> dict[str, QueueConfig]:
    """The client's queues as ``--queue`` asks: a queue the client configures keeps its
    settings (flow control, threads, ephemeral...), with ``max_workers`` replaced when
    given; another gets the defaults."""
    out: dict[str, QueueConfig] = {}
    for name, n in queues.items():
        base = client.queues.get(name)
        if base is None:
            out[name] = QueueConfig() if n is None else QueueConfig(max_workers=n)
        elif n is None or n == base.max_workers:
            out[name] = base
        else:
            try:
                out[name] = dataclasses.replace(base, max_workers=n)
            except PyRiverError as exc:
                raise CommandError(f"--queue {name}:{n}: {exc}", 2) from None
    return out


async def load_client(target: str) -> Client:
    """Import ``module:attribute`` and return its Client (calling a factory)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CommandError(f"worker target {target!r} is not module:attribute", 2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", 2
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no attribute {attr!r}", 2) from None
    if not isinstance(obj, Client):
        if not callable(obj):
            raise CommandError(
                f"{target} is a {type(obj).__name__}, not a Client or a function returning one",
                2,
            )
        try:
            obj = obj()
            if inspect.isawaitable(obj):
                obj = await obj
        except PyRiverError:
            raise
        except Exception as exc:
            raise CommandError(f"{target}() failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(obj, Client):
            raise CommandError(f"{target}() returned a {type(obj).__name__}, not a Client", 2)
    return obj


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise CommandError(f"unknown log level {level!r}", 2)
    root = logging.getLogger()
    if not root.handlers:  # the target may have configured logging itself
        logging.basicConfig(level=numeric, format=_LOG_FORMAT, stream=sys.stderr)
    else:
        root.setLevel(numeric)


def _worker(args: argparse.Namespace) -> int:
    try:
        _configure_logging(args.log_level)
        queues = _queues(args.queue)
        if args.processes < 1:
            raise CommandError("--processes must be 1 or more", 2)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    url = getattr(args, "database_url", None)
    if url:
        os.environ["DATABASE_URL"] = url
    if args.processes > 1:
        return _supervise(args)

    async def main() -> int:
        client = await load_client(args.target)
        schema = getattr(args, "schema", None)
        if schema is not None and client.schema != schema:
            raise CommandError(f"{args.target} works schema {client.schema!r}, not {schema!r}", 2)
        if queues is not None:
            client.queues = _with_queues(client, queues)
        if client.queues and not len(client.workers):
            raise CommandError(f"{args.target} has no workers registered: nothing to run", 2)
        if not client.queues:
            log.warning("%s works no queue: it runs maintenance only", args.target)
        await client.run()
        return 0

    return run(main)


# -- the supervisor of --processes N -----------------------------------------------------


def _child_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "pyriver_async.cli", "worker", args.target]
    for q in args.queue or ():
        argv += ["--queue", q]
    schema = getattr(args, "schema", None)
    if schema is not None:
        argv += ["--schema", schema]
    argv += ["--log-level", args.log_level]
    return argv


def _supervise(args: argparse.Namespace) -> int:
    argv = _child_argv(args)
    n = args.processes
    procs: dict[int, subprocess.Popen[bytes] | None] = dict.fromkeys(range(n))
    started: dict[int, float] = {}
    backoff = dict.fromkeys(range(n), 1.0)
    restart_at: dict[int, float] = dict.fromkeys(range(n), 0.0)
    received: list[int] = []
    codes: dict[int, int] = {}

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        log.info(
            "supervisor: %s received (%s), forwarding to the workers",
            name,
            "soft stop" if len(received) == 1 else "hard stop",
        )
        send(signum)

    def send(signum: int) -> None:
        for p in procs.values():
            if p is not None and p.poll() is None:
                try:
                    p.send_signal(signum)
                except ProcessLookupError:
                    pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("supervisor: starting %d worker processes of %s", n, args.target)
    while True:
        now = time.monotonic()
        for slot, p in procs.items():
            if p is None:
                if not received and now >= restart_at[slot]:
                    child = subprocess.Popen(argv, start_new_session=True)
                    procs[slot] = child
                    started[slot] = now
                    log.info("supervisor: worker %d started (pid %d)", slot, child.pid)
                continue
            code = p.poll()
            if code is None:
                continue
            procs[slot] = None
            if received:
                codes[slot] = code
                continue
            if code == 2:
                # A bad target or command line: every restart would fail the same way.
                log.error("supervisor: worker %d refused its command line; stopping", slot)
                received.append(signal.SIGTERM)
                send(signal.SIGTERM)
                codes[slot] = code
                continue
            lived = now - started.get(slot, now)
            if lived > 60:
                backoff[slot] = 1.0
            delay = backoff[slot]
            backoff[slot] = min(backoff[slot] * 2, 30.0)
            restart_at[slot] = now + delay
            log.warning(
                "supervisor: worker %d (pid %d) exited with %s after %.1fs; restarting in %.0fs",
                slot,
                p.pid,
                code,
                lived,
                delay,
            )
        if received and all(p is None for p in procs.values()):
            break
        time.sleep(0.1)
    bad = {slot: c for slot, c in codes.items() if c != 0}
    if 2 in bad.values():
        return 2
    if bad:
        log.error("supervisor: workers exited with %s", bad)
        return 1
    log.info("supervisor: every worker stopped")
    return 0
