"""``pyriver jobs list|get|retry|cancel|delete``: read and act on jobs."""

from __future__ import annotations

__all__ = ["register"]

import argparse
import sys
from typing import Any

import msgspec

from pyriver_async import JobActionResult, JobOrder
from pyriver_async._control import natural_order

from ._client import command_client
from ._common import (
    CommandError,
    add_connection_options,
    add_filter_options,
    filter_from,
    print_json,
    print_table,
    run,
)


def register(subparsers: Any) -> None:
    jobs: argparse.ArgumentParser = subparsers.add_parser(
        "jobs",
        help="list, show, retry, cancel or delete jobs",
        description="List, show, retry, cancel or delete jobs.",
    )
    add_connection_options(jobs)
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list",
        help="list jobs matching filters, newest first",
        description=(
            "List jobs matching the filters, a page at a time. Without --order, jobs of "
            "finalized states are ordered by finalized_at, of waiting states by "
            "scheduled_at, others by id (the order each index serves exactly)."
        ),
    )
    add_filter_options(listing)
    listing.add_argument("--order", choices=[o.value for o in JobOrder], help="sort key")
    listing.add_argument("--asc", action="store_true", help="oldest first")
    listing.add_argument("--limit", type=int, default=50, help="jobs per page (default 50)")
    listing.add_argument("--cursor", help="continue after a previous page")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    get = actions.add_parser("get", help="show one job", description="Show one job.")
    get.add_argument("id", help="job id")
    get.add_argument("--json", action="store_true", help="print JSON")
    get.set_defaults(handler=_get)

    for name, verb in (("retry", "retry"), ("cancel", "cancel"), ("delete", "delete")):
        p = actions.add_parser(
            name,
            help=f"{verb} jobs by id, or every job matching filters",
            description=(
                f"{verb.capitalize()} the given jobs, or with --all-matching every job the "
                "filters match (in batches). Prints one outcome per job; exits 1 when any "
                "job was not found or refused."
            ),
        )
        p.add_argument("ids", nargs="*", metavar="ID", help="job ids")
        add_filter_options(p)
        p.add_argument(
            "--all-matching", action="store_true", help="act on every job the filters match"
        )
        p.add_argument("--limit", type=int, help="act on at most this many jobs")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=_act, verb=verb)

    for p in (listing, get, *(actions.choices[n] for n in ("retry", "cancel", "delete"))):
        add_connection_options(p)


def _job_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"not a job id: {text!r}", 2) from None


def _last_error(job: Any) -> str:
    return job.errors[-1].error.splitlines()[0] if job.errors else ""


def _list(args: argparse.Namespace) -> int:
    async def main() -> int:
        f, _ = filter_from(args)
        order = args.order or natural_order(f.states)
        async with command_client(args) as client:
            page = await client.list(
                f, order=order, descending=not args.asc, limit=args.limit, cursor=args.cursor
            )
        if args.json:
            print_json(
                {
                    "jobs": page.jobs,
                    "next_cursor": page.next_cursor,
                    "stopped_early": page.stopped_early,
                    "scanned": page.scanned,
                }
            )
            return 0
        when = "finalized_at" if order == JobOrder.FINALIZED_AT else "scheduled_at"
        print_table(
            ["ID", "STATE", "QUEUE", "KIND", "PRI", "ATTEMPT", when.upper(), "TAGS", "ERROR"],
            [
                [
                    j.id,
                    j.state.value,
                    j.queue,
                    j.kind,
                    j.priority,
                    f"{j.attempt}/{j.max_attempts}",
                    getattr(j, when),
                    j.tags,
                    _last_error(j),
                ]
                for j in page.jobs
            ],
        )
        if page.stopped_early:
            print(
                f"stopped early after reading {page.scanned} index entries; "
                f"go on with: --cursor {page.next_cursor}",
                file=sys.stderr,
            )
        elif page.next_cursor:
            print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
        return 0

    return run(main)


def _get(args: argparse.Namespace) -> int:
    async def main() -> int:
        job_id = _job_id(args.id)
        async with command_client(args) as client:
            job = await client.get(job_id)
        if args.json:
            print_json(job)
            return 0
        data = msgspec.to_builtins(job)
        for key in ("id", "kind", "queue", "state", "priority", "attempt", "max_attempts"):
            print(f"{key:<13} {data[key]}")
        for key in ("scheduled_at", "created_at", "attempted_at", "finalized_at"):
            print(f"{key:<13} {data[key] or '-'}")
        print(f"{'tags':<13} {', '.join(job.tags) or '-'}")
        print(f"{'attempted_by':<13} {', '.join(job.attempted_by) or '-'}")
        print(f"{'args':<13} {msgspec.json.encode(job.args).decode()}")
        print(f"{'metadata':<13} {msgspec.json.encode(job.metadata).decode()}")
        for e in job.errors:
            print(f"error {e.attempt:<7} {e.at.isoformat()} {e.error.splitlines()[0]}")
        return 0

    return run(main)


def _act(args: argparse.Namespace) -> int:
    async def main() -> int:
        f, filtered = filter_from(args)
        ids = [_job_id(i) for i in args.ids]
        if ids and (filtered or args.all_matching):
            raise CommandError("give job ids, or filters with --all-matching, not both", 2)
        if not ids and not (args.all_matching and filtered):
            raise CommandError(
                "give job ids, or filters with --all-matching to act on every match", 2
            )
        target: Any = ids or f
        async with command_client(args) as client:
            method = {
                "retry": client.retry_many,
                "cancel": client.cancel_many,
                "delete": client.delete_many,
            }[args.verb]
            results: list[JobActionResult] = await method(target, limit=args.limit)
        if args.json:
            print_json(results)
        else:
            print_table(
                ["ID", "OUTCOME", "REASON", "STATE"],
                [
                    [r.job_id, r.outcome, r.reason, r.job.state.value if r.job else None]
                    for r in results
                ],
            )
        failed = [r for r in results if r.outcome != "done"]
        if failed:
            first = failed[0]
            why = first.reason or first.outcome.replace("_", " ")
            done = {"retry": "retried", "cancel": "cancelled", "delete": "deleted"}[args.verb]
            print(
                f"error: {len(failed)} of {len(results)} jobs not {done} "
                f"(job {first.job_id}: {why})",
                file=sys.stderr,
            )
            return 1
        return 0

    return run(main)
