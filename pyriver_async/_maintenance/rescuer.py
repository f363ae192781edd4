"""The rescuer (leader only): takes back ``running`` jobs that nobody is working.

River rescues by age alone, so a job whose process died waits the whole
``rescue_stuck_jobs_after`` (an hour by default) before it runs again. Here each client
keeps a liveness row (:mod:`.heartbeat`), and a running job is rescued:

- soon after the client that claimed it (the last entry of ``attempted_by``) stopped
  heart-beating: its row is older than ``dead_client_after``, or marked dead by a
  clean shutdown; a slow job of a live client is left alone;
- in any case once it has been running for ``rescue_stuck_jobs_after``: the backstop,
  and the only rule for jobs claimed by clients with no liveness row (River's Go
  processes), which are never judged by liveness.

A rescued job becomes ``retryable`` and due at once (``discarded`` when it has no
attempt left, ``cancelled`` when cancellation was asked while it ran), with River's
"Stuck job rescued" error and ``river:rescue_count`` bumped; the attempt counter is
unchanged. If its first run was not dead after all, the completer's guard (state
still ``running``, same attempt) drops that run's late outcome, so it is recorded once.

The rescuer also deletes liveness rows of clients gone for longer than
``rescue_stuck_jobs_after`` + 1 hour, once none of their jobs is left running.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._driver import Executor
from .service import Service

__all__ = ["RescueResult", "Rescuer"]

CLIENT_ROW_GRACE = 3600.0


@dataclass(frozen=True, slots=True)
class RescueResult:
    """What one pass did."""

    retried: int = 0
    discarded: int = 0
    cancelled: int = 0
    clients_pruned: int = 0


class Rescuer(Service):
    name = "rescuer"

    def __init__(
        self,
        executor: Executor,
        *,
        dead_client_after: float = 30.0,
        rescue_stuck_jobs_after: float = 3600.0,
        interval: float | None = None,
        batch_size: int = 1000,
        liveness: bool = True,
    ) -> None:
        # Checking a few times per dead_client_after keeps detection close to it.
        if interval is None:
            interval = min(30.0, max(dead_client_after / 4, 0.1))
        super().__init__(interval=interval)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._executor = executor
        self.dead_client_after = float(dead_client_after)
        self.rescue_stuck_jobs_after = float(rescue_stuck_jobs_after)
        self.batch_size = batch_size
        self.last_result = RescueResult()
        self.liveness = liveness

    async def run_once(self) -> None:
        self.last_result = await self.rescue()

    async def rescue(self) -> RescueResult:
        """Rescue every stuck job now, then prune old liveness rows; return the counts."""
        retried = discarded = cancelled = 0
        pruned = 0
        async with self._executor.session() as ex:
            while True:
                counts = await ex.job_rescue(
                    dead_after=self.dead_client_after,
                    stuck_after=self.rescue_stuck_jobs_after,
                    limit=self.batch_size,
                    liveness=self.liveness,
                )
                retried += counts.retried
                discarded += counts.discarded
                cancelled += counts.cancelled
                if counts.total < self.batch_size:
                    break
            if self.liveness:
                pruned = await ex.client_prune(
                    older_than=self.rescue_stuck_jobs_after + CLIENT_ROW_GRACE
                )
        if retried or discarded or cancelled:
            self.log.warning(
                "rescued stuck jobs: %d to retry, %d discarded (no attempt left), %d cancelled",
                retried,
                discarded,
                cancelled,
            )
        return RescueResult(
            retried=retried, discarded=discarded, cancelled=cancelled, clients_pruned=pruned
        )
