"""The owner of a client's maintenance services.

Every started client runs the heartbeat (its liveness row), the queue keeper (its
``river_queue`` rows) and the leader elector. The client that wins the election also
runs the scheduler, the rescuer, the cleaner, the periodic enqueuer and the
vacuumer, until it stops leading. :meth:`Maintenance.stop` reads top to bottom as
the shutdown order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .._config import ClientConfig
from .._driver import Executor
from .._periodic import CATCH_UP_WINDOW, PeriodicJob, PeriodicJobs
from .cleaner import Cleaner
from .heartbeat import Heartbeat
from .leader import LeaderElector
from .periodic import PeriodicEnqueuer
from .queues import QueueKeeper
from .rescuer import Rescuer
from .scheduler import Scheduler
from .service import Service
from .vacuumer import Vacuumer

__all__ = ["Maintenance"]

log = logging.getLogger("pyriver_async.maintenance")


class Maintenance:
    """Heartbeat, queue bookkeeping and leader election for one client, and the
    leader-only services while it leads.

    ``periodic_jobs`` is a :class:`PeriodicJobs` (kept as is, so changes made to it at
    runtime are followed) or any iterable of :class:`PeriodicJob`. ``liveness`` is
    False on a schema River migrated (no pyriver_client table): stuck jobs are then
    rescued by age alone. The keyword arguments shorten the services' intervals
    (tests); the defaults suit production.
    """

    def __init__(
        self,
        executor: Executor,
        config: ClientConfig,
        *,
        client_id: str,
        queues: Sequence[str] = (),
        periodic_jobs: PeriodicJobs | Iterable[PeriodicJob] = (),
        liveness: bool = True,
        pool_size: int = 10,
        heartbeat_executor: Executor | None = None,
        status: Callable[[], Mapping[str, Any]] | None = None,
        busy: Callable[[], bool] | None = None,
        scheduler_interval: float = 1.0,
        rescuer_interval: float | None = None,
        cleaner_interval: float = 30.0,
        queue_retention: float = 86400.0,
        periodic_max_wait: float = 1.0,
        vacuumer_interval: float = 5.0,
    ) -> None:
        self.client_id = client_id
        self.periodic_jobs = (
            periodic_jobs
            if isinstance(periodic_jobs, PeriodicJobs)
            else PeriodicJobs(periodic_jobs)
        )
        heartbeat_interval = config.heartbeat_interval
        dead_client_after = config.dead_client_after
        if dead_client_after < 2 * heartbeat_interval:
            log.warning(
                "dead_client_after (%.1fs) is less than two heartbeat intervals (%.1fs): "
                "live clients may be judged dead between two beats",
                dead_client_after,
                heartbeat_interval,
            )
        retention = dict(config.retention)
        self.heartbeat = Heartbeat(
            heartbeat_executor or executor,
            client_id,
            queues,
            interval=heartbeat_interval,
            dead_after=dead_client_after,
            liveness=liveness,
            status=status,
        )
        self.queue_keeper = QueueKeeper(executor, queues, interval=heartbeat_interval)
        self.elector = LeaderElector(
            executor,
            client_id,
            ttl=config.leader_ttl,
            on_elected=self._start_leader_services,
            on_lost=self._stop_leader_services,
        )
        self.scheduler = Scheduler(executor, interval=scheduler_interval)
        self.rescuer = Rescuer(
            executor,
            dead_client_after=dead_client_after,
            rescue_stuck_jobs_after=config.rescue_stuck_jobs_after,
            interval=rescuer_interval,
            liveness=liveness,
        )
        self.cleaner = Cleaner(
            executor,
            retention=retention,
            queue_retention=queue_retention,
            interval=cleaner_interval,
            busy=busy,
        )
        # A run deleted by the cleaner must not be caught up again.
        kept = [v for v in retention.values() if v]
        self.periodic = PeriodicEnqueuer(
            executor,
            self.periodic_jobs,
            max_wait=periodic_max_wait,
            catch_up_window=min([CATCH_UP_WINDOW, *kept]),
        )
        self.vacuumer = (
            Vacuumer(
                executor,
                pool_size=pool_size,
                dead_tuples=config.vacuum_dead_tuples,
                interval=vacuumer_interval,
            )
            if config.vacuum_dead_tuples > 0
            else None
        )
        for service in self.leader_services:
            service.guard = self.elector.is_leader_now
        self._started = False

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    @property
    def leader_services(self) -> tuple[Service, ...]:
        services: tuple[Service, ...] = (self.scheduler, self.rescuer, self.cleaner, self.periodic)
        if self.vacuumer is not None:
            services += (self.vacuumer,)
        return services

    async def beat_now(self) -> None:
        """One heartbeat now, best effort (a failure is logged; the service retries)."""
        try:
            await self.heartbeat.run_once()
        except Exception as exc:
            log.warning(
                "first heartbeat failed (%s: %s); the heartbeat retries", type(exc).__name__, exc
            )

    async def start(self) -> None:
        """Start the services every client runs; returns at once."""
        if self._started:
            return
        self._started = True
        self.heartbeat.start()
        if self.queue_keeper.queues:
            self.queue_keeper.start()
        self.elector.start()

    async def stop(self) -> None:
        """Stop everything; resign when leading; mark this client dead."""
        if not self._started:
            return
        self._started = False
        await asyncio.gather(self.heartbeat.stop(), self.queue_keeper.stop())
        # Before resigning, so the next leader's first rescue pass already sees it.
        try:
            async with asyncio.timeout(5.0):
                await self.heartbeat.mark_dead()
        except Exception as exc:
            log.warning(
                "could not mark client %s stopped (%s: %s); jobs it abandoned are rescued "
                "after dead_client_after",
                self.client_id,
                type(exc).__name__,
                exc,
            )
        await self.elector.stop()
        # The elector stops them on resigning; this covers a stop that interrupted it.
        await self._stop_leader_services()

    def on_leadership_message(self, msg: dict[str, Any]) -> None:
        """A notification from the leadership channel (the client's notifier calls this)."""
        self.elector.on_message(msg)

    async def _start_leader_services(self) -> None:
        for service in self.leader_services:
            service.start()

    async def _stop_leader_services(self) -> None:
        # Cancelled together, at once: a client that no longer leads must not go on.
        await asyncio.gather(*(s.stop() for s in self.leader_services))
