"""What every ``pyriver`` command shares: the connection options, one-line errors,
tables for a terminal and JSON for scripts, and the job filter options."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from pyriver_async._errors import PyRiverError

__all__ = [
    "CommandError",
    "add_connection_options",
    "add_filter_options",
    "connection",
    "filter_from",
    "print_json",
    "print_table",
    "run",
]

DATABASE_HELP = "PostgreSQL URL (default: the DATABASE_URL environment variable)"
SCHEMA_HELP = "schema that holds the tables (default: public)"


class CommandError(Exception):
    """A refusal worded for the user; ``code`` is the exit code (2: usage)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a value given on the command's parser is not overwritten by the
    # subcommand parser's default (`pyriver jobs --schema s list`).
    parser.add_argument(
        "--database-url", default=argparse.SUPPRESS, metavar="URL", help=DATABASE_HELP
    )
    parser.add_argument("--schema", default=argparse.SUPPRESS, help=SCHEMA_HELP)


def connection(args: argparse.Namespace) -> tuple[str, str]:
    """The database URL and schema of a command, or a usage error."""
    url: str | None = getattr(args, "database_url", None) or os.environ.get("DATABASE_URL")
    if not url:
        raise CommandError("no database: pass --database-url or set DATABASE_URL", 2)
    schema: str = getattr(args, "schema", None) or "public"
    return url, schema


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 2000 else text[:2000] + "…"


def run(main: Callable[[], Awaitable[int]]) -> int:
    """Run a command's coroutine; every failure becomes one line on stderr and exit 1
    (2 for a usage error), never a traceback."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except CommandError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return exc.code
    except PyRiverError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a DSN the driver cannot read, a refused connection...
        print(f"error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value, enc_hook=_enc).decode() + "\n")


def _enc(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise NotImplementedError(type(obj))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns aligned for a terminal (plain text, so it pipes cleanly too)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()
    print(line)
    for row in cells:
        print("  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip())


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, datetime):
        return v.astimezone().isoformat(timespec="seconds")
    if isinstance(v, list | tuple):
        return ",".join(str(x) for x in v) or "-"
    text = " ".join(str(v).split())
    return text if len(text) <= 60 else text[:59] + "…"


# -- filters ------------------------------------------------------------------------


def _split(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out: list[str] = []
    for v in values:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out


def _time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if t.tzinfo is None:
        t = t.astimezone()  # a time without an offset is local time
    return t


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """The filters of ``client.list`` as options (repeatable, or comma-separated)."""
    g = parser.add_argument_group("filters (all given must match)")
    g.add_argument("--state", action="append", metavar="STATE", help="job state")
    g.add_argument("--queue", action="append", metavar="QUEUE", help="queue name")
    g.add_argument("--kind", action="append", metavar="KIND", help="job kind")
    g.add_argument("--id", action="append", metavar="ID", dest="id_filter", help="job id")
    g.add_argument("--priority", action="append", metavar="N", help="priority, 1 to 4")
    g.add_argument("--tag", action="append", metavar="TAG", help="has any of these tags")
    g.add_argument("--tag-all", action="append", metavar="TAG", help="has all of these tags")
    for what in ("created", "scheduled", "attempted", "finalized"):
        g.add_argument(
            f"--{what}-after", type=_time, metavar="TIME", help=f"{what} at or after (ISO 8601)"
        )
        g.add_argument(f"--{what}-before", type=_time, metavar="TIME", help=f"{what} before")
    g.add_argument("--args", type=_json_object, metavar="JSON", help="args contain this object")
    g.add_argument(
        "--metadata", type=_json_object, metavar="JSON", help="metadata contains this object"
    )


def _ints(name: str, values: list[str] | None) -> list[int] | None:
    if values is None:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise CommandError(f"{name} must be integers, got {', '.join(values)}", 2) from None


def filter_from(args: argparse.Namespace) -> tuple[Any, bool]:
    """The JobFilter the options give, and whether any was given."""
    from pyriver_async import JobFilter

    fields: dict[str, Any] = {
        "states": _split(args.state),
        "queues": _split(args.queue),
        "kinds": _split(args.kind),
        "ids": _ints("--id", _split(args.id_filter)),
        "priorities": _ints("--priority", _split(args.priority)),
        "tags_any": _split(args.tag),
        "tags_all": _split(args.tag_all),
        "args_contains": args.args,
        "metadata_contains": args.metadata,
    }
    for what in ("created", "scheduled", "attempted", "finalized"):
        fields[f"{what}_after"] = getattr(args, f"{what}_after")
        fields[f"{what}_before"] = getattr(args, f"{what}_before")
    given = {k: v for k, v in fields.items() if v is not None}
    return JobFilter(**given), bool(given)
