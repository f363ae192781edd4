"""Schema migrations: apply, roll back, list and check the numbered SQL files.

Two migration lines share River's ``river_migration`` table:

- ``main``: River's own line, versions 1-7, producing the same catalog objects as
  River's migrations, so a database migrated by River is one migrated by us;
- ``pyriver``: pyriver_async's additions (River ignores lines other than ``main``).

The SQL files use unqualified names; each runs in its own transaction after
``SET LOCAL search_path`` to the configured schema, so every object lands there.
Each file needs its own transaction: a value added to an enum (004) cannot be used
(006) before the transaction that added it commits.

Concurrent migrators serialise on a session advisory lock held for the whole run;
the one that waited then finds nothing left to do.
"""

from __future__ import annotations

__all__ = [
    "LINES",
    "MigrateResult",
    "Migration",
    "MigrationStatus",
    "ValidationResult",
    "check_schema",
    "known_versions",
    "load_migrations",
    "migrate",
    "migration_status",
    "validate",
]

import hashlib
import importlib.resources
import re
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from pyriver_async._errors import (
    ConfigError,
    MigrationError,
    SchemaNotMigratedError,
    SchemaVersionError,
)

Direction: TypeAlias = Literal["up", "down"]
_Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
#: What the public functions accept: a URL, a connection, or a pool to borrow one from.
Database: TypeAlias = "str | _Conn | asyncpg.Pool[Any]"

MAIN = "main"
PYRIVER = "pyriver"
#: The lines this library manages, in the order they are applied (rolled back in reverse).
LINES: tuple[str, ...] = (MAIN, PYRIVER)

# river_migration gains its `line` column in main 005; until then it can only record
# main versions, so no other line may be applied below it.
_MAIN_VERSION_WITH_LINES = 5

# Tables the library reads and writes; check_schema wants them all present.
_REQUIRED_TABLES = ("river_job", "river_leader", "river_queue", "pyriver_client")

_FILE_RE = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")


def _run_up(schema: str = "public") -> str:
    """The advice that ends most messages, with the schema option when it is needed."""
    if schema == "public":
        return "run `pyriver migrate up`"
    return f"run `pyriver migrate up --schema {shlex.quote(schema)}`"


# ---------------------------------------------------------------------------
# Public result types


@dataclass(frozen=True)
class Migration:
    """One numbered migration of one line, with the SQL of both directions."""

    line: str
    version: int
    name: str
    up_sql: str
    down_sql: str


@dataclass(frozen=True)
class MigrateResult:
    """What :func:`migrate` did: each ``(line, version, name)`` in the order it ran."""

    direction: Direction
    applied: list[tuple[str, int, str]]


@dataclass(frozen=True)
class MigrationStatus:
    """One migration and whether the database records it.

    A version recorded in the database that this library does not know is listed
    too, with an empty ``name``.
    """

    line: str
    version: int
    name: str
    applied: bool
    applied_at: datetime | None


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of :func:`validate`.

    ``missing``: known versions the database lacks. ``unknown``: versions the
    database records that this library does not know (newer versions of a known
    line, or lines managed by other tools). ``ok`` is false when anything is missing
    or a known line is ahead of the library; other tools' lines are only reported.
    """

    ok: bool
    missing: list[tuple[str, int]]
    unknown: list[tuple[str, int]]
    message: str


# ---------------------------------------------------------------------------
# Loading the SQL files


def _migrations_root() -> Traversable:
    # Installed from a wheel: the top-level `migrations/` is shipped as package data.
    try:
        packaged = importlib.resources.files("pyriver_async").joinpath("_migrations")
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual import setups
        pass
    # Running from a checkout: the repository's `migrations/` sits beside the package.
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if checkout.is_dir():
        return checkout
    raise MigrationError(  # pragma: no cover - a broken installation
        "cannot find the SQL migrations: neither the package data "
        "`pyriver_async/_migrations` nor a checkout's `migrations/` directory exists"
    )


@cache
def load_migrations() -> dict[str, tuple[Migration, ...]]:
    """Every known migration, per line, in version order (read once, then cached)."""
    root = _migrations_root()
    result: dict[str, tuple[Migration, ...]] = {}
    for line in LINES:
        directory = root.joinpath(line)
        files: dict[int, dict[str, tuple[str, str]]] = {}
        for entry in directory.iterdir():
            match = _FILE_RE.match(entry.name)
            if match is None:
                continue
            version = int(match["version"])
            files.setdefault(version, {})[match["direction"]] = (
                match["name"],
                entry.read_text(encoding="utf-8"),
            )
        migrations: list[Migration] = []
        for expected, version in enumerate(sorted(files), start=1):
            pair = files[version]
            if version != expected or set(pair) != {"up", "down"}:
                raise MigrationError(
                    f"migrations of line {line!r} are incomplete near version {expected:03d}: "
                    "each version needs an .up.sql and a .down.sql, numbered from 001 "
                    "without gaps"
                )
            name, up_sql = pair["up"]
            down_name, down_sql = pair["down"]
            if name != down_name:
                raise MigrationError(
                    f"{line} {version:03d}: up and down files are named differently "
                    f"({name!r} and {down_name!r})"
                )
            migrations.append(Migration(line, version, name, up_sql, down_sql))
        if not migrations:
            raise MigrationError(f"no migrations found for line {line!r}")
        result[line] = tuple(migrations)
    return result


def known_versions() -> dict[str, int]:
    """The latest version this library knows on each line, e.g. ``{"main": 7, "pyriver": 1}``."""
    return {line: migrations[-1].version for line, migrations in load_migrations().items()}


# ---------------------------------------------------------------------------
# Schema names and connections


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _checked_schema(schema: str) -> str:
    if not isinstance(schema, str) or not schema:
        raise ConfigError("schema must be a non-empty string")
    if "\x00" in schema:
        raise ConfigError("schema must not contain a NUL character")
    # Postgres truncates identifiers to NAMEDATALEN - 1 = 63 bytes; a longer name
    # would silently refer to some other schema.
    if len(schema.encode("utf-8")) >= 64:
        raise ConfigError(f"schema name is longer than 63 bytes: {schema!r}")
    return schema


def _lock_key(schema: str) -> int:
    """The advisory lock that serialises migrators of one schema (a signed 64-bit int)."""
    digest = hashlib.sha256(f"pyriver_migrate\x00{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def _connection(database: Database) -> AsyncIterator[_Conn]:
    if isinstance(database, str):
        conn: asyncpg.Connection[Any] = await asyncpg.connect(database)
        try:
            yield conn
        finally:
            await conn.close()
    elif isinstance(database, asyncpg.Pool):
        async with database.acquire() as pooled:
            yield pooled
    else:
        yield database


# ---------------------------------------------------------------------------
# Reading what the database records


@dataclass
class _Recorded:
    """The rows of river_migration: ``versions[line][version] = created_at``."""

    table_exists: bool
    has_line_column: bool
    versions: dict[str, dict[int, datetime]]

    def applied(self, line: str) -> set[int]:
        return set(self.versions.get(line, {}))

    def current(self, line: str) -> int:
        return max(self.versions.get(line, {}), default=0)


async def _read_recorded(conn: _Conn, schema: str) -> _Recorded:
    row = await conn.fetchrow(
        """
        SELECT EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attname = 'line' AND NOT a.attisdropped
        ) AS has_line
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = 'river_migration' AND c.relkind IN ('r', 'p')
        """,
        schema,
    )
    if row is None:
        return _Recorded(table_exists=False, has_line_column=False, versions={})
    has_line: bool = row["has_line"]
    table = f"{_quote_ident(schema)}.river_migration"
    if has_line:
        rows = await conn.fetch(f"SELECT line, version, created_at FROM {table}")
    else:
        # Before main 005 the table holds main versions only.
        rows = await conn.fetch(f"SELECT 'main' AS line, version, created_at FROM {table}")
    versions: dict[str, dict[int, datetime]] = {}
    for r in rows:
        versions.setdefault(r["line"], {})[int(r["version"])] = r["created_at"]
    return _Recorded(table_exists=True, has_line_column=has_line, versions=versions)


# ---------------------------------------------------------------------------
# Planning


def _check_line(line: str | None) -> None:
    if line is not None and line not in LINES:
        raise MigrationError(
            f"unknown migration line {line!r}; pyriver_async manages: {', '.join(LINES)}"
        )


def _check_target(line: str, target: int) -> None:
    latest = known_versions()[line]
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise MigrationError(f"target must be a version number >= 0, got {target!r}")
    if target > latest:
        raise MigrationError(
            f"line {line!r} has versions 1..{latest} in this release of pyriver_async; "
            f"there is no version {target}"
        )


def _plan_up(
    recorded: _Recorded, target: int | None, line: str | None
) -> list[tuple[Migration, Direction]]:
    known = load_migrations()
    if line is not None:
        goals = {line: known_versions()[line] if target is None else target}
    elif target is None:
        goals = {name: migrations[-1].version for name, migrations in known.items()}
    else:
        goals = {MAIN: target}
    for name, goal in goals.items():
        _check_target(name, goal)

    plan: list[tuple[Migration, Direction]] = []
    main_after = recorded.current(MAIN)
    for name in LINES:
        if name not in goals:
            continue
        applied = recorded.applied(name)
        pending = [m for m in known[name] if m.version <= goals[name] and m.version not in applied]
        if not pending:
            continue
        if applied and pending[0].version < max(applied):
            raise MigrationError(
                f"river_migration records {name} versions up to {max(applied)} but not "
                f"{pending[0].version}; the table was edited by hand or by another tool, "
                "fix it before migrating"
            )
        if name != MAIN and main_after < _MAIN_VERSION_WITH_LINES:
            raise MigrationError(
                f"the {name} line needs main version {_MAIN_VERSION_WITH_LINES} or later "
                f"(the database has main {main_after}); run `pyriver migrate up` without "
                "--line first"
            )
        if name == MAIN:
            main_after = max(main_after, pending[-1].version)
        plan.extend((m, "up") for m in pending)
    return plan


def _plan_line_down(recorded: _Recorded, line: str, goal: int) -> list[tuple[Migration, Direction]]:
    by_version = {m.version: m for m in load_migrations()[line]}
    plan: list[tuple[Migration, Direction]] = []
    for version in sorted(recorded.applied(line), reverse=True):
        if version <= goal:
            break
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"the database records {line} version {version}, which this release of "
                "pyriver_async does not know; roll it back with the tool that applied it"
            )
        plan.append((migration, "down"))
    return plan


def _refuse_foreign_lines(recorded: _Recorded) -> None:
    foreign = sorted(name for name in recorded.versions if name not in LINES)
    if foreign:
        raise MigrationError(
            f"cannot roll main back below {_MAIN_VERSION_WITH_LINES}: river_migration "
            f"records lines that pyriver_async does not manage ({', '.join(foreign)}), "
            "which the pre-005 table cannot hold; roll them back with the tool that "
            "applied them first"
        )


def _plan_down(
    recorded: _Recorded, target: int | None, line: str | None
) -> list[tuple[Migration, Direction]]:
    if line is not None:
        if target is not None:
            _check_target(line, target)
        goal = max(recorded.current(line) - 1, 0) if target is None else target
        if line == MAIN and goal < _MAIN_VERSION_WITH_LINES <= recorded.current(MAIN):
            ours = [name for name in LINES if name != MAIN and recorded.current(name) > 0]
            if ours:
                raise MigrationError(
                    f"cannot roll main back below {_MAIN_VERSION_WITH_LINES} while the "
                    f"{', '.join(ours)} line is applied: roll it back first (`pyriver "
                    f"migrate down --line {ours[0]} --target 0`), or omit --line to roll "
                    "it back along with main"
                )
            _refuse_foreign_lines(recorded)
        return _plan_line_down(recorded, line, goal)

    if target is None:
        # One step: the most recently added line that has something applied goes first.
        for name in reversed(LINES):
            if recorded.current(name) > 0:
                if name == MAIN and recorded.current(MAIN) == _MAIN_VERSION_WITH_LINES:
                    _refuse_foreign_lines(recorded)
                return _plan_line_down(recorded, name, recorded.current(name) - 1)
        return []

    _check_target(MAIN, target)
    plan: list[tuple[Migration, Direction]] = []
    if target < _MAIN_VERSION_WITH_LINES <= recorded.current(MAIN):
        # Below main 005 river_migration cannot record other lines: ours go first.
        for name in reversed(LINES):
            if name != MAIN:
                plan.extend(_plan_line_down(recorded, name, 0))
        _refuse_foreign_lines(recorded)
    plan.extend(_plan_line_down(recorded, MAIN, target))
    return plan


# ---------------------------------------------------------------------------
# Running


async def _run_step(conn: _Conn, schema: str, migration: Migration, direction: Direction) -> None:
    table = f"{_quote_ident(schema)}.river_migration"
    sql = migration.up_sql if direction == "up" else migration.down_sql
    async with conn.transaction():
        # pg_catalog stays implicitly first; pg_temp goes last so that a temporary
        # table can never stand in for one of ours.
        await conn.execute(f"SET LOCAL search_path TO {_quote_ident(schema)}, pg_temp")
        await conn.execute(sql)
        recorded = await _read_recorded(conn, schema)
        if direction == "up":
            if recorded.has_line_column:
                await conn.execute(
                    f"INSERT INTO {table} (line, version) VALUES ($1, $2)",
                    migration.line,
                    migration.version,
                )
            elif recorded.table_exists and migration.line == MAIN:
                await conn.execute(f"INSERT INTO {table} (version) VALUES ($1)", migration.version)
            else:  # pragma: no cover - prevented by the planner
                raise MigrationError(
                    f"cannot record {migration.line} {migration.version:03d}: "
                    "river_migration is missing or has no line column"
                )
        elif recorded.has_line_column:
            await conn.execute(
                f"DELETE FROM {table} WHERE line = $1 AND version = $2",
                migration.line,
                migration.version,
            )
        elif recorded.table_exists:
            await conn.execute(f"DELETE FROM {table} WHERE version = $1", migration.version)
        # else: main 001's down dropped the table, and the record with it.


async def migrate(
    database: Database,
    direction: Direction = "up",
    *,
    target: int | None = None,
    schema: str = "public",
    line: str | None = None,
) -> MigrateResult:
    """Apply or roll back migrations; return what was done.

    ``database`` is a URL, a connection (not inside a transaction) or a pool.

    ``up``: with no ``target`` and no ``line``, everything on every line (main
    first, then pyriver). ``target=N`` applies up to and including version N of the
    ``main`` line, or of ``line`` when given. Creates ``schema`` if it is missing.

    ``down``: with no ``target``, one version: of ``line`` when given, else the
    last pyriver version if any, else the last main version. ``target=N`` rolls
    back while the version is above N (``0`` removes everything) on ``line``, or on
    main when no line is given; rolling main below 5 then first rolls back the
    pyriver line, which river_migration cannot record before main 005.

    Concurrent calls on one schema wait for each other on an advisory lock.

    Raises :class:`MigrationError` when a migration fails (nothing of that migration
    stays applied; the ones before it do) or the request is impossible.
    """
    if direction not in ("up", "down"):
        raise MigrationError(f"direction must be 'up' or 'down', got {direction!r}")
    _check_line(line)
    schema = _checked_schema(schema)
    load_migrations()  # fail on a broken installation before touching the database
    lock_key = _lock_key(schema)
    done: list[tuple[str, int, str]] = []
    async with _connection(database) as conn:
        if conn.is_in_transaction():
            raise MigrationError(
                "migrate() needs a connection outside any transaction: each migration "
                "commits on its own"
            )
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
        unlock = "SELECT pg_advisory_unlock($1)"
        try:
            recorded = await _read_recorded(conn, schema)
            if direction == "up":
                plan = _plan_up(recorded, target, line)
            else:
                plan = _plan_down(recorded, target, line)
            if plan and direction == "up":
                await _ensure_schema(conn, schema)
            for migration, step_direction in plan:
                try:
                    await _run_step(conn, schema, migration, step_direction)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"{migration.line} {migration.version:03d} {migration.name} "
                        f"({step_direction}) failed in schema {schema!r}: {exc}"
                        + (f" ({exc.hint})" if getattr(exc, "hint", None) else "")
                    ) from exc
                done.append((migration.line, migration.version, migration.name))
        except BaseException:
            # Best effort, without hiding the original error: a connection we opened
            # is closed next, and a pool resets the ones it gets back, which both
            # release the lock anyway.
            if not conn.is_closed():
                try:
                    await conn.execute(unlock, lock_key)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    pass
            raise
        await conn.execute(unlock, lock_key)
    return MigrateResult(direction=direction, applied=done)


async def _ensure_schema(conn: _Conn, schema: str) -> None:
    # Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
    # database even when the schema is already there.
    exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    if exists is None:
        await conn.execute(f"CREATE SCHEMA {_quote_ident(schema)}")


# ---------------------------------------------------------------------------
# Inspecting


async def migration_status(database: Database, *, schema: str = "public") -> list[MigrationStatus]:
    """Every known migration with whether (and when) it was applied, line by line.

    Versions the database records but this library does not know come last in
    their line, with an empty ``name``.
    """
    schema = _checked_schema(schema)
    async with _connection(database) as conn:
        recorded = await _read_recorded(conn, schema)
    known = load_migrations()
    result: list[MigrationStatus] = []
    lines = list(LINES) + sorted(name for name in recorded.versions if name not in LINES)
    for name in lines:
        versions = recorded.versions.get(name, {})
        known_here = {m.version: m for m in known.get(name, ())}
        for version in sorted(set(known_here) | set(versions)):
            migration = known_here.get(version)
            result.append(
                MigrationStatus(
                    line=name,
                    version=version,
                    name=migration.name if migration is not None else "",
                    applied=version in versions,
                    applied_at=versions.get(version),
                )
            )
    return result


def _versions_text(versions: list[int]) -> str:
    word = "version" if len(versions) == 1 else "versions"
    return f"{word} {', '.join(str(v) for v in versions)}"


async def validate(database: Database, *, schema: str = "public") -> ValidationResult:
    """Compare the recorded versions with the ones this library knows.

    A database migrated by River (main 1..7, no pyriver rows) is up to date
    (``ok=True``): pyriver_async works on it as it is. The optional pyriver line is
    then listed in ``missing`` and the message says what ``pyriver migrate up`` would
    add (client liveness). Nothing beyond main 1..7 is required of the main line.
    Lines of other tools are listed in ``unknown`` but do not make the result fail; a
    known line ahead of this library does.
    """
    schema = _checked_schema(schema)
    async with _connection(database) as conn:
        recorded = await _read_recorded(conn, schema)
    latest = known_versions()
    missing: list[tuple[str, int]] = []
    unknown: list[tuple[str, int]] = []
    parts: list[str] = []
    behind = ahead = False
    for name in LINES:
        applied = recorded.applied(name)
        line_missing = [v for v in range(1, latest[name] + 1) if v not in applied]
        line_ahead = sorted(v for v in applied if v > latest[name])
        missing.extend((name, v) for v in line_missing)
        unknown.extend((name, v) for v in line_ahead)
        if line_ahead:
            ahead = True
            parts.append(
                f"{name} line is at version {max(line_ahead)}, newer than this release of "
                f"pyriver_async knows ({latest[name]}): upgrade pyriver_async"
            )
        elif line_missing and name == PYRIVER and not applied:
            # A database River migrated: used as it is, with rescue by age only.
            parts.append(
                f"{name} line not applied (optional: `pyriver migrate up` adds the client "
                "liveness table, so jobs of a dead process are rescued in seconds, not by age)"
            )
        elif line_missing:
            behind = True
            parts.append(f"{name} line needs {_versions_text(line_missing)}")
        else:
            parts.append(f"{name} line up to date")
    for name in sorted(n for n in recorded.versions if n not in LINES):
        versions = sorted(recorded.versions[name])
        unknown.extend((name, v) for v in versions)
        parts.append(f"line {name!r} ({_versions_text(versions)}) is not managed by pyriver_async")
    message = "; ".join(parts)
    if not recorded.table_exists:
        message = f"schema {schema!r} has no river_migration table; {message}"
    if behind:
        message += f"; {_run_up(schema)}"
    return ValidationResult(
        ok=not (behind or ahead), missing=missing, unknown=unknown, message=message
    )


async def check_schema(conn: _Conn, schema: str) -> bool:
    """Raise unless ``schema`` holds exactly the migrations this library knows.

    :class:`SchemaNotMigratedError` when the tables are missing;
    :class:`SchemaVersionError` when the recorded main or pyriver version is behind
    or ahead of this library's. A database River migrated (no pyriver line at all) is
    accepted as it is: the result says whether the pyriver line, and with it the
    client liveness table, is there.
    """
    schema = _checked_schema(schema)
    recorded = await _read_recorded(conn, schema)
    if not recorded.table_exists or recorded.current(MAIN) == 0:
        raise SchemaNotMigratedError(
            f"schema {schema!r} has no pyriver_async tables (river_migration records no "
            f"main versions); {_run_up(schema)}"
        )
    liveness = recorded.current(PYRIVER) > 0
    for name, library_version in known_versions().items():
        database_version = recorded.current(name)
        if database_version == library_version or (name == PYRIVER and not liveness):
            continue
        if database_version < library_version:
            advice = _run_up(schema)
        else:
            advice = "upgrade pyriver_async to a release that knows it"
        raise SchemaVersionError(
            f"schema {schema!r} is at {name} version {database_version} but this release of "
            f"pyriver_async needs {name} version {library_version}; {advice}",
            database_version=database_version,
            library_version=library_version,
        )
    present = await conn.fetch(
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
        """,
        schema,
        list(_REQUIRED_TABLES),
    )
    required = set(_REQUIRED_TABLES) if liveness else set(_REQUIRED_TABLES) - {"pyriver_client"}
    absent = sorted(required - {r["relname"] for r in present})
    if absent:
        raise SchemaNotMigratedError(
            f"schema {schema!r} records its migrations as applied but lacks "
            f"{', '.join(absent)}; restore them, or roll back and {_run_up(schema)}"
        )
    return liveness
