"""The ``pyriver`` command.

Each subcommand lives in a sibling module (``_migrate_cmd`` for ``pyriver migrate``,
``worker``, ``jobs``, ``queues``, ``clients``, ``bench``) that exposes
``register(subparsers)``: it adds its parser and sets ``handler`` to a function taking
the parsed arguments and returning the exit code. Adding ``ui`` means adding a module
and a line to ``_COMMANDS``. Every command takes ``--database-url`` (default
``DATABASE_URL``) and ``--schema``, and reports a failure as one line on stderr.

Exit codes: 0 success, 1 failure (or ``validate`` found the schema behind),
2 usage error.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from pyriver_async.cli import _migrate_cmd, bench, clients, jobs, queues, ui, worker

_COMMANDS: tuple[ModuleType, ...] = (_migrate_cmd, worker, jobs, queues, clients, bench, ui)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="pyriver",
        description="pyriver_async: an asyncio job queue on PostgreSQL.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyriver`` with ``argv`` (default: the process arguments); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
