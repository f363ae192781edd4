"""Schema migrations: apply, roll back, list and check the numbered SQL files.

Two migration lines share River's ``river_migration`` table:

- ``main``: River's own line, versions 1-8, producing the same catalog objects as
  River's migrations, so a database migrated by River is one migrated by us;
- ``pyriver``: pyriver_async's additions (River ignores lines other than ``main``).

The SQL files use unqualified names; each runs in its own transaction after
``SET LOCAL search_path`` to the configured schema, so every object lands there.
Each file needs its own transaction: a value added to an enum (004) cannot be used
(006) before the transaction that added it commits.

Concurrent migrators serialise on a session advisory lock held for the whole run;
the one that waited then finds nothing left to do. Every statement runs through the
driver seam (``Executor.migration_*``); the files live in :mod:`.files` and the
planning, which does no I/O, in :mod:`.plan`.
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
import logging
import shlex
from dataclasses import dataclass
from datetime import datetime

from .._driver import Executor
from .._driver.asyncpg.admin import Database, open_executor
from .._driver.columns import JOB_COLUMNS
from .._errors import (
    ConfigError,
    DatabaseError,
    MigrationError,
    SchemaNotMigratedError,
    SchemaVersionError,
)
from .files import (
    LINES,
    MAIN,
    MIN_MAIN_VERSION,
    PYRIVER,
    Migration,
    known_versions,
    load_migrations,
)
from .plan import Direction, Recorded, check_line, plan_down, plan_up

log = logging.getLogger("pyriver_async.migrate")

# Tables the library reads and writes; check_schema wants them all present.
_REQUIRED_TABLES = ("river_job", "river_leader", "river_queue", "pyriver_client")
# What the library reads and writes of River's tables, checked when River's main line
# is ahead of the versions this library knows.
_REQUIRED_COLUMNS = {
    "river_job": JOB_COLUMNS,
    "river_queue": ("name", "created_at", "metadata", "paused_at", "updated_at"),
    "river_leader": ("name", "leader_id", "elected_at", "expires_at"),
    "river_migration": ("line", "version", "created_at"),
}
_REQUIRED_INDEXES = (
    "river_job_prioritized_fetching_index",  # the claim
    "river_job_state_and_finalized_at_index",  # the cleaner
    "river_job_unique_idx",  # unique inserts (ON CONFLICT)
    "river_job_kind",
    "river_job_args_index",
    "river_job_metadata_index",
)
_warned_newer: set[tuple[str, int]] = set()


def run_up(schema: str = "public") -> str:
    """The advice that ends most messages, with the schema option when it is needed."""
    if schema == "public":
        return "run `pyriver migrate up`"
    return f"run `pyriver migrate up --schema {shlex.quote(schema)}`"


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


def checked_schema(schema: str) -> str:
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


async def read_recorded(ex: Executor) -> Recorded:
    """What river_migration records, line by line."""
    has_line = await ex.migration_table_info()
    if has_line is None:
        return Recorded(table_exists=False, has_line_column=False, versions={})
    versions: dict[str, dict[int, datetime]] = {}
    for r in await ex.migration_rows(has_line=has_line):
        versions.setdefault(r.line, {})[r.version] = r.created_at
    return Recorded(table_exists=True, has_line_column=has_line, versions=versions)


def _ahead(recorded: Recorded) -> bool:
    return recorded.current(MAIN) > known_versions()[MAIN]


async def missing_catalog_objects(ex: Executor) -> list[str]:
    """What of River's tables the library uses is absent (``table.column``, indexes)."""
    present = await ex.schema_columns(tables=list(_REQUIRED_COLUMNS))
    missing = [
        f"{table}.{column}"
        for table, columns in _REQUIRED_COLUMNS.items()
        for column in columns
        if (table, column) not in present
    ]
    indexes = await ex.schema_indexes(names=_REQUIRED_INDEXES)
    missing += [f"index {name}" for name in _REQUIRED_INDEXES if name not in indexes]
    return missing


def _warn_newer_once(schema: str, database_version: int, library_version: int) -> None:
    if (schema, database_version) in _warned_newer:
        return
    _warned_newer.add((schema, database_version))
    log.warning(
        "schema %r is at River's main migration version %d, newer than this release of "
        "pyriver_async knows (%d); every table, column and index it uses is there, so it "
        "goes on. Upgrade pyriver_async when you can.",
        schema,
        database_version,
        library_version,
    )


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
    check_line(line)
    schema = checked_schema(schema)
    load_migrations()  # fail on a broken installation before touching the database
    lock_key = _lock_key(schema)
    done: list[tuple[str, int, str]] = []
    async with open_executor(database, schema) as ex:
        if ex.in_transaction():
            raise MigrationError(
                "migrate() needs a connection outside any transaction: each migration "
                "commits on its own"
            )
        await ex.migration_lock(key=lock_key)
        try:
            recorded = await read_recorded(ex)
            if direction == "up":
                steps = plan_up(recorded, target, line)
            else:
                steps = plan_down(recorded, target, line)
            if steps and direction == "up":
                await ex.schema_ensure()
            for migration, step_direction in steps:
                try:
                    await ex.migration_run(
                        script=migration.up_sql if step_direction == "up" else migration.down_sql,
                        line=migration.line,
                        version=migration.version,
                        up=step_direction == "up",
                        has_line=None,
                    )
                except DatabaseError as exc:
                    cause = exc.__cause__
                    hint = getattr(cause, "hint", None)
                    raise MigrationError(
                        f"{migration.line} {migration.version:03d} {migration.name} "
                        f"({step_direction}) failed in schema {schema!r}: {exc}"
                        + (f" ({hint})" if hint else "")
                    ) from exc
                done.append((migration.line, migration.version, migration.name))
        except BaseException:
            # Best effort, without hiding the original error: a connection we opened
            # is closed next, and a pool resets the ones it gets back, which both
            # release the lock anyway.
            try:
                await ex.migration_unlock(key=lock_key)
            except (DatabaseError, MigrationError):
                pass
            raise
        await ex.migration_unlock(key=lock_key)
    return MigrateResult(direction=direction, applied=done)


async def migration_status(database: Database, *, schema: str = "public") -> list[MigrationStatus]:
    """Every known migration with whether (and when) it was applied, line by line.

    Versions the database records but this library does not know come last in
    their line, with an empty ``name``.
    """
    schema = checked_schema(schema)
    async with open_executor(database, schema) as ex:
        recorded = await read_recorded(ex)
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

    A database migrated by River (main 1..8, no pyriver rows) is up to date
    (``ok=True``): pyriver_async works on it as it is. The optional pyriver line is
    then listed in ``missing`` and the message says what ``pyriver migrate up`` would
    add (client liveness). Lines of other tools are listed in ``unknown`` but do not
    make the result fail. A main line ahead of this library (River upgraded first) is
    accepted when every table, column and index the library uses is still there
    (checked in the catalog), and refused otherwise; our own line ahead is refused.
    """
    schema = checked_schema(schema)
    async with open_executor(database, schema) as ex:
        recorded = await read_recorded(ex)
        missing_objects = await missing_catalog_objects(ex) if _ahead(recorded) else []
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
        if line_ahead and (name != MAIN or missing_objects):
            ahead = True
            parts.append(
                f"{name} line is at version {max(line_ahead)}, newer than this release of "
                f"pyriver_async knows ({latest[name]})"
                + (f" and lacks {', '.join(missing_objects)}" if missing_objects else "")
                + ": upgrade pyriver_async"
            )
        elif line_ahead:
            parts.append(
                f"{name} line is at version {max(line_ahead)}, newer than this release of "
                f"pyriver_async knows ({latest[name]}); everything it uses is there, so it "
                "works (upgrade pyriver_async when you can)"
            )
        elif line_missing and name == MAIN and min(line_missing) > MIN_MAIN_VERSION:
            # Only versions that change nothing the library needs (River's 008).
            parts.append(
                f"{name} line usable as it is (`pyriver migrate up` would record "
                f"{_versions_text(line_missing)}, which change nothing on PostgreSQL)"
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
        message += f"; {run_up(schema)}"
    return ValidationResult(
        ok=not (behind or ahead), missing=missing, unknown=unknown, message=message
    )


async def check_schema(ex: Executor) -> bool:
    """Raise unless the executor's schema holds what this library needs.

    :class:`SchemaNotMigratedError` when the tables are missing;
    :class:`SchemaVersionError` when the recorded main or pyriver version is behind
    this library's, or ahead of it. A database River migrated (no pyriver line at
    all) is accepted as it is: the result says whether the pyriver line, and with it
    the client liveness table, is there. A main line newer than this library knows
    (River upgraded first) is accepted, with one warning naming both versions, when
    the catalog still has every table, column and index the library uses.
    """
    schema = ex.queries.schema
    recorded = await read_recorded(ex)
    if not recorded.table_exists or recorded.current(MAIN) == 0:
        raise SchemaNotMigratedError(
            f"schema {schema!r} has no pyriver_async tables (river_migration records no "
            f"main versions); {run_up(schema)}"
        )
    liveness = recorded.current(PYRIVER) > 0
    for name, library_version in known_versions().items():
        database_version = recorded.current(name)
        if database_version == library_version or (name == PYRIVER and not liveness):
            continue
        if database_version > library_version and name == MAIN:
            missing = await missing_catalog_objects(ex)
            if not missing:
                _warn_newer_once(schema, database_version, library_version)
                continue
            raise SchemaVersionError(
                f"schema {schema!r} is at main version {database_version}, newer than this "
                f"release of pyriver_async knows ({library_version}), and lacks "
                f"{', '.join(missing)}; upgrade pyriver_async to a release that knows it",
                database_version=database_version,
                library_version=library_version,
            )
        if name == MAIN and MIN_MAIN_VERSION <= database_version < library_version:
            continue  # newer versions change nothing on PostgreSQL (files.MIN_MAIN_VERSION)
        if database_version < library_version:
            advice = run_up(schema)
        else:
            advice = "upgrade pyriver_async to a release that knows it"
        raise SchemaVersionError(
            f"schema {schema!r} is at {name} version {database_version} but this release of "
            f"pyriver_async needs {name} version {library_version}; {advice}",
            database_version=database_version,
            library_version=library_version,
        )
    present = {t for t, _ in await ex.schema_columns(tables=_REQUIRED_TABLES)}
    required = set(_REQUIRED_TABLES) if liveness else set(_REQUIRED_TABLES) - {"pyriver_client"}
    absent = sorted(required - present)
    if absent:
        raise SchemaNotMigratedError(
            f"schema {schema!r} records its migrations as applied but lacks "
            f"{', '.join(absent)}; restore them, or roll back and {run_up(schema)}"
        )
    return liveness
