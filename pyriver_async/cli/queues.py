"""``pyriver queues list|pause|resume``."""

from __future__ import annotations

__all__ = ["register"]

import argparse
from typing import Any

from pyriver_async import JobState

from ._client import command_client
from ._common import add_connection_options, print_json, print_table, run

_COLUMNS = (
    JobState.AVAILABLE,
    JobState.SCHEDULED,
    JobState.RUNNING,
    JobState.RETRYABLE,
    JobState.PENDING,
    JobState.COMPLETED,
    JobState.CANCELLED,
    JobState.DISCARDED,
)


def register(subparsers: Any) -> None:
    queues: argparse.ArgumentParser = subparsers.add_parser(
        "queues",
        help="list, pause or resume queues",
        description="List queues with their jobs per state, or pause and resume them.",
    )
    add_connection_options(queues)
    actions = queues.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="queues and their jobs per state",
        description=(
            "Queues and their jobs per state: exact up to --count-cap, the planner's "
            "estimate above (shown with ~)."
        ),
    )
    listing.add_argument("--count-cap", type=int, default=10_000, help="default 10,000")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    pause = actions.add_parser("pause", help="stop every process claiming from a queue")
    pause.add_argument("name", help="queue name, or '*' for every queue")
    pause.set_defaults(handler=_pause, paused=True)
    resume = actions.add_parser("resume", help="undo pause")
    resume.add_argument("name", help="queue name, or '*' for every queue")
    resume.set_defaults(handler=_pause, paused=False)
    for p in (listing, pause, resume):
        add_connection_options(p)


def _list(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with command_client(args) as client:
            infos = await client.list_queues(count_cap=args.count_cap)
        if args.json:
            print_json(infos)
            return 0

        def count(info: Any, s: JobState) -> str:
            n = info.counts.get(s, 0)
            return f"~{n}" if not info.counts_exact and n > args.count_cap else str(n)

        print_table(
            ["QUEUE", "PAUSED", *(s.value.upper() for s in _COLUMNS)],
            [
                [q.name, "yes" if q.paused else "no", *(count(q, s) for s in _COLUMNS)]
                for q in infos
            ],
        )
        return 0

    return run(main)


def _pause(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with command_client(args) as client:
            if args.paused:
                await client.pause(args.name)
            else:
                await client.resume(args.name)
        print(f"{'paused' if args.paused else 'resumed'} {args.name}")
        return 0

    return run(main)
