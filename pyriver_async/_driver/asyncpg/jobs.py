"""Queries on river_job over asyncpg: inserts, the engine's claim and completions,
control, and the leader's maintenance."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..._aio import settle
from ..._outcome import Outcome
from ..columns import JOB_COLUMNS
from ..queries import Query
from ..records import (
    COPY_COLUMNS,
    InsertedRow,
    InsertParams,
    NextIds,
    RescueCounts,
    ScheduleCounts,
    insert_many_values,
    insert_values,
    match_inserted,
)
from ._base import Base, rowcount

__all__ = ["JobQueries"]

_SKIPPED = len(JOB_COLUMNS)  # job_insert_many: job columns, then skipped, then ord
_ORD = _SKIPPED + 1


class JobQueries(Base):
    __slots__ = ()

    # -- inserts --------------------------------------------------------------------

    async def job_insert(self, p: InsertParams, *, timeout: float | None = None) -> InsertedRow:
        q = self._queries.job_insert
        rec = await self._fetchrow(q, q.bind(**insert_values(p)), timeout)
        return InsertedRow(rec, bool(rec["skipped"]))

    async def job_insert_many(self, ps: Sequence[InsertParams]) -> list[InsertedRow]:
        q = self._queries.job_insert_many
        rows = await self._fetch(
            q, q.bind(**insert_many_values(ps, sequence=self._queries.job_sequence))
        )
        return match_inserted(rows, ps, skipped_at=_SKIPPED, ord_at=_ORD)

    async def job_next_ids(
        self, *, n: int, queues: Sequence[str], first_at: Sequence[datetime | None]
    ) -> NextIds:
        q = self._queries.job_next_ids
        rec = await self._fetchrow(
            q,
            q.bind(
                n=n,
                sequence=self._queries.job_sequence,
                queues=list(queues),
                first_at=list(first_at),
            ),
        )
        return NextIds(ids=rec["ids"] or [], now=rec["now"])

    async def job_copy(
        self, records: Sequence[tuple[Any, ...]], during: Callable[[], Any] | None = None
    ) -> Any:
        conn = self._conn
        if conn is None:
            raise RuntimeError("job_copy needs a bound executor")
        if _binary_copy_works(conn):
            sending: Any = conn.copy_records_to_table(
                "river_job",
                schema_name=self._queries.schema,
                columns=COPY_COLUMNS,
                records=records,
            )
        else:
            # The application registered a codec without a binary encoder for one of
            # the columns (a text JSON codec, typically): COPY in text format instead,
            # rows encoded here.
            sending = conn.copy_to_table(
                "river_job",
                schema_name=self._queries.schema,
                columns=COPY_COLUMNS,
                source=io.BytesIO(_copy_text(records)),
                format="text",
            )
        copy = asyncio.ensure_future(sending)
        result = None
        try:
            if during is not None:
                await asyncio.sleep(0)  # the COPY encodes its rows and starts sending them
                result = during()
        except BaseException:
            copy.cancel()
            await settle(copy, swallow=True)
            raise
        try:
            await settle(copy)
        except Exception as exc:
            raise self._error(exc)
        return result

    async def job_notify_queues(self, *, queues: Sequence[str]) -> None:
        q = self._queries.job_notify_queues
        await self._execute(q, q.bind(queues=list(queues)))

    # -- the engine -------------------------------------------------------------------

    async def job_claim(
        self, *, queue: str, limit: int, client_id: str, kinds: Sequence[str] | None = None
    ) -> list[Any]:
        q = self._queries.job_claim
        rows: list[Any] = await self._fetch(
            q,
            q.bind(
                queue=queue,
                limit=limit,
                client_id=client_id,
                kinds=list(kinds) if kinds is not None else None,
            ),
        )
        return rows

    async def job_claim_after(
        self,
        *,
        queue: str,
        limit: int,
        client_id: str,
        kinds: Sequence[str] | None,
        after: tuple[int, datetime, int],
    ) -> list[Any]:
        q = self._queries.job_claim_after
        rows: list[Any] = await self._fetch(
            q,
            q.bind(
                queue=queue,
                limit=limit,
                client_id=client_id,
                kinds=list(kinds) if kinds is not None else None,
                after_priority=after[0],
                after_scheduled_at=after[1],
                after_id=after[2],
            ),
        )
        return rows

    async def job_complete_many(self, outcomes: Sequence[Outcome]) -> list[int]:
        return await self._by_claim(self._queries.job_complete_many, outcomes)

    async def job_delete_completed_many(self, outcomes: Sequence[Outcome]) -> list[int]:
        return await self._by_claim(self._queries.job_delete_completed_many, outcomes)

    async def _by_claim(self, q: Query, outcomes: Sequence[Outcome]) -> list[int]:
        """Run ``q`` over the jobs of ``outcomes``, each found by its claim; the ids
        it wrote."""
        rows = await self._fetch(
            q,
            q.bind(
                id=[o.job_id for o in outcomes],
                attempt=[o.attempt for o in outcomes],
                attempted_at=[o.attempted_at for o in outcomes],
            ),
        )
        return [r[0] for r in rows]

    async def job_set_outcome_many(self, outcomes: Sequence[Outcome]) -> dict[int, str]:
        q = self._queries.job_set_outcome_many
        rows = await self._fetch(
            q,
            q.bind(
                id=[o.job_id for o in outcomes],
                attempt=[o.attempt for o in outcomes],
                state=[o.state for o in outcomes],
                scheduled_at=[o.scheduled_at for o in outcomes],
                error=[o.error for o in outcomes],
                metadata=[o.metadata for o in outcomes],
                give_back=[o.give_back for o in outcomes],
                snoozed=[o.snoozed for o in outcomes],
                attempted_at=[o.attempted_at for o in outcomes],
            ),
        )
        return {r[0]: r[1] for r in rows}

    async def job_release_orphans(self, *, queue: str, client_id: str, keep: Sequence[int]) -> int:
        q = self._queries.job_release_orphans
        rec = await self._fetchrow(q, q.bind(queue=queue, client_id=client_id, keep=list(keep)))
        return int(rec[0])

    # -- control ----------------------------------------------------------------------

    async def job_get(self, *, id: int) -> Any:
        q = self._queries.job_get
        return await self._fetchrow(q, q.bind(id=id))

    async def job_mark_waited(self, *, id: int) -> Any:
        q = self._queries.job_mark_waited
        return await self._fetchrow(q, q.bind(id=id))

    async def job_cancel(self, *, id: int) -> Any:
        q = self._queries.job_cancel
        return await self._fetchrow(q, q.bind(id=id))

    # -- maintenance ------------------------------------------------------------------

    async def job_schedule(self, *, limit: int) -> ScheduleCounts:
        q = self._queries.job_schedule
        rec = await self._fetchrow(q, q.bind(limit=limit))
        return ScheduleCounts(total=int(rec["total"]), discarded=int(rec["discarded"]))

    async def job_rescue(
        self, *, dead_after: float, stuck_after: float, limit: int, liveness: bool
    ) -> RescueCounts:
        if liveness:
            q = self._queries.job_rescue
            args = q.bind(dead_after=dead_after, stuck_after=stuck_after, limit=limit)
        else:
            q = self._queries.job_rescue_by_age
            args = q.bind(stuck_after=stuck_after, limit=limit)
        rec = await self._fetchrow(q, args)
        return RescueCounts(
            total=int(rec["total"]),
            retried=int(rec["retried"]),
            discarded=int(rec["discarded"]),
            cancelled=int(rec["cancelled"]),
        )

    async def job_clean(self, *, state: str, older_than: float, limit: int) -> int:
        q = self._queries.job_clean
        return rowcount(
            await self._execute(q, q.bind(state=state, older_than=older_than, limit=limit))
        )


# The scalar types of COPY_COLUMNS: bigint, jsonb, text, smallint, timestamptz,
# varchar (tags' elements; asyncpg builds the varchar[] codec from it on first use).
_COPY_TYPE_OIDS = (20, 3802, 25, 21, 1184, 1043)


def _binary_copy_works(conn: Any) -> bool:
    """Whether asyncpg can binary-encode every COPY column on ``conn``: an application's
    own text codec (say, for jsonb) takes the binary one away, and a binary COPY would
    then fail after starting, aborting the caller's transaction."""
    try:
        settings = conn.get_settings()
        return all(settings.get_data_codec(oid, 1) is not None for oid in _COPY_TYPE_OIDS)
    except Exception:  # an asyncpg without this introspection: assume the defaults
        return True


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, str):
        return v.translate(_COPY_ESCAPES)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list | tuple):  # tags: an array literal, itself escaped for COPY
        items = ('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in v)
        return ("{" + ",".join(items) + "}").translate(_COPY_ESCAPES)
    return str(v)


def _copy_text(records: Sequence[tuple[Any, ...]]) -> bytes:
    """``records`` in COPY's text format (tab-separated, backslash escapes)."""
    return "".join("\t".join(map(_copy_field, r)) + "\n" for r in records).encode()
