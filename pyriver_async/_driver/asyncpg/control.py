"""The query and control API's statements over asyncpg: listing, bulk retry / cancel /
delete, queue rows and counts, liveness rows and the leader (``sql/control.sql``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from ..listing import ListedPage, ListSpec, list_page
from ..records import ActionRow, ClientRow, LeaderInfoRow, QueueRow
from ._base import Base

__all__ = ["ControlQueries"]


class ControlQueries(Base):
    __slots__ = ()

    async def job_list(self, spec: ListSpec) -> ListedPage:
        async with self.session() as s:
            return await list_page(s._fetch, self._queries, spec)

    async def job_retry_many(self, *, ids: Sequence[int]) -> list[ActionRow]:
        """Retry ``ids`` in one statement; a unique violation that the statement's own
        check could not foresee (a duplicate inserted meanwhile) redoes the batch row
        by row, each in a savepoint, so one conflict refuses one job."""
        qs = self._queries
        q = qs.job_retry_many
        async with self.session() as s:
            conn = s.connection
            assert conn is not None
            try:
                try:
                    async with conn.transaction():  # a savepoint inside a caller's transaction
                        recs = await conn.fetch(q.sql, list(ids))
                    return [ActionRow(r, r["decision"], r["conflict_id"]) for r in recs]
                except asyncpg.UniqueViolationError:
                    pass
                out: list[ActionRow] = []
                for job_id in ids:
                    try:
                        async with conn.transaction():
                            recs = await conn.fetch(q.sql, [job_id])
                        out += [ActionRow(r, r["decision"], r["conflict_id"]) for r in recs]
                    except asyncpg.UniqueViolationError:
                        holder = await conn.fetchval(qs.job_unique_holder.sql, job_id)
                        row = await conn.fetchrow(qs.job_get.sql, job_id)
                        if row is not None:
                            out.append(ActionRow(row, "unique_conflict", holder))
                return out
            except Exception as exc:
                raise s._error(exc)

    async def job_cancel_many(self, *, ids: Sequence[int]) -> list[ActionRow]:
        q = self._queries.job_cancel_many
        recs = await self._fetch(q, q.bind(ids=list(ids)))
        return [ActionRow(r, r["decision"]) for r in recs]

    async def job_delete_many(self, *, ids: Sequence[int]) -> list[ActionRow]:
        q = self._queries.job_delete_many
        recs = await self._fetch(q, q.bind(ids=list(ids)))
        return [ActionRow(r, r["decision"]) for r in recs]

    async def job_queues_in_states(
        self, *, states: Sequence[str], max_queues: int = 1000
    ) -> list[tuple[str, str]]:
        q = self._queries.job_queues_in_states
        recs = await self._fetch(q, q.bind(states=list(states), max_queues=max_queues))
        return [(r["state"], r["queue"]) for r in recs]

    async def queue_list_rows(self, *, names: Sequence[str] | None = None) -> list[QueueRow]:
        q = self._queries.queue_list_rows
        recs = await self._fetch(q, q.bind(names=None if names is None else list(names)))
        return [
            QueueRow(
                name=r["name"],
                created_at=r["created_at"],
                metadata=r["metadata"],
                paused_at=r["paused_at"],
                updated_at=r["updated_at"],
            )
            for r in recs
        ]

    async def queue_counts(
        self, *, names: Sequence[str], states: Sequence[str], cap: int
    ) -> dict[tuple[str, str], int]:
        q = self._queries.queue_counts
        recs = await self._fetch(q, q.bind(names=list(names), states=list(states), cap=cap))
        return {(r["name"], r["state"]): int(r["n"]) for r in recs}

    async def queue_count_estimate(self, *, state: str, queue: str) -> int | None:
        q = self._queries.queue_count_estimate
        rec = await self._fetchrow(q, q.bind(state=state, queue=queue))
        if rec is None:
            return None
        plan: Any = rec[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        try:
            return int(plan[0]["Plan"]["Plan Rows"])
        except (LookupError, TypeError, ValueError):
            return None

    async def client_table_exists(self) -> bool:
        q = self._queries.client_table_exists
        rec = await self._fetchrow(q, q.bind(name=f"{self._queries.qschema}.pyriver_client"))
        return bool(rec["present"])

    async def client_list(self) -> list[ClientRow]:
        recs = await self._fetch(self._queries.client_list, ())
        return [
            ClientRow(
                id=r["id"],
                hostname=r["hostname"],
                pid=r["pid"],
                version=r["version"],
                started_at=r["started_at"],
                heartbeat_at=r["heartbeat_at"],
                marked_dead=r["marked_dead"],
                now=r["now"],
                queues=list(r["queues"] or []),
                queue_use=r["queue_use"],
                stopping=r["stopping"],
                dead_after=r["dead_after"],
                metadata=r["metadata"],
            )
            for r in recs
        ]

    async def leader_info(self) -> LeaderInfoRow | None:
        rec = await self._fetchrow(self._queries.leader_info, ())
        if rec is None:
            return None
        return LeaderInfoRow(
            leader_id=rec["leader_id"], elected_at=rec["elected_at"], expires_at=rec["expires_at"]
        )

    async def schema_drop(self) -> None:
        """Drop this executor's schema with everything in it (``pyriver bench``)."""
        await self._execute(self._queries.schema_drop, (), timeout=None)
