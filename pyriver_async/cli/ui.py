"""``pyriver ui``: serve the web UI (needs the ``ui`` extra).

Binds 127.0.0.1 by default. Another address needs credentials (``PYRIVER_UI_USER``
and ``PYRIVER_UI_PASSWORD`` for Basic auth, ``PYRIVER_UI_TOKEN`` for a Bearer token)
or, explicitly, ``--insecure-no-auth``. SIGTERM ends the event streams first, so the
server exits at once.
"""

from __future__ import annotations

__all__ = ["register"]

import argparse
import ipaddress
import os
import signal
import sys
from typing import Any

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def register(subparsers: Any) -> None:
    """Add ``ui`` to the ``pyriver`` parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ui",
        help="serve the web UI",
        description=(
            "Serve the web UI. Credentials come from PYRIVER_UI_USER and "
            "PYRIVER_UI_PASSWORD (Basic) or PYRIVER_UI_TOKEN (Bearer); PYRIVER_UI_SECRET "
            "signs CSRF tokens (random per process when unset)."
        ),
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: DATABASE_URL, else PG* variables)",
    )
    p.add_argument("--schema", help="schema of the tables (default: PYRIVER_SCHEMA, else public)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: any free one)")
    p.add_argument("--prefix", default="/", help="path prefix to serve under (default: /)")
    p.add_argument("--read-only", action="store_true", help="refuse every action")
    p.add_argument(
        "--auth",
        choices=("basic", "token", "none"),
        help="authentication (default: basic and/or token when their variables are set, else none)",
    )
    p.add_argument("--no-live", action="store_true", help="no LISTEN and no event streams")
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback --host without credentials",
    )
    p.set_defaults(handler=_run)


def _authorizer(args: argparse.Namespace) -> tuple[Any, str]:
    from pyriver_async.ui import ALLOW_ALL, any_of, basic_auth, bearer_token

    user = os.environ.get("PYRIVER_UI_USER", "")
    password = os.environ.get("PYRIVER_UI_PASSWORD", "")
    token = os.environ.get("PYRIVER_UI_TOKEN", "")
    mode = args.auth
    found = []
    if mode in (None, "basic") and user and password:
        found.append(basic_auth(user, password))
    if mode in (None, "token") and token:
        found.append(bearer_token(token))
    if mode == "basic" and not found:
        raise SystemExit("pyriver ui: --auth basic needs PYRIVER_UI_USER and PYRIVER_UI_PASSWORD")
    if mode == "token" and not found:
        raise SystemExit("pyriver ui: --auth token needs PYRIVER_UI_TOKEN")
    if mode == "none" or not found:
        return ALLOW_ALL, "none"
    return (found[0] if len(found) == 1 else any_of(*found)), "+".join(
        n for n, ok in (("basic", user and password), ("token", token)) if ok
    )


def _run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from pyriver_async.ui import create_app
    except ImportError:
        print("pyriver ui needs the ui extra: pip install 'pyriver_async[ui]'", file=sys.stderr)
        return 2
    try:
        authorize, auth_name = _authorizer(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    if auth_name == "none" and not _is_loopback(args.host) and not args.insecure_no_auth:
        print(
            f"pyriver ui: refusing to serve {args.host} without authentication: set "
            "PYRIVER_UI_USER and PYRIVER_UI_PASSWORD (or PYRIVER_UI_TOKEN), or pass "
            "--insecure-no-auth",
            file=sys.stderr,
        )
        return 2
    prefix = "/" + args.prefix.strip("/")
    dsn = args.database_url or os.environ.get("DATABASE_URL", "")
    schema = args.schema or os.environ.get("PYRIVER_SCHEMA", "public")
    ui = create_app(
        dsn,
        authorize=authorize,
        read_only=args.read_only,
        live=not args.no_live,
        schema=schema,
        secret=os.environ.get("PYRIVER_UI_SECRET") or None,
    )
    app: Any = ui
    if prefix != "/":
        from starlette.applications import Starlette
        from starlette.responses import RedirectResponse
        from starlette.routing import Mount, Route

        async def to_prefix(_request: Any) -> RedirectResponse:
            return RedirectResponse(prefix + "/", status_code=307)

        app = Starlette(routes=[Route("/", to_prefix), Mount(prefix, ui)], lifespan=ui.lifespan)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Open event streams end now, so the server has nothing to wait for; and
            # the signal is not raised again after shutdown (uvicorn would), so a
            # SIGTERM'd `pyriver ui` exits 0 as a service manager expects.
            ui.end_streams()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
        server_header=False,
    )
    server = Server(config)

    async def announce() -> None:
        while not server.started:
            import asyncio

            await asyncio.sleep(0.02)
        for s in server.servers:
            for sock in s.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                print(
                    f"pyriver ui: http://{shown}:{port}{prefix.rstrip('/')}/ "
                    f"(auth: {auth_name}{', read-only' if args.read_only else ''})",
                    flush=True,
                )

    import asyncio

    async def main() -> None:
        task = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(main())
    return 0
