"""The numbered SQL migration files, from the wheel or from a checkout."""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path

from .._errors import MigrationError

__all__ = [
    "LINES",
    "MAIN",
    "MIN_MAIN_VERSION",
    "PYRIVER",
    "Migration",
    "known_versions",
    "load_migrations",
]

MAIN = "main"
PYRIVER = "pyriver"
#: The lines this library manages, in the order they are applied (rolled back in reverse).
LINES: tuple[str, ...] = (MAIN, PYRIVER)
#: The oldest main version the library works on: River 0.43's 7. Version 8 changes
#: nothing on PostgreSQL (it is River's SQLite change), so a database River 0.43
#: migrated stays usable as it is; `pyriver migrate up` records 8 all the same.
MIN_MAIN_VERSION = 7

_FILE_RE = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered migration of one line, with the SQL of both directions."""

    line: str
    version: int
    name: str
    up_sql: str
    down_sql: str


def _migrations_root() -> Traversable:
    # Installed from a wheel: the top-level `migrations/` is shipped as package data.
    try:
        packaged = importlib.resources.files("pyriver_async").joinpath("_migrations")
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual import setups
        pass
    # Running from a checkout: the repository's `migrations/` sits beside the package.
    checkout = Path(__file__).resolve().parents[2] / "migrations"
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
