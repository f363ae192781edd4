"""The request side of the UI: the per-request context (principal, access, nonce,
CSRF token), views and their rendering as HTML, an htmx fragment or JSON."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .._errors import DatabaseError
from .auth import Access, Principal
from .render import (
    first_line,
    format_bytes,
    format_count,
    format_duration,
    format_estimate,
    format_ms,
    iso,
    pretty_json,
    relative,
)
from .security import html_headers

__all__ = [
    "Ctx",
    "RawJSON",
    "RouteSpec",
    "StaticFiles",
    "UIError",
    "View",
    "json_text",
    "jsonable",
    "make_env",
    "region",
    "render",
]

FLASH_COOKIE = "pyr_flash"
PREFS_COOKIE = "pyr_prefs"


class UIError(Exception):
    """An error page: ``status`` (4xx/5xx), a message, and the parameter at fault."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


@dataclass
class Ctx:
    """Everything a page needs to know about the request it answers."""

    request: Request
    principal: Principal
    access: Access
    nonce: str
    csrf: str
    base: str  # the mount prefix, without a trailing slash
    now: datetime
    read_only: bool
    show_args: bool
    flash: str | None = None
    form: Any = None  # the parsed body of an action (params.Params)
    timings: list[tuple[str, float]] = field(default_factory=list)

    def url(self, path: str, params: Any = None) -> str:
        """A URL of this UI (under its mount prefix) with an encoded query string."""
        url = self.base + path
        if params:
            items = params.items() if isinstance(params, Mapping) else params
            query = urlencode([(k, v) for k, v in items if v is not None], doseq=True)
            if query:
                url += "?" + query
        return url

    @property
    def wants_json(self) -> bool:
        accept = self.request.headers.get("accept", "")
        return _prefers_json(accept)

    @property
    def is_htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"

    def can(self, permission: str) -> bool:
        return not self.read_only and self.access.allows(permission)


def _prefers_json(accept: str) -> bool:
    """True when ``Accept`` ranks application/json above text/html."""
    best_json = best_html = -1.0
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if media == "application/json":
            best_json = max(best_json, q)
        elif media in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, q)
    return best_json > 0 and best_json > best_html


@dataclass
class View:
    """A page: its template, the data (also its JSON form) and HTML-only extras."""

    template: str
    data: dict[str, Any]
    html: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    title: str = ""


def jsonable(v: Any) -> Any:
    """Data as JSON-ready values: ISO times, seconds for durations, enum values."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, Markup):
        return None
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {
            str(jsonable(k)) if not isinstance(k, str) else k: jsonable(x) for k, x in v.items()
        }
    if isinstance(v, list | tuple | set | frozenset):
        return [jsonable(x) for x in v]
    if hasattr(v, "__struct_fields__"):
        return {f: jsonable(getattr(v, f)) for f in v.__struct_fields__}
    return str(v)


Handler = Callable[[Any, "Ctx"], Awaitable["View | Response"]]


@dataclass(frozen=True)
class RouteSpec:
    path: str
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    auth: bool = True

    @property
    def unsafe(self) -> bool:
        return any(m not in ("GET", "HEAD") for m in self.methods)


class RawJSON:
    """JSON text to splice into a JSON response as it is (exact numbers)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _dump(v: Any) -> str:
    if isinstance(v, RawJSON):
        return v.text
    if isinstance(v, Mapping):
        return "{" + ",".join(json.dumps(str(k)) + ":" + _dump(x) for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_dump(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


def _prepare(v: Any) -> Any:
    if isinstance(v, RawJSON):
        return v
    if isinstance(v, Mapping):
        return {k: _prepare(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_prepare(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _prepare(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return jsonable(v)


def json_text(data: Any) -> str:
    return _dump(_prepare(data))


class StaticFiles:
    """The package's static files under content-hashed names (``app.3f2a1b9c.css``),
    served with a year-long immutable cache."""

    def __init__(self) -> None:
        root = resources.files(__package__).joinpath("static")
        self._by_url: dict[str, tuple[bytes, str]] = {}
        self._url_of: dict[str, str] = {}
        types = {".css": "text/css", ".js": "text/javascript", ".json": "application/json"}
        for entry in _walk(root):
            rel, data = entry
            p = PurePosixPath(rel)
            if p.suffix not in types:
                continue
            digest = hashlib.sha256(data).hexdigest()[:10]
            hashed = str(p.with_name(f"{p.stem}.{digest}{p.suffix}"))
            self._by_url[hashed] = (data, types[p.suffix] + "; charset=utf-8")
            self._url_of[rel] = hashed

    def url_of(self, name: str) -> str:
        return self._url_of[name]

    def get(self, hashed: str) -> tuple[bytes, str] | None:
        return self._by_url.get(hashed)

    @property
    def names(self) -> list[str]:
        return sorted(self._url_of)


def _walk(root: Any, prefix: str = "") -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for entry in root.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            out.extend(_walk(entry, name + "/"))
        else:
            out.append((name, entry.read_bytes()))
    return out


def make_env() -> jinja2.Environment:
    """The templates' environment: every value autoescaped, unknown names an error."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pyriver_async.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        iso=iso,
        duration=format_duration,
        ms=format_ms,
        count=format_count,
        estimate=format_estimate,
        bytes=format_bytes,
        first_line=first_line,
        pretty=pretty_json,
    )
    env.globals["relative"] = relative
    return env


def render(
    env: jinja2.Environment, static: StaticFiles, ctx: Ctx, view: View, globals_: dict[str, Any]
) -> Response:
    """The view as JSON (``Accept: application/json``), as its ``live`` fragment (an
    htmx request), or as a whole page; with the security headers."""
    headers = html_headers(ctx.nonce)
    if ctx.timings:
        headers["Server-Timing"] = ", ".join(
            f"{name};dur={ms:.1f}" for name, ms in ctx.timings[:20]
        )
    if ctx.wants_json:
        return Response(
            json_text(view.data),
            status_code=view.status,
            media_type="application/json",
            headers=headers,
        )
    template = env.get_template(view.template)
    values = {
        **globals_,
        "ctx": ctx,
        "d": view.data,
        "h": view.html,
        "page_title": view.title,
        "static": static.url_of,
        "now": ctx.now,
    }
    if ctx.is_htmx and "live" in template.blocks:
        context = template.new_context(values)
        body = "".join(template.blocks["live"](context))
    else:
        body = template.render(values)
    response = HTMLResponse(body, status_code=view.status, headers=headers)
    if ctx.flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=ctx.base or "/")
    return response


async def region(ctx: Ctx, load: Callable[[], Awaitable[Any]]) -> tuple[Any, str | None]:
    """A page region's data, or why it is unavailable (the rest of the page renders)."""
    try:
        return await load(), None
    except DatabaseError as exc:
        text = str(exc)
        if "statement timeout" in text or "canceling statement" in text:
            return None, "unavailable (the query took too long)"
        return None, f"unavailable ({text[:200]})"


def utcnow() -> datetime:
    return datetime.now(UTC)
