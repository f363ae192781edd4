"""Planning migrations: which files to run, in which order, from what the database
records (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeAlias

from .._errors import MigrationError
from .files import LINES, MAIN, Migration, known_versions, load_migrations

__all__ = [
    "MAIN_VERSION_WITH_LINES",
    "Direction",
    "Recorded",
    "check_line",
    "check_target",
    "plan_down",
    "plan_up",
]

Direction: TypeAlias = Literal["up", "down"]

# river_migration gains its `line` column in main 005; until then it can only record
# main versions, so no other line may be applied below it.
MAIN_VERSION_WITH_LINES = 5


@dataclass
class Recorded:
    """The rows of river_migration: ``versions[line][version] = created_at``."""

    table_exists: bool
    has_line_column: bool
    versions: dict[str, dict[int, datetime]]

    def applied(self, line: str) -> set[int]:
        return set(self.versions.get(line, {}))

    def current(self, line: str) -> int:
        return max(self.versions.get(line, {}), default=0)


def check_line(line: str | None) -> None:
    if line is not None and line not in LINES:
        raise MigrationError(
            f"unknown migration line {line!r}; pyriver_async manages: {', '.join(LINES)}"
        )


def check_target(line: str, target: int) -> None:
    latest = known_versions()[line]
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise MigrationError(f"target must be a version number >= 0, got {target!r}")
    if target > latest:
        raise MigrationError(
            f"line {line!r} has versions 1..{latest} in this release of pyriver_async; "
            f"there is no version {target}"
        )


def plan_up(
    recorded: Recorded, target: int | None, line: str | None
) -> list[tuple[Migration, Direction]]:
    known = load_migrations()
    if line is not None:
        goals = {line: known_versions()[line] if target is None else target}
    elif target is None:
        goals = {name: migrations[-1].version for name, migrations in known.items()}
    else:
        goals = {MAIN: target}
    for name, goal in goals.items():
        check_target(name, goal)

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
        if name != MAIN and main_after < MAIN_VERSION_WITH_LINES:
            raise MigrationError(
                f"the {name} line needs main version {MAIN_VERSION_WITH_LINES} or later "
                f"(the database has main {main_after}); run `pyriver migrate up` without "
                "--line first"
            )
        if name == MAIN:
            main_after = max(main_after, pending[-1].version)
        plan.extend((m, "up") for m in pending)
    return plan


def plan_line_down(recorded: Recorded, line: str, goal: int) -> list[tuple[Migration, Direction]]:
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


def refuse_foreign_lines(recorded: Recorded) -> None:
    foreign = sorted(name for name in recorded.versions if name not in LINES)
    if foreign:
        raise MigrationError(
            f"cannot roll main back below {MAIN_VERSION_WITH_LINES}: river_migration "
            f"records lines that pyriver_async does not manage ({', '.join(foreign)}), "
            "which the pre-005 table cannot hold; roll them back with the tool that "
            "applied them first"
        )


def plan_down(
    recorded: Recorded, target: int | None, line: str | None
) -> list[tuple[Migration, Direction]]:
    if line is not None:
        if target is not None:
            check_target(line, target)
        goal = max(recorded.current(line) - 1, 0) if target is None else target
        if line == MAIN and goal < MAIN_VERSION_WITH_LINES <= recorded.current(MAIN):
            ours = [name for name in LINES if name != MAIN and recorded.current(name) > 0]
            if ours:
                raise MigrationError(
                    f"cannot roll main back below {MAIN_VERSION_WITH_LINES} while the "
                    f"{', '.join(ours)} line is applied: roll it back first (`pyriver "
                    f"migrate down --line {ours[0]} --target 0`), or omit --line to roll "
                    "it back along with main"
                )
            refuse_foreign_lines(recorded)
        return plan_line_down(recorded, line, goal)

    if target is None:
        # One step: the most recently added line that has something applied goes first.
        for name in reversed(LINES):
            if recorded.current(name) > 0:
                if name == MAIN and recorded.current(MAIN) == MAIN_VERSION_WITH_LINES:
                    refuse_foreign_lines(recorded)
                return plan_line_down(recorded, name, recorded.current(name) - 1)
        return []

    check_target(MAIN, target)
    plan: list[tuple[Migration, Direction]] = []
    if target < MAIN_VERSION_WITH_LINES <= recorded.current(MAIN):
        # Below main 005 river_migration cannot record other lines: ours go first.
        for name in reversed(LINES):
            if name != MAIN:
                plan.extend(plan_line_down(recorded, name, 0))
        refuse_foreign_lines(recorded)
    plan.extend(plan_line_down(recorded, MAIN, target))
    return plan
