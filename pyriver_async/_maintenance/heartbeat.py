"""Client liveness: every running client keeps its ``pyriver_client`` row fresh.

The rescuer reads these rows to tell a slow job of a live client (leave it alone)
from a job whose client has died (take it back soon). A client that stops marks its
row dead, so whatever it had to abandon is rescued on the rescuer's next pass.

Each beat also writes what ``client.list_clients()`` and the web UI show (pyriver
002): the version, each queue's max_workers and running count, whether the client is
stopping, its dead_client_after, and metadata (retention settings; on the leader, its
periodic schedule), as the client's ``status()`` callable reports them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._driver import Executor
from .service import Service

__all__ = ["Heartbeat"]


class Heartbeat(Service):
    """Upserts this client's liveness row every ``interval`` seconds (first beat at once)."""

    name = "heartbeat"

    def __init__(
        self,
        executor: Executor,
        client_id: str,
        queues: Sequence[str] = (),
        *,
        interval: float = 5.0,
        dead_after: float | None = None,
        liveness: bool = True,
        status: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        # Retries after a failed beat never wait longer than a beat: a client that
        # stays silent too long is judged dead by the rescuer.
        super().__init__(interval=interval, max_backoff=interval)
        self.dead_after = dead_after
        self.liveness = liveness  # False: no pyriver_client table (a River-only schema)
        self._last_beat = time.monotonic()
        self._warned = False
        self._executor = executor
        self.client_id = client_id
        self.queues = sorted(set(queues))
        self._hostname = socket.gethostname()[:255]
        self._pid = os.getpid()
        self._status = status

    async def run_once(self) -> None:
        if not self.liveness:
            return
        status: Mapping[str, Any] = {}
        if self._status is not None:
            try:
                status = self._status()
            except Exception:
                self.log.exception("client %s: reading its status failed", self.client_id)
        try:
            await self._executor.client_heartbeat(
                id=self.client_id,
                hostname=self._hostname,
                pid=self._pid,
                queues=self.queues,
                version=str(status.get("version", "")),
                queue_use=status.get("queue_use"),
                stopping=bool(status.get("stopping", False)),
                dead_after=self.dead_after,
                metadata=status.get("metadata"),
            )
        except Exception:
            silent = time.monotonic() - self._last_beat
            if self.dead_after is not None and silent > self.dead_after and not self._warned:
                self._warned = True
                self.log.error(
                    "client %s has written no heartbeat for %.0fs (dead_client_after is "
                    "%.0fs): the leader may judge it dead and rescue its running jobs, "
                    "which would then run a second time",
                    self.client_id,
                    silent,
                    self.dead_after,
                )
            raise
        self._last_beat = time.monotonic()
        self._warned = False

    async def mark_dead(self) -> None:
        """Tell the rescuer this client is gone (call after :meth:`stop`)."""
        if not self.liveness:
            return
        await self._executor.client_mark_dead(id=self.client_id)
