"""The producer: one per queue. Claims batches of jobs sized to free slots and runs them.

Wake-ups: an insert notification for the queue (debounced by ``fetch_cooldown``), a
slot freed while the last claim came back full (a backlog), and ``poll_interval`` as
the safety net when notifications are lost or the notifier is down.

Jobs run on long-lived worker coroutines (slots), started as they are first needed and
kept up to ``max_workers``: a claimed row is handed to an idle slot. A task per job
cost ~5 us more a job on Python 3.11 (task creation, its registration in asyncio's
WeakSet of tasks, a done callback), a third of the library's own CPU per no-op job.
A job is cancelled (by request, timeout or shutdown) by cancelling its slot's task;
the slot reports the outcome, clears the cancellation and takes the next job.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial

from ._aio import wait_event
from ._backoff import reconnect_delays
from ._claim import Claimer, ClaimResult, PlainClaimer
from ._completer import Completer
from ._config import QueueConfig
from ._driver import Executor as DriverExecutor
from ._driver import JobRow
from ._driver.columns import ATTEMPT, ATTEMPTED_AT, ID, KIND, MAX_ATTEMPTS, METADATA, QUEUE
from ._errors import DatabaseError, MigrationError, TransientDatabaseError
from ._executor import Executor, cancelled_outcome
from ._outcome import CancelReason, Outcome

__all__ = ["Producer"]

log = logging.getLogger("pyriver_async.producer")

# How an ephemeral job's key reads in its metadata's JSON text: a substring test on the
# row costs less than decoding every job's metadata.
_EPHEMERAL_MARK = '"pyriver:ephemeral"'

# Kind-aware claiming: jobs of a kind nobody here works that have waited this long
# (seconds) are named in a warning, looked for at most this often, each kind at most
# once per UNCLAIMED_WARN_EVERY.
UNCLAIMED_AFTER = 300.0
UNCLAIMED_CHECK_EVERY = 60.0
UNCLAIMED_WARN_EVERY = 600.0

# A cancel's notification can arrive before the reply of the claim that took the job:
# ids heard while a claim is under way are remembered for that claim only (and at most
# this long, in seconds, at most this many), and the job is cancelled when the claim's
# rows arrive.
EARLY_CANCEL_TTL = 10.0
EARLY_CANCEL_MAX = 1024


class RecentIds:
    """A bounded set of ids, each forgotten ``ttl`` seconds after it was added (the
    oldest first when more than ``max_size`` are held)."""

    __slots__ = ("_clock", "_ids", "_max", "_ttl")

    def __init__(
        self, ttl: float, max_size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_size
        self._clock = clock
        self._ids: collections.OrderedDict[int, float] = collections.OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._ids)

    def __len__(self) -> int:
        self._expire()
        return len(self._ids)

    def __contains__(self, job_id: object) -> bool:
        self._expire()
        return job_id in self._ids

    def add(self, job_id: int) -> None:
        self._expire()
        self._ids[job_id] = self._clock() + self._ttl
        self._ids.move_to_end(job_id)
        while len(self._ids) > self._max:
            self._ids.popitem(last=False)

    def clear(self) -> None:
        self._ids.clear()

    def pop(self, job_id: int) -> bool:
        """Whether ``job_id`` is held (it is forgotten then)."""
        self._expire()
        return self._ids.pop(job_id, None) is not None

    def _expire(self) -> None:
        ids, now = self._ids, self._clock()
        while ids:
            job_id, until = next(iter(ids.items()))
            if until > now:
                return
            del ids[job_id]


class _Slot:
    """One long-lived worker coroutine and the job it runs (``rec`` None: idle).

    It owns why its current job was cancelled (``reason``): by request, timeout or
    shutdown; the first reason given wins, except that a request to cancel the job
    outranks them (the job then ends ``cancelled``, as asked).
    """

    __slots__ = ("reason", "rec", "requested", "task", "waiter")

    def __init__(self) -> None:
        self.rec: JobRow | None = None
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.reason: CancelReason | None = None
        # Cancellations the producer asked for during the current job; any more on the
        # task came from outside (asyncio.run ending, a task group) and end the slot.
        self.requested = 0

    def cancel(self, reason: CancelReason) -> None:
        if self.task is not None:
            if self.reason is None or reason is CancelReason.CANCEL:
                self.reason = reason
            self.requested += 1
            self.task.cancel()


class Producer:
    def __init__(
        self,
        queue: str,
        config: QueueConfig,
        *,
        db: DriverExecutor,
        executor: Executor,
        completer: Completer,
        client_id: str,
        fetch_cooldown: float,
        poll_interval: float,
        max_completer_backlog: int,
        claimer: Claimer | None = None,
    ) -> None:
        self.queue = queue
        self.max_workers = config.max_workers
        self._ephemeral = config.ephemeral
        self._db = db
        self._executor = executor
        self._completer = completer
        self._client_id = client_id
        self._cooldown = fetch_cooldown
        self._poll_interval = poll_interval
        self._max_backlog = max_completer_backlog
        # job id -> the slot running it; every slot not in it is idle (or starting).
        self.running: dict[int, _Slot] = {}
        self._slots: set[_Slot] = set()
        self._idle: list[_Slot] = []
        self._closing = False
        self.paused = False
        # Set by the client while the database refuses writes (a failover): no claims.
        self.held = False
        self._wake = asyncio.Event()
        self._notified = False
        self._backlog = False
        self._stopping = False
        self._last_fetch = 0.0
        self._task: asyncio.Task[None] | None = None
        self._acquiring = False
        self._orphans_possible = False
        # (monotonic end time, job id, kind) of recently finished jobs, for the loop
        # monitor: a job that blocked the loop has often returned by the time it looks.
        self.recent_done: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=256)
        self._all_done = asyncio.Event()
        self._all_done.set()
        self.claimed = 0
        # Flow control (_claim.py): how this queue is claimed; whether the last claim
        # left jobs waiting on a limit (then a freed slot is a reason to claim again);
        # the timer for when a rate limit next has room.
        self.claimer: Claimer = claimer or PlainClaimer(queue, None)
        self._limited = False
        self._refill: asyncio.TimerHandle | None = None
        self._in_sequence: set[int] = set()  # claimed here, outcome not written yet
        self._next_kind_check = time.monotonic() + UNCLAIMED_CHECK_EVERY
        self._warned_kinds: dict[str, float] = {}
        self._early_cancels = RecentIds(EARLY_CANCEL_TTL, EARLY_CANCEL_MAX)
        self._claiming = False  # from sending a claim until its rows have slots
        if self.claimer.locked:
            completer.on_written(self._outcomes_written)

    # -- signals from other parts -------------------------------------------------

    def notify(self) -> None:
        """An insert (or the scheduler) made jobs available in this queue."""
        self._notified = True
        self._wake.set()

    def set_paused(self, paused: bool) -> None:
        if self.paused != paused:
            log.info("queue %r %s", self.queue, "paused" if paused else "resumed")
        self.paused = paused
        if not paused:
            self.notify()

    def set_held(self, held: bool) -> None:
        """Stop claiming while the database is read-only (a failover); resume after."""
        self.held = held
        if not held:
            self.look_for_orphans()

    def look_for_orphans(self) -> None:
        """Before the next claim, give back jobs claimed here that this client no
        longer holds. After a failover, writes the old primary took after the
        promotion are gone: a job whose completion it recorded shows as running on
        the new one, under this client's id (the client calls this when a connection
        was lost, and when a read-only episode ends)."""
        self._orphans_possible = True
        self.notify()

    def cancel_job(self, job_id: int) -> bool:
        """Cancel the job if it runs here (True). If not while a claim is under way,
        remember its id until that claim's rows arrive: the claim may have taken the
        job with its reply not back yet (the cancel's notification overtook it); the
        job is cancelled then. A cancel heard between claims is for a job running
        elsewhere: remembering it would cancel the job if it is retried and claimed
        here later."""
        slot = self.running.get(job_id)
        if slot is None or slot.task is None:
            if self._claiming and not self._stopping:
                self._early_cancels.add(job_id)
            return False
        slot.cancel(CancelReason.CANCEL)
        return True

    @property
    def backlog(self) -> bool:
        """True while the last claim came back full: more jobs are waiting."""
        return self._backlog

    @property
    def job_names(self) -> dict[int, str]:
        """Ids and kinds of the jobs running now."""
        return {job_id: slot.rec[KIND] for job_id, slot in self.running.items() if slot.rec}

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pyriver-producer-{self.queue}")

    def stop_fetching(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._acquiring and self._task is not None:
            # Waiting for a pool connection the application may hold for ever: no claim
            # has been sent yet, so nothing is left half done.
            self._task.cancel()

    async def wait_fetch_loop(self) -> None:
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def wait_jobs(self) -> None:
        await self._all_done.wait()

    def cancel_running(self) -> None:
        for slot in list(self.running.values()):
            slot.cancel(CancelReason.SHUTDOWN)

    def close(self) -> None:
        """End the idle worker coroutines (after the jobs have ended or been abandoned).

        A slot still running a job that ignores cancellation is left to it.
        """
        self._closing = True
        for slot in self._idle:
            if slot.task is not None:
                slot.task.cancel()
        self._idle.clear()

    # -- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        delays = None
        while not self._stopping:
            try:
                await self._wait_for_reason()
                if self._stopping:
                    break
                await self._fetch()
                delays = None
            except TransientDatabaseError as exc:
                # The claim may have committed with its reply lost: look for such rows
                # once the database answers again (after a refused statement there are
                # none, and the look finds nothing).
                self._orphans_possible = True
                first = delays is None
                delays = delays or reconnect_delays(0.05, 5.0)
                delay = next(delays)
                (log.warning if first else log.debug)(
                    "queue %r: claiming jobs failed (%s); retrying with backoff",
                    self.queue,
                    exc,
                )
                await self._sleep_or_stop(delay)
            except (DatabaseError, MigrationError) as exc:
                log.error("queue %r: claim query failed: %s", self.queue, exc)
                await self._sleep_or_stop(self._poll_interval)
            except Exception:
                # A driver state nobody foresaw must not silently end the queue's work.
                self._orphans_possible = True
                delays = delays or reconnect_delays(0.05, 5.0)
                log.exception("queue %r: unexpected error while claiming jobs", self.queue)
                await self._sleep_or_stop(next(delays))

    async def _sleep_or_stop(self, delay: float) -> None:
        self._wake.clear()
        await wait_event(self._wake, delay)

    def _free(self) -> int:
        return self.max_workers - len(self.running)

    async def _wait_for_reason(self) -> None:
        deadline = time.monotonic() + self._poll_interval
        while not self._stopping:
            free = self._free()
            can = (
                free > 0
                and not self.paused
                and not self.held
                and self._completer.backlog < self._max_backlog
                and not self._completer.failing
            )
            if can and (self._backlog or self._notified):
                if self._notified and not self._backlog:
                    # Debounce bursts of notifications: at most one fetch per cooldown.
                    wait = self._last_fetch + self._cooldown - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if can:
                    return
                deadline = time.monotonic() + self._poll_interval
                continue
            self._wake.clear()
            await wait_event(self._wake, remaining)

    async def _fetch(self) -> None:
        limit = self._free()
        if limit <= 0:
            return
        self._notified = False
        self._last_fetch = time.monotonic()
        self._claiming = True
        try:
            await self._claim_and_hand_out(limit)
        finally:
            self._claiming = False
            self._early_cancels.clear()  # for this claim only

    async def _claim_and_hand_out(self, limit: int) -> None:
        result = await self._claim(limit)
        rows = result.rows
        # A claim whose scan ran out behind keys it filled claims again at once: the
        # next scan skips those keys and reaches the jobs of other keys behind them (a
        # key's backlog can fill a whole scan).
        self._backlog = len(rows) == limit or result.more
        self._limited = result.limited
        if result.refill_at is not None:
            self._wake_at(result.refill_at)
        if not rows:
            if self.claimer.kinds is not None and not result.limited:
                await self._look_for_unclaimed_kinds()
            return
        self.claimed += len(rows)
        self._all_done.clear()
        if result.in_sequence:
            self._in_sequence.update(result.in_sequence)
        if result.failed:
            rows = await self._fail_unkeyed(rows, result.failed)
        idle, running = self._idle, self.running
        for rec in rows:
            slot = idle.pop() if idle else self._new_slot()
            slot.rec = rec
            slot.reason = None
            running[rec[ID]] = slot
            if slot.waiter is not None and not slot.waiter.done():
                slot.waiter.set_result(None)
        if self._early_cancels:
            for rec in rows:
                if self._early_cancels.pop(rec[ID]):
                    # Cancelled before its first step: it ends `cancelled` unrun.
                    running[rec[ID]].cancel(CancelReason.CANCEL)

    def _new_slot(self) -> _Slot:
        slot = _Slot()
        self._slots.add(slot)
        slot.task = asyncio.create_task(self._slot_loop(slot), name=f"pyriver-worker-{self.queue}")
        slot.task.add_done_callback(partial(self._slot_ended, slot))
        return slot

    def _slot_ended(self, slot: _Slot, task: asyncio.Task[None]) -> None:
        self._slots.discard(slot)
        if slot in self._idle:
            self._idle.remove(slot)
        rec = slot.rec
        if rec is not None and self.running.get(rec[ID]) is slot:
            # Cancelled before its first step: the loop never ran to report its job.
            self._unstarted(rec, slot.reason)
            self._release(slot)

    async def _claim(self, limit: int) -> ClaimResult:
        async with contextlib.AsyncExitStack() as stack:
            # Waiting for a connection is the one wait stop() may interrupt.
            self._acquiring = True
            try:
                db = await stack.enter_async_context(self._db.session())
            finally:
                self._acquiring = False
            if self._orphans_possible:
                await self._release_orphans(db)
            claimer = self.claimer
            if not claimer.locked:
                return await claimer.claim(
                    db, limit=limit, client_id=self._client_id, done=(), running_kinds={}
                )
            # Jobs that ended here but whose outcome is not written yet are still
            # `running` in the table; they no longer hold a slot of any limit.
            return await claimer.claim(
                db,
                limit=limit,
                client_id=self._client_id,
                done=self._completer.unwritten_ids(),
                running_kinds=self.running_kinds() if claimer.counts_kinds else {},
            )

    def running_kinds(self) -> collections.Counter[str]:
        """This client's running jobs of the queue, per kind."""
        return collections.Counter(
            slot.rec[KIND] for slot in self.running.values() if slot.rec is not None
        )

    # -- flow control ------------------------------------------------------------------

    def _outcomes_written(self, outcomes: Sequence[Outcome]) -> None:
        """The completer wrote outcomes: the next job of a sequence whose job just
        ended here may have its turn now (it had to wait for that write)."""
        seq = self._in_sequence
        if not seq:
            return
        ended = False
        for o in outcomes:
            if o.job_id in seq:
                seq.discard(o.job_id)
                ended = True
        if ended and not self._stopping:
            self.notify()

    async def _fail_unkeyed(
        self, rows: list[JobRow], failed: Mapping[int, tuple[str, BaseException]]
    ) -> list[JobRow]:
        """Jobs whose partition key could not be computed fail at once, with the error
        recorded; the others run."""
        for rec in rows:
            why = failed.get(rec[ID])
            if why is not None:
                message, exc = why
                log.error("queue %r: job %d (kind %r): %s", self.queue, rec[ID], rec[KIND], message)
                outcome = await self._executor.not_started(rec, message, exc)
                outcome.attempted_at = rec[ATTEMPTED_AT]
                outcome.max_attempts = rec[MAX_ATTEMPTS]
                self._completer.add(outcome)
        return [rec for rec in rows if rec[ID] not in failed]

    async def _look_for_unclaimed_kinds(self) -> None:
        """Kind-aware claiming leaves jobs of kinds this client has no worker for; when
        the queue looks empty here, now and then, name the kinds that have waited
        long (a deploy that left no worker for them, a typo in a kind)."""
        now = time.monotonic()
        if now < self._next_kind_check:
            return
        self._next_kind_check = now + UNCLAIMED_CHECK_EVERY
        kinds = self.claimer.kinds
        assert kinds is not None
        try:
            found = await self._db.flow_unclaimed_kinds(
                queue=self.queue, kinds=kinds, older_than=UNCLAIMED_AFTER
            )
        except DatabaseError as exc:
            log.debug("queue %r: looking for unclaimed kinds failed: %s", self.queue, exc)
            return
        for kind, n, since in found:
            if self._warned_kinds.get(kind, 0.0) > now:
                continue
            self._warned_kinds[kind] = now + UNCLAIMED_WARN_EVERY
            log.warning(
                "queue %r: %s%d job(s) of kind %r wait since %s, and this client has no "
                "worker for that kind (it claims only %s). Deploy a worker that registers "
                "it, or set QueueConfig(registered_kinds_only=False) to claim every kind.",
                self.queue,
                "at least " if n >= 1000 else "",
                n,
                kind,
                since,
                ", ".join(kinds),
            )

    def _wake_at(self, when: datetime) -> None:
        """Claim again when a rate limit has room (an earlier wake-up wins)."""
        delay = max((when - datetime.now(UTC)).total_seconds(), 0.0) + 0.001
        loop = asyncio.get_running_loop()
        at = loop.time() + delay
        if self._refill is not None:
            if self._refill.when() <= at:
                return
            self._refill.cancel()
        self._refill = loop.call_at(at, self._refilled)

    def _refilled(self) -> None:
        self._refill = None
        self.notify()

    async def _release_orphans(self, db: DriverExecutor) -> None:
        """Give back jobs a claim of ours took whose reply never reached us.

        They are `running` under this client's id but neither run here nor waiting to
        have their outcome written; without this they would wait for the rescuer's
        backstop, since this client is alive and heart-beating.
        """
        mine = list(self.running) + self._completer.unwritten_ids()
        released = await db.job_release_orphans(
            queue=self.queue, client_id=self._client_id, keep=mine
        )
        self._orphans_possible = False
        if released:
            log.warning(
                "queue %r: %d claimed jobs never reached this client (a lost reply); "
                "they are available again",
                self.queue,
                released,
            )

    async def _slot_loop(self, slot: _Slot) -> None:
        task = slot.task
        assert task is not None
        loop = asyncio.get_running_loop()
        while True:
            if slot.rec is None:
                if self._closing:
                    return  # a job that ignored the shutdown has ended at last
                slot.waiter = loop.create_future()
                self._idle.append(slot)
                try:
                    await slot.waiter
                except asyncio.CancelledError:
                    rec = slot.rec
                    if rec is not None:
                        # Handed a job, cancelled before it took its first step.
                        self._unstarted(rec, slot.reason)
                        self._release(slot)
                    if self._closing:
                        return
                    if rec is None or task.cancelling() > slot.requested:
                        raise  # cancelled from outside: this worker ends
                    _clear_cancellation(task)
                    slot.requested = 0
                    continue
                finally:
                    slot.waiter = None
            rec = slot.rec
            assert rec is not None
            await self._work(slot, rec, task)

    def _unstarted(self, rec: JobRow, reason: CancelReason | None) -> None:
        """A job cancelled before its first step never runs its body: report it as the
        cancellation asked (cancelled, or given back on shutdown)."""
        outcome = cancelled_outcome(
            rec[ID], rec[ATTEMPT], rec[QUEUE], datetime.now(UTC), reason or CancelReason.SHUTDOWN
        )
        outcome.attempted_at = rec[ATTEMPTED_AT]
        outcome.max_attempts = rec[MAX_ATTEMPTS]
        self._completer.add(outcome)

    async def _work(self, slot: _Slot, rec: JobRow, task: asyncio.Task[None]) -> None:
        try:
            outcome = await self._executor.execute(rec, slot)
        except KeyboardInterrupt:
            # A real Ctrl-C (the executor lets only that one through): the process is
            # being interrupted. The job goes back as a shutdown would give it back.
            log.error(
                "job %d (kind %r) interrupted by Ctrl-C; it is given back", rec[ID], rec[KIND]
            )
            self._unstarted(rec, CancelReason.SHUTDOWN)
            self._release(slot)
            raise
        except asyncio.CancelledError:
            self._unstarted(rec, slot.reason)
            self._release(slot)
            raise
        except BaseException as exc:
            # The executor itself failed on this job (a bug, or a value nothing could
            # encode): a failure of this attempt, so that it is counted and the job
            # cannot loop; the worker goes on.
            log.exception("job %d (kind %r): running it failed in the engine", rec[ID], rec[KIND])
            outcome = await self._executor.engine_failure(rec, exc)
        outside = task.cancelling() > slot.requested
        outcome.attempted_at = rec[ATTEMPTED_AT]
        outcome.max_attempts = rec[MAX_ATTEMPTS]
        if outcome.state == "completed" and (
            self._ephemeral or _EPHEMERAL_MARK in (rec[METADATA] or "")
        ):
            outcome.ephemeral = True
        self._completer.add(outcome)
        if outcome.state == "available" and outcome.scheduled_at is not None:
            # A short snooze: look again when it becomes claimable.
            delay = (outcome.scheduled_at - datetime.now(UTC)).total_seconds()
            if delay > 0:
                asyncio.get_running_loop().call_later(delay + 0.001, self.notify)
        # Released before the pending cancellation is dealt with: a cancel asked from
        # now on finds no job here.
        self._release(slot)
        if outside:
            raise asyncio.CancelledError  # cancelled from outside: this worker ends
        if slot.requested:
            # The job was cancelled as asked (its outcome says so), or cancelled itself
            # through the client and returned before the cancellation was delivered:
            # clear it, and take a cancellation still pending.
            _clear_cancellation(task)
            slot.requested = 0
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                _clear_cancellation(task)

    def _release(self, slot: _Slot) -> None:
        rec = slot.rec
        slot.rec = None
        slot.reason = None
        if rec is not None:
            job_id = rec[ID]
            self.running.pop(job_id, None)
            self.recent_done.append((time.monotonic(), job_id, rec[KIND]))
        if not self.running:
            self._all_done.set()
        if self._limited:
            # The last claim left jobs waiting on a limit; this slot may be theirs.
            self._notified = True
        if self._backlog or self._notified:
            self._wake.set()


def _clear_cancellation(task: asyncio.Task[None]) -> None:
    while task.uncancel():
        pass
