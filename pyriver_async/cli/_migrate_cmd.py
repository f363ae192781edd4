"""``pyriver migrate up|down|list|validate``: run and inspect the schema migrations."""

from __future__ import annotations

__all__ = ["register"]

import argparse
import asyncio
import os
import sys
from typing import Any

from pyriver_async._errors import PyRiverError
from pyriver_async._migrate import (
    LINES,
    migrate,
    migration_status,
    validate,
)

_DATABASE_HELP = "PostgreSQL URL (default: the DATABASE_URL environment variable)"
_SCHEMA_HELP = "schema that holds the tables (default: public)"


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps a value given before the action (`migrate --schema s up`) from
    # being overwritten by the action parser's default; defaults are applied later.
    parser.add_argument(
        "--database-url", default=argparse.SUPPRESS, metavar="URL", help=_DATABASE_HELP
    )
    parser.add_argument("--schema", default=argparse.SUPPRESS, help=_SCHEMA_HELP)


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a version is 0 or more, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add ``migrate`` and its actions to the ``pyriver`` parser."""
    migrate_parser: argparse.ArgumentParser = subparsers.add_parser(
        "migrate",
        help="apply, roll back, list or validate the schema migrations",
        description="Apply, roll back, list or validate the schema migrations.",
    )
    _add_connection_options(migrate_parser)
    actions = migrate_parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    up = actions.add_parser(
        "up",
        help="apply migrations",
        description=(
            "Apply migrations. Without options: everything, on every line (main, then "
            "pyriver). --target N applies up to and including version N of the main "
            "line, or of --line."
        ),
    )
    up.add_argument("--target", type=_version, metavar="N", help="last version to apply")
    up.add_argument("--line", choices=LINES, help="migration line (default: see above)")
    up.set_defaults(handler=_up)

    down = actions.add_parser(
        "down",
        help="roll back migrations",
        description=(
            "Roll back migrations. Without options: one version (the last pyriver "
            "version, else the last main version). --target N rolls back while the "
            "version is above N (0 removes everything)."
        ),
    )
    down.add_argument("--target", type=_version, metavar="N", help="version to roll back to")
    down.add_argument("--line", choices=LINES, help="migration line")
    down.set_defaults(handler=_down)

    listing = actions.add_parser("list", help="list migrations and whether they are applied")
    listing.set_defaults(handler=_list)

    check = actions.add_parser(
        "validate",
        help="exit 0 when the schema is up to date, 1 when not",
    )
    check.set_defaults(handler=_validate)

    for action in (up, down, listing, check):
        _add_connection_options(action)
        action.set_defaults(parser=action)


def _connection_settings(args: argparse.Namespace) -> tuple[str, str]:
    url: str | None = getattr(args, "database_url", None) or os.environ.get("DATABASE_URL")
    if not url:
        parser: argparse.ArgumentParser = args.parser
        parser.error("no database: pass --database-url or set DATABASE_URL")
    schema: str = getattr(args, "schema", "public")
    return url, schema


def _fail(exc: BaseException) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace, direction: str) -> int:
    url, schema = _connection_settings(args)
    try:
        result = asyncio.run(
            migrate(
                url,
                "up" if direction == "up" else "down",
                target=args.target,
                schema=schema,
                line=args.line,
            )
        )
    except (PyRiverError, OSError, ValueError) as exc:
        return _fail(exc)
    verb = "applied" if direction == "up" else "rolled back"
    for line, version, name in result.applied:
        print(f"{verb} {line} {version:03d} {name}")
    if not result.applied:
        print("nothing to do")
    return 0


def _up(args: argparse.Namespace) -> int:
    return _run(args, "up")


def _down(args: argparse.Namespace) -> int:
    return _run(args, "down")


def _list(args: argparse.Namespace) -> int:
    url, schema = _connection_settings(args)
    try:
        statuses = asyncio.run(migration_status(url, schema=schema))
    except (PyRiverError, OSError, ValueError) as exc:
        return _fail(exc)
    width = max((len(s.name) for s in statuses), default=0)
    for s in statuses:
        name = s.name or "(unknown to pyriver_async)"
        if s.applied_at is not None:
            state = f"applied {s.applied_at.isoformat(timespec='seconds')}"
        else:
            state = "applied" if s.applied else "pending"
        print(f"{s.line:<8} {s.version:03d} {name:<{width}}  {state}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    url, schema = _connection_settings(args)
    try:
        result = asyncio.run(validate(url, schema=schema))
    except (PyRiverError, OSError, ValueError) as exc:
        return _fail(exc)
    print(result.message)
    return 0 if result.ok else 1
