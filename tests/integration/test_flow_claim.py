"""Flow control in one process against a real PostgreSQL: caps, partitioned caps,
local limits, rate limits, fairness, sequences, key functions, kind-aware claiming and
the status API. The same limits across several OS processes are in
tests/faults/test_flow_multiprocess.py."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from pyriver_async import (
    Client,
    InsertOpts,
    Job,
    JobArgs,
    JobContext,
    JobSnooze,
    KindLimits,
    PartitionKey,
    QueueConfig,
    RateLimit,
    SchemaNotMigratedError,
    SequenceOpts,
    Workers,
    migrate,
)
from pyriver_async import _producer as producer_module
from pyriver_async._claim import FlowClaimer
from tests._support import db_executor, eventually


class Task(JobArgs, kind="flow_task"):
    key: int = 0
    seconds: float = 0.02
    gate: str = ""  # non-empty: wait for Tracker.open(gate)
    fail_first: bool = False
    snooze_first: bool = False


class Other(JobArgs, kind="flow_other"):
    key: int = 0


class Step(JobArgs, kind="flow_step"):
    account: int = 0
    n: int = 0
    fail: bool = False  # always raises
    gate: str = ""

    def sequence_opts(self) -> SequenceOpts:
        return SequenceOpts(by=("account",))


class StepGoingOn(JobArgs, kind="flow_step_going_on"):
    account: int = 0
    n: int = 0
    fail: bool = False

    def sequence_opts(self) -> SequenceOpts:
        return SequenceOpts(by=("account",), continue_on_failure=True)


class Nobody(JobArgs, kind="flow_nobody_works_this"):
    pass


class Tracker:
    """Running counts (in total and per key), their peaks, and gates a test opens."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.by_key: collections.Counter[Any] = collections.Counter()
        self.peak_by_key: collections.Counter[Any] = collections.Counter()
        self.started: list[tuple[str, Any, int]] = []  # (kind, key, n or job id)
        self.starts_at: list[float] = []
        self.done: set[int] = set()
        self.gates: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.intervals: list[tuple[float, float, Any]] = []  # (start, end, key)
        self.attempts: collections.Counter[int] = collections.Counter()
        self.changed = asyncio.Event()

    async def run(self, kind: str, key: Any, label: int, seconds: float, gate: str) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.by_key[key] += 1
        self.peak_by_key[key] = max(self.peak_by_key[key], self.by_key[key])
        self.started.append((kind, key, label))
        self.starts_at.append(asyncio.get_running_loop().time())
        self.changed.set()
        start = asyncio.get_running_loop().time()
        try:
            if gate:
                await self.gates[gate].wait()
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1
            self.by_key[key] -= 1
            self.intervals.append((start, asyncio.get_running_loop().time(), key))

    def peak_of(self, group: Callable[[Any], Any]) -> dict[Any, int]:
        """The most jobs that ran at once, per group of keys."""
        events = sorted(
            [(s, 1, group(k)) for s, _, k in self.intervals]
            + [(e, -1, group(k)) for _, e, k in self.intervals]
        )
        now: collections.Counter[Any] = collections.Counter()
        peak: collections.Counter[Any] = collections.Counter()
        for _, step, g in events:  # an end sorts before a start at the same instant
            now[g] += step
            peak[g] = max(peak[g], now[g])
        return dict(peak)

    def open(self, gate: str) -> None:
        self.gates[gate].set()

    def keys_started(self, kind: str) -> list[Any]:
        return [k for kd, k, _ in self.started if kd == kind]


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


def _workers(tracker: Tracker, *, sequences: bool) -> Workers:
    """Task and Other; with ``sequences``, the kinds in sequences too (their queue's
    claim is then the general statement, flow_claim, whatever the limits)."""
    w = Workers()

    @w.register(Task, timeout=None)
    async def task(ctx: JobContext, job: Job[Task]) -> None:
        tracker.attempts[job.id] += 1
        await tracker.run("task", job.args.key, job.id, job.args.seconds, job.args.gate)
        if job.args.fail_first and job.attempt == 1:
            raise RuntimeError("first attempt fails")
        if job.args.snooze_first and tracker.attempts[job.id] == 1:
            raise JobSnooze(0.05)
        tracker.done.add(job.id)

    @w.register(Other)
    async def other(ctx: JobContext, job: Job[Other]) -> None:
        await tracker.run("other", job.args.key, job.id, 0.0, "")
        tracker.done.add(job.id)

    if not sequences:
        return w

    async def step(job: Job[Any], gate: str = "") -> None:
        tracker.attempts[job.id] += 1
        await tracker.run(job.kind, job.args.account, job.args.n, 0.01, gate)
        if job.args.fail:
            raise RuntimeError(f"step {job.args.n} fails")
        tracker.done.add(job.id)

    @w.register(Step, timeout=None)
    async def step_held(ctx: JobContext, job: Job[Step]) -> None:
        await step(job, job.args.gate)

    @w.register(StepGoingOn)
    async def step_going_on(ctx: JobContext, job: Job[StepGoingOn]) -> None:
        await step(job)

    return w


@pytest.fixture
def workers(tracker: Tracker) -> Workers:
    return _workers(tracker, sequences=False)


@pytest.fixture
def seq_workers(tracker: Tracker) -> Workers:
    return _workers(tracker, sequences=True)


ClientFactory = Callable[..., Client]


@pytest.fixture
async def make_client(pool: asyncpg.Pool, workers: Workers) -> AsyncIterator[ClientFactory]:
    made: list[Client] = []
    await pool.execute("TRUNCATE pyriver_flow_state")  # rate buckets, fair turns, gates

    def make(cfg: QueueConfig, **kw: Any) -> Client:
        kw.setdefault("workers", workers)
        kw.setdefault("maintenance", False)
        kw.setdefault("fetch_poll_interval", 0.2)
        c = Client(kw.pop("database", pool), queues={"default": cfg}, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.stop_and_cancel()


async def finished(pool: asyncpg.Pool, ids: list[int], timeout: float = 20.0) -> None:
    async def check() -> bool:
        n: int = await pool.fetchval(
            "SELECT count(*) FROM river_job WHERE id = ANY($1) AND finalized_at IS NOT NULL",
            ids,
        )
        return n == len(ids)

    await eventually(check, timeout=timeout)


async def attempts(pool: asyncpg.Pool, ids: list[int]) -> dict[int, tuple[str, int]]:
    rows = await pool.fetch("SELECT id, state, attempt FROM river_job WHERE id = ANY($1)", ids)
    return {r["id"]: (r["state"], r["attempt"]) for r in rows}


# -- running caps -------------------------------------------------------------------------


async def test_global_limit_caps_running_jobs_below_max_workers(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(QueueConfig(max_workers=10, global_limit=3))
    ids = [r.job.id for r in await client.insert_many([Task(seconds=0.03) for _ in range(24)])]
    async with client:
        await finished(pool, ids)
    assert tracker.peak == 3
    # Never claimed and given back: each job was claimed once, when it ran.
    assert set((await attempts(pool, ids)).values()) == {("completed", 1)}


async def test_jobs_over_a_kind_limit_wait_and_jobs_behind_them_run(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(
        QueueConfig(max_workers=10, kinds={"flow_task": KindLimits(global_limit=1)})
    )
    held = [r.job.id for r in await client.insert_many([Task(key=100, gate="a")] * 5)]
    behind = [r.job.id for r in await client.insert_many([Other(key=i) for i in range(5)])]
    async with client:
        await finished(pool, behind)
        assert tracker.running == 1  # the one task allowed, still held by its gate
        waiting = await attempts(pool, held)
        assert sorted(waiting.values()) == [("available", 0)] * 4 + [("running", 1)]
        tracker.open("a")
        await finished(pool, held)
    assert tracker.peak_by_key[100] == 1


async def test_partition_limit_per_key_leaves_a_full_key_waiting_and_runs_the_rest(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(QueueConfig(max_workers=10, partition_by="key", partition_limit=2))
    hot = [r.job.id for r in await client.insert_many([Task(key=1, gate="hot")] * 30)]
    cold = [r.job.id for r in await client.insert_many([Task(key=k) for k in range(2, 8)] * 2)]
    async with client:
        await finished(pool, cold)
        states = collections.Counter((await attempts(pool, hot)).values())
        assert states == {("running", 1): 2, ("available", 0): 28}
        tracker.open("hot")
        await finished(pool, hot)
    assert max(tracker.peak_by_key.values()) == 2


async def test_partition_by_metadata_and_kind(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(
        QueueConfig(
            max_workers=10,
            partition_by=PartitionKey(metadata=("tenant",), kind=True),
            partition_limit=1,
        )
    )
    items: list[Any] = [
        (Task(gate="t", key=i), InsertOpts(metadata={"tenant": "a"})) for i in range(3)
    ]
    items += [(Other(key=9), InsertOpts(metadata={"tenant": "a"}))]  # another kind: its own key
    items += [(Task(gate="t", key=7), InsertOpts(metadata={"tenant": "b"}))]
    ids = [r.job.id for r in await client.insert_many(items)]
    async with client:
        await finished(pool, [ids[3]])
        await eventually(lambda: tracker.running == 2)  # one task of tenant a, one of b
        tracker.open("t")
        await finished(pool, ids)
    assert tracker.peak <= 3 and tracker.peak_by_key[7] == 1


async def test_local_limit_caps_one_kind_in_this_process(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(QueueConfig(max_workers=10, kinds={Task: KindLimits(local_limit=2)}))
    ids = [r.job.id for r in await client.insert_many([Task(key=1, seconds=0.03)] * 12)]
    ids += [r.job.id for r in await client.insert_many([Other(key=2)] * 5)]
    async with client:
        await finished(pool, ids)
    assert tracker.peak_by_key[1] == 2


async def test_retries_and_snoozes_free_their_slot(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(
        QueueConfig(max_workers=10, global_limit=2),
        retry_policy=lambda job, now: now,
        maintenance=True,
    )
    failing = [r.job.id for r in await client.insert_many([Task(fail_first=True)] * 6)]
    snoozing = [r.job.id for r in await client.insert_many([Task(snooze_first=True)] * 6)]
    async with client:
        await finished(pool, failing + snoozing, timeout=30)
    assert tracker.peak == 2
    assert set((await attempts(pool, failing)).values()) == {("completed", 2)}
    # A snooze gives its attempt back: run twice, one attempt counted.
    assert set((await attempts(pool, snoozing)).values()) == {("completed", 1)}
    assert all(tracker.attempts[i] == 2 for i in snoozing)


# -- rate limits --------------------------------------------------------------------------


async def test_rate_limit_spaces_starts_and_holds_across_a_restart(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    cfg = QueueConfig(max_workers=10, rate_limit=RateLimit(10, per=1, burst=1))
    first = make_client(cfg)
    ids = [r.job.id for r in await first.insert_many([Task(seconds=0)] * 6)]
    async with first:
        await eventually(lambda: len(tracker.started) >= 3)
    # A new client (another process, after a restart) goes on with the same bucket.
    second = make_client(cfg)
    async with second:
        await finished(pool, ids)
    rows = await pool.fetch(
        "SELECT attempted_at FROM river_job WHERE id = ANY($1) ORDER BY attempted_at", ids
    )
    at = [r["attempted_at"] for r in rows]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(at)]
    # One start per 100 ms at most (claims use the database clock, so the gaps are exact).
    assert min(gaps) >= 0.099, gaps


async def test_rate_limit_per_key_gives_each_key_its_own_budget(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(
        QueueConfig(
            max_workers=10,
            kinds={"flow_task": KindLimits(rate_limit=RateLimit(2, per=60, by="key"))},
        )
    )
    ids = [
        r.job.id for r in await client.insert_many([Task(key=k, seconds=0) for k in (1, 2, 3)] * 4)
    ]
    async with client:
        await eventually(lambda: len(tracker.started) == 6)
        status = {s.setting: s for s in await client.flow_status()}
    # A minute's budget of two per key, at once (burst): six started, six wait.
    assert collections.Counter(tracker.keys_started("task")) == {1: 2, 2: 2, 3: 2}
    rate = status["rate_limit"]
    assert rate.blocked == 6 and {k.key for k in rate.keys if k.at_limit} == {1, 2, 3}
    assert collections.Counter(s for s, _ in (await attempts(pool, ids)).values()) == {
        "completed": 6,
        "available": 6,
    }


# -- fairness -----------------------------------------------------------------------------


async def test_a_tenant_with_a_big_backlog_does_not_starve_a_small_one(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(
        QueueConfig(max_workers=4, partition_by="key", partition_limit=2, fair=True)
    )
    big = [r.job.id for r in await client.insert_many([Task(key=1, seconds=0.01)] * 2000)]
    small = [r.job.id for r in await client.insert_many([Task(key=2, seconds=0.01)] * 10)]
    async with client:
        await finished(pool, small)
        left: int = await pool.fetchval(
            "SELECT count(*) FROM river_job WHERE id = ANY($1) AND state = 'available'", big
        )
    assert left > 1500, left
    assert tracker.peak_by_key[1] == 2


async def test_weighted_turns(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    # One slot: whoever's turn it is runs next. Weight 3 takes three turns to one.
    client = make_client(QueueConfig(max_workers=1, partition_by="key", fair={1: 3}))
    items = [Task(key=k, seconds=0) for _ in range(30) for k in (1, 2)]
    await client.insert_many(items)
    async with client:
        await eventually(lambda: len(tracker.started) >= 40)
    first = tracker.keys_started("task")[:40]
    assert 27 <= first.count(1) <= 33, first


# -- sequences ----------------------------------------------------------------------------


async def test_a_sequence_runs_one_at_a_time_in_insertion_order(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker, seq_workers: Workers
) -> None:
    client = make_client(QueueConfig(max_workers=10), workers=seq_workers)
    steps = [Step(account=a, n=n) for n in range(12) for a in (1, 2, 3)]
    # Higher priority for later steps: a sequence's order wins over priority.
    ids = [
        r.job.id
        for r in await client.insert_many([(s, InsertOpts(priority=4 - s.n % 4)) for s in steps])
    ]
    async with client:
        await finished(pool, ids)
    for account in (1, 2, 3):
        order = [n for kind, a, n in tracker.started if a == account]
        assert order == list(range(12))
        assert tracker.peak_by_key[account] == 1
    assert tracker.peak >= 2  # sequences of different accounts ran side by side


async def test_a_failing_job_holds_its_sequence(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker, seq_workers: Workers
) -> None:
    client = make_client(QueueConfig(max_workers=10), maintenance=True, workers=seq_workers)
    res = await client.insert_many(
        [
            (Step(account=1, n=0, fail=True), InsertOpts(max_attempts=2)),
            Step(account=1, n=1),
            Step(account=2, n=0),
        ]
    )
    failing, behind, elsewhere = (r.job.id for r in res)
    async with client:
        await finished(pool, [elsewhere])
        await finished(pool, [failing], timeout=30)  # retried (after ~1 s), then discarded
        assert (await attempts(pool, [failing]))[failing] == ("discarded", 2)
        # The next step waits while the failed one is discarded...
        await asyncio.sleep(0.5)
        assert (await attempts(pool, [behind]))[behind] == ("available", 0)
        # ...and goes on once it is dealt with (here: cancelled by an operator).
        await pool.execute("UPDATE river_job SET state = 'cancelled' WHERE id = $1", failing)
        await client.resume()  # a control message: the producer looks again
        await finished(pool, [behind])
    assert [n for kind, a, n in tracker.started if a == 1] == [0, 0, 1]


async def test_continue_on_failure_lets_a_sequence_pass_a_discarded_job(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker, seq_workers: Workers
) -> None:
    client = make_client(QueueConfig(max_workers=10), workers=seq_workers)
    res = await client.insert_many(
        [
            (StepGoingOn(account=1, n=0, fail=True), InsertOpts(max_attempts=1)),
            StepGoingOn(account=1, n=1),
            StepGoingOn(account=1, n=2),
        ]
    )
    ids = [r.job.id for r in res]
    async with client:
        await finished(pool, ids)
    assert [s for s, _ in (await attempts(pool, ids)).values()] == [
        "discarded",
        "completed",
        "completed",
    ]
    assert [n for _, _, n in tracker.started] == [0, 1, 2]


async def test_a_client_that_does_not_know_a_sequence_leaves_its_jobs_alone(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker, workers: Workers
) -> None:
    # An older deploy whose Step class had no sequence_opts(): it must not run them.
    class OldStep(JobArgs, kind="flow_step_old"):
        account: int = 0
        n: int = 0

    await pool.execute(
        "INSERT INTO river_job (args, kind, max_attempts, metadata) SELECT "
        "jsonb_build_object('account', 1, 'n', g), 'flow_step_old', 5, "
        "jsonb_build_object('pyriver:sequence', '[\"flow_step_old\",[1]]') "
        "FROM generate_series(0, 4) AS g"
    )
    old = Workers()

    @old.register(OldStep)
    async def old_step(ctx: JobContext, job: Job[OldStep]) -> None:
        await tracker.run("old", 1, job.args.n, 0, "")

    @old.register(Other)
    async def other(ctx: JobContext, job: Job[Other]) -> None:
        tracker.done.add(job.id)

    # The plain claim (no limits) and the locked one (limits) alike.
    for cfg in (QueueConfig(max_workers=5), QueueConfig(max_workers=5, global_limit=5)):
        client = make_client(cfg, workers=old)
        async with client:
            probe = (await client.insert(Other())).job.id  # queued behind the steps
            await finished(pool, [probe])
    assert tracker.keys_started("old") == []
    n: int = await pool.fetchval(
        "SELECT count(*) FROM river_job WHERE attempt = 0 AND kind = 'flow_step_old'"
    )
    assert n == 5


# -- key functions ------------------------------------------------------------------------


def _host(job: Job[Task]) -> Any:
    if job.args.key < 0:
        raise ValueError("no host for a negative key")
    if job.args.key == 99:
        return ["unhashable"]
    return f"host-{job.args.key % 3}"


async def test_a_key_function_partitions_and_a_failing_one_fails_only_its_job(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(QueueConfig(max_workers=10, partition_by=_host, partition_limit=1))
    good = [
        r.job.id for r in await client.insert_many([Task(key=k, seconds=0.02) for k in range(12)])
    ]
    bad = [
        r.job.id
        for r in await client.insert_many(
            [(Task(key=-1), InsertOpts(max_attempts=1)), (Task(key=99), InsertOpts(max_attempts=1))]
        )
    ]
    async with client:
        await finished(pool, good + bad)
    assert set(tracker.done) == set(good)
    assert tracker.peak_of(lambda key: key % 3) == {0: 1, 1: 1, 2: 1}
    rows = await pool.fetch(
        "SELECT id, state, errors FROM river_job WHERE id = ANY($1) ORDER BY id", bad
    )
    assert [r["state"] for r in rows] == ["discarded", "discarded"]
    assert "ValueError: no host for a negative key" in rows[0]["errors"][0]
    assert "TypeError: unhashable type: 'list'" in rows[1]["errors"][0]
    stamped = await pool.fetchval(
        "SELECT metadata -> 'pyriver:flow_key' FROM river_job WHERE id = $1", good[0]
    )
    assert stamped == '{"partition:default": "host-0"}'


# -- kind-aware claiming ------------------------------------------------------------------


async def test_a_client_claims_only_the_kinds_it_has_workers_for(
    pool: asyncpg.Pool,
    make_client: ClientFactory,
    tracker: Tracker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(producer_module, "UNCLAIMED_AFTER", 0.0)
    monkeypatch.setattr(producer_module, "UNCLAIMED_CHECK_EVERY", 0.0)
    caplog.set_level(logging.WARNING, logger="pyriver_async.producer")
    for cfg in (QueueConfig(max_workers=5), QueueConfig(max_workers=5, global_limit=5)):
        await pool.execute("TRUNCATE river_job")
        client = make_client(cfg)
        stray = (await client.insert(Nobody())).job.id
        mine = (await client.insert(Task(seconds=0))).job.id
        async with client:
            await finished(pool, [mine])
            await eventually(lambda: "flow_nobody_works_this" in caplog.text)
        assert (await attempts(pool, [stray]))[stray] == ("available", 0)
        assert "has no worker for that kind" in caplog.text
        caplog.clear()
    # A client of the new version, with the worker, takes it.
    newer = Workers()

    @newer.register(Nobody)
    async def nobody(ctx: JobContext, job: Job[Nobody]) -> None:
        tracker.done.add(job.id)

    async with make_client(QueueConfig(max_workers=5), workers=newer):
        await finished(pool, [stray])
    assert stray in tracker.done


# -- status and schema --------------------------------------------------------------------


async def test_flow_status_shows_each_limit_use_and_what_waits_on_it(
    pool: asyncpg.Pool, make_client: ClientFactory, tracker: Tracker
) -> None:
    client = make_client(
        QueueConfig(
            max_workers=10,
            global_limit=3,
            partition_by="key",
            partition_limit=2,
            kinds={"flow_task": KindLimits(local_limit=3)},
        )
    )
    await client.insert_many([Task(key=k, gate="g") for k in (1, 1, 1, 1, 2, 2, 3)])
    assert [s.running for s in await client.flow_status()] == [0, 0, 0]  # before start
    async with client:
        await eventually(lambda: tracker.running == 3)
        got = {s.setting: s for s in await client.flow_status("default")}
        tracker.open("g")
    cap = got["global_limit"]
    assert (cap.limit, cap.running, cap.waiting, cap.blocked) == (3, 3, 4, 4)
    part = got["partition_limit"]
    assert part.running == 3 and part.limit == 2
    uses = {k.key: (k.running, k.waiting, k.at_limit) for k in part.keys}
    assert uses[1] == (2, 2, True)
    assert part.blocked == 2 and part.complete
    assert got["local_limit"].running == 3 and got["local_limit"].kind == "flow_task"
    with pytest.raises(Exception, match="not one this client works"):
        await client.flow_status("elsewhere")


async def test_limits_need_the_pyriver_line(
    fresh_database: Callable[[], Any], workers: Workers
) -> None:
    url = await fresh_database()
    await migrate(url, line="main")
    client = Client(
        url, workers=workers, queues={"q": QueueConfig(global_limit=2)}, maintenance=False
    )
    with pytest.raises(SchemaNotMigratedError, match="pyriver migrate up"):
        await client.start()
    await client.close()
    await Client(url, workers=workers, queues={"q": QueueConfig()}, maintenance=False).close()


# -- the claim itself, under contention ---------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "most", "per_key"),
    [
        # One cap: the lean statement (flow_claim_capped).
        (QueueConfig(max_workers=10, global_limit=4), 4, None),
        # A cap per key (flow_claim_partitioned).
        (QueueConfig(max_workers=10, global_limit=4, partition_by="key", partition_limit=2), 4, 2),
        # A kind's cap too: the general statement (flow_claim).
        (
            QueueConfig(
                max_workers=10,
                global_limit=4,
                partition_by="key",
                partition_limit=2,
                kinds={"flow_task": KindLimits(global_limit=3)},
            ),
            3,
            2,
        ),
    ],
    ids=["capped", "partitioned", "general"],
)
async def test_concurrent_claims_never_exceed_the_limits(
    pool: asyncpg.Pool, cfg: QueueConfig, most: int, per_key: int | None
) -> None:
    """Eight claimers on eight connections, claiming and completing as fast as they can,
    while new jobs arrive at the head of the claim order: every job's [claimed,
    completed] interval (database times) overlaps with at most the limit of others."""
    await pool.execute("TRUNCATE pyriver_flow_state")
    await pool.execute(
        "INSERT INTO river_job (args, kind, max_attempts) "
        "SELECT jsonb_build_object('key', g % 3), 'flow_task', 5 FROM generate_series(1, 600) g"
    )
    claimer = FlowClaimer("default", cfg, schema="public", kinds=None, sequences=False)
    ex = db_executor(pool)
    rnd = random.Random(7)

    async def claimer_loop(n: int) -> None:
        while True:
            async with ex.session() as db:
                got = await claimer.claim(
                    db, limit=rnd.randint(1, 3), client_id=f"c{n}", done=(), running_kinds={}
                )
            if not got.rows and not got.limited:
                left: int = await pool.fetchval(
                    "SELECT count(*) FROM river_job WHERE state <> 'completed'"
                )
                if left == 0:
                    return
            await asyncio.sleep(rnd.uniform(0, 0.004))
            if got.rows:
                await pool.execute(
                    "UPDATE river_job SET state = 'completed', finalized_at = clock_timestamp() "
                    "WHERE id = ANY($1)",
                    [r[0] for r in got.rows],
                )
            else:
                await asyncio.sleep(0.002)

    async def inserter() -> None:
        # New jobs keep arriving at the head of the claim order (an earlier
        # scheduled_at, as a retried or rescued job may have): claims racing without
        # the lock would see different candidates, and over-claim.
        for _ in range(300):
            await pool.execute(
                "INSERT INTO river_job (args, kind, max_attempts, scheduled_at) VALUES "
                "(jsonb_build_object('key', $1::int), 'flow_task', 5, "
                "now() - interval '1 hour' - $2 * interval '1 second')",
                rnd.randrange(3),
                rnd.random() * 1000,
            )
            await asyncio.sleep(0.001)

    await asyncio.wait_for(asyncio.gather(inserter(), *(claimer_loop(n) for n in range(8))), 60)
    rows = await pool.fetch("SELECT attempted_at, finalized_at, args->>'key' AS key FROM river_job")
    assert all(r["finalized_at"] is not None for r in rows)

    def overlap(sel: list[asyncpg.Record]) -> int:
        events = sorted(
            [(r["attempted_at"], 1) for r in sel] + [(r["finalized_at"], -1) for r in sel]
        )
        now = peak = 0
        for _, step in events:
            now += step
            peak = max(peak, now)
        return peak

    assert overlap(rows) == most  # reached, never exceeded
    if per_key is not None:
        assert max(overlap([r for r in rows if r["key"] == k]) for k in "012") == per_key
    # Claims waited at the gate behind one another and ran again behind it.
    assert claimer.retries > 0


async def test_spent_rate_and_turn_rows_are_deleted(
    pool: asyncpg.Pool,
    make_client: ClientFactory,
    tracker: Tracker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyriver_async import _claim

    monkeypatch.setattr(_claim, "PRUNE_EVERY", 0.0)
    client = make_client(
        QueueConfig(
            max_workers=5,
            partition_by="key",
            fair=True,
            rate_limit=RateLimit(1, per=0.5, by="key"),
        )
    )
    first = [
        r.job.id for r in await client.insert_many([Task(key=k, seconds=0) for k in range(20)])
    ]
    async with client:
        await finished(pool, first)
        spent = "SELECT count(*) FROM pyriver_flow_state WHERE name NOT LIKE 'gate:%'"
        assert await pool.fetchval(spent) == 40
        # A second on, every bucket is full again and every turn is due: the next
        # claims delete those rows, and keep the ones they just wrote.
        await asyncio.sleep(1.1)
        last = (await client.insert(Task(key=99, seconds=0))).job.id
        await finished(pool, [last])
        await client.insert(Task(key=98, seconds=0))

        async def only_fresh_rows_left() -> bool:
            n: int = await pool.fetchval(spent + " AND key NOT LIKE '[null, 9_,%'")
            return n == 0

        await eventually(only_fresh_rows_left, timeout=5)
    keys = await pool.fetch("SELECT DISTINCT key FROM pyriver_flow_state")
    assert {r["key"] for r in keys} <= {"[null, 99, null, null]", "[null, 98, null, null]", ""}


@pytest.mark.parametrize(
    "cfg",
    [
        QueueConfig(max_workers=10, global_limit=2),  # flow_claim_capped
        QueueConfig(max_workers=10, global_limit=2, partition_by="key", partition_limit=2),
        QueueConfig(max_workers=10, kinds={"flow_task": KindLimits(global_limit=2)}),
        QueueConfig(max_workers=10, global_limit=2, rate_limit=RateLimit(1000)),  # flow_claim
    ],
    ids=["capped", "partitioned", "kind", "general"],
)
@pytest.mark.parametrize("with_sequences", [False, True], ids=["lean", "with-sequences"])
async def test_a_slot_freed_here_is_taken_at_once(
    pool: asyncpg.Pool,
    make_client: ClientFactory,
    tracker: Tracker,
    cfg: QueueConfig,
    with_sequences: bool,
) -> None:
    # No poll to help (60 s): only the freed slot may wake the producer. With kinds in
    # sequences registered, every queue takes the general statement.
    workers = _workers(tracker, sequences=with_sequences)
    client = make_client(cfg, fetch_poll_interval=60.0, workers=workers)
    ids = [r.job.id for r in await client.insert_many([Task(seconds=0.01)] * 12)]
    async with client:
        await finished(pool, ids, timeout=10)
    assert tracker.peak == 2
