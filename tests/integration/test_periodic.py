"""Periodic jobs: schedules (cron with time zones, intervals), once per run across leaders."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from pyriver_async import Client, ConfigError, InsertOpts, JobArgs, UniqueOpts
from pyriver_async._maintenance.periodic import PeriodicEnqueuer
from pyriver_async._periodic import CronSchedule, IntervalSchedule, PeriodicJob, PeriodicJobs
from tests._support import db_executor, eventually

PARIS = ZoneInfo("Europe/Paris")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


class Tick(JobArgs, kind="periodic_tick"):
    label: str = ""


class Report(JobArgs, kind="periodic_report"):
    pass


# -- schedules ---------------------------------------------------------------------


def runs_between(
    schedule: CronSchedule | IntervalSchedule, start: datetime, end: datetime
) -> list[datetime]:
    out = []
    t = schedule.next_after(start)
    while t < end:
        out.append(t)
        t = schedule.next_after(t)
    return out


def test_daily_cron_runs_once_on_a_spring_forward_day_at_the_jump() -> None:
    # 2024-03-31, Paris: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night.
    s = CronSchedule("30 2 * * *", PARIS)
    assert runs_between(s, utc(2024, 3, 29, 12), utc(2024, 4, 1, 12)) == [
        utc(2024, 3, 30, 1, 30),  # 02:30 CET
        utc(2024, 3, 31, 1, 0),  # 03:00 CEST, the moment the clock jumps
        utc(2024, 4, 1, 0, 30),  # 02:30 CEST
    ]


def test_daily_cron_runs_once_on_a_fall_back_day_at_the_first_occurrence() -> None:
    # 2024-10-27, Paris: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    s = CronSchedule("30 2 * * *", PARIS)
    assert runs_between(s, utc(2024, 10, 25, 12), utc(2024, 10, 28, 12)) == [
        utc(2024, 10, 26, 0, 30),  # 02:30 CEST
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST, first of the two
        utc(2024, 10, 28, 1, 30),  # 02:30 CET
    ]


def test_hourly_cron_follows_real_time_through_both_transitions() -> None:
    s = CronSchedule("0 * * * *", PARIS)
    # The local day of the fall-back has 25 hours, the spring-forward one 23.
    fall = runs_between(s, utc(2024, 10, 26, 21, 59), utc(2024, 10, 27, 22, 59))
    assert len(fall) == 25
    assert utc(2024, 10, 27, 0) in fall and utc(2024, 10, 27, 1) in fall
    spring = runs_between(s, utc(2024, 3, 30, 22, 59), utc(2024, 3, 31, 21, 59))
    assert len(spring) == 23


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 * * * *", "*/20 2 * * *", "0 9 * * MON-FRI"])
@pytest.mark.parametrize("day", [utc(2024, 3, 30, 20), utc(2024, 10, 26, 20)])
def test_latest_run_agrees_with_the_run_sequence(expr: str, day: datetime) -> None:
    s = CronSchedule(expr, PARIS)
    known = set(runs_between(s, day - timedelta(days=8), day + timedelta(days=2)))
    t = day
    while t < day + timedelta(hours=12):
        latest = s.latest_at_or_before(t)
        assert latest is not None and latest <= t
        assert latest in known
        assert s.next_after(latest) > t
        t += timedelta(minutes=7, seconds=13)
    exact = sorted(known)[5]
    assert s.latest_at_or_before(exact) == exact


def test_interval_runs_on_a_grid_counted_from_the_epoch() -> None:
    s = IntervalSchedule(timedelta(minutes=5))
    t = utc(2026, 5, 1, 12, 3, 10)
    assert s.latest_at_or_before(t) == utc(2026, 5, 1, 12, 0)
    assert s.next_after(t) == utc(2026, 5, 1, 12, 5)
    assert s.next_after(utc(2026, 5, 1, 12, 5)) == utc(2026, 5, 1, 12, 10)
    assert s.latest_at_or_before(utc(2026, 5, 1, 12, 5)) == utc(2026, 5, 1, 12, 5)


# -- PeriodicJob -------------------------------------------------------------------


def test_default_id_is_kind_and_schedule() -> None:
    assert PeriodicJob("0 9 * * MON-FRI", Report).id == "periodic_report@0 9 * * MON-FRI"
    paris = PeriodicJob("0  9 * * *", Report, tz=PARIS)
    assert paris.id == "periodic_report@0 9 * * * Europe/Paris"
    assert PeriodicJob("0 9 * * *", Report, tz=UTC).id == "periodic_report@0 9 * * *"
    assert PeriodicJob(timedelta(minutes=5), Tick).id == "periodic_tick@every 300s"
    assert PeriodicJob(1.5, Tick).id == "periodic_tick@every 1.5s"
    assert PeriodicJob(60, Tick, id="mine").id == "mine"


def test_default_id_of_a_factory_function_is_learnt_from_its_args() -> None:
    calls = []

    def make() -> Tick:
        calls.append(1)
        return Tick(label="x")

    job = PeriodicJob(60, make)
    assert calls == []  # not called until needed
    assert job.id == "periodic_tick@every 60s"


@pytest.mark.parametrize(
    ("schedule", "kwargs", "message"),
    [
        ("not a cron", {}, "invalid cron expression"),
        (timedelta(0), {}, "must be positive"),
        (60, {"tz": PARIS}, "tz applies to cron schedules"),
        (60, {"opts": InsertOpts(unique=UniqueOpts(by_args=True))}, "already unique"),
        (60, {"id": ""}, "non-empty string"),
        ([1], {}, "schedule must be"),
    ],
)
def test_invalid_periodic_jobs_are_refused(
    schedule: object, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PeriodicJob(schedule, Tick, **kwargs)  # type: ignore[arg-type]


def test_two_periodic_jobs_with_one_id_are_refused() -> None:
    jobs = PeriodicJobs([PeriodicJob(60, Tick)])
    with pytest.raises(ConfigError, match="explicit id"):
        jobs.add(PeriodicJob(60, Tick))
    jobs.add(PeriodicJob(60, Tick, id="tick-2"))
    assert len(jobs) == 2


# -- the enqueuer, on a clock the test moves -----------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def enqueuer(
    pool: asyncpg.Pool, jobs: PeriodicJobs, clock: Clock, **kwargs: float
) -> PeriodicEnqueuer:
    return PeriodicEnqueuer(db_executor(pool), jobs, clock=clock, **kwargs)


async def runs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, kind, queue, priority, metadata, unique_states::int AS unique_states, "
        "metadata ->> 'pyriver:periodic_run_at' AS run_at "
        "FROM river_job ORDER BY id"
    )


async def test_new_leader_inserts_the_missed_run_and_a_second_one_does_not_double_it(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    jobs = PeriodicJobs([PeriodicJob("0 9 * * *", Report, opts=InsertOpts(queue="reports"))])
    clock = Clock(utc(2026, 5, 4, 9, 0, 40))  # the 09:00 run was due 40 s ago

    await enqueuer(pool, jobs, clock).run_once()
    [run] = await runs(conn)
    assert run["kind"] == "periodic_report" and run["queue"] == "reports"
    assert run["run_at"] == "2026-05-04T09:00:00.000000Z"
    assert json.loads(run["metadata"])["river:periodic_job_id"] == "periodic_report@0 9 * * *"
    assert run["unique_states"] == 255

    # Another leader (or this one restarted) a little later: the same run, not a new one.
    clock.now += timedelta(seconds=5)
    second = enqueuer(pool, jobs, clock)
    await second.run_once()
    assert len(await runs(conn)) == 1
    assert second.inserted == 0


async def test_runs_older_than_the_catch_up_window_are_not_replayed(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    jobs = PeriodicJobs([PeriodicJob("0 9 * * *", Report)])
    clock = Clock(utc(2026, 5, 4, 11, 0))
    e = enqueuer(pool, jobs, clock)
    await e.run_once()
    assert await runs(conn) == []
    clock.now = utc(2026, 5, 5, 9, 0, 0, 300)
    await e.run_once()
    assert [r["run_at"] for r in await runs(conn)] == ["2026-05-05T09:00:00.000000Z"]


async def test_each_run_is_inserted_once_as_time_passes_and_a_backlog_collapses(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    jobs = PeriodicJobs([PeriodicJob(60, Tick)])
    clock = Clock(utc(2026, 5, 4, 12, 0, 30))
    e = enqueuer(pool, jobs, clock)
    await e.run_once()  # catch-up: 12:00
    for _ in range(3):
        clock.now += timedelta(seconds=60)
        await e.run_once()
        await e.run_once()  # nothing new within the same minute
    clock.now += timedelta(minutes=10)  # the leader was stalled: only the latest run
    await e.run_once()
    assert [r["run_at"][11:16] for r in await runs(conn)] == [
        "12:00",
        "12:01",
        "12:02",
        "12:03",
        "12:13",
    ]


async def test_two_leaders_at_once_still_insert_each_run_once(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    jobs = PeriodicJobs([PeriodicJob(10, Tick)])
    clock = Clock(utc(2026, 5, 4, 12, 0, 1))
    a, b = enqueuer(pool, jobs, clock), enqueuer(pool, jobs, clock)
    for _ in range(6):
        await asyncio.gather(a.run_once(), b.run_once())
        clock.now += timedelta(seconds=10)
    assert len(await runs(conn)) == 6
    assert a.inserted + b.inserted == 6


async def test_run_on_start_inserts_one_run_when_the_leader_starts(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    jobs = PeriodicJobs([PeriodicJob("0 9 * * *", Report, run_on_start=True)])
    clock = Clock(utc(2026, 5, 4, 15, 12, 7))
    e = enqueuer(pool, jobs, clock)
    await e.run_once()
    await e.run_once()
    assert [r["run_at"] for r in await runs(conn)] == ["2026-05-04T15:12:07.000000Z"]


async def test_jobs_added_at_runtime_start_with_their_next_run_and_removed_ones_stop(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    jobs = PeriodicJobs()
    clock = Clock(utc(2026, 5, 4, 12, 0, 30))
    e = enqueuer(pool, jobs, clock)
    await e.run_once()
    handle = jobs.add(PeriodicJob(60, Tick))
    await e.run_once()
    assert await runs(conn) == []  # nothing was missed: it did not exist
    clock.now += timedelta(seconds=60)
    await e.run_once()
    assert len(await runs(conn)) == 1
    assert jobs.remove(handle) and not jobs.remove(handle)
    clock.now += timedelta(seconds=60)
    await e.run_once()
    assert len(await runs(conn)) == 1


async def test_a_failing_args_factory_skips_that_run_only(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    fail = [True]

    def make() -> Tick:
        if fail[0]:
            raise RuntimeError("no data yet")
        return Tick(label="ok")

    jobs = PeriodicJobs([PeriodicJob(60, make, id="flaky")])
    clock = Clock(utc(2026, 5, 4, 12, 0, 30))
    e = enqueuer(pool, jobs, clock)
    await e.run_once()
    assert await runs(conn) == []
    fail[0] = False
    clock.now += timedelta(seconds=60)
    await e.run_once()
    assert [r["run_at"][11:16] for r in await runs(conn)] == ["12:01"]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (utc(2024, 3, 30, 23, 0), ["2024-03-31T01:00:00.000000Z"]),  # 03:00 CEST
        (utc(2024, 10, 26, 22, 0), ["2024-10-27T00:30:00.000000Z"]),  # first 02:30
    ],
)
async def test_a_leader_running_through_a_dst_night_inserts_the_0230_run_once(
    pool: asyncpg.Pool, conn: asyncpg.Connection, start: datetime, expected: list[str]
) -> None:
    jobs = PeriodicJobs([PeriodicJob("30 2 * * *", Report, tz=PARIS)])
    clock = Clock(start)
    e = enqueuer(pool, jobs, clock)
    for _ in range(5 * 60):  # five hours, a minute at a time
        await e.run_once()
        clock.now += timedelta(minutes=1)
    assert [r["run_at"] for r in await runs(conn)] == expected


# -- with real clients -------------------------------------------------------------


async def test_leader_picks_up_jobs_added_and_removed_while_it_runs(
    db: str, conn: asyncpg.Connection
) -> None:
    client = Client(db, leader_ttl=2.0)
    async with client:
        await eventually(lambda: client.is_leader)
        m = client._maintenance
        jobs = getattr(client, "periodic_jobs", None)
        if not isinstance(jobs, PeriodicJobs):
            jobs = m.periodic_jobs
        assert isinstance(jobs, PeriodicJobs)
        t0 = time.monotonic()
        handle = jobs.add(PeriodicJob(3600, Tick, run_on_start=True, id="added"))

        async def inserted() -> bool:
            return len(await runs(conn)) == 1

        await eventually(inserted, timeout=2)
        assert time.monotonic() - t0 < 1.0
        jobs.remove(handle)
        jobs.add(PeriodicJob(0.2, Tick, id="fast"))
        jobs.remove(jobs.handles()[-1])
        passes = m.periodic.runs
        await eventually(lambda: m.periodic.runs >= passes + 3)
        assert len(await runs(conn)) == 1


async def test_leader_change_neither_skips_nor_doubles_a_run(
    db: str, conn: asyncpg.Connection
) -> None:
    tick = PeriodicJob(0.5, Tick, id="tick")
    members = [Client(db, id=f"periodic-{i}", leader_ttl=2.0, periodic_jobs=[tick]) for i in (0, 1)]
    await asyncio.gather(*(c.start() for c in members))
    try:
        await eventually(lambda: any(c.is_leader for c in members))
        first = next(c for c in members if c.is_leader)
        other = next(c for c in members if c is not first)

        async def count_at_least(n: int) -> bool:
            return len(await runs(conn)) >= n

        await eventually(lambda: count_at_least(3))
        await first.stop()
        await eventually(lambda: other.is_leader, timeout=3)
        n = len(await runs(conn))
        await eventually(lambda: count_at_least(n + 3))
    finally:
        await asyncio.gather(*(c.stop() for c in members))
    stamps = sorted(datetime.fromisoformat(r["run_at"]) for r in await runs(conn))
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(stamps)}
    assert gaps == {0.5}, f"runs not one per half second: {stamps}"
    ids = {json.loads(r["metadata"])["river:periodic_job_id"] for r in await runs(conn)}
    assert ids == {"tick"}
