"""Queries behind the telemetry gauges (issue 19)."""

from __future__ import annotations

from ._base import Base

__all__ = ["TelemetryQueries"]


class TelemetryQueries(Base):
    __slots__ = ()

    async def job_count_by_queue_state(self) -> dict[tuple[str, str], int]:
        q = self._queries.job_count_by_queue_state
        rows = await self._fetch(q, q.bind())
        return {(r["queue"], r["state"]): int(r["n"]) for r in rows}
