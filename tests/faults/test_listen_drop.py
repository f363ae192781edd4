"""Only the LISTEN connection is lost: work goes on by polling, and wake-ups come back
once the notifier has reconnected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pyriver_async import Client, Job, JobArgs, JobContext, QueueConfig, Workers
from pyriver_async._notifier import Notifier
from tests._support import next_event

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


class Ping(JobArgs, kind="fault_ping"):
    n: int = 0


class Started:
    """When (event-loop time) each job started."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}


@pytest.fixture
def started() -> Started:
    return Started()


@pytest.fixture
def workers(started: Started) -> Workers:
    w = Workers()

    @w.register(Ping)
    async def ping(ctx: JobContext, job: Job[Ping]) -> None:
        started.at[job.id] = asyncio.get_running_loop().time()

    return w


@pytest.fixture
async def admin(db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db)
    try:
        yield conn
    finally:
        await conn.close()


def _client(db: str, workers: Workers, poll: float) -> Client:
    # A DSN, so the client has a pool of its own and the test's connections are apart.
    return Client(
        db,
        workers=workers,
        queues={"default": QueueConfig(max_workers=5)},
        maintenance=False,
        fetch_poll_interval=poll,
    )


async def _connected(notifier: Notifier, not_pid: int | None, timeout: float) -> int:
    """Until the notifier listens on a connection other than ``not_pid``; its pid."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pid = notifier.connection_pid
        if notifier.connected.is_set() and pid is not None and pid != not_pid:
            return pid
        if loop.time() > deadline:
            raise AssertionError(f"the notifier did not reconnect within {timeout}s")
        await asyncio.sleep(0.01)


async def _terminate(admin: asyncpg.Connection, pid: int) -> None:
    # Wait (up to 5 s) until the backend is gone, so the drop has happened on return.
    assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)


async def test_a_job_whose_notification_is_lost_is_found_by_polling(
    db: str, workers: Workers, admin: asyncpg.Connection
) -> None:
    client = _client(db, workers, poll=0.3)
    async with client:
        sub = client.subscribe()
        assert client.notifier is not None
        await _connected(client.notifier, None, 10)
        # Inserted by hand without NOTIFY: nothing but the poll can find it.
        job_id = await admin.fetchval(
            "INSERT INTO river_job (args, kind, max_attempts) "
            "VALUES ('{}', 'fault_ping', 5) RETURNING id"
        )
        ev = await next_event(sub, job_id, timeout=0.3 + 2)
    assert ev.state == "completed"


async def test_work_continues_while_the_listen_connection_is_down(
    db: str,
    workers: Workers,
    admin: asyncpg.Connection,
    started: Started,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _client(db, workers, poll=0.3)
    loop = asyncio.get_running_loop()
    async with client:
        sub = client.subscribe()
        notifier = client.notifier
        assert notifier is not None
        first_pid = await _connected(notifier, None, 10)

        # The LISTEN connection is terminated, and (injected) every attempt to make a
        # new one fails, as it would while its host is unreachable.
        async def refuse() -> None:
            raise ConnectionRefusedError("injected: cannot open the LISTEN connection")

        monkeypatch.setattr(notifier, "_listen_until_lost", refuse)
        await _terminate(admin, first_pid)
        deadline = loop.time() + 5
        while notifier.connected.is_set():
            assert loop.time() < deadline, "the notifier did not notice the drop"
            await asyncio.sleep(0.005)

        # Jobs inserted while nothing listens still run, each within about one poll.
        for n in range(3):
            t0 = loop.time()
            res = await client.insert(Ping(n=n))
            ev = await next_event(sub, res.job.id, timeout=5)
            assert ev.state == "completed"
            assert started.at[res.job.id] - t0 < 0.3 + 0.5
            assert not notifier.connected.is_set()
        assert notifier.reconnects >= 1

        monkeypatch.undo()
        await _connected(notifier, first_pid, 15)


async def test_wakeups_return_once_the_notifier_reconnects(
    db: str, workers: Workers, admin: asyncpg.Connection, started: Started
) -> None:
    # A poll interval far longer than the test: only a notification can start a job fast.
    client = _client(db, workers, poll=30)
    loop = asyncio.get_running_loop()
    async with client:
        sub = client.subscribe()
        notifier = client.notifier
        assert notifier is not None
        first_pid = await _connected(notifier, None, 10)

        await _terminate(admin, first_pid)
        second_pid = await _connected(notifier, first_pid, 10)
        assert second_pid != first_pid

        for n in range(3):
            t0 = loop.time()
            res = await client.insert(Ping(n=n))
            await next_event(sub, res.job.id, timeout=10)
            assert started.at[res.job.id] - t0 < 2.0, "woken by the poll, not a notification"


async def test_notifier_reconnects_promptly_after_each_of_several_drops(
    db: str, workers: Workers, admin: asyncpg.Connection
) -> None:
    client = _client(db, workers, poll=30)
    loop = asyncio.get_running_loop()
    async with client:
        notifier = client.notifier
        assert notifier is not None
        pid = await _connected(notifier, None, 10)
        took: list[float] = []
        for _ in range(6):
            await asyncio.sleep(0.2)  # healthy for a while between drops
            t0 = loop.time()
            await _terminate(admin, pid)
            pid = await _connected(notifier, pid, 15)
            took.append(round(loop.time() - t0, 2))
    # Each drop follows a healthy connection: each reconnect starts from the first delay.
    assert max(took) < 1.0, took
