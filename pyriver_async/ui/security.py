"""Response headers (a strict CSP with a fresh nonce per response), CSRF defence and
the bounded, form-encoded request bodies actions accept.

CSRF: a request that may change something is accepted only when (a) the browser says
it comes from this origin (``Sec-Fetch-Site: same-origin|none``; without that header,
an ``Origin`` equal to this host or a trusted origin; with neither, it is not a
browser's) and (b) it carries a valid token (the ``csrf`` form field or the
``X-CSRF-Token`` header), unless it authenticated with a credential a browser never
sends by itself (a Bearer token). Tokens are ``HMAC-SHA256(secret, principal id,
UTC day)``, valid for the day they were minted and the next. Bodies must be
``application/x-www-form-urlencoded``: a cross-site ``text/plain`` form cannot pass
even if (a) were bypassed.

Trusted Types: the CSP requires them for scripts and allows only the policy named
``htmx`` (created by htmx's hx-csp extension); our own scripts touch no HTML sinks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "MAX_BODY",
    "BodyError",
    "CsrfError",
    "check_origin",
    "csp",
    "html_headers",
    "make_nonce",
    "mint_token",
    "parse_form",
    "static_headers",
    "verify_token",
]

MAX_BODY = 64 * 1024


class CsrfError(Exception):
    """The request failed the origin check or carried no valid token (403)."""


class BodyError(Exception):
    """The body is not a small form-encoded one (``status`` 413 or 415)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def make_nonce() -> str:
    return secrets.token_urlsafe(18)


def csp(nonce: str) -> str:
    """The Content-Security-Policy of every HTML and JSON response."""
    return (
        "default-src 'none'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        "style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "require-trusted-types-for 'script'; trusted-types htmx"
    )


def html_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp(nonce),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "X-Robots-Tag": "noindex",
    }


def static_headers() -> dict[str, str]:
    return {
        "Cache-Control": "public, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
    }


def _day(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def mint_token(secret: bytes, principal_id: str, *, now: datetime | None = None) -> str:
    """The CSRF token of ``principal_id`` for today (UTC)."""
    day = _day(now or datetime.now(UTC))
    mac = hmac.new(secret, f"{principal_id}\x00{day}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def verify_token(
    secret: bytes, principal_id: str, token: str, *, now: datetime | None = None
) -> bool:
    """True for a token minted for ``principal_id`` today or yesterday (UTC)."""
    if not token or len(token) > 100:
        return False
    now = now or datetime.now(UTC)
    for day in (now, now - timedelta(days=1)):
        if hmac.compare_digest(mint_token(secret, principal_id, now=day), token):
            return True
    return False


def _origin_of_host(scheme: str, host: str) -> str:
    return f"{scheme}://{host}".lower()


def check_origin(
    headers: Mapping[str, str], *, scheme: str, trusted_origins: Sequence[str] = ()
) -> None:
    """Raise :class:`CsrfError` unless the request comes from this origin (or a
    trusted one), by ``Sec-Fetch-Site`` first, else ``Origin``."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        if site.lower() in ("same-origin", "none"):
            return
        raise CsrfError(f"cross-origin request refused (Sec-Fetch-Site: {site})")
    origin = headers.get("origin")
    if origin is None:
        return  # neither header: not a browser's request; the token decides
    host = headers.get("host", "")
    allowed = {o.rstrip("/").lower() for o in trusted_origins}
    allowed.add(_origin_of_host(scheme, host))
    if origin.rstrip("/").lower() in allowed:
        return
    parsed = urlsplit(origin)
    raise CsrfError(f"cross-origin request refused (Origin: {parsed.scheme}://{parsed.netloc})")


def parse_form(content_type: str | None, body: bytes) -> dict[str, list[str]]:
    """A form-encoded body as lists of values per field (an empty body is an empty
    form, whatever its type: a script's bare POST)."""
    if not body:
        return {}
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise BodyError("actions take application/x-www-form-urlencoded bodies", 415)
    if len(body) > MAX_BODY:
        raise BodyError(f"body larger than {MAX_BODY} bytes", 413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("body is not UTF-8", 415) from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=2000)
    except ValueError:
        raise BodyError("too many form fields", 413) from None
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out
