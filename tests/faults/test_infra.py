"""The fault tests' own machinery, shown to do what the fault tests rely on: a streaming
standby that can be promoted, a killed and restarted cluster, a cluster flipped
read-only, a TCP proxy that partitions, retargets and drops, and pgbouncer in front of
PostgreSQL (and what LISTEN does through it)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import asyncpg
import pytest

from ._cluster import PgCluster, Setting
from ._proxy import TcpProxy
from .conftest import PgBouncers, PgClusters

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

# What asyncpg raises on a connection whose peer went away. InternalClientError: a
# backend that exits sends a FATAL error first, and asyncpg, having read it but not yet
# the EOF, refuses the next query that way (see tests/faults/test_db_restart.py).
GONE = (
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
)

PRIMARY_SETTINGS: dict[str, Setting] = {
    "wal_level": "replica",
    "max_wal_senders": 4,
    "hot_standby": True,
}


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PgCluster, PgCluster]]:
    """A primary and a streaming standby, shared by this module's tests (none of them
    leaves either changed)."""
    clusters = PgClusters()
    try:
        primary = clusters.new(PRIMARY_SETTINGS)
        yield primary, clusters.standby(primary)
    finally:
        clusters.close()


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


# -- clusters -----------------------------------------------------------------------------


async def test_settings_reach_the_primary_and_its_standby(
    pair: tuple[PgCluster, PgCluster],
) -> None:
    primary, standby = pair
    for cluster in pair:
        assert await _fetchval(cluster.url(), "SHOW max_wal_senders") == "4"
        assert await _fetchval(cluster.url(), "SHOW fsync") == "off"  # the base settings
    assert await _fetchval(standby.url(), "SELECT pg_is_in_recovery()") is True
    assert await _fetchval(primary.url(), "SELECT pg_is_in_recovery()") is False


async def test_standby_streams_a_row_written_on_the_primary(
    pair: tuple[PgCluster, PgCluster],
) -> None:
    primary, standby = pair
    token = uuid.uuid4().hex
    conn = await asyncpg.connect(primary.url())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS infra_stream (token text)")
        await conn.execute("INSERT INTO infra_stream VALUES ($1)", token)
        state = await conn.fetchval(
            "SELECT state FROM pg_stat_replication WHERE application_name = $1",
            standby.application_name,
        )
    finally:
        await conn.close()
    assert state == "streaming"

    await standby.wait_replayed()
    conn = await asyncpg.connect(standby.url())
    try:
        assert await conn.fetchval("SELECT count(*) FROM infra_stream WHERE token = $1", token)
        # A hot standby answers reads and refuses writes.
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError) as refused:
            await conn.execute("INSERT INTO infra_stream VALUES ('no')")
        assert refused.value.sqlstate == "25006"
    finally:
        await conn.close()


async def test_promoted_standby_accepts_writes(
    pair: tuple[PgCluster, PgCluster], pg_clusters: PgClusters
) -> None:
    primary, _ = pair
    # A standby of this test's own: promotion ends its streaming for good.
    standby = pg_clusters.standby(primary)
    token = uuid.uuid4().hex
    conn = await asyncpg.connect(primary.url())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS infra_promote (token text)")
        await conn.execute("INSERT INTO infra_promote VALUES ($1)", token)
    finally:
        await conn.close()
    await standby.wait_replayed()

    await standby.promote()

    assert standby.primary is None
    conn = await asyncpg.connect(standby.url())
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
        await conn.execute("INSERT INTO infra_promote VALUES ('after')")
        rows = await conn.fetch("SELECT token FROM infra_promote ORDER BY token")
    finally:
        await conn.close()
    # What the primary had committed before the promotion, and the new write.
    assert {token, "after"} <= {r["token"] for r in rows}


async def test_killed_cluster_restarts_with_crash_recovery_and_new_settings(
    pg_cluster: PgCluster,
) -> None:
    conn = await asyncpg.connect(pg_cluster.url())
    try:
        await conn.execute("CREATE TABLE infra_kill (x int)")
        # A synchronous commit: written to the WAL before it returns (the default here
        # is asynchronous, whose last commits a crash may lose).
        await conn.execute("SET synchronous_commit = on; INSERT INTO infra_kill VALUES (1)")
        postmaster = pg_cluster.postmaster_pid()

        await pg_cluster.akill()

        with pytest.raises(GONE):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    with pytest.raises(GONE):
        await asyncpg.connect(pg_cluster.url(), timeout=5)

    await pg_cluster.astart({"statement_timeout": "150ms"})

    assert pg_cluster.postmaster_pid() != postmaster
    assert "database system was interrupted" in pg_cluster.log_text()
    conn = await asyncpg.connect(pg_cluster.url())
    try:
        assert await conn.fetchval("SELECT count(*) FROM infra_kill") == 1
        # The setting given at start is in force.
        with pytest.raises(asyncpg.QueryCanceledError) as cancelled:
            await conn.execute("SELECT pg_sleep(2)")
        assert cancelled.value.sqlstate == "57014"
    finally:
        await conn.close()


async def test_set_read_only_refuses_writes_until_turned_off(
    pair: tuple[PgCluster, PgCluster],
) -> None:
    primary, _ = pair
    before = await asyncpg.connect(primary.url())  # a session opened before the flip
    try:
        await before.execute("CREATE TABLE IF NOT EXISTS infra_ro (x int)")
        await before.execute("TRUNCATE infra_ro")
        try:
            await primary.set_read_only(True)
            after = await asyncpg.connect(primary.url())
            try:
                for conn in (before, after):
                    with pytest.raises(asyncpg.ReadOnlySQLTransactionError) as refused:
                        await conn.execute("INSERT INTO infra_ro VALUES (1)")
                    assert refused.value.sqlstate == "25006"
                    assert await conn.fetchval("SELECT count(*) FROM infra_ro") == 0  # reads go on
            finally:
                await after.close()
        finally:
            await primary.set_read_only(False)
        await before.execute("INSERT INTO infra_ro VALUES (2)")
        assert await before.fetchval("SELECT array_agg(x) FROM infra_ro") == [2]
    finally:
        await before.close()


# -- the TCP proxy ------------------------------------------------------------------------


async def test_proxy_forwards_queries_and_cleans_up_on_close(
    pair: tuple[PgCluster, PgCluster],
) -> None:
    primary, _ = pair
    proxy = await TcpProxy("127.0.0.1", primary.port).start()
    try:
        conn = await asyncpg.connect(proxy.url())
        assert await conn.fetchval("SELECT inet_server_port()") == primary.port
        assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
        assert (proxy.accepted, proxy.active) == (1, 1)
        assert proxy.upstream == {("127.0.0.1", primary.port): 1}
    finally:
        await proxy.close()  # with the connection still open
    with pytest.raises(GONE):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    assert proxy.active == 0
    # Every task the proxy started has ended.
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_blackholed_proxy_holds_a_query_until_restore(
    pair: tuple[PgCluster, PgCluster],
) -> None:
    primary, _ = pair
    async with TcpProxy("127.0.0.1", primary.port) as proxy:
        conn = await asyncpg.connect(proxy.url())
        try:
            proxy.blackhole()
            query = asyncio.create_task(conn.fetchval("SELECT 42"))
            # The query's bytes reached the proxy, which holds them.
            await proxy.wait_for(lambda p: p.held >= 1, timeout=5)
            done, _ = await asyncio.wait({query}, timeout=0.5)
            assert not done, "a query went through a partition"
            # A new connection hangs too (its startup is held as well).
            with pytest.raises(TimeoutError):
                await asyncpg.connect(proxy.url(), timeout=0.5)
            assert proxy.active >= 1 and not query.done()

            proxy.restore()

            assert await asyncio.wait_for(query, 5) == 42
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()


async def test_retarget_sends_new_connections_to_the_other_cluster(
    pair: tuple[PgCluster, PgCluster],
) -> None:
    primary, standby = pair

    async def where(conn: asyncpg.Connection) -> tuple[int, bool]:
        """The server's port, and whether it is a standby."""
        row = await conn.fetchrow("SELECT inet_server_port(), pg_is_in_recovery()")
        assert row is not None
        return row[0], row[1]

    async with TcpProxy("127.0.0.1", primary.port) as proxy:
        first = await asyncpg.connect(proxy.url())
        proxy.retarget("127.0.0.1", standby.port)
        second = await asyncpg.connect(proxy.url())
        try:
            assert await where(second) == (standby.port, True)
            # The connection made before stays with its target.
            assert await where(first) == (primary.port, False)

            # Back, closing what is open (a failover's effect on the old connections).
            proxy.retarget("127.0.0.1", primary.port, close_existing=True)
            assert proxy.dropped == 2
            for old in (first, second):
                with pytest.raises(GONE):
                    await old.fetchval("SELECT 1")
            assert await _fetchval(proxy.url(), "SELECT inet_server_port()") == primary.port
        finally:
            first.terminate()
            second.terminate()
        assert proxy.upstream == {("127.0.0.1", primary.port): 2, ("127.0.0.1", standby.port): 1}


async def test_drop_all_closes_every_connection_and_new_ones_work(
    pair: tuple[PgCluster, PgCluster],
) -> None:
    primary, _ = pair
    async with TcpProxy("127.0.0.1", primary.port) as proxy:
        pool = await asyncpg.create_pool(proxy.url(), min_size=3, max_size=3)
        try:
            await proxy.wait_for(lambda p: p.active == 3)
            assert proxy.drop_all() == 3
            await proxy.wait_for(lambda p: p.active == 0)
            # asyncpg's pool notices on use and reconnects through the proxy.
            for _ in range(3):
                try:
                    assert await pool.fetchval("SELECT 1") == 1
                    break
                except GONE:
                    continue
            else:
                raise AssertionError("the pool never reconnected")
            assert proxy.accepted >= 4
        finally:
            pool.terminate()


# -- pgbouncer ----------------------------------------------------------------------------


def _resolve(fut: asyncio.Future[str]) -> Callable[[object, int, str, object], None]:
    """A LISTEN callback that resolves ``fut`` with the first payload."""

    def receive(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        if not fut.done():
            fut.set_result(str(payload))

    return receive


async def test_pgbouncer_transaction_mode_answers_asyncpg(
    pair: tuple[PgCluster, PgCluster], pgbouncers: PgBouncers
) -> None:
    primary, _ = pair
    bouncer = pgbouncers.start("127.0.0.1", primary.port, pool_mode="transaction")
    # statement_cache_size=0: asyncpg's named prepared statements would outlive the
    # transaction, and the next one may run on another server connection.
    a = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    b = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    try:
        assert await a.fetchval("SELECT $1::int + 1", 41) == 42
        assert await a.fetchval("SELECT inet_server_port()") == primary.port
        # Transaction pooling: two clients, one after the other, share a server backend.
        assert await a.fetchval("SELECT pg_backend_pid()") == await b.fetchval(
            "SELECT pg_backend_pid()"
        )
    finally:
        await a.close()
        await b.close()


async def test_listen_through_transaction_pooling_misses_notify(
    pair: tuple[PgCluster, PgCluster], pgbouncers: PgBouncers
) -> None:
    """What a LISTEN through a transaction-mode pgbouncer (1.18) gets: nothing. The
    LISTEN runs on whichever server connection carried that transaction; the NOTIFY
    reaches that backend, which sends it to pgbouncer while no client is linked to it,
    and pgbouncer drops it, logging ``got packet 'A' from server when not linked``. The
    backend goes on listening in the pool. In session mode it arrives."""
    primary, _ = pair
    transaction = pgbouncers.start("127.0.0.1", primary.port, pool_mode="transaction")
    session = pgbouncers.start("127.0.0.1", primary.port, pool_mode="session")
    channel = f"infra_{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    got: dict[str, asyncio.Future[str]] = {
        "direct": loop.create_future(),
        "transaction": loop.create_future(),
        "session": loop.create_future(),
    }
    conns = {
        "direct": await asyncpg.connect(primary.url()),
        "transaction": await asyncpg.connect(transaction.url(), statement_cache_size=0),
        "session": await asyncpg.connect(session.url(), statement_cache_size=0),
    }
    try:
        for name, conn in conns.items():
            await conn.add_listener(channel, _resolve(got[name]))
        await conns["direct"].execute(f"NOTIFY {channel}, 'hello'")

        assert await asyncio.wait_for(got["direct"], 5) == "hello"
        assert await asyncio.wait_for(got["session"], 5) == "hello"
        # The drop is logged: wait for that rather than for a silence of some length.
        loop_deadline = loop.time() + 5
        while "got packet 'A' from server when not linked" not in transaction.log_text():
            assert loop.time() < loop_deadline, transaction.log_text()[-2000:]
            await asyncio.sleep(0.02)
        # A round trip on the listening connection: nothing was queued for it.
        assert await conns["transaction"].fetchval("SELECT 1") == 1
        assert not got["transaction"].done()
    finally:
        for conn in conns.values():
            await conn.close()
