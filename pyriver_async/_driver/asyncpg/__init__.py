"""The asyncpg driver: the only package of the library that imports asyncpg."""

from .driver import AsyncpgDriver, is_asyncpg_connection, is_asyncpg_pool
from .errors import translate
from .executor import AsyncpgExecutor
from .listener import AsyncpgListener

__all__ = [
    "AsyncpgDriver",
    "AsyncpgExecutor",
    "AsyncpgListener",
    "is_asyncpg_connection",
    "is_asyncpg_pool",
    "translate",
]
