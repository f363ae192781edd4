"""Insert jobs from synchronous code (Django, Flask, scripts), no event loop needed.

::

    from pyriver_async.sync import insert, insert_many

    with psycopg.connect(dsn) as conn:              # or a SQLAlchemy Session / Connection,
        conn.execute("INSERT INTO users ...")       # or Django's django.db.connection
        insert(SendEmail(user_id=1, subject="Hi"), conn=conn)
    # committed together: workers see the job once the transaction commits

The job joins the transaction ``conn`` is in, or the one its library opens for its next
statement (psycopg outside autocommit, a SQLAlchemy session, Django inside ``atomic()``);
in autocommit mode it is committed at once, in a transaction of its own (a batch all or
nothing). Validation, unique jobs, the COPY path for large batches and the results are
those of :meth:`Client.insert <pyriver_async.Client.insert>` and
:meth:`Client.insert_many <pyriver_async.Client.insert_many>`: the same code runs.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from . import _insert
from ._args import InsertOpts, JobArgs
from ._driver.connections import SyncInsertConnection
from ._driver.queries import Queries
from ._driver.resolve import sync_insert_executor_for
from ._insert import InsertResult

__all__ = ["insert", "insert_many"]

T = TypeVar("T")


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in one step: it awaits only coroutines that never suspend
    (a sync executor's, which block instead), so it needs no event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a synchronous insert tried to wait for the event loop")


def insert(
    args: JobArgs,
    opts: InsertOpts | None = None,
    *,
    conn: SyncInsertConnection,
    schema: str = "public",
) -> InsertResult:
    """Insert one job on ``conn``, in its transaction (see the module's docstring).

    ``schema`` is where the job tables live. Raises :class:`~pyriver_async.InvalidArgsError`
    / :class:`~pyriver_async.InvalidOptsError` before writing anything, and the
    :class:`~pyriver_async.DatabaseError` family (or
    :class:`~pyriver_async.SchemaNotMigratedError`) for what the database refuses.
    """
    ex = sync_insert_executor_for(conn, Queries.for_schema(schema))
    return run_blocking(_insert.insert_one(ex, args, opts))


def insert_many(
    items: Sequence[JobArgs | tuple[JobArgs, InsertOpts | None]],
    *,
    conn: SyncInsertConnection,
    schema: str = "public",
) -> list[InsertResult]:
    """Insert many jobs on ``conn`` in one round trip (COPY for large batches); all or
    none. ``items`` are ``JobArgs`` or ``(JobArgs, InsertOpts)`` pairs; results come in
    their order. Every item is validated before anything is written."""
    ex = sync_insert_executor_for(conn, Queries.for_schema(schema))
    return run_blocking(_insert.insert_many(ex, items, prefetch_ids=False))
