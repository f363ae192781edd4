"""The notifier: one connection that LISTENs and fans messages out to subscribers.

It holds one LISTEN connection (the driver's :class:`~._driver.Listener`) for as long
as it runs. When that connection
is lost it tells its subscribers (producers fall back to polling), then reconnects
with backoff and re-LISTENs; it tells them again once it is back, so they can
fetch whatever arrived while it was away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ._aio import cancel_and_wait
from ._backoff import reconnect_delays
from ._driver import Listener

__all__ = ["Notifier"]

log = logging.getLogger("pyriver_async.notifier")

Handler = Callable[[str, dict[str, Any]], None]

_decoder = msgspec.json.Decoder(dict[str, Any])


class Notifier:
    def __init__(
        self,
        listener: Listener,
        channels: list[str],
        on_message: Handler,
        on_connected: Callable[[bool], None],
        *,
        health_check_interval: float = 5.0,
    ) -> None:
        self._listener = listener
        self._channels = channels
        self._on_message = on_message
        self._on_connected = on_connected
        self._health = health_check_interval
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        # When the current outage began (monotonic), for the one line saying it ended.
        self._lost_at: float | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pyriver-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task, log)
            self._task = None

    @property
    def connection_pid(self) -> int | None:
        """The backend pid of the LISTEN connection (for tests and diagnostics)."""
        return self._listener.backend_pid if self.connected.is_set() else None

    def _dispatch(self, channel: str, payload: str) -> None:
        try:
            msg = _decoder.decode(payload)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed notification on %s: %.200r", channel, payload)
            return
        try:
            self._on_message(channel, msg)
        except Exception:
            log.exception("handling a notification on %s failed", channel)

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
                self._lost_at = time.monotonic()
            self.connected.clear()
            self._on_connected(False)
            await asyncio.sleep(next(delays))
            self.reconnects += 1

    async def _listen_until_lost(self) -> None:
        async with self._listener.connect() as listener:
            await listener.listen(self._channels, self._dispatch)
            if self._lost_at is not None:
                log.info(
                    "notifier reconnected after %.1fs (%d attempts); producers resume listening",
                    time.monotonic() - self._lost_at,
                    self.reconnects,
                )
                self._lost_at = None
            self.connected.set()
            self._on_connected(True)
            await listener.wait_lost(self._health)
