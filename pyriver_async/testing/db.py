"""Throwaway databases for tests, the demo and the benchmarks.

Where the server comes from: ``DATABASE_URL`` when set; else the local server at
127.0.0.1:5432 when it answers; else an embedded throwaway PostgreSQL from the
``pgserver`` package (the ``embedded`` extra), so that a newcomer needs nothing but
Python. ``url, name = await create_database()`` makes an empty database (migrate it
with ``pyriver_async.migrate(url)``); ``await drop_database(name)`` removes it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import uuid
from typing import Any

from .._driver.asyncpg import admin

__all__ = ["LOCAL_URL", "admin_url", "create_database", "drop_database", "with_database"]

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

_embedded: Any = None


def _start_embedded() -> str:
    global _embedded
    if _embedded is None:
        try:
            import pgserver  # type: ignore[import-untyped,unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "No PostgreSQL found: set DATABASE_URL, start a server on 127.0.0.1:5432, "
                "or install the embedded server with `pip install 'pyriver-async[embedded]'`."
            ) from exc
        datadir = tempfile.mkdtemp(prefix="pyriver-pg-")
        _embedded = pgserver.get_server(datadir, cleanup_mode="stop")  # type: ignore[attr-defined,unused-ignore]

        def _cleanup() -> None:
            try:
                _embedded.cleanup()
            finally:
                shutil.rmtree(datadir, ignore_errors=True)

        atexit.register(_cleanup)
    uri: str = _embedded.get_uri()
    return uri


async def admin_url() -> str:
    """A URL with rights to create databases."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    if await admin.answers(LOCAL_URL):
        return LOCAL_URL
    return await asyncio.to_thread(_start_embedded)


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` pointing at database ``dbname`` instead (works for socket URIs too)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    path = "/" + quote(dbname, safe="")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


async def create_database(prefix: str = "pyriver") -> tuple[str, str]:
    """Create a fresh database; return ``(url, name)``."""
    admin_url_ = await admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin.create_database(admin_url_, name)
    return with_database(admin_url_, name), name


async def drop_database(name: str) -> None:
    await admin.drop_database(await admin_url(), name)
