"""client.insert against a real PostgreSQL: the stored row, transactions and wake-ups."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import asyncpg
import msgspec
import pytest

import pyriver_async
from pyriver_async import (
    Client,
    InsertOpts,
    InvalidArgsError,
    Job,
    JobArgs,
    JobContext,
    JobState,
    QueueConfig,
    SchemaNotMigratedError,
    Workers,
)
from pyriver_async._insert import InsertResult
from pyriver_async._insert_params import MAX_JSON_DEPTH

CHANNEL = "public.river_insert"


class SendEmail(JobArgs, kind="it_insert_send_email"):
    user_id: int
    subject: str
    to: list[str] = []


class Blob(JobArgs, kind="it_insert_blob"):
    data: Any


class Simple(JobArgs, kind="it_insert_simple"):
    n: int = 0


async def _noop(ctx: JobContext, job: Job[Simple]) -> None:
    return None


class Defaults(JobArgs, kind="it_insert_defaults"):
    n: int = 0

    def insert_opts(self) -> InsertOpts | None:
        return InsertOpts(queue="from_args", priority=2, tags=["dflt"])


class Listener:
    """Collects ``river_insert`` notifications on a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[dict[str, Any]] = []
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> Listener:
        self._conn = await asyncpg.connect(self.url)
        await self._conn.add_listener(CHANNEL, self._on_message)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        await self._conn.close()

    def _on_message(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        assert channel == CHANNEL and isinstance(payload, str)
        self.messages.append(json.loads(payload))

    async def wait_for(self, queue: str, timeout: float = 5.0) -> None:
        """Until a wake-up for ``queue`` has arrived (the positive control)."""
        deadline = time.monotonic() + timeout
        while {"queue": queue} not in self.messages:
            if time.monotonic() > deadline:
                raise AssertionError(f"no notification for {queue!r}; got {self.messages}")
            await asyncio.sleep(0.01)


async def count_rows(pool: asyncpg.Pool) -> int:
    n = await pool.fetchval("SELECT count(*) FROM river_job")
    assert isinstance(n, int)
    return n


# -- the stored row ------------------------------------------------------------------------


async def test_insert_returns_the_stored_row(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    res = await client.insert(SendEmail(user_id=7, subject="Welcome", to=["a@b.c"]))
    assert isinstance(res, InsertResult)
    assert not res.unique_skipped_as_duplicate
    job = res.job
    assert job.args == SendEmail(user_id=7, subject="Welcome", to=["a@b.c"])
    assert (job.kind, job.queue, job.state, job.priority) == (
        "it_insert_send_email",
        "default",
        JobState.AVAILABLE,
        1,
    )
    assert (job.attempt, job.max_attempts, job.tags, job.metadata) == (0, 25, [], {})
    assert job.unique_key is None and job.unique_states is None
    assert await client.get(job.id) == job
    row = await pool.fetchrow("SELECT args, kind FROM river_job WHERE id = $1", job.id)
    assert row is not None
    assert json.loads(row["args"]) == {"user_id": 7, "subject": "Welcome", "to": ["a@b.c"]}


async def test_insert_opts_are_stored(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    at = datetime.now(UTC) + timedelta(hours=1)
    res = await client.insert(
        SendEmail(user_id=1, subject="s"),
        InsertOpts(
            queue="mail",
            priority=3,
            max_attempts=5,
            scheduled_at=at,
            tags=["welcome", "ünï"],
            metadata={"trace": {"id": "x"}, "n": 1},
        ),
    )
    job = await client.get(res.job.id)
    assert job == res.job
    assert (job.queue, job.priority, job.max_attempts, job.state) == (
        "mail",
        3,
        5,
        JobState.SCHEDULED,
    )
    assert job.scheduled_at == at
    assert job.tags == ["welcome", "ünï"]
    assert job.metadata == {"trace": {"id": "x"}, "n": 1}


async def test_delay_schedules_and_zero_delay_does_not(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    before = datetime.now(UTC)
    later = await client.insert(SendEmail(user_id=1, subject="s"), InsertOpts(delay=60))
    assert later.job.state is JobState.SCHEDULED
    assert later.job.scheduled_at >= before + timedelta(seconds=60)
    now = await client.insert(SendEmail(user_id=1, subject="s"), InsertOpts(delay=0))
    assert now.job.state is JobState.AVAILABLE


async def test_insert_opts_of_the_args_class_are_defaults(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    res = await client.insert(Defaults())
    assert (res.job.queue, res.job.priority, res.job.tags) == ("from_args", 2, ["dflt"])
    res = await client.insert(Defaults(), InsertOpts(priority=4))
    assert (res.job.queue, res.job.priority) == ("from_args", 4)


# -- transactions and wake-ups ---------------------------------------------------------------


async def test_insert_in_a_transaction_is_visible_only_after_commit(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    async with pool.acquire() as c, c.transaction():
        res = await client.insert(SendEmail(user_id=1, subject="s"), conn=c)
        assert await c.fetchval("SELECT count(*) FROM river_job") == 1
        # Another connection (a worker) cannot see it yet.
        assert await count_rows(pool) == 0
    assert await count_rows(pool) == 1
    assert (await client.get(res.job.id)).state is JobState.AVAILABLE


async def test_rolled_back_insert_leaves_no_row_and_sends_no_wakeup(
    db: str, pool: asyncpg.Pool
) -> None:
    client = Client(pool)
    async with Listener(db) as listener:
        async with pool.acquire() as c:
            tr = c.transaction()
            await tr.start()
            await client.insert(SendEmail(user_id=1, subject="gone"), conn=c)
            await client.insert_many(
                [SendEmail(user_id=i, subject="gone") for i in range(3)], conn=c
            )
            await tr.rollback()
        assert await count_rows(pool) == 0
        # The positive control, on the same queue: it arrives, and it is the only one.
        await client.insert(SendEmail(user_id=2, subject="kept"))
        await listener.wait_for("default")
        await asyncio.sleep(0.1)
        assert listener.messages == [{"queue": "default"}]
    assert await count_rows(pool) == 1


async def test_one_wakeup_per_queue_per_transaction(db: str, pool: asyncpg.Pool) -> None:
    client = Client(pool)
    async with Listener(db) as listener:
        async with pool.acquire() as c, c.transaction():
            for i in range(50):
                q = "alpha" if i % 2 else "beta"
                await client.insert(SendEmail(user_id=i, subject="s"), InsertOpts(queue=q), conn=c)
        await client.insert(SendEmail(user_id=0, subject="s"), InsertOpts(queue="control"))
        await listener.wait_for("control")
        await asyncio.sleep(0.1)
        got = listener.messages[:-1]
        assert listener.messages[-1] == {"queue": "control"}
    assert len(got) == 2
    assert sorted(m["queue"] for m in got) == ["alpha", "beta"]
    assert await count_rows(pool) == 51


async def test_scheduled_job_sends_no_wakeup(db: str, pool: asyncpg.Pool) -> None:
    client = Client(pool)
    async with Listener(db) as listener:
        res = await client.insert(
            SendEmail(user_id=1, subject="s"),
            InsertOpts(queue="later", scheduled_at=datetime.now(UTC) + timedelta(minutes=5)),
        )
        assert res.job.state is JobState.SCHEDULED
        await client.insert_many(
            [(SendEmail(user_id=2, subject="s"), InsertOpts(queue="later", delay=300))]
        )
        await client.insert(SendEmail(user_id=3, subject="s"), InsertOpts(queue="control"))
        await listener.wait_for("control")
        await asyncio.sleep(0.1)
        assert listener.messages == [{"queue": "control"}]


# -- schema, size, nesting -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["insert", "insert_many", "insert_many_copy"])
async def test_unmigrated_database_says_to_migrate(
    fresh_database: Callable[[], Awaitable[str]], how: str
) -> None:
    url = await fresh_database()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    client = Client(pool)
    try:
        with pytest.raises(SchemaNotMigratedError, match="pyriver migrate up") as info:
            if how == "insert":
                await client.insert(SendEmail(user_id=1, subject="s"))
            elif how == "insert_many":
                await client.insert_many([SendEmail(user_id=1, subject="s")])
            else:
                await client.insert_many([SendEmail(user_id=i, subject="s") for i in range(2000)])
        assert isinstance(info.value, pyriver_async.PyRiverError)
        assert "does not exist" in str(info.value.__cause__)
    finally:
        await pool.close()


async def test_args_of_several_megabytes_round_trip(pool: asyncpg.Pool) -> None:
    client = Client(pool)
    big = "é" * (2_500_000) + "x" * 100  # 5 MB of UTF-8
    res = await client.insert(Blob(data=big))
    back = await client.get(res.job.id)
    assert back.args == Blob(data=big)
    many = await client.insert_many([Blob(data=big), Blob(data=[big[:1000]] * 1000)])
    assert [(await client.get(r.job.id)).args for r in many] == [r.job.args for r in many]


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def test_deeply_nested_args_are_stored_up_to_the_limit(pool: asyncpg.Pool) -> None:
    # Args nested 500 lists deep (501 levels with the object) are stored and read back.
    client = Client(pool)
    res = await client.insert(Blob(data=_nested(500)))
    assert (await client.get(res.job.id)).args == Blob(data=_nested(500))
    # The limit itself is MAX_JSON_DEPTH levels, the object included.
    res = await client.insert(Blob(data=_nested(MAX_JSON_DEPTH - 1)))
    assert (await client.get(res.job.id)).args == Blob(data=_nested(MAX_JSON_DEPTH - 1))
    assert msgspec.json.decode(
        await pool.fetchval("SELECT args::text FROM river_job WHERE id = $1", res.job.id)
    ) == {"data": _nested(MAX_JSON_DEPTH - 1)}
    # Deeper: refused before anything is written, whether msgspec could encode it or not.
    for depth in (MAX_JSON_DEPTH, 2_000, 100_000):
        with pytest.raises(InvalidArgsError, match="nested deeper"):
            await client.insert(Blob(data=_nested(depth)))
    assert await count_rows(pool) == 2


async def test_reading_a_foreign_row_nested_too_deep_does_not_fail(pool: asyncpg.Pool) -> None:
    # Another writer (River, SQL by hand) may store what we refuse: get() still works.
    deep = "[" * 5000 + "]" * 5000
    job_id = await pool.fetchval(
        "INSERT INTO river_job (args, kind, metadata) VALUES ($1::jsonb, $2, $3::jsonb)"
        " RETURNING id",
        '{"data": ' + deep + "}",
        "it_insert_blob",
        '{"m": ' + deep + "}",
    )
    job = await Client(pool).get(job_id)
    assert isinstance(job.args, str) and job.args.startswith('{"data": [[[')
    assert job.metadata == {}


async def test_a_json_codec_the_application_registered_changes_nothing(db: str) -> None:
    # Applications often give their pool a JSON codec (init=...). The library's JSON
    # travels as text both ways, so it is neither encoded twice nor decoded for us.
    import json

    async def init(conn: asyncpg.Connection) -> None:
        for t in ("json", "jsonb"):
            await conn.set_type_codec(
                t, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )

    pool = await asyncpg.create_pool(db, min_size=1, max_size=2, init=init)
    assert pool is not None
    try:
        client = Client(pool)
        res = await client.insert(Simple(n=700), InsertOpts(metadata={"tenant": "a"}))
        tags = ['quote"d', "back\\slash", "plain"]
        many = await client.insert_many(  # COPY, in text format on this pool
            [(Simple(n=i), InsertOpts(tags=tags, metadata={"line": "a\nb\\c"})) for i in range(60)]
        )
        stored = await pool.fetchrow(
            "SELECT args::text AS a, metadata::text AS m FROM river_job WHERE id = $1",
            res.job.id,
        )
        assert stored is not None
        assert json.loads(stored["a"]) == {"n": 700}  # an object, not a JSON string
        assert json.loads(stored["m"]) == {"tenant": "a"}
        job = await client.get(res.job.id)
        assert job.args == Simple(n=700) and job.metadata == {"tenant": "a"}
        last = await client.get(many[-1].job.id)
        assert last.args == Simple(n=59)
        assert last.tags == tags and last.metadata == {"line": "a\nb\\c"}
        page = await client.list(args_contains={"n": 700}, kinds=["it_insert_simple"])
        assert [j.id for j in page.jobs] == [res.job.id]
        # The engine on that pool: its liveness row (JSON in and out) reads back.
        workers = Workers()
        workers.register(Simple, _noop)
        worker = Client(pool, workers=workers, queues={"default": QueueConfig(max_workers=1)})
        async with worker:
            [info] = await worker.list_clients()
            assert info.queues["default"].max_workers == 1
    finally:
        await pool.close()
