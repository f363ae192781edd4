"""An ASGI app served by uvicorn on 127.0.0.1 (a random port) in a thread of its own,
for the tests that need a real HTTP server: event streams, browsers, fuzzing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn

from pyriver_async.ui import UIApp

__all__ = ["serve"]


@contextmanager
def serve(
    app: Any, ui: UIApp | None = None, *, then: Sequence[Callable[[], Awaitable[Any]]] = ()
) -> Iterator[str]:
    """Serve ``app`` for the block; yields its base URL. ``ui`` (when ``app`` wraps
    it) is told to end its event streams before the server stops, and closed after;
    ``then`` are awaited last, in the server's loop (closing clients it used)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    loop_box: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        async def main() -> None:
            loop_box.append(asyncio.get_running_loop())
            await server.serve()
            target = ui if ui is not None else app if isinstance(app, UIApp) else None
            if target is not None:
                await target.aclose()
            for close in then:
                await close()

        asyncio.run(main())

    thread = threading.Thread(target=run, name="ui-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        target = ui if ui is not None else app if isinstance(app, UIApp) else None
        if target is not None and loop_box:
            loop_box[0].call_soon_threadsafe(target.end_streams)
        server.should_exit = True
        thread.join(15)
