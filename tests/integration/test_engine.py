"""The worker engine against a real PostgreSQL: claim, run, outcomes, stop."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pyriver_async import (
    Client,
    InsertOpts,
    Job,
    JobArgs,
    JobCancel,
    JobContext,
    JobSnooze,
    QueueConfig,
    Worker,
    Workers,
)
from pyriver_async._events import Subscription
from pyriver_async._outcome import Outcome
from tests._support import db_executor, events_for, eventually, next_event


class Noop(JobArgs, kind="engine_noop"):
    n: int = 0


class Fail(JobArgs, kind="engine_fail"):
    message: str = "boom"


class Gate(JobArgs, kind="engine_gate"):
    name: str = ""


class Snooze(JobArgs, kind="engine_snooze"):
    seconds: float = 0.0


class Cancel(JobArgs, kind="engine_cancel"):
    pass


class Sleepy(JobArgs, kind="engine_sleepy"):
    seconds: float = 10.0


class Unregistered(JobArgs, kind="engine_nobody_works_this"):
    pass


class Recorder:
    """What the workers saw, with events a test can await."""

    def __init__(self) -> None:
        self.calls: collections.Counter[int] = collections.Counter()
        self.order: list[int] = []
        self.started: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.release: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.cancelled: list[int] = []
        self.ctx: list[JobContext] = []


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def workers(rec: Recorder) -> Workers:
    w = Workers()

    @w.register(Noop)
    async def noop(ctx: JobContext, job: Job[Noop]) -> None:
        rec.calls[job.id] += 1
        rec.order.append(job.id)
        rec.ctx.append(ctx)

    @w.register(Fail)
    async def fail(ctx: JobContext, job: Job[Fail]) -> None:
        rec.calls[job.id] += 1
        raise RuntimeError(job.args.message)

    @w.register(Gate, timeout=None)
    async def gate(ctx: JobContext, job: Job[Gate]) -> None:
        rec.calls[job.id] += 1
        rec.started[job.args.name].set()
        try:
            await rec.release[job.args.name].wait()
        except asyncio.CancelledError:
            rec.cancelled.append(job.id)
            raise

    @w.register(Snooze)
    async def snooze(ctx: JobContext, job: Job[Snooze]) -> None:
        rec.calls[job.id] += 1
        if rec.calls[job.id] == 1:
            raise JobSnooze(job.args.seconds)

    @w.register(Cancel)
    async def cancel(ctx: JobContext, job: Job[Cancel]) -> None:
        rec.calls[job.id] += 1
        raise JobCancel("no longer wanted")

    class SleepyWorker(Worker[Sleepy]):
        def timeout(self, job: Job[Sleepy]) -> timedelta:
            return timedelta(milliseconds=100)

        async def work(self, ctx: JobContext, job: Job[Sleepy]) -> None:
            rec.calls[job.id] += 1
            await asyncio.sleep(job.args.seconds)

    w.register(Sleepy, SleepyWorker())
    return w


ClientFactory = Callable[..., Client]


@pytest.fixture
async def make_client(pool: asyncpg.Pool, workers: Workers) -> AsyncIterator[ClientFactory]:
    made: list[Client] = []

    def make(**kw: Any) -> Client:
        kw.setdefault("workers", workers)
        kw.setdefault("queues", {"default": QueueConfig(max_workers=20)})
        kw.setdefault("maintenance", False)
        kw.setdefault("fetch_poll_interval", 5.0)  # notifications must do the waking
        c = Client(kw.pop("database", pool), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.stop_and_cancel()


async def row(pool: asyncpg.Pool, job_id: int) -> asyncpg.Record:
    r = await pool.fetchrow("SELECT * FROM river_job WHERE id = $1", job_id)
    assert r is not None
    return r


async def test_job_inserted_in_open_transaction_runs_only_after_commit(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client()
    async with client:
        sub = client.subscribe()
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            res = await client.insert(Noop(n=1), conn=conn)
            # A later, committed job goes through while the first is still uncommitted.
            other = await client.insert(Noop(n=2))
            await next_event(sub, other.job.id)
            assert rec.calls[res.job.id] == 0
            await tx.commit()
        ev = await next_event(sub, res.job.id)
        assert ev.state == "completed"
        assert rec.calls[res.job.id] == 1


async def test_rolled_back_insert_is_never_worked(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client()
    async with client:
        sub = client.subscribe()
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            ghost = await client.insert(Noop(n=1), conn=conn)
            await tx.rollback()
        after = await client.insert(Noop(n=2))
        await next_event(sub, after.job.id)
    assert rec.calls[ghost.job.id] == 0
    assert await pool.fetchval("SELECT count(*) FROM river_job WHERE id = $1", ghost.job.id) == 0


async def test_two_clients_work_5000_jobs_each_exactly_once(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    total = 5000
    a = make_client(queues={"default": QueueConfig(max_workers=50)}, fetch_poll_interval=0.2)
    b = make_client(queues={"default": QueueConfig(max_workers=50)}, fetch_poll_interval=0.2)
    async with a, b:
        sub_a, sub_b = a.subscribe(), b.subscribe()
        results = await a.insert_many([Noop(n=i) for i in range(total)])
        ids = {r.job.id for r in results}
        seen: set[int] = set()

        async def drain(sub: Subscription) -> None:
            async for ev in sub:
                assert ev.state == "completed"
                seen.add(ev.job_id)
                if len(seen) >= total:
                    return

        done, _ = await asyncio.wait(
            [asyncio.create_task(drain(sub_a)), asyncio.create_task(drain(sub_b))],
            timeout=60,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert done, f"only {len(seen)} of {total} jobs completed"
    assert seen == ids
    assert set(rec.calls) == ids
    assert all(n == 1 for n in rec.calls.values())
    states = await pool.fetch("SELECT state, count(*) FROM river_job GROUP BY state")
    assert {r["state"]: r["count"] for r in states} == {"completed": total}
    by_client = await pool.fetch("SELECT attempted_by[1] AS c, count(*) FROM river_job GROUP BY 1")
    assert {r["c"] for r in by_client} <= {a.id, b.id}


async def test_failed_job_is_retryable_with_backoff_and_error_recorded(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(Fail(message="disk on fire"))
        t0 = datetime.now(UTC)
        ev = await next_event(sub, res.job.id)
    assert ev.state == "retryable"
    r = await row(pool, res.job.id)
    assert r["state"] == "retryable" and r["attempt"] == 1
    # Default backoff: (0 recorded errors + 1) ** 4 = 1 s, ±10 %.
    delay = (r["scheduled_at"] - t0).total_seconds()
    assert 0.8 <= delay <= 1.2, delay
    job = await client.get(res.job.id)
    assert len(job.errors) == 1
    err = job.errors[0]
    assert err.attempt == 1 and "RuntimeError: disk on fire" in err.error
    assert "Traceback" in err.trace


async def test_job_out_of_attempts_is_discarded(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(Fail(), InsertOpts(max_attempts=1))
        ev = await next_event(sub, res.job.id)
    assert ev.state == "discarded"
    r = await row(pool, res.job.id)
    assert r["state"] == "discarded" and r["finalized_at"] is not None
    assert len(r["errors"]) == 1


async def test_retries_until_max_attempts_then_discarded(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    # A retry policy of "now", and the scheduler's step done by hand, keep it fast and exact.
    client = make_client(retry_policy=lambda job, now: now)
    async with client:
        sub = client.subscribe()
        res = await client.insert(Fail(), InsertOpts(max_attempts=3))
        for attempt in (1, 2):
            ev = await next_event(sub, res.job.id)
            assert (ev.state, ev.attempt) == ("retryable", attempt)
            # What the scheduler does for a due retryable job.
            await pool.execute("UPDATE river_job SET state = 'available' WHERE id = $1", res.job.id)
            await pool.execute(
                "SELECT pg_notify('public.river_insert', '{\"queue\": \"default\"}')"
            )
        ev = await next_event(sub, res.job.id)
        assert (ev.state, ev.attempt) == ("discarded", 3)
    r = await row(pool, res.job.id)
    assert r["attempt"] == 3 and len(r["errors"]) == 3
    assert rec.calls[res.job.id] == 3


async def test_worker_next_retry_overrides_the_policy(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    class Later(JobArgs, kind="engine_later"):
        pass

    at = datetime(2099, 1, 1, tzinfo=UTC)

    class LaterWorker(Worker[Later]):
        async def work(self, ctx: JobContext, job: Job[Later]) -> None:
            raise ValueError("not yet")

        def next_retry(self, job: Job[Later]) -> datetime:
            return at

    w = Workers()
    w.register(Later, LaterWorker())
    client = make_client(workers=w)
    async with client:
        sub = client.subscribe()
        res = await client.insert(Later())
        await next_event(sub, res.job.id)
    assert (await row(pool, res.job.id))["scheduled_at"] == at


async def test_snooze_reschedules_without_using_an_attempt(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(Snooze(seconds=3600))
        ev = await next_event(sub, res.job.id)
    assert ev.state == "scheduled"
    r = await row(pool, res.job.id)
    assert r["state"] == "scheduled" and r["attempt"] == 0 and not r["errors"]
    assert (r["scheduled_at"] - datetime.now(UTC)) > timedelta(minutes=59)
    job = await client.get(res.job.id)
    assert job.metadata["snoozes"] == 1


async def test_short_snooze_runs_again_at_once(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(Snooze(seconds=0.3))
        first = await next_event(sub, res.job.id)
        assert first.state == "available"
        r = await row(pool, res.job.id)
        assert r["scheduled_at"] > datetime.now(UTC)  # not before its delay...
        # ...and then promptly: nothing else wakes the producer (its poll is 5 s).
        second = await next_event(sub, res.job.id, timeout=3)
    assert second.state == "completed"
    r = await row(pool, res.job.id)
    assert r["attempt"] == 1 and rec.calls[res.job.id] == 2


async def test_job_cancel_ends_cancelled_without_retry(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(Cancel())
        ev = await next_event(sub, res.job.id)
    assert ev.state == "cancelled"
    r = await row(pool, res.job.id)
    assert r["state"] == "cancelled" and r["finalized_at"] is not None
    assert "no longer wanted" in r["errors"][0]


async def test_client_cancel_of_running_job_cancels_its_coroutine(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    runner = make_client()
    other = make_client(queues={})  # a different client asks: goes through NOTIFY
    async with runner:
        sub = runner.subscribe()
        res = await runner.insert(Gate(name="c"))
        await asyncio.wait_for(rec.started["c"].wait(), 10)
        job = await other.cancel(res.job.id)
        assert job.state == "running" and "cancel_attempted_at" in job.metadata
        ev = await next_event(sub, res.job.id)
    assert ev.state == "cancelled"
    assert rec.cancelled == [res.job.id]
    r = await row(pool, res.job.id)
    assert r["state"] == "cancelled"


async def test_client_cancel_of_waiting_job_is_immediate(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    client = make_client(queues={})
    res = await client.insert(Noop(), InsertOpts(delay=timedelta(hours=1)))
    job = await client.cancel(res.job.id)
    assert job.state == "cancelled" and job.finalized_at is not None


@pytest.mark.parametrize("timers", ["shared", "own"])
async def test_timeout_cancels_the_job_and_records_an_error(
    pool: asyncpg.Pool, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, timers: str
) -> None:
    from pyriver_async._executor import Executor

    if timers == "own":  # more distinct timeouts than shared timers: one timer per job
        monkeypatch.setattr(Executor, "MAX_TIMEOUT_QUEUES", 0)
    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(Sleepy(seconds=30))
        ev = await next_event(sub, res.job.id)
    assert ev.state == "retryable"
    job = await client.get(res.job.id)
    assert "timed out" in job.errors[0].error


async def test_unknown_kind_is_recorded_with_its_name(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    # A client that claims every kind (as River does) fails the kinds it cannot run;
    # by default it leaves them to a client that has their worker (test_flow_claim).
    client = make_client(
        queues={"default": QueueConfig(max_workers=20, registered_kinds_only=False)}
    )
    async with client:
        sub = client.subscribe()
        res = await client.insert(Unregistered())
        ev = await next_event(sub, res.job.id)
    assert ev.state == "retryable"
    job = await client.get(res.job.id)
    assert "engine_nobody_works_this" in job.errors[0].error


async def test_args_that_do_not_decode_are_recorded(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    client = make_client()
    job_id = await pool.fetchval(
        "INSERT INTO river_job (args, kind, max_attempts) "
        "VALUES ('{\"n\": \"not a number\"}', 'engine_noop', 5) RETURNING id"
    )
    async with client:
        sub = client.subscribe()
        await pool.execute("SELECT pg_notify('public.river_insert', '{\"queue\": \"default\"}')")
        ev = await next_event(sub, job_id)
    assert ev.state == "retryable"
    job = await client.get(job_id)
    assert "engine_noop" in job.errors[0].error and "Noop" in job.errors[0].error


async def test_higher_priority_is_claimed_first(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client(queues={"default": QueueConfig(max_workers=1)})
    ids = []
    for prio in (4, 3, 1, 2, 1):
        ids.append((await client.insert(Noop(n=prio), InsertOpts(priority=prio))).job.id)
    async with client:
        sub = client.subscribe()
        for _ in ids:
            await sub.get(10)
    expected = [ids[2], ids[4], ids[3], ids[1], ids[0]]  # priority, then id
    assert rec.order == expected


async def test_slow_queue_does_not_delay_another_queue(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client(
        queues={"slow": QueueConfig(max_workers=2), "fast": QueueConfig(max_workers=2)}
    )
    async with client:
        sub = client.subscribe()
        await client.insert_many([(Gate(name="slow"), InsertOpts(queue="slow")) for _ in range(10)])
        await asyncio.wait_for(rec.started["slow"].wait(), 10)
        res = await client.insert(Noop(), InsertOpts(queue="fast"))
        ev = await next_event(sub, res.job.id, timeout=5)
        assert ev.state == "completed"
        running = await pool.fetchval(
            "SELECT count(*) FROM river_job WHERE queue = 'slow' AND state = 'running'"
        )
        assert running == 2  # the slow queue is still full
        rec.release["slow"].set()


async def test_soft_stop_waits_for_the_running_job(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client()
    await client.start()
    res = await client.insert(Gate(name="soft"))
    await asyncio.wait_for(rec.started["soft"].wait(), 10)
    stopping = asyncio.create_task(client.stop())
    await asyncio.sleep(0)  # let stop() begin
    assert not stopping.done()
    rec.release["soft"].set()
    await asyncio.wait_for(stopping, 10)
    r = await row(pool, res.job.id)
    assert r["state"] == "completed"
    assert rec.cancelled == []


async def test_hard_stop_cancels_and_the_job_returns_available_with_attempt_restored(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client()
    await client.start()
    res = await client.insert(Gate(name="hard"))
    await asyncio.wait_for(rec.started["hard"].wait(), 10)
    await asyncio.wait_for(client.stop_and_cancel(), 10)
    assert rec.cancelled == [res.job.id]
    r = await row(pool, res.job.id)
    # Interrupted only by the shutdown: no attempt used, no error (DESIGN §1).
    assert r["state"] == "available" and r["attempt"] == 0 and not r["errors"]
    # ...and the next client works it.
    rec.release["hard"].set()
    again = make_client()
    async with again:
        sub = again.subscribe()
        await again.insert(Noop())  # a wake-up
        ev = await next_event(sub, res.job.id)
    assert ev.state == "completed"


async def test_soft_stop_timeout_escalates_to_hard(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client(soft_stop_timeout=0.2)
    await client.start()
    res = await client.insert(Gate(name="esc"))
    await asyncio.wait_for(rec.started["esc"].wait(), 10)
    await asyncio.wait_for(client.stop(), 10)
    assert rec.cancelled == [res.job.id]
    assert (await row(pool, res.job.id))["state"] == "available"


async def test_job_ignoring_cancellation_does_not_wedge_shutdown(
    pool: asyncpg.Pool, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Stubborn(JobArgs, kind="engine_stubborn"):
        pass

    started = asyncio.Event()
    finish = asyncio.Event()
    w = Workers()

    @w.register(Stubborn, timeout=None)
    async def stubborn(ctx: JobContext, job: Job[Stubborn]) -> None:
        started.set()
        while not finish.is_set():
            try:
                await finish.wait()
            except asyncio.CancelledError:
                continue  # ignores cancellation

    client = make_client(workers=w, hard_stop_timeout=0.3)
    await client.start()
    res = await client.insert(Stubborn())
    await asyncio.wait_for(started.wait(), 10)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(client.stop_and_cancel(), 5)
    assert loop.time() - t0 < 3
    assert "ignores cancellation" in caplog.text and str(res.job.id) in caplog.text
    (abandoned,) = worker_tasks()
    finish.set()
    await asyncio.wait_for(abandoned, 5)  # once its job ends, its worker ends too
    assert worker_tasks() == []


async def test_no_task_outlives_stop(pool: asyncpg.Pool, make_client: ClientFactory) -> None:
    before = asyncio.all_tasks()
    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(Noop())
        await next_event(sub, res.job.id)
    await asyncio.sleep(0)
    leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
    current = asyncio.current_task()
    assert current is not None
    leaked.discard(current)
    assert not leaked, leaked


async def test_completions_survive_connection_drop_during_flush(
    pool: asyncpg.Pool, db: str, make_client: ClientFactory, rec: Recorder
) -> None:
    # The client's own pool, so that killing its backends does not touch the fixture's.
    client = make_client(database=db, completer_flush_interval=0.3, fetch_poll_interval=0.2)
    total = 200
    async with client:
        sub = client.subscribe()
        await client.insert_many([Noop(n=i) for i in range(total)])
        # Wait until every job has run, so their outcomes sit in the completer.
        deadline = asyncio.get_running_loop().time() + 20
        while len(rec.calls) < total:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        assert killed >= 1
        done: set[int] = set()
        while len(done) < total:
            ev = await sub.get(30)
            done.add(ev.job_id)
    counts = await pool.fetch("SELECT state, count(*) FROM river_job GROUP BY state")
    assert {r["state"]: r["count"] for r in counts} == {"completed": total}
    assert all(n == 1 for n in rec.calls.values())


async def test_ctx_carries_client_logger_and_deadline(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    client = make_client(job_timeout=timedelta(seconds=30))
    async with client:
        sub = client.subscribe()
        res = await client.insert(Noop())
        await next_event(sub, res.job.id)
    ctx = rec.ctx[0]
    assert ctx.client is client and ctx.job_id == res.job.id
    assert ctx.deadline is not None
    assert timedelta(seconds=25) < ctx.deadline - datetime.now(UTC) <= timedelta(seconds=30)


async def test_jobs_claimed_with_a_lost_reply_are_given_back(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(fetch_poll_interval=0.1)
    # A claim of this client that committed, but whose reply was lost with its
    # connection: the row says running under our id, yet nobody here runs it.
    res = await client.insert(Noop(n=7), InsertOpts(delay=timedelta(hours=1)))
    await pool.execute(
        "UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now(), "
        "scheduled_at = now(), attempted_by = ARRAY[$2] WHERE id = $1",
        res.job.id,
        client.id,
    )
    async with client:
        sub = client.subscribe()
        real_fetch = asyncpg.connection.Connection.fetch
        failed = asyncio.Event()

        async def failing_fetch(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            if "SKIP LOCKED" in query and not failed.is_set():
                failed.set()
                raise ConnectionResetError("connection lost mid-claim")
            return await real_fetch(self, query, *args, **kw)

        monkeypatch.setattr(asyncpg.connection.Connection, "fetch", failing_fetch)
        await client.insert(Noop(n=8))  # wakes the producer into the failing claim
        await asyncio.wait_for(failed.wait(), 10)
        ev = await next_event(sub, res.job.id)
    assert ev.state == "completed"
    r = await row(pool, res.job.id)
    assert r["attempt"] == 1  # given back (attempt restored), then run once
    assert rec.calls[res.job.id] == 1


async def test_a_retried_outcome_cannot_touch_a_later_claim_with_the_same_attempt(
    pool: asyncpg.Pool, make_client: ClientFactory
) -> None:
    # A shutdown (or short snooze) gives the attempt back, so the next claim has the
    # same attempt number. A retry of the first outcome (its reply was lost) must not
    # match that new claim: the claim's attempted_at tells them apart.
    client = make_client(queues={})
    db = db_executor(pool)
    res = await client.insert(Noop())
    a = (await db.job_claim(queue="default", limit=1, client_id="client-a"))[0]
    outcome = Outcome.interrupted(a["id"], a["attempt"], "default")
    outcome.attempted_at = a["attempted_at"]
    assert len(await db.job_set_outcome_many([outcome])) == 1
    b = (await db.job_claim(queue="default", limit=1, client_id="client-b"))[0]
    assert (b["id"], b["attempt"]) == (res.job.id, a["attempt"])  # same attempt number
    assert len(await db.job_set_outcome_many([outcome])) == 0  # the retry
    done = Outcome.completed(a["id"], 1, "default")
    done.attempted_at = a["attempted_at"]
    assert len(await db.job_complete_many([done])) == 0
    r = await row(pool, res.job.id)
    assert r["state"] == "running" and r["attempted_by"][-1] == "client-b"


@pytest.mark.parametrize("worker", ["new", "idle"])
async def test_a_job_cancelled_before_its_first_step_frees_its_slot(
    pool: asyncpg.Pool, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, worker: str
) -> None:
    from pyriver_async._producer import Producer

    real_fetch = Producer._fetch
    cancel_after_claim = worker == "new"

    async def fetch_then_cancel(self: Producer) -> None:
        await real_fetch(self)
        if cancel_after_claim:
            for job_id in list(self.running):
                self.cancel_job(job_id)  # before the job's worker has taken a step

    monkeypatch.setattr(Producer, "_fetch", fetch_then_cancel)
    client = make_client(queues={"default": QueueConfig(max_workers=1)}, soft_stop_timeout=30)
    async with client:
        sub = client.subscribe()
        if worker == "idle":
            # One job runs first, so the next is handed to that worker, idle, waiting.
            first = await client.insert(Noop())
            assert (await next_event(sub, first.job.id)).state == "completed"
            assert len(worker_tasks()) == 1
            cancel_after_claim = True
        res = await client.insert(Noop())
        ev = await next_event(sub, res.job.id)
        assert ev.state == "cancelled"
        assert client.running_jobs == {}
        t0 = asyncio.get_running_loop().time()
    assert asyncio.get_running_loop().time() - t0 < 5  # stop() had nothing to wait for
    r = await row(pool, res.job.id)
    assert r["state"] == "cancelled" and r["finalized_at"] is not None


class SelfCancel(JobArgs, kind="engine_self_cancel"):
    pass


async def test_a_cancel_that_overtakes_the_claim_reply_still_cancels_the_job(
    pool: asyncpg.Pool, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    from pyriver_async._claim import ClaimResult
    from pyriver_async._driver.columns import ID
    from pyriver_async._producer import Producer

    other = make_client(queues={})  # asks through NOTIFY, as another process would
    real_claim = Producer._claim
    raced: list[int] = []

    async def claim_then_cancel(self: Producer, limit: int) -> ClaimResult:
        result = await real_claim(self, limit)  # committed: the jobs are running
        if result.rows and not raced:
            # The cancel runs and its notification is handled here before this claim's
            # rows are: the producer does not know the job yet.
            job_id = result.rows[0][ID]
            raced.append(job_id)
            assert (await other.cancel(job_id)).state == "running"
            await eventually(lambda: job_id in self._early_cancels)
            assert job_id not in self.running
        return result

    monkeypatch.setattr(Producer, "_claim", claim_then_cancel)
    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(Noop())
        ev = await next_event(sub, res.job.id)
    assert raced == [res.job.id]
    assert ev.state == "cancelled"
    assert rec.calls[res.job.id] == 0  # never run
    assert (await row(pool, res.job.id))["state"] == "cancelled"


async def test_a_job_retried_soon_after_a_cancel_elsewhere_runs(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    # A worker of the queue hears the cancel of a job running in another process; the
    # job ends cancelled there and is retried at once. The cancel was not for a claim
    # of this worker's: when it claims the retried job, the job must run.
    other = make_client()
    async with other:
        sub = other.subscribe()
        res = await other.insert(Gate(name="elsewhere"))
        await asyncio.wait_for(rec.started["elsewhere"].wait(), 10)
        me = make_client()
        await me.start()
        assert (await me.cancel(res.job.id)).state == "running"  # it runs in `other`
        assert (await next_event(sub, res.job.id)).state == "cancelled"
    rec.release["elsewhere"].set()
    mine = me.subscribe()
    assert (await me.retry(res.job.id)).state == "available"
    assert (await next_event(mine, res.job.id)).state == "completed"
    assert rec.calls[res.job.id] == 2
    await me.stop()


def test_early_cancels_are_forgotten_after_their_ttl_and_bounded() -> None:
    from pyriver_async._producer import RecentIds

    now = [0.0]
    ids = RecentIds(ttl=5.0, max_size=3, clock=lambda: now[0])
    ids.add(1)
    now[0] = 4.9
    assert 1 in ids
    now[0] = 5.0
    assert 1 not in ids and not ids.pop(1)
    for i in range(10, 15):
        ids.add(i)
    assert len(ids) == 3 and 11 not in ids and 12 in ids  # the oldest went first
    assert ids.pop(12) and not ids.pop(12)  # a remembered id is acted on once


def worker_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("pyriver-worker-")]


async def test_one_worker_coroutine_goes_on_after_every_way_a_job_ends(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder, workers: Workers
) -> None:
    # Jobs run on long-lived worker coroutines: a timeout, a cancel, a job cancelling
    # itself, an error... must each leave the coroutine able to run the next job.
    @workers.register(SelfCancel)
    async def self_cancel(ctx: JobContext, job: Job[SelfCancel]) -> None:
        await ctx.client.cancel(ctx.job_id)

    client = make_client(queues={"default": QueueConfig(max_workers=1)})
    async with client:
        sub = client.subscribe()

        async def outcome(args: JobArgs) -> str:
            res = await client.insert(args)
            return (await next_event(sub, res.job.id)).state

        assert await outcome(Sleepy(seconds=30)) == "retryable"  # timed out
        res = await client.insert(Gate(name="g"))
        await asyncio.wait_for(rec.started["g"].wait(), 10)
        await client.cancel(res.job.id)
        assert (await next_event(sub, res.job.id)).state == "cancelled"
        # client.cancel() of its own job: cancelled by the control notification if it
        # comes in first, else it returns (completed) with the cancellation pending;
        # either way the next job on that worker must not inherit it.
        assert await outcome(SelfCancel()) in ("cancelled", "completed")
        after = await client.insert(Noop())
        ev = await next_event(sub, after.job.id)
        assert ev.state == "completed" and ev.attempt == 1
        assert await outcome(Cancel()) == "cancelled"
        assert await outcome(Fail()) == "retryable"
        done = await client.insert_many([Noop(n=i) for i in range(50)])
        for r in done:
            assert (await next_event(sub, r.job.id)).state == "completed"
        assert len(worker_tasks()) == 1  # one coroutine ran all of them
    assert worker_tasks() == []


class CountWorkers(JobArgs, kind="engine_count_workers"):
    pass


async def test_worker_coroutines_never_exceed_max_workers(
    pool: asyncpg.Pool, make_client: ClientFactory, workers: Workers
) -> None:
    counts: list[int] = []

    @workers.register(CountWorkers)
    async def count(ctx: JobContext, job: Job[CountWorkers]) -> None:
        counts.append(len(worker_tasks()))
        await asyncio.sleep(0)

    client = make_client(queues={"default": QueueConfig(max_workers=7)})
    async with client:
        sub = client.subscribe()
        for _ in range(3):
            results = await client.insert_many([CountWorkers() for _ in range(300)])
            await events_for(sub, {r.job.id for r in results}, timeout=30)
    assert len(counts) == 900
    assert max(counts) == 7  # a backlog keeps every slot busy, and no more exist


class Patient(JobArgs, kind="engine_patient"):
    seconds: float


class RaisesCancelled(JobArgs, kind="engine_raises_cancelled"):
    pass


async def test_a_timeout_of_an_ended_job_never_reaches_the_next_one(
    pool: asyncpg.Pool, make_client: ClientFactory, workers: Workers
) -> None:
    # One worker: a job with a 100 ms timeout ends at once; the next job, with a
    # longer timeout, runs past the first one's deadline and must complete.
    @workers.register(Patient, timeout=5)
    async def patient(ctx: JobContext, job: Job[Patient]) -> None:
        await asyncio.sleep(job.args.seconds)  # the job's own work

    client = make_client(queues={"default": QueueConfig(max_workers=1)})
    async with client:
        sub = client.subscribe()
        quick = await client.insert(Sleepy(seconds=0))
        assert (await next_event(sub, quick.job.id)).state == "completed"
        slow = await client.insert(Patient(seconds=0.3))
        assert (await next_event(sub, slow.job.id)).state == "completed"


async def test_a_cancelled_error_raised_by_the_job_itself_is_a_failure(
    pool: asyncpg.Pool, make_client: ClientFactory, workers: Workers
) -> None:
    # Awaiting something another task cancelled raises CancelledError inside the job
    # while its own task was not cancelled: an error like any other (it must not be
    # given back with its attempt restored, which would run it again for ever).
    @workers.register(RaisesCancelled)
    async def raises(ctx: JobContext, job: Job[RaisesCancelled]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut

    client = make_client()
    async with client:
        sub = client.subscribe()
        res = await client.insert(RaisesCancelled())
        assert (await next_event(sub, res.job.id)).state == "retryable"
    job = await client.get(res.job.id)
    assert job.attempt == 1 and "CancelledError" in job.errors[0].error


async def test_workers_cancelled_from_outside_end(
    pool: asyncpg.Pool, make_client: ClientFactory, rec: Recorder
) -> None:
    # What asyncio.run does on its way out (or a task group that fails): cancel every
    # task. A worker must end, idle or running, or the loop never closes.
    client = make_client(queues={"default": QueueConfig(max_workers=2)})
    await client.start()
    sub = client.subscribe()
    done = await client.insert_many([Noop(n=1), Noop(n=2)])  # one claim: two workers
    await events_for(sub, {r.job.id for r in done}, timeout=10)
    busy = await client.insert(Gate(name="outside"))
    await asyncio.wait_for(rec.started["outside"].wait(), 10)
    tasks = worker_tasks()
    assert len(tasks) == 2  # one idle, one running the gate job
    for t in tasks:
        t.cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert rec.cancelled == [busy.job.id]
    assert client.running_jobs == {}
    await client.stop()
    r = await row(pool, busy.job.id)
    assert r["state"] == "available" and r["attempt"] == 0  # given back, attempt restored
