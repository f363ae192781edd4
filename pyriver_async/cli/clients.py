"""``pyriver clients``: the processes working this schema, from their liveness rows."""

from __future__ import annotations

__all__ = ["register"]

import argparse
import sys
from typing import Any

from ._client import command_client
from ._common import add_connection_options, print_json, print_table, run


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "clients",
        help="the clients working this schema and which one leads",
        description=(
            "The clients working this schema (their liveness rows): host, pid, version, "
            "queues with running jobs and max workers, heartbeat age, and the leader."
        ),
    )
    add_connection_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_clients)


def _clients(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with command_client(args) as client:
            available = await client.liveness_available()
            infos = await client.list_clients()
            leader = await client.leader()
        if args.json:
            print_json({"liveness": available, "clients": infos, "leader": leader})
            return 0
        if not available:
            print(
                f"schema {client.schema!r} has no liveness table (a River-only schema): "
                "`pyriver migrate up` adds it",
                file=sys.stderr,
            )
        print_table(
            ["ID", "HOST", "PID", "VERSION", "STATE", "LEADER", "QUEUES (running/max)", "AGE"],
            [
                [
                    c.id,
                    c.hostname,
                    c.pid,
                    c.version,
                    "alive" if c.alive else ("stopped" if c.stopping else "silent"),
                    "yes" if c.is_leader else "",
                    " ".join(f"{n}:{u.running}/{u.max_workers}" for n, u in c.queues.items()),
                    f"{c.heartbeat_age.total_seconds():.1f}s",
                ]
                for c in infos
            ],
        )
        if leader is not None and not any(c.is_leader for c in infos):
            print(f"leader: {leader.leader_id} (no liveness row)", file=sys.stderr)
        return 0

    return run(main)
