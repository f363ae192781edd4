"""Live refresh: one LISTEN connection per UI process turns River's notifications
(and the sampler's ticks and the UI's own actions) into named server-sent events;
each tab holds one stream (``GET /events``) whose events make htmx re-fetch the
regions that show what changed. No HTML travels over the stream: one render path,
one auth path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from starlette.responses import Response, StreamingResponse

if TYPE_CHECKING:
    from .app import UIApp
    from .web import Ctx

__all__ = ["EVENTS", "Live", "events_endpoint"]

log = logging.getLogger("pyriver_async.ui.live")

#: The named events a stream carries.
EVENTS = ("jobs", "queues", "clients", "stats", "op")
DEBOUNCE = 0.25
KEEPALIVE = 15.0
MAX_STREAM_AGE = 300.0  # the browser reconnects; a server shutting down never waits long


def _backoff() -> Iterator[float]:
    delay = 0.5
    while True:
        yield delay * (0.8 + 0.4 * random.random())
        delay = min(delay * 2, 30.0)


class Live:
    """The broadcaster: ``publish("jobs")`` reaches every open stream, debounced."""

    def __init__(self, ui: UIApp) -> None:
        self._ui = ui
        self._streams: set[asyncio.Queue[str]] = set()
        self._pending: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._ending = asyncio.Event()
        self.listening = False
        self.notifications = 0

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        self._ending = asyncio.Event()
        if self._task is None:
            self._task = asyncio.create_task(self._listen_loop(), name="pyriver-ui-listen")

    def end_streams(self) -> None:
        self._ending.set()

    async def stop(self) -> None:
        self._ending.set()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.listening = False

    # -- publishing ----------------------------------------------------------------

    def publish(self, *events: str) -> None:
        """Send ``events`` to every stream within DEBOUNCE seconds (merged)."""
        self._pending.update(events)
        if self._flush is None and self._streams:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(DEBOUNCE, self._deliver)
        elif not self._streams:
            self._pending.clear()

    def _deliver(self) -> None:
        self._flush = None
        events, self._pending = sorted(self._pending), set()
        for q in list(self._streams):
            for ev in events:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(ev)

    # -- LISTEN ------------------------------------------------------------------------

    def _on_notification(self, channel: str, payload: str) -> None:
        self.notifications += 1
        q = self._ui.client.queries
        if channel == q.insert_channel:
            self.publish("jobs", "queues")
        elif channel == q.control_channel:
            try:
                action = json.loads(payload).get("action")
            except (ValueError, AttributeError):
                action = None
            self.publish("queues" if action in ("pause", "resume") else "jobs")
        elif channel == q.leadership_channel:
            self.publish("clients")

    async def _listen_loop(self) -> None:
        delays = _backoff()
        q = self._ui.client.queries
        channels = [q.insert_channel, q.control_channel, q.leadership_channel]
        while True:
            db = self._ui.db
            if db is None:
                return
            try:
                listener = db.listener(q)
                async with listener.connect():
                    await listener.listen(channels, self._on_notification)
                    self.listening = True
                    delays = _backoff()
                    self.publish("jobs", "queues", "clients")  # catch up on what we missed
                    await listener.wait_lost(KEEPALIVE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("UI LISTEN connection lost (%s); retrying", exc)
            self.listening = False
            await asyncio.sleep(next(delays))

    # -- streams -------------------------------------------------------------------------

    def open_stream(self) -> asyncio.Queue[str] | None:
        if len(self._streams) >= self._ui.settings.max_streams:
            return None
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=100)
        self._streams.add(q)
        return q

    def close_stream(self, q: asyncio.Queue[str]) -> None:
        self._streams.discard(q)

    async def events(self, q: asyncio.Queue[str]) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_STREAM_AGE
        ending = self._ending
        try:
            yield f"retry: 3000\n: connected, listening={str(self.listening).lower()}\n\n"
            while not ending.is_set() and loop.time() < deadline:
                get = asyncio.ensure_future(q.get())
                end = asyncio.ensure_future(ending.wait())
                try:
                    done, _ = await asyncio.wait(
                        {get, end}, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for f in (get, end):
                        if not f.done():
                            f.cancel()
                    await asyncio.gather(get, end, return_exceptions=True)
                if get in done and not get.cancelled():
                    yield f"event: {get.result()}\ndata: {int(loop.time() * 1000)}\n\n"
                elif not done:
                    yield ": keepalive\n\n"
        finally:
            self.close_stream(q)


async def events_endpoint(ui: UIApp, ctx: Ctx) -> Response:
    """``GET /events``: the tab's event stream (503 past the stream limit)."""
    from .security import html_headers

    q = ui.live.open_stream()
    if q is None:
        return Response(
            "too many event streams",
            503,
            media_type="text/plain",
            headers={"Retry-After": "30", **html_headers(ctx.nonce)},
        )
    headers: dict[str, Any] = {
        "Cache-Control": "no-cache, no-store",
        "X-Accel-Buffering": "no",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(ui.live.events(q), media_type="text/event-stream", headers=headers)
