"""Kept for the code that imports it: the throwaway databases now live in
:mod:`pyriver_async.testing.db`."""

from __future__ import annotations

from .testing.db import LOCAL_URL, admin_url, create_database, drop_database, with_database

__all__ = ["LOCAL_URL", "admin_url", "create_database", "drop_database", "with_database"]
