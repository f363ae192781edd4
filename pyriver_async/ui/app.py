"""``create_app``: the UI as an ASGI app, its routes, and the life of its background
services (read pool, LISTEN, sampler), which start on the first request because
Starlette and FastAPI do not run the lifespans of mounted apps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from .. import __version__
from .._client import Client
from .._driver.asyncpg.insights import ReadPool, dsn_of
from .._errors import DatabaseError, JobNotFoundError, PyRiverError
from .._insights import Insights
from .auth import Access, Authorize, Principal
from .cache import Cache
from .params import BadParam, Params
from .render import Redactor
from .security import (
    BodyError,
    CsrfError,
    check_origin,
    make_nonce,
    mint_token,
    parse_form,
    verify_token,
)
from .web import (
    FLASH_COOKIE,
    PREFS_COOKIE,
    Ctx,
    RouteSpec,
    StaticFiles,
    UIError,
    View,
    make_env,
    render,
)

__all__ = ["DEFAULT_REDACT_KEYS", "UIApp", "create_app"]

log = logging.getLogger("pyriver_async.ui")

# Every route takes every method and answers 405 itself, with the security headers.
_EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]

DEFAULT_REDACT_KEYS = ("password", "secret", "token", "authorization", "api_key")


@dataclass(frozen=True)
class Settings:
    title: str
    authorize: Authorize
    access: Callable[[Principal], Access]
    read_only: bool
    redactor: Redactor
    show_args_in_list: bool
    statement_timeout: float
    scan_budget: int
    count_cap: int
    live: bool
    sampler: bool
    sample_interval: float
    trusted_origins: tuple[str, ...]
    on_action: Callable[[dict[str, Any]], Any] | None
    secret: bytes
    max_streams: int


def create_app(
    database: Client | str | Any,
    *,
    authorize: Authorize,
    access: Callable[[Principal], Access] | None = None,
    read_only: bool = False,
    redact_keys: Sequence[str] = DEFAULT_REDACT_KEYS,
    format_args: Callable[[Any], Any] | None = None,
    show_args_in_list: bool = True,
    statement_timeout_s: float = 3.0,
    scan_budget: int = 50_000,
    count_cap: int = 100_000,
    live: bool = True,
    sampler: bool = True,
    sample_interval_s: float = 5.0,
    trusted_origins: Sequence[str] = (),
    on_action: Callable[[dict[str, Any]], Any] | None = None,
    title: str = "pyriver",
    secret: str | bytes | None = None,
    database_url: str | None = None,
    schema: str = "public",
    pool_size: int = 4,
    max_streams: int = 100,
) -> UIApp:
    """The web UI as an ASGI app: ``app.mount("/jobs", create_app(client, authorize=...))``.

    ``database`` is a :class:`~pyriver_async.Client` (an insert-only one is enough), a
    DSN, or an asyncpg pool. ``authorize(request)`` returns the
    :class:`~pyriver_async.ui.Principal` making the request or None (401); there is
    no default: write ``authorize=ALLOW_ALL`` for none. ``access(principal)`` says
    what they may do (default :attr:`Access.ALL`); ``read_only=True`` makes everyone
    read-only. See docs/ui.md for the other settings.

    Reads use a pool of the UI's own (``pool_size`` connections, read-only
    transactions, ``statement_timeout_s``), made from the client's DSN or
    ``database_url``; given only an application's pool, the UI borrows at most
    ``pool_size`` of its connections at a time.
    """
    if not callable(authorize):
        raise TypeError("create_app() needs authorize=: a callable, or ALLOW_ALL for no auth")
    if isinstance(secret, str):
        secret = secret.encode()
    settings = Settings(
        title=title,
        authorize=authorize,
        access=access or (lambda _p: Access.ALL),
        read_only=read_only,
        redactor=Redactor(redact_keys, format_args),
        show_args_in_list=show_args_in_list,
        statement_timeout=statement_timeout_s,
        scan_budget=scan_budget,
        count_cap=count_cap,
        live=live,
        sampler=sampler,
        sample_interval=sample_interval_s,
        trusted_origins=tuple(trusted_origins),
        on_action=on_action,
        secret=secret or secrets.token_bytes(32),
        max_streams=max_streams,
    )
    if isinstance(database, Client):
        client, owns = database, False
    else:
        client, owns = Client(database, schema=schema), True
    return UIApp(client, settings, owns_client=owns, database_url=database_url, pool_size=pool_size)


class UIApp:
    """The ASGI app :func:`create_app` returns. Mount it, or run it as it is."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        *,
        owns_client: bool,
        database_url: str | None,
        pool_size: int,
    ) -> None:
        from . import actions, live, pages, sampler

        self.client = client
        self.settings = settings
        self._owns_client = owns_client
        self._database_url = database_url
        self._pool_size = pool_size
        self.insights = Insights(client)
        self.cache = Cache()
        self.env = make_env()
        self.static = StaticFiles()
        self.version = __version__
        self.db: ReadPool | None = None
        self.live = live.Live(self)
        self.sampler = sampler.Sampler(self)
        self.ops = actions.Ops()
        self.started = False
        self._start_lock: asyncio.Lock | None = None
        self._closed = False
        self.routes = pages.routes()
        self._router = Router(
            routes=[
                Route(spec.path, self._endpoint(spec), methods=_EVERY_METHOD)
                for spec in self.routes
            ],
            redirect_slashes=False,
            default=self._not_found,
        )

    # -- ASGI ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan_protocol(receive, send)
            return
        await self._router(scope, receive, send)

    async def _lifespan_protocol(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """For hosts that want a deterministic start and stop:
        ``FastAPI(lifespan=ui.lifespan)``."""
        await self.start()
        try:
            yield
        finally:
            await self.aclose()

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with ui.running(): ...`` starts the services and stops them after."""
        return self.lifespan()

    # -- services -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the read pool and start LISTEN and the sampler (idempotent; the first
        request does it when nobody did)."""
        if self.started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.started:
                return
            self._closed = False
            source: Any = self._database_url or dsn_of(self.client._driver)
            if source is None:
                await self.client._driver.open()
                source = self.client._driver.pool
            self.db = ReadPool(
                source,
                max_size=self._pool_size,
                statement_timeout=self.settings.statement_timeout,
                schema=self.client.schema,
            )
            if self.settings.live:
                self.live.start()
            if self.settings.sampler:
                self.sampler.start()
            self.started = True

    def end_streams(self) -> None:
        """Tell every open event stream to end now (before a server waits for them)."""
        self.live.end_streams()

    async def aclose(self) -> None:
        """Stop the services, end the streams, close the pools the UI made."""
        if self._closed:
            return
        self._closed = True
        self.end_streams()
        await self.ops.stop()
        await self.live.stop()
        await self.sampler.stop()
        if self.db is not None:
            await self.db.close()
            self.db = None
        if self._owns_client:
            await self.client.close()
        self.started = False

    # -- reads ---------------------------------------------------------------------------

    def read(self, *, statement_timeout: float | None = None) -> Any:
        """``async with ui.read() as conn``: one read-only transaction of the UI's pool."""
        assert self.db is not None, "start() first"
        return self.db.read(statement_timeout=statement_timeout)

    async def timed(self, ctx: Ctx | None, name: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """``fn(conn)`` in a read transaction, its time added to ``Server-Timing``."""
        t0 = time.perf_counter()
        try:
            async with self.read() as conn:
                return await fn(conn)
        finally:
            if ctx is not None:
                ctx.timings.append((name, (time.perf_counter() - t0) * 1000))

    async def cached(
        self, ctx: Ctx | None, key: Any, ttl: float, fn: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        """``fn(conn)`` shared with identical reads of the last ``ttl`` seconds."""
        name = key[0] if isinstance(key, tuple) else str(key)
        return await self.cache.get(key, ttl, lambda: self.timed(ctx, name, fn))

    # -- requests ------------------------------------------------------------------------

    def _endpoint(self, spec: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._handle(request, spec)

        return endpoint

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def missing(_ui: UIApp, _ctx: Ctx) -> View:
            raise UIError(404, "no such page")

        spec = RouteSpec("", missing, methods=("GET", "POST"))
        response = await self._handle(Request(scope, receive), spec)
        await response(scope, receive, send)

    def _access(self, principal: Principal) -> Access:
        access = self.settings.access(principal)
        return access.read_only() if self.settings.read_only else access

    async def _handle(self, request: Request, spec: RouteSpec) -> Response:
        nonce = make_nonce()
        principal = Principal("anonymous")
        access = Access.READ_ONLY
        ctx = self._ctx(request, principal, access, nonce)
        if not spec.auth:  # /healthz, static files, robots.txt: nothing to hide
            if request.method not in ("GET", "HEAD"):
                return Response("method not allowed", 405, headers={"Allow": "GET, HEAD"})
            result = await spec.handler(self, ctx)
            assert isinstance(result, Response)
            return result
        try:
            allowed = set(spec.methods) | ({"HEAD"} if "GET" in spec.methods else set())
            if request.method not in allowed:
                raise UIError(405, f"{request.method} is not allowed here")
            if "token" in request.query_params or "access_token" in request.query_params:
                raise UIError(400, "tokens in URLs are refused: send an Authorization header")
            found = await self.settings.authorize(request)
            if found is None:
                return self._unauthorized(ctx)
            principal, access = found, self._access(found)
            ctx = self._ctx(request, principal, access, nonce)
            if not access.read:
                raise UIError(403, "you may not see this UI")
            if spec.unsafe and request.method not in ("GET", "HEAD"):
                if ctx.read_only:
                    raise UIError(403, "this UI is read-only for you")
                await self._check_unsafe(request, ctx)
            await self.start()
            result = await spec.handler(self, ctx)
            if isinstance(result, Response):
                return result
            return self._render(ctx, result)
        except UIError as e:
            return self._error(ctx, e.status, e.message, e.param)
        except BadParam as e:
            return self._error(ctx, 400, e.message, e.param)
        except JobNotFoundError as e:
            return self._error(ctx, 404, str(e))
        except CsrfError as e:
            return self._error(ctx, 403, str(e))
        except BodyError as e:
            return self._error(ctx, e.status, str(e))
        except DatabaseError as e:
            log.warning("database error serving %s: %s", request.url.path, e)
            return self._error(ctx, 503, f"the database did not answer: {e}")
        except (PyRiverError, ValueError) as e:
            # The query API refuses bad filters with typed errors (ValueError subclasses).
            return self._error(ctx, 400, str(e))

    async def _check_unsafe(self, request: Request, ctx: Ctx) -> None:
        check_origin(
            request.headers,
            scheme=request.url.scheme,
            trusted_origins=self.settings.trusted_origins,
        )
        body = await _read_body(request)
        form = parse_form(request.headers.get("content-type"), body)
        ctx.form = Params.from_form(form)
        if ctx.principal.ambient:
            token = request.headers.get("x-csrf-token") or (form.get("csrf") or [""])[0]
            if not verify_token(self.settings.secret, ctx.principal.id, token):
                raise CsrfError("missing or invalid CSRF token: reload the page and try again")

    def _ctx(self, request: Request, principal: Principal, access: Access, nonce: str) -> Ctx:
        base = request.scope.get("root_path", "").rstrip("/")
        prefs = request.cookies.get(PREFS_COOKIE, "")
        show_args = self.settings.show_args_in_list
        if "args=0" in prefs:
            show_args = False
        elif "args=1" in prefs:
            show_args = True
        flash = request.cookies.get(FLASH_COOKIE)
        return Ctx(
            request=request,
            principal=principal,
            access=access,
            nonce=nonce,
            csrf=mint_token(self.settings.secret, principal.id),
            base=base,
            now=_utcnow(),
            read_only=self.settings.read_only or not access.writes,
            show_args=show_args,
            flash=flash[:300] if flash else None,
        )

    def _globals(self) -> dict[str, Any]:
        return {"title": self.settings.title, "version": self.version, "ui": self}

    def _render(self, ctx: Ctx, view: View) -> Response:
        return render(self.env, self.static, ctx, view, self._globals())

    def _error(self, ctx: Ctx, status: int, message: str, param: str | None = None) -> Response:
        data = {"error": message, "status": status, "param": param}
        view = View("error.html", data, status=status, title=f"{status}")
        response = self._render(ctx, view)
        if status == 405:
            response.headers["Allow"] = "GET, HEAD, POST"
        return response

    def _unauthorized(self, ctx: Ctx) -> Response:
        response = self._error(ctx, 401, "authentication required")
        realm = getattr(self.settings.authorize, "realm", None)
        if realm:
            response.headers["WWW-Authenticate"] = f'Basic realm="{realm}", charset="UTF-8"'
        return response

    # -- actions' plumbing ---------------------------------------------------------------

    def redirect(self, ctx: Ctx, url: str, flash: str | None = None) -> Response:
        """303 to ``url`` (under this UI), carrying a one-time message."""
        response = RedirectResponse(url, status_code=303)
        if flash:
            response.set_cookie(
                FLASH_COOKIE,
                flash[:300],
                path=ctx.base or "/",
                httponly=True,
                samesite="strict",
                secure=ctx.request.url.scheme == "https",
            )
        response.headers["Cache-Control"] = "no-store"
        return response

    def audit(self, ctx: Ctx, record: dict[str, Any]) -> None:
        """One JSON record per action on ``pyriver_async.ui.audit`` (and ``on_action``)."""
        client = ctx.request.client
        record = {
            "at": _utcnow().isoformat(),
            "principal": ctx.principal.id,
            "client": client.host if client else None,
            **record,
        }
        import json

        logging.getLogger("pyriver_async.ui.audit").info(json.dumps(record, default=str))
        if self.settings.on_action is not None:
            try:
                self.settings.on_action(record)
            except Exception:
                log.exception("on_action hook failed")


async def _read_body(request: Request) -> bytes:
    from .security import MAX_BODY

    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyError(f"body larger than {MAX_BODY} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
