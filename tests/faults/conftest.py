"""Fixtures of the fault tests: a throwaway PostgreSQL cluster a test may restart,
and helpers to run worker processes that a test may kill.

The cluster is made with ``initdb`` into a temporary directory and run with
``pg_ctl`` on a free port. The binaries come from ``pg_config --bindir``, else
``/usr/lib/postgresql/<newest>/bin``, else the ``pgserver`` package. PostgreSQL
refuses to run as root: as root the cluster runs as the ``postgres`` OS user
(the ``pgserver`` one for pgserver's binaries). A test that needs a cluster is
skipped, with the reason, only when none of these can make one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg
import pytest

import pyriver_async

_NEEDED = ("initdb", "pg_ctl", "postgres")


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


def _has_binaries(bindir: Path) -> bool:
    return all((bindir / b).is_file() for b in _NEEDED)


def _system_bindirs() -> list[Path]:
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            found.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    found.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True))
    return [d for d in dict.fromkeys(found) if _has_binaries(d)]


def _pgserver_bindir() -> Path | None:
    try:
        from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    path = Path(POSTGRES_BIN_PATH)
    return path if _has_binaries(path) else None


def _os_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PgCluster:
    """One PostgreSQL cluster of our own: start, stop and restart it at will."""

    bindir: Path
    root: Path  # owned by `user`; holds the data directory, the socket and the log
    user: str | None  # the OS user the server runs as (None: the current one)
    port: int = field(default_factory=_free_port)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(
            list(args),
            user=self.user,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def _ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            *extra,
            action,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop (terminating every connection) and start again; returns once it accepts
        connections."""
        self._ctl("restart", "-m", mode)

    async def arestart(self, mode: str = "fast") -> None:
        """:meth:`restart` without blocking the event loop (the client under test runs on it)."""
        await asyncio.to_thread(self.restart, mode)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _pgserver_candidate(reasons: list[str]) -> tuple[Path, str | None] | None:
    """pgserver's own binaries (as its ``pgserver`` OS user when we are root)."""
    pgserver_bin = _pgserver_bindir()
    if pgserver_bin is None:
        reasons.append("the pgserver package is not installed")
        return None
    if os.geteuid() != 0:
        return pgserver_bin, None
    try:
        from pgserver.utils import (  # type: ignore[import-untyped,unused-ignore]
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists("pgserver")
        ensure_prefix_permissions(pgserver_bin)
        ensure_folder_permissions(pgserver_bin, 0o055)
        ensure_folder_permissions(pgserver_bin.parent / "lib", 0o044)
    except Exception as exc:
        reasons.append(f"pgserver as root: {exc!r}")
        return None
    return pgserver_bin, "pgserver"


def _try_initdb(bindir: Path, user: str | None, reasons: list[str]) -> PgCluster | None:
    root = Path(tempfile.mkdtemp(prefix="pyriver-fault-pg-"))
    if user is not None:
        pw = _os_user(user)
        assert pw is not None
        os.chown(root, pw.pw_uid, pw.pw_gid)
    root.chmod(0o700)
    cluster = PgCluster(bindir=bindir, root=root, user=user)
    try:
        cluster.initdb()
    except Exception as exc:
        reasons.append(f"initdb with {bindir} as {user or 'the current user'}: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        return None
    return cluster


def _make_cluster() -> tuple[PgCluster | None, list[str]]:
    """Try each way to make a cluster, the machine's binaries first; return it (not
    started), or None and the reasons none worked."""
    reasons: list[str] = []
    bindirs = _system_bindirs()
    if not bindirs:
        reasons.append("no initdb/pg_ctl/postgres from pg_config or /usr/lib/postgresql/*/bin")
    for bindir in bindirs:
        if os.geteuid() != 0:
            user = None
        elif _os_user("postgres") is not None:
            user = "postgres"
        else:
            reasons.append(f"{bindir}: we run as root and there is no `postgres` OS user")
            continue
        cluster = _try_initdb(bindir, user, reasons)
        if cluster is not None:
            return cluster, reasons
    candidate = _pgserver_candidate(reasons)
    if candidate is not None:
        cluster = _try_initdb(*candidate, reasons)
        if cluster is not None:
            return cluster, reasons
    return None, reasons


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster of this test's own, destroyed afterwards."""
    cluster, reasons = _make_cluster()
    if cluster is None:
        pytest.skip("cannot make a throwaway PostgreSQL cluster: " + "; ".join(reasons))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
async def cluster_url(pg_cluster: PgCluster) -> str:
    """A migrated database in the test's own cluster."""
    conn = await asyncpg.connect(pg_cluster.url())
    try:
        await conn.execute("CREATE DATABASE pyriver")
    finally:
        await conn.close()
    url = pg_cluster.url("pyriver")
    await pyriver_async.migrate(url)
    return url


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
