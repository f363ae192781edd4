"""Fixtures of the fault tests: throwaway PostgreSQL clusters a test may restart, kill,
reconfigure or stream to a standby (``_cluster.py``), a PgBouncer of the test's own
(``_pgbouncer.py``), and helpers to run worker processes that a test may kill.

A test that needs a cluster is skipped, with the reason, only when no way to make one
works here (``_cluster.py`` says which ways are tried); one that needs pgbouncer only
when the binary is missing and cannot be installed.
"""

from __future__ import annotations

import asyncio
import gc
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

import pyriver_async

from ._cluster import ClusterUnavailable, PgCluster, Setting, make_standby, new_cluster
from ._pgbouncer import PgBouncer, ensure_binary

__all__ = ["PgBouncer", "PgBouncers", "PgCluster", "PgClusters", "WorkerProcesses"]


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Run pending finalizers at the end of the test that made the garbage.

    A fault test that fails can leave an asyncio task whose exception nobody
    retrieved; its finalizer logs a formatted traceback, which on CPython <= 3.11.7
    (gh-106905) can turn a later, unrelated ``ast.parse`` (pytest's assertion
    rewriting, failure reports) into a spurious SystemError. Collecting here keeps
    that log in the test that caused it, and the rest of the run unaffected.
    """
    yield
    gc.collect()


# -- clusters -----------------------------------------------------------------------------


class PgClusters:
    """Makes clusters and standbys for one test (or module); destroys them all at the end."""

    def __init__(self) -> None:
        self.made: list[PgCluster] = []

    def new(self, settings: Mapping[str, Setting] | None = None, start: bool = True) -> PgCluster:
        try:
            cluster = new_cluster(settings, start=start)
        except ClusterUnavailable as exc:
            pytest.skip(str(exc))
        self.made.append(cluster)
        return cluster

    def standby(
        self, primary: PgCluster, settings: Mapping[str, Setting] | None = None
    ) -> PgCluster:
        try:
            standby = make_standby(primary, settings)
        except ClusterUnavailable as exc:
            pytest.skip(str(exc))
        self.made.append(standby)
        return standby

    def close(self) -> None:
        # Standbys first: a primary stopped under its standby makes it log and retry.
        for cluster in reversed(self.made):
            cluster.destroy()


@pytest.fixture
def pg_clusters() -> Iterator[PgClusters]:
    """A factory of started clusters (``.new(settings)``) and standbys
    (``.standby(primary)``), all destroyed after the test."""
    clusters = PgClusters()
    try:
        yield clusters
    finally:
        clusters.close()


@pytest.fixture
def pg_cluster(pg_clusters: PgClusters) -> PgCluster:
    """A started cluster of this test's own, destroyed afterwards."""
    return pg_clusters.new()


@pytest.fixture
async def cluster_url(pg_cluster: PgCluster) -> str:
    """A migrated database in the test's own cluster."""
    url = await pg_cluster.create_database("pyriver")
    await pyriver_async.migrate(url)
    return url


# -- pgbouncer ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pgbouncer_binary() -> Path:
    """The pgbouncer binary; installs Debian's package when it is missing (as root),
    skips only when that cannot be done."""
    binary, reason = ensure_binary()
    if binary is None:
        pytest.skip(reason)
    return binary


class PgBouncers:
    """Starts pgbouncers for one test; stops them all at the end."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.started: list[PgBouncer] = []

    def start(
        self,
        target_host: str,
        target_port: int,
        pool_mode: str = "transaction",
        **options: object,
    ) -> PgBouncer:
        bouncer = PgBouncer(
            target_host,
            target_port,
            pool_mode=pool_mode,
            binary=self.binary,
            **options,  # type: ignore[arg-type]
        )
        bouncer.start()
        self.started.append(bouncer)
        return bouncer

    def close(self) -> None:
        for b in self.started:
            b.stop()


@pytest.fixture
def pgbouncers(pgbouncer_binary: Path) -> Iterator[PgBouncers]:
    """``pgbouncers.start(host, port, pool_mode="transaction")``: a started pgbouncer in
    front of that server; all stopped after the test."""
    bouncers = PgBouncers(pgbouncer_binary)
    try:
        yield bouncers
    finally:
        bouncers.close()


# -- worker processes ---------------------------------------------------------------------

PROC_SCRIPT = Path(__file__).with_name("_proc.py")


@dataclass
class WorkerProcess:
    """A ``_proc.py`` worker running in its own OS process; output goes to a file."""

    proc: subprocess.Popen[bytes]
    output: Path
    _out: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 30) -> str:
        """Until the process prints ``ready <client id>``; returns the client id."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            m = re.search(r"^ready (\S+)$", self.text(), re.MULTILINE)
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker process exited with {self.proc.returncode}:\n{self.text()}"
                )
            if loop.time() > deadline:
                raise AssertionError(f"worker process not ready in {timeout}s:\n{self.text()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()


class WorkerProcesses:
    """Starts ``_proc.py`` workers; kills whatever is left at the end of the test."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._procs: list[WorkerProcess] = []

    def start(self, dsn: str, *args: str) -> WorkerProcess:
        n = len(self._procs)
        output = self._tmp / f"worker-{n}.log"
        out = output.open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(PROC_SCRIPT), "--dsn", dsn, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wp = WorkerProcess(proc, output, out)
        self._procs.append(wp)
        return wp

    def close(self) -> None:
        for p in self._procs:
            p.close()


@pytest.fixture
async def worker_processes(tmp_path: Path) -> AsyncIterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    try:
        yield procs
    finally:
        procs.close()
