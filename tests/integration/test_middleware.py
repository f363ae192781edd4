"""Middleware, hooks and the error handler (issue 19), against a real database.

- work middleware wraps every attempt in the order given, composed once per kind;
- insert middleware sees every job of insert and insert_many before it is written,
  may amend options and metadata (one call per batch) or refuse the whole call;
- hooks fire for what the completer wrote, per lifecycle point and per kind, and a
  crashing hook is logged without stopping the engine;
- the error handler sees every failed attempt (exceptions, timeouts, undecodable
  args, unknown kinds, BaseExceptions) and may override the retry.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pyriver_async import (
    Client,
    ConfigError,
    ErrorOverride,
    Hook,
    HookEvent,
    InsertBatch,
    InsertMiddleware,
    InsertOpts,
    InvalidArgsError,
    InvalidOptsError,
    Job,
    JobArgs,
    JobCancel,
    JobContext,
    JobSnooze,
    JobState,
    JobTimeoutError,
    Middleware,
    QueueConfig,
    UnknownKindError,
    Workers,
)
from pyriver_async._insert import InsertResult
from tests._support import events_for, eventually, next_event


class Task(JobArgs, kind="mw_task"):
    what: str = "ok"  # ok | fail | snooze | cancel | slow | exit


class Other(JobArgs, kind="mw_other"):
    pass


def _workers(seen: list[str] | None = None) -> Workers:
    w = Workers()

    @w.register(Task, timeout=timedelta(seconds=0.3))
    async def task(ctx: JobContext, job: Job[Task]) -> None:
        if seen is not None:
            seen.append("work")
        what = job.args.what
        if what == "fail":
            raise ValueError("it failed")
        if what == "snooze":
            raise JobSnooze(timedelta(hours=1))
        if what == "cancel":
            raise JobCancel("no more")
        if what == "slow":
            await asyncio.sleep(10)
        if what == "exit":
            raise SystemExit(2)

    @w.register(Other)
    async def other(ctx: JobContext, job: Job[Other]) -> None:
        return None

    return w


def _client(pool: asyncpg.Pool, **kw: Any) -> Client:
    # Claims every kind, so that a kind with no worker is claimed and its failure seen.
    return Client(
        pool,
        workers=kw.pop("workers", None) or _workers(),
        queues={"default": QueueConfig(max_workers=5, registered_kinds_only=False)},
        maintenance=False,
        **kw,
    )


async def _state(pool: asyncpg.Pool, job_id: int) -> str:
    return str(await pool.fetchval("SELECT state::text FROM river_job WHERE id = $1", job_id))


# -- work middleware --------------------------------------------------------------------


async def test_work_middleware_wraps_each_attempt_first_outermost(pool: asyncpg.Pool) -> None:
    seen: list[str] = []

    async def outer(ctx: JobContext, job: Job[Any], call_next: Any) -> None:
        seen.append("outer in")
        await call_next()
        seen.append("outer out")

    class Inner(Middleware):
        async def work(self, ctx: JobContext, job: Job[Any], call_next: Any) -> None:
            seen.append(f"inner in {job.kind}")
            await call_next()
            seen.append("inner out")

    client = _client(pool, workers=_workers(seen), middleware=[outer, Inner()])
    async with client, client.subscribe() as events:
        job = (await client.insert(Task())).job
        assert (await next_event(events, job.id)).state == "completed"
    assert seen == ["outer in", "inner in mw_task", "work", "inner out", "outer out"]


async def test_work_middleware_sees_the_failure_and_can_turn_it_into_success(
    pool: asyncpg.Pool,
) -> None:
    caught: list[str] = []

    async def forgive(ctx: JobContext, job: Job[Any], call_next: Any) -> None:
        try:
            await call_next()
        except ValueError as exc:
            caught.append(str(exc))  # swallowed: the attempt succeeds

    client = _client(pool, middleware=[forgive])
    async with client, client.subscribe() as events:
        job = (await client.insert(Task(what="fail"))).job
        assert (await next_event(events, job.id)).state == "completed"
    assert caught == ["it failed"]


async def test_work_chain_is_composed_once_per_kind_at_start(pool: asyncpg.Pool) -> None:
    async def mw(ctx: JobContext, job: Job[Any], call_next: Any) -> None:
        await call_next()

    client = _client(pool, middleware=[mw])
    async with client:
        assert client._executor is not None
        first = client._executor.registration(Task.kind)
        assert first is not None
        # The same composed function for every job of the kind, built at start.
        assert client._executor.registration(Task.kind) is first
        plain = client.workers.get(Task.kind)
        assert plain is not None and first.work is not plain.work


def test_middleware_that_is_not_async_is_refused() -> None:
    def sync_mw(ctx: Any, job: Any, call_next: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="middleware"):
        Client("postgresql://x/y", middleware=[sync_mw])

    class BadInsert:
        def insert(self, batch: Any, call_next: Any) -> Any:
            return None

    with pytest.raises(ConfigError, match="async def"):
        Client("postgresql://x/y", middleware=[BadInsert()])


# -- insert middleware ------------------------------------------------------------------


class Stamp:
    """Stamps a tenant on every job; routes `mw_other` jobs to another queue."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def insert(self, batch: InsertBatch, call_next: Any) -> list[InsertResult]:
        self.calls.append(len(batch))
        batch.add_metadata({"tenant": "acme"})
        if "mw_other" in batch.kinds:
            for j in batch.jobs:
                if j.kind == "mw_other":
                    j.queue = "elsewhere"
                    j.metadata["routed"] = True
        results: list[InsertResult] = await call_next()
        return results


async def test_insert_middleware_amends_metadata_and_options(pool: asyncpg.Pool) -> None:
    stamp = Stamp()
    assert isinstance(stamp, InsertMiddleware)
    client = Client(pool, middleware=[stamp])
    one = (await client.insert(Task(), InsertOpts(metadata={"own": 1}))).job
    row = await pool.fetchrow("SELECT metadata, queue FROM river_job WHERE id = $1", one.id)
    assert row is not None and row["queue"] == "default"
    assert '"tenant": "acme"' in row["metadata"] and '"own": 1' in row["metadata"]
    assert one.metadata == {"own": 1, "tenant": "acme"}

    other = (await client.insert(Other())).job
    assert other.queue == "elsewhere"
    assert other.metadata == {"routed": True, "tenant": "acme"}
    assert stamp.calls == [1, 1]


@pytest.mark.parametrize("n", [10, 200])  # one statement, and the COPY path
async def test_insert_middleware_runs_once_per_batch(pool: asyncpg.Pool, n: int) -> None:
    stamp = Stamp()
    client = Client(pool, middleware=[stamp])
    results = await client.insert_many([Task() for _ in range(n)])
    assert stamp.calls == [n]
    assert all(r.job.metadata == {"tenant": "acme"} for r in results)
    stamped = await pool.fetchval(
        "SELECT count(*) FROM river_job WHERE metadata ->> 'tenant' = 'acme'"
    )
    assert stamped == n


async def test_insert_middleware_refusal_writes_nothing(pool: asyncpg.Pool) -> None:
    class Refuse:
        async def insert(self, batch: InsertBatch, call_next: Any) -> list[InsertResult]:
            if any(isinstance(a, Other) for a in batch.args):
                raise PermissionError("no Other jobs here")
            results: list[InsertResult] = await call_next()
            return results

    client = Client(pool, middleware=[Refuse()])
    with pytest.raises(PermissionError):
        await client.insert_many([Task(), Other(), Task()])
    assert await pool.fetchval("SELECT count(*) FROM river_job") == 0
    await client.insert(Task())
    assert await pool.fetchval("SELECT count(*) FROM river_job") == 1


async def test_insert_middleware_amendments_are_checked(pool: asyncpg.Pool) -> None:
    class BadQueue:
        async def insert(self, batch: InsertBatch, call_next: Any) -> list[InsertResult]:
            batch.jobs[0].queue = "not a queue!"
            results: list[InsertResult] = await call_next()
            return results

    class Reserved:
        async def insert(self, batch: InsertBatch, call_next: Any) -> list[InsertResult]:
            batch.add_metadata({"pyriver:mine": 1})
            results: list[InsertResult] = await call_next()
            return results

    with pytest.raises(InvalidOptsError):
        await Client(pool, middleware=[BadQueue()]).insert(Task())
    with pytest.raises(InvalidOptsError, match="reserved"):
        await Client(pool, middleware=[Reserved()]).insert(Task())
    assert await pool.fetchval("SELECT count(*) FROM river_job") == 0


# -- hooks -----------------------------------------------------------------------------


class Recorder(Hook):
    def __init__(self, kinds: list[str] | None = None) -> None:
        self.kinds = kinds
        self.events: list[tuple[str, HookEvent]] = []
        self.seen = asyncio.Event()

    def _add(self, point: str, ev: HookEvent) -> None:
        self.events.append((point, ev))
        self.seen.set()

    def on_completed(self, event: HookEvent) -> None:
        self._add("completed", event)

    def on_failed(self, event: HookEvent) -> None:
        self._add("failed", event)

    def on_discarded(self, event: HookEvent) -> None:
        self._add("discarded", event)

    def on_snoozed(self, event: HookEvent) -> None:
        self._add("snoozed", event)

    def on_cancelled(self, event: HookEvent) -> None:
        self._add("cancelled", event)

    def on_interrupted(self, event: HookEvent) -> None:
        self._add("interrupted", event)

    def points(self, job_id: int) -> list[str]:
        return [p for p, ev in self.events if ev.job.id == job_id]


async def test_hooks_fire_at_each_lifecycle_point(pool: asyncpg.Pool) -> None:
    rec = Recorder()
    client = _client(pool, hooks=[rec], retry_policy=lambda job, now: now + timedelta(hours=1))
    async with client:
        ok = (await client.insert(Task())).job
        fail = (await client.insert(Task(what="fail"))).job
        last = (await client.insert(Task(what="fail"), InsertOpts(max_attempts=1))).job
        snooze = (await client.insert(Task(what="snooze"))).job
        cancel = (await client.insert(Task(what="cancel"))).job
        for j in (ok, fail, last, snooze, cancel):
            job_id = j.id
            await eventually(lambda job_id=job_id: bool(rec.points(job_id)))  # type: ignore[misc]
        slow = (await client.insert(Task(what="slow"), InsertOpts(queue="default"))).job
        await eventually(lambda: slow.id in client.running_jobs)
        await client.stop_and_cancel()
    assert rec.points(ok.id) == ["completed"]
    assert rec.points(fail.id) == ["failed"]
    assert rec.points(last.id) == ["discarded"]
    assert rec.points(snooze.id) == ["snoozed"]
    assert rec.points(cancel.id) == ["cancelled"]
    assert rec.points(slow.id) == ["interrupted"]
    failed = next(ev for p, ev in rec.events if p == "failed")
    assert failed.state is JobState.RETRYABLE
    assert isinstance(failed.exception, ValueError)
    assert failed.error is not None and "it failed" in failed.error.error
    assert failed.scheduled_at is not None and failed.scheduled_at > datetime.now(UTC)
    assert failed.job.kind == "mw_task" and failed.job.attempt == 1


async def test_hooks_for_one_kind_only(pool: asyncpg.Pool) -> None:
    only_other = Recorder(kinds=["mw_other"])
    everything = Recorder()
    client = _client(pool, hooks=[only_other, everything])
    async with client:
        t = (await client.insert(Task())).job
        o = (await client.insert(Other())).job
        await eventually(lambda: bool(everything.points(t.id) and everything.points(o.id)))
    assert only_other.points(t.id) == []
    assert only_other.points(o.id) == ["completed"]


async def test_a_crashing_hook_is_logged_and_the_engine_goes_on(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    class Crash(Hook):
        def on_completed(self, event: HookEvent) -> None:
            calls.append(event.job.id)
            raise RuntimeError("hook bug")

    async def noted(event: HookEvent) -> None:
        await asyncio.sleep(0)
        calls.append(-event.job.id)

    class AsyncHook(Hook):
        on_completed = staticmethod(noted)

    client = _client(pool, hooks=[Crash(), AsyncHook()])
    with caplog.at_level(logging.ERROR, logger="pyriver_async.middleware"):
        async with client, client.subscribe() as events:
            ids = [(await client.insert(Task())).job.id for _ in range(3)]
            seen = await events_for(events, set(ids), timeout=10)
            assert {ev.state for ev in seen.values()} == {"completed"}
            await eventually(lambda: len(calls) == 6)
    assert sorted(calls) == sorted([*ids, *(-i for i in ids)])
    errors = [r for r in caplog.records if "Crash.on_completed failed" in r.getMessage()]
    assert len(errors) == 1  # the first with its traceback, the next ones held back
    assert errors[0].exc_info is not None


async def test_stop_gives_up_on_an_async_hook_that_never_returns(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    ended = asyncio.Event()

    class Stuck(Hook):
        async def on_completed(self, event: HookEvent) -> None:
            started.set()
            try:
                while not release.is_set():
                    try:
                        await release.wait()
                    except asyncio.CancelledError:
                        continue  # a hook that ignores cancellation
            finally:
                ended.set()

    client = _client(pool, hooks=[Stuck()], hard_stop_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="pyriver_async.hooks"):
        await client.start()
        job = (await client.insert(Task())).job
        await asyncio.wait_for(started.wait(), 10)
        # Bounded by hard_stop_timeout twice (wait, then cancel and wait), not for ever.
        await asyncio.wait_for(client.stop(), 5)
    try:
        assert await _state(pool, job.id) == "completed"  # the outcome is written
        abandoned = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(abandoned) == 1 and f"Stuck.on_completed for job {job.id}" in abandoned[0]
        assert not ended.is_set()
    finally:
        release.set()
        await asyncio.wait_for(ended.wait(), 5)


def test_a_hook_without_any_point_is_refused() -> None:
    with pytest.raises(ConfigError, match="on_completed"):
        Client("postgresql://x/y", hooks=[object()])


# -- the error handler -------------------------------------------------------------------


async def test_error_handler_sees_every_kind_of_failed_attempt(pool: asyncpg.Pool) -> None:
    seen: dict[int, BaseException] = {}

    def handler(job: Job[Any], exc: BaseException) -> None:
        seen[job.id] = exc

    client = _client(pool, error_handler=handler, job_timeout=30)
    async with client:
        fail = (await client.insert(Task(what="fail"))).job
        slow = (await client.insert(Task(what="slow"))).job
        exits = (await client.insert(Task(what="exit"))).job
        async with pool.acquire() as conn:
            bad_args = await conn.fetchval(
                "INSERT INTO river_job (kind, args, queue, state, max_attempts)"
                " VALUES ('mw_task', '{\"what\": 5}', 'default', 'available', 5) RETURNING id"
            )
            unknown = await conn.fetchval(
                "INSERT INTO river_job (kind, args, queue, state, max_attempts)"
                " VALUES ('mw_nobody', '{}', 'default', 'available', 5) RETURNING id"
            )
            await conn.execute('NOTIFY "public.river_insert", \'{"queue": "default"}\'')
        await eventually(lambda: len(seen) == 5)
    assert isinstance(seen[fail.id], ValueError)
    assert isinstance(seen[slow.id], JobTimeoutError)
    assert isinstance(seen[exits.id], SystemExit)
    assert isinstance(seen[bad_args], InvalidArgsError)
    assert isinstance(seen[unknown], UnknownKindError)


async def test_error_handler_overrides_discard_and_retry_time(pool: asyncpg.Pool) -> None:
    later = datetime.now(UTC) + timedelta(days=2)

    async def handler(job: Job[Any], exc: BaseException) -> ErrorOverride | None:
        if job.metadata.get("fate") == "discard":
            return ErrorOverride(discard=True)
        if job.metadata.get("fate") == "later":
            return ErrorOverride(retry_at=later)
        return None

    client = _client(pool, error_handler=handler)
    async with client, client.subscribe() as events:
        gone = await client.insert(Task(what="fail"), InsertOpts(metadata={"fate": "discard"}))
        wait = await client.insert(Task(what="fail"), InsertOpts(metadata={"fate": "later"}))
        seen = await events_for(events, {gone.job.id, wait.job.id}, timeout=10)
        assert seen[gone.job.id].state == "discarded"
        assert seen[wait.job.id].state == "retryable"
    at = await pool.fetchval("SELECT scheduled_at FROM river_job WHERE id = $1", wait.job.id)
    assert abs((at - later).total_seconds()) < 0.01


async def test_a_crashing_error_handler_is_logged_and_the_retry_goes_on(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(job: Job[Any], exc: BaseException) -> None:
        raise RuntimeError("handler bug")

    client = _client(pool, error_handler=handler)
    with caplog.at_level(logging.ERROR, logger="pyriver_async.executor"):
        async with client, client.subscribe() as events:
            job = (await client.insert(Task(what="fail"))).job
            assert (await next_event(events, job.id)).state == "retryable"
    rec = next(r for r in caplog.records if "error handler failed" in r.getMessage())
    assert rec.exc_info is not None and getattr(rec, "job_id", None) == job.id


def test_error_override_takes_one_decision() -> None:
    with pytest.raises(ConfigError):
        ErrorOverride()
    with pytest.raises(ConfigError):
        ErrorOverride(retry_at=datetime.now(UTC), discard=True)
    with pytest.raises(ConfigError):
        ErrorOverride(retry_at=datetime.now())  # naive


class EditsEach(Middleware):
    """Edits each job's metadata in place and replaces another's: the documented ways."""

    async def insert(self, batch: InsertBatch, call_next: Any) -> Any:
        for j in batch.jobs:
            if isinstance(j.args, Task):
                j.metadata["tenant"] = "acme"
            else:
                j.metadata = {"replaced": True}
        return await call_next()


@pytest.mark.parametrize("kind", ["edited", "replaced"])
async def test_middleware_editing_metadata_keeps_the_engines_keys(
    pool: asyncpg.Pool, kind: str
) -> None:
    # The engine's own keys (here pyriver:ephemeral) are not the middleware's to see,
    # refuse or drop: an ephemeral job stays ephemeral.
    client = Client(pool, middleware=[EditsEach()])
    args = Task() if kind == "edited" else Other()
    job = (await client.insert(args, InsertOpts(ephemeral=True))).job
    stored = await pool.fetchval("SELECT metadata::text FROM river_job WHERE id = $1", job.id)
    assert '"pyriver:ephemeral": true' in stored
    assert ('"tenant": "acme"' if kind == "edited" else '"replaced": true') in stored
