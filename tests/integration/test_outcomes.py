"""Outcomes are never dropped and failures are never silent (issue 16).

- an outcome the database refuses for good puts its job back at once, with the
  refusal recorded, instead of leaving it ``running`` for the rescuer's backstop;
- a job raising ``SystemExit`` or ``KeyboardInterrupt`` fails that attempt, recorded
  with the exception, and the client goes on;
- every failed attempt logs a WARNING and every discard an ERROR, with the job's
  fields as structured ``extra``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from pyriver_async import (
    Client,
    InsertOpts,
    Job,
    JobArgs,
    JobContext,
    QueueConfig,
    Workers,
)
from tests._support import events_for, eventually, next_event


class Refused(JobArgs, kind="outcome_refused"):
    pass


class Fine(JobArgs, kind="outcome_fine"):
    n: int = 0


class Raises(JobArgs, kind="outcome_raises"):
    what: str  # "system_exit" | "keyboard_interrupt" | "value_error"


class Nobody(JobArgs, kind="outcome_nobody_works_this"):
    pass


def _workers() -> Workers:
    w = Workers()

    @w.register(Refused)
    async def refused(ctx: JobContext, job: Job[Refused]) -> None:
        return None

    @w.register(Fine)
    async def fine(ctx: JobContext, job: Job[Fine]) -> None:
        return None

    @w.register(Raises)
    async def raises(ctx: JobContext, job: Job[Raises]) -> None:
        if job.args.what == "system_exit":
            raise SystemExit(3)
        if job.args.what == "keyboard_interrupt":
            raise KeyboardInterrupt
        if job.args.what == "surrogate":
            # A file name os.listdir decoded with surrogateescape: no UTF-8 for it.
            raise FileNotFoundError("no such file: caf\udce9.txt")
        raise ValueError("bad input\nsecond line of the message")

    return w


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[Client]:
    c = Client(
        pool,
        workers=_workers(),
        # Claims every kind (as River does), so that an unregistered kind is failed.
        queues={"default": QueueConfig(max_workers=10, registered_kinds_only=False)},
        # The leader's scheduler makes retried jobs available again (within a second).
        maintenance=True,
        retry_policy=lambda job, now: now,  # retry at once: the tests follow attempts
    )
    async with c:
        yield c


async def _row(pool: asyncpg.Pool, job_id: int) -> asyncpg.Record:
    rec = await pool.fetchrow("SELECT * FROM river_job WHERE id = $1", job_id)
    assert rec is not None
    return rec


@contextlib.asynccontextmanager
async def refused_completions(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """A row-level refusal of exactly one kind's outcome: completing it breaks a check."""
    await pool.execute(
        "ALTER TABLE river_job ADD CONSTRAINT no_refused_completion "
        "CHECK (state <> 'completed' OR kind <> 'outcome_refused')"
    )
    try:
        yield
    finally:
        await pool.execute("ALTER TABLE river_job DROP CONSTRAINT no_refused_completion")


async def test_an_outcome_the_database_refuses_puts_its_job_back_at_once(
    pool: asyncpg.Pool, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    async with refused_completions(pool):
        sub = client.subscribe()
        fine = [await client.insert(Fine(n=i)) for i in range(5)]
        bad = await client.insert(Refused(), InsertOpts(max_attempts=3))
        for r in fine:
            assert (await next_event(sub, r.job.id)).state == "completed"

        async def put_back() -> bool:
            return bool((await _row(pool, bad.job.id))["state"] == "retryable")

        await eventually(put_back, timeout=10)
        row = await _row(pool, bad.job.id)
        assert row["attempt"] == 1 and row["finalized_at"] is None
        assert "could not be written" in row["errors"][0]
        assert "no_refused_completion" in row["errors"][0]
        assert row["scheduled_at"] > datetime.now(UTC)  # the usual backoff, not a hot loop
        assert any(
            "its outcome 'completed' cannot be written" in r.getMessage()
            and "put back as retryable" in r.getMessage()
            for r in caplog.records
        )


async def test_a_put_back_that_fails_unexpectedly_is_kept_and_written_later(
    pool: asyncpg.Pool,
    client: Client,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The outcome is refused (a row-level error), and then writing its put-back meets an
    # error nobody foresaw (a bug, a value the driver cannot send): the job must not stay
    # ``running`` for the rescuer's hour, and the completer must go on writing others.
    async with refused_completions(pool):
        completer = client._completer
        assert completer is not None
        executor = completer._executor
        real = executor.job_set_outcome_many
        broke: list[int] = []

        async def once_broken(outcomes: Any) -> Any:
            if not broke and len(outcomes) == 1 and outcomes[0].state == "retryable":
                broke.append(outcomes[0].job_id)
                raise RuntimeError("a value the driver cannot send")
            return await real(outcomes)

        class Breaks:  # the driver's executor, with that one method wrapped
            job_set_outcome_many = staticmethod(once_broken)

            def __getattr__(self, name: str) -> Any:
                return getattr(executor, name)

        monkeypatch.setattr(completer, "_executor", Breaks())
        sub = client.subscribe()
        bad = await client.insert(Refused(), InsertOpts(max_attempts=3))

        async def put_back() -> bool:
            return bool((await _row(pool, bad.job.id))["state"] == "retryable")

        await eventually(put_back, timeout=15)
        assert broke == [bad.job.id]  # the unforeseen error did happen, once
        # Other jobs' outcomes are written meanwhile and after.
        after = await client.insert(Fine(n=1))
        assert (await next_event(sub, after.job.id)).state == "completed"
        assert any("putting it back failed unexpectedly" in r.getMessage() for r in caplog.records)


async def test_a_held_put_back_the_database_then_refuses_is_not_put_back_again(
    pool: asyncpg.Pool,
    client: Client,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The outcome is refused, writing its put-back fails unexpectedly (it is held and
    # retried), and the retry meets a refusal of that row: the put-back is given up for
    # the rescuer, as when it is refused at once. It must not be taken for a refused
    # outcome in turn and put back again (a second put-back hiding the first refusal).
    await pool.execute(
        "ALTER TABLE river_job ADD CONSTRAINT no_refused_completion "
        "CHECK (state <> 'completed' OR kind <> 'outcome_refused')"
    )
    try:
        completer = client._completer
        assert completer is not None
        executor = completer._executor
        real = executor.job_set_outcome_many
        broke: list[int] = []

        async def once_broken(outcomes: Any) -> Any:
            if not broke and len(outcomes) == 1 and outcomes[0].state == "retryable":
                broke.append(outcomes[0].job_id)
                # From now on the database refuses the put-back's row too.
                await pool.execute(
                    "ALTER TABLE river_job ADD CONSTRAINT no_refused_retry "
                    "CHECK (state <> 'retryable' OR kind <> 'outcome_refused')"
                )
                raise RuntimeError("a value the driver cannot send")
            return await real(outcomes)

        class Breaks:  # the driver's executor, with that one method wrapped
            job_set_outcome_many = staticmethod(once_broken)

            def __getattr__(self, name: str) -> Any:
                return getattr(executor, name)

        monkeypatch.setattr(completer, "_executor", Breaks())
        bad = await client.insert(Refused(), InsertOpts(max_attempts=3))

        def given_up() -> bool:
            return any("not even putting it back" in r.getMessage() for r in caplog.records)

        await eventually(given_up, timeout=15)
        assert broke == [bad.job.id]
        await completer.wait_idle()
        assert completer.put_back == 1
        assert not any(
            "its outcome 'retryable' cannot be written" in r.getMessage() for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
        assert (await _row(pool, bad.job.id))["state"] == "running"  # the rescuer's now
    finally:
        await pool.execute("ALTER TABLE river_job DROP CONSTRAINT IF EXISTS no_refused_retry")
        await pool.execute("ALTER TABLE river_job DROP CONSTRAINT no_refused_completion")


@pytest.mark.parametrize(
    ("what", "name"), [("system_exit", "SystemExit"), ("keyboard_interrupt", "KeyboardInterrupt")]
)
async def test_a_base_exception_from_a_job_fails_that_attempt_and_the_client_goes_on(
    pool: asyncpg.Pool, client: Client, what: str, name: str
) -> None:
    sub = client.subscribe()
    bad = await client.insert(Raises(what=what), InsertOpts(max_attempts=2))
    first = await next_event(sub, bad.job.id)
    assert first.state == "retryable"
    second = await next_event(sub, bad.job.id)  # retried (at once, by the policy)
    assert second.state == "discarded"
    row = await _row(pool, bad.job.id)
    assert len(row["errors"]) == 2
    assert all(name in e and "raised by the job" in e for e in row["errors"])
    # The client still works other jobs.
    ok = await client.insert(Fine())
    assert (await next_event(sub, ok.job.id)).state == "completed"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: getattr(record, k, None)
        for k in ("job_id", "job_kind", "job_queue", "job_attempt", "job_max_attempts")
    }


async def test_failed_attempts_and_discards_are_logged_with_the_jobs_fields(
    pool: asyncpg.Pool, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyriver_async")
    sub = client.subscribe()
    res = await client.insert(Raises(what="value_error"), InsertOpts(max_attempts=2))
    assert (await next_event(sub, res.job.id)).state == "retryable"
    assert (await next_event(sub, res.job.id)).state == "discarded"
    mine = [r for r in caplog.records if getattr(r, "job_id", None) == res.job.id]
    warning, error = mine[0], mine[-1]
    assert warning.levelno == logging.WARNING
    assert "failed attempt 1/2" in warning.getMessage()
    assert "ValueError: bad input" in warning.getMessage()
    assert "second line" not in warning.getMessage()  # the error's first line only
    assert _fields(warning) == {
        "job_id": res.job.id,
        "job_kind": "outcome_raises",
        "job_queue": "default",
        "job_attempt": 1,
        "job_max_attempts": 2,
    }
    assert error.levelno == logging.ERROR
    assert "discarded after attempt 2/2" in error.getMessage()
    assert _fields(error)["job_attempt"] == 2


async def test_an_unregistered_kind_and_undecodable_args_are_logged(
    pool: asyncpg.Pool, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyriver_async")
    sub = client.subscribe()
    nobody = await client.insert(Nobody(), InsertOpts(max_attempts=1))
    # A row another writer made, whose args do not fit the registered class.
    job_id = await pool.fetchval(
        "INSERT INTO river_job (args, kind, max_attempts) "
        "VALUES ('{\"n\": \"not a number\"}', 'outcome_fine', 1) RETURNING id"
    )
    await pool.execute("SELECT pg_notify('public.river_insert', '{\"queue\": \"default\"}')")
    assert (await next_event(sub, nobody.job.id)).state == "discarded"
    assert (await next_event(sub, job_id)).state == "discarded"
    messages = {
        getattr(r, "job_id", None): r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
    }
    assert (
        "no worker is registered for job kind 'outcome_nobody_works_this'"
        in messages[nobody.job.id]
    )
    assert "do not decode into Fine" in messages[job_id]


async def test_an_error_no_utf8_can_hold_is_recorded_and_uses_its_attempt(
    pool: asyncpg.Pool, client: Client
) -> None:
    # Before, encoding it failed inside the engine: the job went back as if
    # interrupted, attempt restored, and ran again in a tight loop for ever.
    sub = client.subscribe()
    res = await client.insert(Raises(what="surrogate"), InsertOpts(max_attempts=1))
    assert (await next_event(sub, res.job.id)).state == "discarded"
    row = await _row(pool, res.job.id)
    assert row["attempt"] == 1 and len(row["errors"]) == 1
    assert "no such file: caf\\\\udce9.txt" in row["errors"][0]  # escaped, kept


class Held(JobArgs, kind="outcome_held"):
    n: int = 0


async def test_a_row_locked_by_another_transaction_holds_back_only_its_own_outcome(
    db: str, pool: asyncpg.Pool
) -> None:
    # A caller's open transaction holds one job's row (it cancelled or upserted it,
    # or locked it by hand). Its outcome waits; the outcomes written beside it, and the
    # claims of new jobs, must not.
    release = asyncio.Event()
    workers = _workers()

    @workers.register(Held)
    async def held(ctx: JobContext, job: Job[Held]) -> None:
        await release.wait()

    client = Client(
        pool,
        workers=workers,
        queues={"default": QueueConfig(max_workers=20)},
        maintenance=False,
        statement_timeout=0.3,
    )
    async with client:
        sub = client.subscribe()
        results = await client.insert_many([Held(n=i) for i in range(10)])
        ids = [r.job.id for r in results]

        async def all_running() -> bool:
            n = await pool.fetchval(
                "SELECT count(*) FROM river_job WHERE id = ANY($1) AND state = 'running'", ids
            )
            return bool(n == 10)

        await eventually(all_running, timeout=10)
        locker = await asyncpg.connect(db)
        try:
            tx = locker.transaction()
            await tx.start()
            await locker.execute("SELECT 1 FROM river_job WHERE id = $1 FOR UPDATE", ids[0])
            release.set()  # the ten finish together: one batch, one row held
            others = await events_for(sub, set(ids[1:]), timeout=15)
            assert {ev.state for ev in others.values()} == {"completed"}
            fresh = await client.insert(Fine())  # claims go on meanwhile
            assert (await next_event(sub, fresh.job.id)).state == "completed"
            state = await pool.fetchval("SELECT state FROM river_job WHERE id = $1", ids[0])
            assert state == "running"  # still held
            await tx.rollback()
        finally:
            await locker.close()
        assert (await next_event(sub, ids[0], timeout=15)).state == "completed"
