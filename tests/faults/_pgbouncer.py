"""A PgBouncer of the test's own, in front of any PostgreSQL (a throwaway cluster or the
machine's server).

Debian's ``pgbouncer`` runs in the foreground from a temporary directory holding its
``pgbouncer.ini``, ``userlist.txt`` and log, listening on a free port of 127.0.0.1.
PgBouncer refuses to run as root: as root it runs as the ``postgres`` OS user. Auth is
``trust`` (the user must be listed in ``userlist.txt``: ``postgres`` is, add others with
``users=``); every database name is forwarded as it is to the target (``* =``).

    bouncer = PgBouncer("127.0.0.1", cluster.port, pool_mode="transaction")
    bouncer.start()
    conn = await asyncpg.connect(bouncer.url("pyriver"), statement_cache_size=0)
    ...
    bouncer.stop()

:func:`ensure_binary` finds the binary, installing Debian's package when it is missing
and we are root; the ``pgbouncer`` fixtures (``tests/faults/conftest.py``) skip only when
it is missing and cannot be installed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from ._cluster import free_port

__all__ = ["DEBIAN_BINARY", "PgBouncer", "ensure_binary", "find_binary"]

DEBIAN_BINARY = Path("/usr/sbin/pgbouncer")
POOL_MODES = ("session", "transaction", "statement")


def find_binary() -> Path | None:
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    return DEBIAN_BINARY if DEBIAN_BINARY.is_file() else None


def _apt_install(package: str) -> tuple[bool, str]:
    """``apt-get install`` ``package`` non-interactively, updating the index and trying
    again when the first attempt fails; returns (success, what apt said last)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    out = ""
    for step in (install, ["apt-get", "update"], install):
        try:
            proc = subprocess.run(
                step, env=env, capture_output=True, text=True, timeout=600, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"{' '.join(step)}: {exc}"
        out = (proc.stdout + proc.stderr)[-1500:]
        if step is install and proc.returncode == 0:
            return True, out
    return False, out


def ensure_binary() -> tuple[Path | None, str]:
    """The pgbouncer binary, installed from Debian's package if need be (as root);
    else None and why not."""
    found = find_binary()
    if found is not None:
        return found, ""
    if os.geteuid() != 0:
        return None, "pgbouncer is not installed, and we are not root to apt-get install it"
    if shutil.which("apt-get") is None:
        return None, "pgbouncer is not installed, and there is no apt-get to install it"
    _, said = _apt_install("pgbouncer")
    found = find_binary()
    if found is None:
        return None, f"pgbouncer is not installed and `apt-get install pgbouncer` failed: {said}"
    return found, ""


def _default_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("pgbouncer refuses root, and there is no `postgres` OS user") from exc
    return "postgres"


@dataclass
class PgBouncer:
    """One pgbouncer process forwarding every database to ``target_host:target_port``."""

    target_host: str
    target_port: int
    pool_mode: str = "transaction"
    # Server connections per (database, user) pair: small, the server may be shared.
    pool_size: int = 4
    max_client_conn: int = 200
    users: Sequence[str] = ("postgres",)
    # More [pgbouncer] settings (e.g. server_lifetime, query_wait_timeout).
    extra: Mapping[str, str | int] = field(default_factory=dict)
    binary: Path = DEBIAN_BINARY
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    user: str | None = field(default_factory=_default_user)
    root: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {POOL_MODES}, not {self.pool_mode!r}")

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "pgbouncer.log"

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def _config(self) -> str:
        assert self.root is not None
        settings: dict[str, str | int] = {
            "listen_addr": self.host,
            "listen_port": self.port,
            "unix_socket_dir": "",  # TCP only: nothing lands in /tmp or /var/run
            "auth_type": "trust",
            "auth_file": str(self.root / "userlist.txt"),
            "admin_users": "postgres",
            "pool_mode": self.pool_mode,
            "default_pool_size": self.pool_size,
            "max_client_conn": self.max_client_conn,
            "logfile": str(self.logfile),
            # Sent by some drivers at startup (psycopg, JDBC); pgbouncer refuses
            # parameters it does not know unless told to ignore them.
            "ignore_startup_parameters": "extra_float_digits",
            **self.extra,
        }
        return "\n".join(
            [
                "[databases]",
                f"* = host={self.target_host} port={self.target_port}",
                "",
                "[pgbouncer]",
                *(f"{k} = {v}" for k, v in settings.items()),
                "",
            ]
        )

    def start(self, timeout: float = 15) -> None:
        """Start it; returns once it accepts TCP connections."""
        if self.proc is not None:
            raise RuntimeError("already started")
        self.root = Path(tempfile.mkdtemp(prefix="pyriver-pgbouncer-"))
        (self.root / "pgbouncer.ini").write_text(self._config())
        (self.root / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in self.users))
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            for p in (self.root, self.root / "pgbouncer.ini", self.root / "userlist.txt"):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)
        with (self.root / "stderr.log").open("wb") as err:
            self.proc = subprocess.Popen(
                [str(self.binary), "-q", str(self.root / "pgbouncer.ini")],
                user=self.user,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
            )
        # pgbouncer tells nobody when it listens (no sd_notify socket here): try the port.
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {self.proc.returncode}:\n"
                    f"{(self.root / 'stderr.log').read_text(errors='replace')}\n{self.log_text()}"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pgbouncer not listening after {timeout}s:\n{self.log_text()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10) -> None:
        """Immediate shutdown (SIGTERM: every client connection is closed); SIGKILL
        after ``timeout``. Removes its directory."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self.root is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.root)

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
