"""A TCP proxy the test owns, to put network faults between a client and PostgreSQL.

    async with TcpProxy("127.0.0.1", cluster.port) as proxy:
        pool = await asyncpg.create_pool(proxy.url("pyriver"), ...)
        proxy.blackhole()         # a partition: connections stay open, nothing moves
        proxy.restore()           # the partition heals: what was held is delivered
        proxy.retarget("127.0.0.1", standby.port, close_existing=True)   # a failover
        proxy.drop_all()          # every proxied connection closed at once

It listens on 127.0.0.1 on a free port and runs on the event loop of the test that
starts it (``asyncio_mode=auto``); every task it starts is its own and ends with
:meth:`TcpProxy.close`.

What each control does to bytes:

- :meth:`~TcpProxy.blackhole`: **held, never dropped.** Each direction of each connection
  stops forwarding; a chunk already read waits in the proxy, the rest waits in the
  kernel's socket buffers (so TCP's flow control pushes back on the sender, as in a real
  partition, where the peers' TCP retransmits). A connection accepted meanwhile is not
  connected onwards until the partition heals. Nothing is closed: peers see silence,
  and only their own timeouts (``statement_timeout``, TCP keepalive, asyncpg's
  ``command_timeout``) end it.
- :meth:`~TcpProxy.restore`: forwarding resumes, what was held is delivered in order.
- :meth:`~TcpProxy.drop_all`: every proxied connection is aborted on both sides at once
  (bytes in flight are lost, as when a pooler or a network device resets them); the
  listener stays up, so the next connection attempt succeeds.
- :meth:`~TcpProxy.retarget`: connections accepted from now on go to the new target;
  ``close_existing=True`` also drops the current ones (what a failover does to them).

Counters: ``accepted`` (connections accepted so far), ``active`` (open now),
``upstream`` (connections made per target), ``dropped`` (closed by :meth:`drop_all`),
``held`` (chunks that arrived while blackholed). :meth:`wait_for` awaits any condition
on them, woken by every change (no polling).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["TcpProxy"]

_CHUNK = 64 * 1024


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    target: tuple[str, int] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host:target_port``; see the module doc."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target: tuple[str, int] = (target_host, target_port)
        self.host = host
        self.port = 0
        self.accepted = 0
        self.dropped = 0
        self.held = 0
        self.upstream: collections.Counter[tuple[str, int]] = collections.Counter()
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = asyncio.Event()  # set while forwarding; cleared by blackhole()
        self._open.set()
        self._changed = asyncio.Event()  # set and replaced at every change
        self._server: asyncio.Server | None = None
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening, abort every connection, and wait for every task to end."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A PostgreSQL URL that goes through this proxy."""
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    # -- controls -------------------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self._conns)

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    def retarget(self, host: str, port: int, *, close_existing: bool = False) -> None:
        """New connections go to ``host:port``; ``close_existing`` also drops the
        current ones (else they stay with the old target)."""
        self.target = (host, port)
        if close_existing:
            self.drop_all()

    def blackhole(self) -> None:
        """Forward nothing, in either direction, on existing and new connections; hold
        the bytes (see the module doc). Connections stay open."""
        self._open.clear()
        self._notify()

    def restore(self) -> None:
        """Forward again; what was held is delivered."""
        self._open.set()
        self._notify()

    def drop_all(self) -> int:
        """Abort every proxied connection (both sides) at once; returns how many."""
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
            for t in conn.tasks:
                t.cancel()
        self.dropped += len(conns)
        self._notify()
        return len(conns)

    async def wait_for(self, predicate: Callable[[TcpProxy], bool], timeout: float = 10) -> None:
        """Until ``predicate(self)`` holds (checked at every change of the counters)."""

        async def wait() -> None:
            while not predicate(self):
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    # -- forwarding -----------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so that the task serving the connection is ours to cancel.
        if self._closing:
            writer.transport.abort()
            return
        self.accepted += 1
        conn = _Conn(client=writer)
        self._conns.add(conn)
        conn.tasks.add(self._spawn(self._serve(conn, reader)))
        self._notify()

    async def _serve(self, conn: _Conn, client_reader: asyncio.StreamReader) -> None:
        try:
            # A connection accepted during a partition is not connected onwards until
            # it heals (the SYN would not get through either).
            await self._open.wait()
            conn.target = self.target
            try:
                up_reader, conn.upstream = await asyncio.open_connection(*conn.target)
            except OSError:
                return  # the target refuses: the client sees its connection closed
            self.upstream[conn.target] += 1
            self._notify()
            pumps = [
                self._spawn(self._pump(client_reader, conn.upstream)),
                self._spawn(self._pump(up_reader, conn.client)),
            ]
            conn.tasks.update(pumps)
            # Either side closing (or failing) ends the connection on both sides.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in conn.tasks:
                if t is not asyncio.current_task():
                    t.cancel()
            for w in (conn.client, conn.upstream):
                if w is not None:
                    w.close()
            self._conns.discard(conn)
            self._notify()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction. During a partition even an EOF or a reset is held back: a peer
        learns that the other side went away only once the partition heals."""
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                if not self._open.is_set():
                    if data:
                        self.held += 1
                        self._notify()
                    await self._open.wait()
                if not data:
                    return
                writer.write(data)
                await writer.drain()
        except OSError:
            return
