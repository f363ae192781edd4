"""Queries on river_job over asyncpg: inserts, the engine's claim and completions,
control, and the leader's maintenance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from ..._aio import settle
from ..._outcome import Outcome
from ..columns import JOB_COLUMNS
from ..records import (
    COPY_COLUMNS,
    InsertedRow,
    InsertParams,
    NextIds,
    RescueCounts,
    ScheduleCounts,
    match_inserted,
)
from ._base import Base, rowcount

__all__ = ["JobQueries"]

_JSON = msgspec.json.encode
_SKIPPED = len(JOB_COLUMNS)  # job_insert_many: job columns, then skipped, then ord
_ORD = _SKIPPED + 1


class JobQueries(Base):
    __slots__ = ()

    # -- inserts --------------------------------------------------------------------

    async def job_insert(self, p: InsertParams, *, timeout: float | None = None) -> InsertedRow:
        q = self._queries.job_insert
        rec = await self._fetchrow(
            q,
            q.bind(
                args=p.encoded_args,
                kind=p.kind,
                max_attempts=p.max_attempts,
                metadata=p.metadata,
                priority=p.priority,
                queue=p.queue,
                scheduled_at=p.scheduled_at,
                tags=p.tags,
                unique_key=p.unique_key,
                unique_states=p.unique_states,
            ),
            timeout,
        )
        return InsertedRow(rec, bool(rec["skipped"]))

    async def job_insert_many(self, ps: Sequence[InsertParams]) -> list[InsertedRow]:
        q = self._queries.job_insert_many
        rows = await self._fetch(
            q,
            q.bind(
                args=[p.encoded_args for p in ps],
                kind=[p.kind for p in ps],
                max_attempts=[p.max_attempts for p in ps],
                metadata=[p.metadata for p in ps],
                priority=[p.priority for p in ps],
                queue=[p.queue for p in ps],
                scheduled_at=[p.scheduled_at for p in ps],
                tags=[_JSON(p.tags).decode() if p.tags else None for p in ps],
                unique_key=[p.unique_key for p in ps],
                unique_states=[p.unique_states for p in ps],
                sequence=self._queries.job_sequence,
            ),
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
        copy = asyncio.ensure_future(
            conn.copy_records_to_table(
                "river_job",
                schema_name=self._queries.schema,
                columns=COPY_COLUMNS,
                records=records,
            )
        )
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

    async def job_complete_many(self, outcomes: Sequence[Outcome]) -> int:
        q = self._queries.job_complete_many
        rows = await self._fetch(
            q,
            q.bind(
                id=[o.job_id for o in outcomes],
                attempt=[o.attempt for o in outcomes],
                attempted_at=[o.attempted_at for o in outcomes],
            ),
        )
        return len(rows)

    async def job_set_outcome_many(self, outcomes: Sequence[Outcome]) -> int:
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
        return len(rows)

    async def job_release_orphans(self, *, queue: str, client_id: str, keep: Sequence[int]) -> int:
        q = self._queries.job_release_orphans
        rec = await self._fetchrow(q, q.bind(queue=queue, client_id=client_id, keep=list(keep)))
        return int(rec[0])

    # -- control ----------------------------------------------------------------------

    async def job_get(self, *, id: int) -> Any:
        q = self._queries.job_get
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
