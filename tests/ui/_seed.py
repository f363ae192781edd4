"""Jobs written straight into river_job for the UI's tests, in any state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

__all__ = ["add_job", "add_jobs", "now"]


def now() -> datetime:
    return datetime.now(UTC)


async def add_job(
    conn: asyncpg.Connection,
    *,
    kind: str = "k",
    queue: str = "default",
    state: str = "available",
    args: Any = None,
    args_text: str | None = None,
    metadata: Any = None,
    priority: int = 1,
    attempt: int | None = None,
    max_attempts: int = 25,
    tags: list[str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    scheduled_at: datetime | None = None,
    attempted_at: datetime | None = None,
    finalized_at: datetime | None = None,
    attempted_by: list[str] | None = None,
    unique_key: bytes | None = None,
    unique_states: int | None = None,
) -> int:
    """One job row; times default to what its state implies."""
    t = now()
    final = state in ("completed", "cancelled", "discarded")
    ran = final or state in ("running", "retryable")
    if attempt is None:
        attempt = 1 if ran else 0
    if attempted_at is None and ran:
        attempted_at = t - timedelta(seconds=2)
    if finalized_at is None and final:
        finalized_at = t - timedelta(seconds=1)
    if scheduled_at is None:
        scheduled_at = (
            t + timedelta(hours=1)
            if state in ("scheduled", "retryable")
            else t - timedelta(seconds=3)
        )
    text = args_text if args_text is not None else json.dumps(args if args is not None else {})
    job_id: int = await conn.fetchval(
        """
        INSERT INTO river_job (kind, queue, state, args, metadata, priority, attempt,
            max_attempts, tags, errors, scheduled_at, attempted_at, finalized_at,
            attempted_by, unique_key, unique_states, created_at)
        VALUES ($1, $2, $3::river_job_state, $4::jsonb, $5::jsonb, $6, $7, $8, $9,
            $10::jsonb[], $11, $12, $13, $14, $15,
            CASE WHEN $16::int IS NULL THEN NULL ELSE $16::int::bit(8) END, $17)
        RETURNING id
        """,
        kind,
        queue,
        state,
        text,
        json.dumps(metadata or {}),
        priority,
        attempt,
        max_attempts,
        tags or [],
        [json.dumps(e) for e in errors] if errors else None,
        scheduled_at,
        attempted_at,
        finalized_at,
        attempted_by,
        unique_key,
        unique_states,
        min(scheduled_at, t) - timedelta(seconds=1),
    )
    return job_id


async def add_jobs(conn: asyncpg.Connection, n: int, **fields: Any) -> list[int]:
    return [await add_job(conn, **fields) for _ in range(n)]
