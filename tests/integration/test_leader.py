"""Leader election: one leader at a time, hand-over on resignation, take-over on expiry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pyriver_async import Client
from pyriver_async._maintenance.leader import LeaderElector
from tests._support import db_executor, eventually


class HasLeadership(Protocol):
    @property
    def is_leader(self) -> bool: ...


class LeaderWatch:
    """Samples who believes they lead, every millisecond, and remembers the worst moment."""

    def __init__(self, members: Sequence[HasLeadership]) -> None:
        self.members = members
        self.most_at_once = 0
        self.services_at_once = 0
        self.active: set[str] = set()  # whose leader-only services run (elector tests)
        self._task: asyncio.Task[None] | None = None

    def leaders(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m.is_leader]

    async def _run(self) -> None:
        while True:
            self.most_at_once = max(self.most_at_once, len(self.leaders()))
            self.services_at_once = max(self.services_at_once, len(self.active))
            await asyncio.sleep(0.001)

    async def __aenter__(self) -> LeaderWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def leader_row(conn: asyncpg.Connection) -> str | None:
    value: str | None = await conn.fetchval("SELECT leader_id FROM river_leader")
    return value


@contextlib.asynccontextmanager
async def clients(db: str, n: int, **kwargs: Any) -> AsyncIterator[list[Client]]:
    """``n`` insert-only clients with maintenance, each on its own pool, started together."""
    made = [
        Client(f"{db}?application_name=leader_test_{i}", id=f"member-{i}", **kwargs)
        for i in range(n)
    ]
    await asyncio.gather(*(c.start() for c in made))
    try:
        yield made
    finally:
        await asyncio.gather(*(c.stop() for c in made))


def elector_of(c: Client) -> LeaderElector:
    elector: LeaderElector = c._maintenance.elector
    return elector


async def test_one_of_five_racing_clients_is_elected_and_keeps_it(
    db: str, conn: asyncpg.Connection
) -> None:
    async with clients(db, 5, leader_ttl=1.0) as members, LeaderWatch(members) as watch:
        await eventually(lambda: len(watch.leaders()) == 1)
        [i] = watch.leaders()
        assert await leader_row(conn) == f"member-{i}"
        # Several renewals later, still the same single leader, and nobody else ever won.
        await eventually(lambda: elector_of(members[i]).renewals >= 4)
        assert watch.leaders() == [i]
        assert [elector_of(m).terms for m in members].count(1) == 1
        assert sum(elector_of(m).terms for m in members) == 1
    assert watch.most_at_once == 1


async def test_stopping_leader_resigns_and_another_takes_over_at_once(
    db: str, conn: asyncpg.Connection
) -> None:
    messages: list[dict[str, Any]] = []
    listen = await asyncpg.connect(db)
    await listen.add_listener(
        "public.river_leadership", lambda *a: messages.append(json.loads(a[-1]))
    )
    try:
        # A long ttl: without the resignation, the take-over would need seconds.
        async with clients(db, 3, leader_ttl=10.0) as members, LeaderWatch(members) as watch:
            await eventually(lambda: len(watch.leaders()) == 1)
            [old] = watch.leaders()
            t0 = time.monotonic()
            await members[old].stop()
            await eventually(lambda: len(watch.leaders()) == 1, timeout=3)
            took = time.monotonic() - t0
            [new] = watch.leaders()
            assert new != old
            assert took < 2.0, f"take-over took {took:.1f}s"
            assert await leader_row(conn) == f"member-{new}"
        assert watch.most_at_once == 1
        await eventually(lambda: len(messages) >= 1)
        assert {"action": "resigned", "leader_id": f"member-{old}"} in messages
    finally:
        await listen.close()


async def test_terminated_connections_never_make_two_leaders(
    db: str, conn: asyncpg.Connection
) -> None:
    async with clients(db, 3, leader_ttl=1.0) as members, LeaderWatch(members) as watch:
        await eventually(lambda: len(watch.leaders()) == 1)
        [i] = watch.leaders()
        # The leader's connections first, then everyone's, again and again for longer
        # than a ttl: renewals and elections fail part way, in every order.
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            f"leader_test_{i}",
        )
        assert killed >= 1
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'leader\\_test\\_%'"
            )
            await asyncio.sleep(0.03)  # the pace of the chaos, not a wait for a result
        await eventually(lambda: len(watch.leaders()) == 1, timeout=5)
        [j] = watch.leaders()
        renewals = elector_of(members[j]).renewals
        await eventually(lambda: elector_of(members[j]).renewals >= renewals + 2)
        assert watch.leaders() == [j]
        assert await leader_row(conn) == f"member-{j}"
    assert watch.most_at_once == 1


class Proxy:
    """A TCP proxy to PostgreSQL that can be cut: live connections are reset, new ones
    hang without an answer (a network partition, as the leader sees it)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.blocked = False
        self._live: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            self._held.add(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._live |= {writer, up_writer}
        for r, w in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(r, w))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        self.blocked = True
        for w in self._live:
            w.transport.abort()
        self._live.clear()

    def heal(self) -> None:
        self.blocked = False
        for w in self._held:
            w.transport.abort()
        self._held.clear()

    async def close(self) -> None:
        self.cut()
        self.heal()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_leader_cut_off_from_the_database_steps_down_before_another_is_elected(
    db: str, conn: asyncpg.Connection
) -> None:
    parts = urlsplit(db)
    if not parts.hostname or not parts.port:
        pytest.skip("needs a TCP database URL")
    proxy = Proxy(parts.hostname, parts.port)
    port = await proxy.start()
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    proxied = urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{port}"))
    ttl = 1.5
    pools = [await asyncpg.create_pool(url, min_size=0, max_size=2) for url in (proxied, db, db)]
    electors: list[LeaderElector] = []
    watch = LeaderWatch(electors)

    def make(i: int, pool: asyncpg.Pool) -> LeaderElector:
        name = f"elector-{i}"

        async def elected() -> None:
            watch.active.add(name)

        async def lost() -> None:
            watch.active.discard(name)

        return LeaderElector(db_executor(pool), name, ttl=ttl, on_elected=elected, on_lost=lost)

    electors.extend(make(i, p) for i, p in enumerate(pools))
    try:
        async with watch:
            electors[0].start()
            await eventually(lambda: electors[0].is_leader)
            for e in electors[1:]:
                e.start()
            await eventually(lambda: electors[0].renewals >= 2)

            proxy.cut()
            t_cut = time.monotonic()
            await eventually(lambda: "elector-0" not in watch.active, timeout=5)
            stepped_down = time.monotonic() - t_cut
            await eventually(lambda: len(watch.leaders()) == 1, timeout=5)
            assert not electors[0].is_leader
            assert stepped_down <= ttl + 0.2, f"stepped down after {stepped_down:.2f}s"
            assert await leader_row(conn) in ("elector-1", "elector-2")

            # Back on the network, the old leader finds the seat taken.
            proxy.heal()
            await eventually(lambda: pools[0].get_size() > 0, timeout=5)
            new = watch.leaders()[0]
            await eventually(lambda: electors[new].renewals >= 3)
            assert watch.leaders() == [new]
        assert watch.most_at_once == 1
        assert watch.services_at_once == 1
    finally:
        await asyncio.gather(*(e.stop(resign_timeout=1) for e in electors))
        for p in pools:
            p.terminate()
        await proxy.close()


async def test_request_resign_hands_leadership_to_another_client(
    db: str, conn: asyncpg.Connection
) -> None:
    async with clients(db, 2, leader_ttl=4.0) as members, LeaderWatch(members) as watch:
        await eventually(lambda: len(watch.leaders()) == 1)
        [old] = watch.leaders()
        await conn.execute(
            "SELECT pg_notify('public.river_leadership', "
            "json_build_object('action', 'request_resign', 'leader_id', '')::text)"
        )
        await eventually(lambda: watch.leaders() == [1 - old], timeout=3)
    assert watch.most_at_once == 1


async def test_expired_row_of_a_dead_leader_is_taken_over_soon_after_expiry(
    db: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO river_leader (leader_id, elected_at, expires_at) "
        "VALUES ('crashed', now() - interval '10 seconds', now() + interval '1.5 seconds')"
    )
    async with clients(db, 1, leader_ttl=10.0) as [member]:
        assert not member.is_leader
        assert await leader_row(conn) == "crashed"
        # Much sooner than the 5 s a follower otherwise waits between attempts.
        await eventually(lambda: member.is_leader, timeout=3)
        assert await leader_row(conn) == "member-0"


async def test_leader_only_services_run_on_the_leader_alone(db: str) -> None:
    async with clients(db, 2, leader_ttl=2.0) as members, LeaderWatch(members) as watch:
        await eventually(lambda: len(watch.leaders()) == 1)
        [i] = watch.leaders()
        m = members[i]._maintenance
        other = members[1 - i]._maintenance
        assert all(s.running for s in m.leader_services)
        assert not any(s.running for s in other.leader_services)
        assert m.heartbeat.running and other.heartbeat.running
        await members[i].stop()
        await eventually(lambda: all(s.running for s in other.leader_services), timeout=3)
