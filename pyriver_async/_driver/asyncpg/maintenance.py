"""Queries on river_queue, river_leader, pyriver_client and PostgreSQL's statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from ..records import HorizonHolder, LeaderRow, TableStats
from ._base import Base, rowcount

__all__ = ["ClientQueries", "LeaderQueries", "PgQueries", "QueueQueries"]

_JSON = msgspec.json.Encoder(order="deterministic").encode


class QueueQueries(Base):
    __slots__ = ()

    async def queue_pause(self, *, name: str) -> None:
        q = self._queries.queue_pause
        await self._fetchrow(q, q.bind(name=name))

    async def queue_resume(self, *, name: str) -> None:
        q = self._queries.queue_resume
        await self._fetchrow(q, q.bind(name=name))

    async def queue_paused_many(self, *, names: Sequence[str]) -> set[str]:
        q = self._queries.queue_paused_many
        return {r[0] for r in await self._fetch(q, q.bind(names=list(names)))}

    async def queue_keep(self, *, names: Sequence[str]) -> None:
        q = self._queries.queue_keep
        await self._execute(q, q.bind(names=list(names)))

    async def queue_clean(self, *, older_than: float, limit: int) -> int:
        q = self._queries.queue_clean
        return rowcount(await self._execute(q, q.bind(older_than=older_than, limit=limit)))


class LeaderQueries(Base):
    __slots__ = ()

    async def leader_attempt_elect(self, *, leader_id: str, ttl: float) -> datetime | None:
        """Delete an expired leader row, then try to insert ours, in one transaction."""
        async with self.session() as s, s.transaction():
            await s._execute(self._queries.leader_delete_expired, ())
            q = self._queries.leader_elect
            rec = await s._fetchrow(q, q.bind(leader_id=leader_id, ttl=ttl))
        return None if rec is None else rec[0]

    async def leader_get(self) -> LeaderRow | None:
        rec = await self._fetchrow(self._queries.leader_get, ())
        if rec is None:
            return None
        return LeaderRow(
            leader_id=rec["leader_id"], elected_at=rec["elected_at"], remaining=rec["remaining"]
        )

    async def leader_attempt_reelect(
        self, *, leader_id: str, elected_at: datetime, ttl: float
    ) -> bool:
        q = self._queries.leader_reelect
        rec = await self._fetchrow(q, q.bind(leader_id=leader_id, elected_at=elected_at, ttl=ttl))
        return rec is not None

    async def leader_resign(self, *, leader_id: str, elected_at: datetime) -> None:
        q = self._queries.leader_resign
        await self._fetchrow(q, q.bind(leader_id=leader_id, elected_at=elected_at))


class ClientQueries(Base):
    __slots__ = ()

    async def client_heartbeat(
        self,
        *,
        id: str,
        hostname: str,
        pid: int,
        queues: Sequence[str],
        version: str = "",
        queue_use: Mapping[str, Mapping[str, int]] | None = None,
        stopping: bool = False,
        dead_after: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        q = self._queries.client_heartbeat
        await self._execute(
            q,
            q.bind(
                id=id,
                hostname=hostname,
                pid=pid,
                queues=list(queues),
                version=version,
                queue_use=_JSON(queue_use or {}).decode(),
                stopping=stopping,
                dead_after=dead_after,
                metadata=_JSON(metadata or {}).decode(),
            ),
        )

    async def client_mark_dead(self, *, id: str) -> None:
        q = self._queries.client_mark_dead
        await self._execute(q, q.bind(id=id))

    async def client_prune(self, *, older_than: float) -> int:
        q = self._queries.client_prune
        return rowcount(await self._execute(q, q.bind(older_than=older_than)))


class PgQueries(Base):
    __slots__ = ()

    async def pg_job_table_stats(self) -> TableStats | None:
        q = self._queries.pg_job_table_stats
        rec = await self._fetchrow(q, q.bind(schema=self._queries.schema))
        if rec is None:
            return None
        return TableStats(
            live=int(rec["n_live_tup"]), dead=int(rec["n_dead_tup"]), can_vacuum=rec["can_vacuum"]
        )

    async def pg_vacuum_jobs(self) -> None:
        # VACUUM cannot run inside a transaction block, nor take a statement timeout of
        # ours: it runs as long as it needs.
        await self._execute(self._queries.pg_vacuum_jobs, (), timeout=None)

    # -- failover and the vacuum horizon (issue 22) ------------------------------------

    async def pg_writable(self) -> bool:
        rec = await self._fetchrow(self._queries.pg_writable, ())
        return bool(rec["writable"])

    async def pg_horizon_holders(self, *, older_than: float, limit: int) -> list[HorizonHolder]:
        q = self._queries.pg_horizon_holders
        rows = await self._fetch(q, q.bind(older_than=older_than, limit=limit))
        return [
            HorizonHolder(
                kind=r["kind"],
                pid=r["pid"],
                application_name=r["application_name"],
                role=r["role"],
                client_addr=r["client_addr"],
                state=r["state"],
                age_s=r["age_s"],
                xid_age=r["xid_age"],
                query=r["query"],
                name=r["name"],
            )
            for r in rows
        ]
