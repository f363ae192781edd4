"""Throwaway PostgreSQL clusters for the fault tests: start, stop, restart, kill,
reconfigure, flip read-only, stream to a standby and promote it.

A cluster is made with ``initdb`` into a temporary directory and run with ``pg_ctl`` on
a free port of 127.0.0.1. The binaries come from ``pg_config --bindir``, else
``/usr/lib/postgresql/<newest>/bin``, else the ``pgserver`` package. PostgreSQL refuses
to run as root: as root the cluster runs as the ``postgres`` OS user (the ``pgserver``
one for pgserver's binaries). Nothing here touches the machine's own server.

Lifecycle operations (``start``, ``stop``, ``restart``, ``kill``, :func:`make_standby`)
are plain functions that block on ``pg_ctl``; the ones a test calls while a client runs
on its event loop have an ``a``-prefixed twin that runs them in a thread. Operations
that are SQL (``set_read_only``, ``promote``, ``wait_replayed``) are coroutines over
asyncpg.

Settings: ``PgCluster.settings`` (given to :func:`make_cluster`) are written at
``initdb`` into ``pyriver.conf`` in the data directory, which ``postgresql.conf``
includes last; :meth:`PgCluster.configure` (or ``start(settings=...)``) changes them
for the next start, :meth:`PgCluster.reload` for those a reload applies. A standby
inherits its primary's file through ``pg_basebackup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

__all__ = [
    "ClusterUnavailable",
    "PgCluster",
    "Setting",
    "free_port",
    "make_cluster",
    "make_standby",
    "new_cluster",
]

_NEEDED = ("initdb", "pg_ctl", "postgres")

Setting = str | int | float | bool

# Fast and disposable: nothing here must survive a crash of the machine. A test may
# override any of these (they are written before its own settings).
BASE_SETTINGS: dict[str, Setting] = {
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": False,
    "max_connections": 200,
}

_INCLUDE_FILE = "pyriver.conf"


class ClusterUnavailable(RuntimeError):
    """No way to make a throwaway cluster on this machine; ``reasons`` says why."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("cannot make a throwaway PostgreSQL cluster: " + "; ".join(reasons))
        self.reasons = reasons


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


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# The old private name, for whoever imported it.
_free_port = free_port


def conf_value(value: Setting) -> str:
    """``value`` as the right-hand side of a ``postgresql.conf`` line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _new_root(user: str | None, prefix: str = "pyriver-fault-pg-") -> Path:
    """A fresh temporary directory owned by ``user`` and readable by it alone."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if user is not None:
        pw = _os_user(user)
        assert pw is not None
        os.chown(root, pw.pw_uid, pw.pw_gid)
    root.chmod(0o700)
    return root


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a live process, None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, pgrp = fields[0], int(fields[2])
    return None if state in ("Z", "X") else (state, pgrp)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st is not None and st[1] == pgid:
                members.append(int(entry.name))
    return members


@dataclass
class PgCluster:
    """One PostgreSQL cluster of our own: start, stop, restart and kill it at will."""

    bindir: Path
    root: Path  # owned by `user`; holds the data directory, the socket and the log
    user: str | None  # the OS user the server runs as (None: the current one)
    port: int = field(default_factory=free_port)
    settings: dict[str, Setting] = field(default_factory=dict)
    # The cluster this one streams from, while it is a standby.
    primary: PgCluster | None = None
    # Fixed at creation: the port may change at start (see start()), the name may not.
    _name_port: int = 0

    def __post_init__(self) -> None:
        self._name_port = self._name_port or self.port

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    @property
    def application_name(self) -> str:
        """The name a standby's WAL receiver shows in its primary's pg_stat_replication."""
        return f"pyriver_standby_{self._name_port}"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = 60) -> str:
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
        return proc.stdout

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_text(self) -> str:
        """The whole server log (what the server said: errors with their statements)."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def psql(self, sql: str, dbname: str = "postgres", timeout: float = 30) -> str:
        """Run ``sql`` with ``psql`` (for the blocking code paths); returns its unaligned,
        tuples-only output, stripped."""
        return self._run(
            str(self.bindir / "psql"),
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            dbname,
            "-c",
            sql,
            timeout=timeout,
        ).strip()

    # -- configuration ------------------------------------------------------------------

    def _write_settings(self) -> None:
        merged = {**BASE_SETTINGS, **self.settings}
        lines = [
            "# Written by tests/faults/_cluster.py; included last by postgresql.conf.",
            *(f"{name} = {conf_value(value)}" for name, value in merged.items()),
        ]
        path = self.datadir / _INCLUDE_FILE
        path.write_text("\n".join(lines) + "\n")
        if self.user is not None:
            pw = _os_user(self.user)
            assert pw is not None
            os.chown(path, pw.pw_uid, pw.pw_gid)
        path.chmod(0o600)

    def configure(self, settings: Mapping[str, Setting]) -> None:
        """Merge ``settings`` into this cluster's ``pyriver.conf``; they apply at the next
        start or restart (or :meth:`reload`, for settings a reload changes)."""
        self.settings.update(settings)
        self._write_settings()

    def reload(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "reload")

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
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write(f"\ninclude_if_exists = '{_INCLUDE_FILE}'\n")
        self._write_settings()

    # -- lifecycle ----------------------------------------------------------------------

    def _ctl(self, action: str, *extra: str) -> None:
        # Only what must differ per cluster is given on the command line (it would
        # override the configuration files, ALTER SYSTEM included).
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
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

    def start(self, settings: Mapping[str, Setting] | None = None) -> None:
        """Start; returns once it accepts connections. ``settings`` are merged first."""
        if settings:
            self.configure(settings)
        # free_port() only found the port free a moment ago: on a busy machine another
        # process may have taken it since. Then try another one.
        for attempt in range(3):
            try:
                self._ctl("start")
                return
            except RuntimeError as exc:
                if "could not bind" not in str(exc) or attempt == 2:
                    raise
                self.port = free_port()

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop (terminating every connection) and start again; returns once it accepts
        connections."""
        self._ctl("restart", "-m", mode)

    async def arestart(self, mode: str = "fast") -> None:
        """:meth:`restart` without blocking the event loop (the client under test runs on it)."""
        await asyncio.to_thread(self.restart, mode)

    async def astart(self, settings: Mapping[str, Setting] | None = None) -> None:
        await asyncio.to_thread(self.start, settings)

    async def astop(self, mode: str = "fast") -> None:
        await asyncio.to_thread(self.stop, mode)

    def postmaster_pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])

    def kill(self, timeout: float = 30) -> None:
        """SIGKILL the postmaster, as a crash of the server would; returns once it and
        every process it had started are gone, so that :meth:`start` can follow.

        The postmaster's children notice its death and exit by themselves (PostgreSQL
        watches for it); any still there after ``timeout`` are SIGKILLed too. The data
        directory is left as the crash left it: the next start runs crash recovery.
        """
        pid = self.postmaster_pid()
        st = _proc_stat(pid)
        if st is None:
            raise RuntimeError(f"postmaster {pid} of {self.datadir} is not running")
        pgid = st[1]
        os.kill(pid, signal.SIGKILL)
        # pg_ctl makes the postmaster a process group leader: its backends share its
        # group. Poll /proc (no event tells when another process's children exit).
        deadline = time.monotonic() + timeout
        while True:
            members = _group_members(pgid) if pgid == pid else []
            if _proc_stat(pid) is None and not members:
                break
            if time.monotonic() > deadline:
                for m in members:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(m, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.02)
        # The dead postmaster was pg_ctl's orphan; until PID 1 reaps it (lazily on this
        # machine: ~1 s) it is a zombie, and a new postmaster, seeing its PID alive in
        # the lock files, would refuse to start. Nothing of it is left but the PID.
        for lock in (self.datadir / "postmaster.pid", self.root / f".s.PGSQL.{self.port}.lock"):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()

    async def akill(self, timeout: float = 30) -> None:
        await asyncio.to_thread(self.kill, timeout)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- SQL-level controls ---------------------------------------------------------------

    async def _connect(self, server_settings: dict[str, str] | None = None) -> asyncpg.Connection:
        return await asyncpg.connect(self.url(), server_settings=server_settings)

    async def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        conn = await self._connect()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    async def _wait_for_new_session(
        self, sql: str, expected: object, timeout: float, what: str
    ) -> None:
        """Until a new session's ``sql`` returns ``expected`` (there is no event for a
        change of configuration, so new sessions are polled)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            conn = await self._connect()
            try:
                got = await conn.fetchval(sql)
            finally:
                await conn.close()
            if got == expected:
                return
            if loop.time() > deadline:
                raise AssertionError(f"{what}: {sql} gave {got!r} after {timeout}s")
            await asyncio.sleep(0.02)

    async def set_read_only(self, on: bool, timeout: float = 10) -> None:
        """Make every transaction read-only (``on``) or writable again, cluster-wide, as a
        failover tool or an operator does: ``ALTER SYSTEM SET default_transaction_read_only``
        and a reload. Returns once a new session sees the new value; existing sessions
        take it before their next statement. A write then fails with SQLSTATE 25006."""
        value = "on" if on else "off"
        # The session doing it must itself be writable to turn writes back on.
        conn = await self._connect(server_settings={"default_transaction_read_only": "off"})
        try:
            await conn.execute(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        await self._wait_for_new_session(
            "SHOW default_transaction_read_only", value, timeout, "set_read_only"
        )

    async def promote(self, timeout: float = 30) -> None:
        """Promote this standby (``pg_promote``); returns once a new session sees
        ``pg_is_in_recovery()`` false. It then accepts writes, on a new timeline."""
        conn = await self._connect()
        try:
            promoted = await conn.fetchval("SELECT pg_promote(true, $1)", max(1, int(timeout)))
        finally:
            await conn.close()
        if not promoted:
            raise AssertionError(f"pg_promote did not finish in {timeout}s:\n{self.log_tail()}")
        await self._wait_for_new_session("SELECT pg_is_in_recovery()", False, timeout, "promote")
        self.primary = None

    async def current_lsn(self) -> str:
        """This primary's current WAL insert position: past every commit made so far.

        The insert position, not ``pg_current_wal_lsn()`` (the write position): with
        ``synchronous_commit = off`` (the default here) a commit returns before its WAL
        is written, so the write position can still be short of it."""
        conn = await self._connect()
        try:
            lsn: str = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        finally:
            await conn.close()
        return lsn

    async def wait_replayed(self, lsn: str | None = None, timeout: float = 10) -> str:
        """Until this standby has replayed its primary's WAL up to ``lsn`` (default: the
        primary's current position, read now); returns that LSN. Everything committed on
        the primary before the call is then visible here."""
        if lsn is None:
            if self.primary is None:
                raise RuntimeError("wait_replayed: not a standby (and no LSN given)")
            lsn = await self.primary.current_lsn()
        conn = await self._connect()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                # No event tells when replay advances: poll the standby.
                done = await conn.fetchval(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)", lsn
                )
                if done:
                    return lsn
                if loop.time() > deadline:
                    replayed = await conn.fetchval("SELECT pg_last_wal_replay_lsn()::text")
                    raise AssertionError(
                        f"standby replayed {replayed}, not {lsn}, in {timeout}s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.01)
        finally:
            await conn.close()


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


def _try_initdb(
    bindir: Path, user: str | None, settings: Mapping[str, Setting], reasons: list[str]
) -> PgCluster | None:
    root = _new_root(user)
    cluster = PgCluster(bindir=bindir, root=root, user=user, settings=dict(settings))
    try:
        cluster.initdb()
    except Exception as exc:
        reasons.append(f"initdb with {bindir} as {user or 'the current user'}: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        return None
    return cluster


def make_cluster(
    settings: Mapping[str, Setting] | None = None,
) -> tuple[PgCluster | None, list[str]]:
    """Try each way to make a cluster, the machine's binaries first; return it (not
    started), or None and the reasons none worked."""
    settings = settings or {}
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
        cluster = _try_initdb(bindir, user, settings, reasons)
        if cluster is not None:
            return cluster, reasons
    candidate = _pgserver_candidate(reasons)
    if candidate is not None:
        cluster = _try_initdb(*candidate, settings, reasons)
        if cluster is not None:
            return cluster, reasons
    return None, reasons


# The old private name, for whoever imported it.
_make_cluster = make_cluster


def new_cluster(settings: Mapping[str, Setting] | None = None, start: bool = True) -> PgCluster:
    """A new cluster (started unless ``start`` is false); raises
    :class:`ClusterUnavailable` when none can be made here."""
    cluster, reasons = make_cluster(settings)
    if cluster is None:
        raise ClusterUnavailable(reasons)
    if start:
        try:
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
    return cluster


def make_standby(
    primary: PgCluster,
    settings: Mapping[str, Setting] | None = None,
    timeout: float = 30,
) -> PgCluster:
    """A streaming hot standby of the running ``primary``: ``pg_basebackup -R`` into a new
    directory (as the primary's OS user), started; returns once the primary's
    ``pg_stat_replication`` shows it ``streaming``. Destroy it like any cluster."""
    missing = [b for b in ("pg_basebackup", "psql") if not (primary.bindir / b).is_file()]
    if missing:
        raise ClusterUnavailable([f"{primary.bindir} has no {', '.join(missing)}"])
    standby = PgCluster(
        bindir=primary.bindir,
        root=_new_root(primary.user, prefix="pyriver-fault-standby-"),
        user=primary.user,
        settings=dict(primary.settings),
        primary=primary,
    )
    try:
        # -R writes standby.signal and primary_conninfo (from this connection string,
        # application_name included) into postgresql.auto.conf.
        conninfo = (
            f"host=127.0.0.1 port={primary.port} user=postgres "
            f"application_name={standby.application_name}"
        )
        standby._run(
            str(primary.bindir / "pg_basebackup"),
            "-d",
            conninfo,
            "-D",
            str(standby.datadir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
            timeout=timeout,
        )
        if settings:
            standby.configure(settings)
        standby.start()
        deadline = time.monotonic() + timeout
        sql = (
            "SELECT state FROM pg_stat_replication "
            f"WHERE application_name = '{standby.application_name}'"
        )
        # No event says when the WAL receiver is connected: poll the primary.
        while (state := primary.psql(sql)) != "streaming":
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"standby not streaming after {timeout}s (state {state!r}):\n"
                    f"{standby.log_tail()}"
                )
            time.sleep(0.02)
    except BaseException:
        standby.destroy()
        raise
    return standby
