"""Who is asking, and what they may do: :class:`Principal`, :class:`Access`, the
explicit :data:`ALLOW_ALL`, and the built-in Basic and Bearer authorizers.

``create_app(client, authorize=...)`` calls ``authorize(request)`` on every request
but ``/healthz``: it returns a :class:`Principal` or None (answered 401). ``access``
maps a principal to an :class:`Access`; the server checks it on every action, and the
pages only hide what it would refuse.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

__all__ = [
    "ALLOW_ALL",
    "Access",
    "AllowAll",
    "Authorize",
    "Principal",
    "any_of",
    "basic_auth",
    "bearer_token",
]


@dataclass(frozen=True)
class Principal:
    """The one making a request. ``id`` names them in the audit log and binds their CSRF
    token; ``ambient`` is False only for credentials a browser never sends on its own
    (a Bearer token), which need no CSRF token."""

    id: str
    name: str = ""
    ambient: bool = True
    attributes: Any = None

    @property
    def display(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class Access:
    """What a principal may do. ``read`` lets them see the pages at all; the others
    are actions; ``bulk_limit`` caps how many jobs one bulk action may touch."""

    read: bool = True
    retry_jobs: bool = False
    cancel_jobs: bool = False
    delete_jobs: bool = False
    insert_jobs: bool = False
    pause_queues: bool = False
    bulk_by_filter: bool = False
    view_raw_args: bool = False
    bulk_limit: int = 100_000

    ALL: ClassVar[Access]
    READ_ONLY: ClassVar[Access]
    FORBIDDEN: ClassVar[Access]

    @property
    def writes(self) -> bool:
        return any(
            (
                self.retry_jobs,
                self.cancel_jobs,
                self.delete_jobs,
                self.insert_jobs,
                self.pause_queues,
                self.bulk_by_filter,
            )
        )

    def allows(self, permission: str) -> bool:
        return bool(getattr(self, permission))

    def read_only(self) -> Access:
        """This access without any write permission (``view_raw_args`` is kept)."""
        return replace(
            Access.READ_ONLY, view_raw_args=self.view_raw_args, bulk_limit=self.bulk_limit
        )


Access.ALL = Access(
    retry_jobs=True,
    cancel_jobs=True,
    delete_jobs=True,
    insert_jobs=True,
    pause_queues=True,
    bulk_by_filter=True,
    view_raw_args=True,
)
Access.READ_ONLY = Access()
Access.FORBIDDEN = Access(read=False)

Authorize = Callable[[Any], Awaitable[Principal | None]]


class AllowAll:
    """Everyone is ``Principal("anonymous")``: no authentication at all. Spell it out
    as ``authorize=ALLOW_ALL`` (for a UI that only loopback can reach, or one behind
    a proxy that authenticates)."""

    _principal = Principal("anonymous", "anonymous")

    async def __call__(self, request: Any) -> Principal | None:
        return self._principal

    def __repr__(self) -> str:
        return "ALLOW_ALL"


ALLOW_ALL = AllowAll()


def _authorization(request: Any) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower(), value.strip()


def basic_auth(user: str, password: str, *, realm: str = "pyriver") -> Authorize:
    """HTTP Basic authentication against one user and password (both compared in
    constant time). A failed check answers 401 with ``WWW-Authenticate``."""
    if not user or not password:
        raise ValueError("basic_auth needs a user and a password")
    want_user, want_pw = user.encode(), password.encode()

    async def authorize(request: Any) -> Principal | None:
        scheme, value = _authorization(request)
        if scheme != "basic":
            return None
        try:
            got_user, _, got_pw = base64.b64decode(value, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        ok_user = hmac.compare_digest(got_user, want_user)
        ok_pw = hmac.compare_digest(got_pw, want_pw)
        if ok_user and ok_pw:
            return Principal(user, user)
        return None

    authorize.realm = realm  # type: ignore[attr-defined]
    return authorize


def bearer_token(token: str, *, principal: str = "token") -> Authorize:
    """``Authorization: Bearer <token>`` (for scripts), compared in constant time. Not
    sent by browsers on their own, so such requests need no CSRF token."""
    if len(token) < 16:
        raise ValueError("a bearer token should be at least 16 characters")
    want = token.encode()

    async def authorize(request: Any) -> Principal | None:
        scheme, value = _authorization(request)
        if scheme == "bearer" and hmac.compare_digest(value.encode(), want):
            return Principal(principal, principal, ambient=False)
        return None

    return authorize


def any_of(*authorizers: Authorize) -> Authorize:
    """The first principal any of ``authorizers`` returns (e.g. Basic for people and a
    Bearer token for scripts)."""

    async def authorize(request: Any) -> Principal | None:
        for a in authorizers:
            p = await a(request)
            if p is not None:
                return p
        return None

    realms = [getattr(a, "realm", None) for a in authorizers]
    realm = next((r for r in realms if r), None)
    if realm:
        authorize.realm = realm  # type: ignore[attr-defined]
    return authorize
