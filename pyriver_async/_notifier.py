"""The notifier: one connection that LISTENs and fans messages out to subscribers.

It holds one LISTEN connection (the driver's :class:`~._driver.Listener`) for as long
as it runs. When that connection
is lost it tells its subscribers (producers fall back to polling), then reconnects
with backoff and re-LISTENs; it tells them again once it is back, so they can
fetch whatever arrived while it was away.

Each connection is checked before it counts as listening (see the driver's
listener): a read-only server (a failover under way) or a LISTEN that hears nothing
(a transaction-mode pooler) is refused, logged, and tried again with backoff.
:meth:`Notifier.reconnect` gives the connection up at once, so that the next one is
opened afresh (the client does it when the server turns read-only, and again when it
takes writes, so the LISTEN follows the primary through a failover).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ._aio import cancel_and_wait, wait_event
from ._backoff import reconnect_delays
from ._driver import Listener
from ._errors import ConnectionLostError, ListenUnavailableError

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
        self._retry_now = asyncio.Event()
        self._logged_failing = self._logged_unavailable = False
        # What the first attempt to listen ended with (None: it listens).
        self._first: asyncio.Future[BaseException | None] | None = None
        # When the current outage began (monotonic), for the one line saying it ended.
        self._lost_at: float | None = None

    def start(self) -> None:
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="pyriver-notifier")

    async def first_attempt(self) -> BaseException | None:
        """Until the first attempt to listen is over: None when it listens, else its error."""
        assert self._first is not None, "start() first"
        return await asyncio.shield(self._first)

    def _first_done(self, exc: BaseException | None) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_result(exc)

    def reconnect(self) -> None:
        """Give up the LISTEN connection now and open a new one (at once, not after the
        backoff): after a failover it reaches whatever the DSN points at now."""
        self._retry_now.set()
        self._listener.drop()

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
                self._first_done(None)
                raise
            except Exception as exc:
                self._first_done(exc)
                self._log_failure(exc)
            if self.connected.is_set():
                # It was up: a new outage starts the backoff from the beginning.
                delays = reconnect_delays(0.1, 5.0)
                self._lost_at = time.monotonic()
            self.connected.clear()
            self._on_connected(False)
            if self._retry_now.is_set():
                self._retry_now.clear()
                await asyncio.sleep(0)
            else:
                await wait_event(self._retry_now, next(delays))
                self._retry_now.clear()
            self.reconnects += 1

    def _log_failure(self, exc: BaseException) -> None:
        """One line when an episode starts (loud for a setting to change), then quiet."""
        was_up = self.connected.is_set()
        if was_up and self._retry_now.is_set() and isinstance(exc, ConnectionLostError):
            log.info("notifier: reconnecting (%s)", exc)
        elif isinstance(exc, ListenUnavailableError):
            if was_up or not self._logged_unavailable:
                self._logged_unavailable = True
                log.error("notifier: %s; producers poll meanwhile", exc)
        elif was_up or not self._logged_failing:
            self._logged_failing = True
            log.warning(
                "notifier %s (%s: %s); producers poll until it is back",
                "connection lost" if was_up else "cannot listen",
                type(exc).__name__,
                exc,
            )
        else:
            log.debug("notifier still cannot listen (%s: %s)", type(exc).__name__, exc)

    async def _listen_until_lost(self) -> None:
        async with self._listener.connect() as listener:
            await listener.listen(self._channels, self._dispatch)
            self._retry_now.clear()
            self._logged_failing = self._logged_unavailable = False
            if self._lost_at is not None:
                log.info(
                    "notifier reconnected after %.1fs (%d attempts); producers resume listening",
                    time.monotonic() - self._lost_at,
                    self.reconnects,
                )
                self._lost_at = None
            self.connected.set()
            self._first_done(None)
            self._on_connected(True)
            await listener.wait_lost(self._health)
