"""The notifier: one connection that LISTENs and fans messages out to subscribers.

It holds one connection of the pool for as long as it runs. When that connection
is lost it tells its subscribers (producers fall back to polling), then reconnects
with backoff and re-LISTENs; it tells them again once it is back, so they can
fetch whatever arrived while it was away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from ._aio import cancel_and_wait, wait_event
from ._backoff import reconnect_delays

__all__ = ["Notifier"]

log = logging.getLogger("pyriver_async.notifier")

Handler = Callable[[str, dict[str, Any]], None]

_decoder = msgspec.json.Decoder(dict[str, Any])


class Notifier:
    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: list[str],
        on_message: Handler,
        on_connected: Callable[[bool], None],
        *,
        health_check_interval: float = 5.0,
    ) -> None:
        self._pool = pool
        self._channels = channels
        self._on_message = on_message
        self._on_connected = on_connected
        self._health = health_check_interval
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._lost = asyncio.Event()
        self.connected = asyncio.Event()
        self.reconnects = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pyriver-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task, log)
            self._task = None

    @property
    def connection_pid(self) -> int | None:
        """The backend pid of the LISTEN connection (for tests and diagnostics)."""
        conn = self._conn
        if conn is None:
            return None
        try:
            return None if conn.is_closed() else int(conn.get_server_pid())
        except asyncpg.InterfaceError:  # released meanwhile
            return None

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        if not isinstance(payload, str):
            return
        try:
            msg = _decoder.decode(payload)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed notification on %s: %.200r", channel, payload)
            return
        try:
            self._on_message(channel, msg)
        except Exception:
            log.exception("handling a notification on %s failed", channel)

    def _terminated(self, _conn: Any) -> None:
        self._lost.set()

    async def _run(self) -> None:
        delays = reconnect_delays(0.1, 5.0)
        while True:
            try:
                await self._listen_until_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "notifier %s (%s: %s); producers poll until it is back",
                    "connection lost" if self.connected.is_set() else "cannot listen",
                    type(exc).__name__,
                    exc,
                )
            if self.connected.is_set():
                # It was up: a new outage starts the backoff from the beginning.
                delays = reconnect_delays(0.1, 5.0)
            self.connected.clear()
            self._on_connected(False)
            await asyncio.sleep(next(delays))
            self.reconnects += 1

    async def _listen_until_lost(self) -> None:
        self._lost.clear()
        async with self._pool.acquire() as conn:
            raw: Any = getattr(conn, "_con", conn)  # the proxied connection: termination hook
            raw.add_termination_listener(self._terminated)
            self._conn = conn
            lost = False
            try:
                for ch in self._channels:
                    await conn.add_listener(ch, self._dispatch)
                self.connected.set()
                self._on_connected(True)
                while True:
                    if await wait_event(self._lost, self._health):
                        lost = True
                        raise ConnectionError("LISTEN connection terminated")
                    # A half-open TCP connection would otherwise stay silent forever.
                    try:
                        await conn.fetchval("SELECT 1", timeout=self._health)
                    except BaseException:
                        lost = True
                        raise
            finally:
                self._conn = None
                raw.remove_termination_listener(self._terminated)
                if lost or raw.is_closed():
                    # Nothing to UNLISTEN on a dead connection: close it so the pool
                    # drops it instead of taking back a connection with listeners.
                    raw.terminate()
                else:
                    try:
                        async with asyncio.timeout(1):
                            for ch in self._channels:
                                await conn.remove_listener(ch, self._dispatch)
                    except BaseException:
                        raw.terminate()
                        raise
