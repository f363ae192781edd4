"""Client and queue settings are validated when the client is built, not at start()."""

from __future__ import annotations

from typing import Any

import pytest

from pyriver_async import Client, ConfigError, InvalidOptsError, JobArgs, QueueConfig, Workers


class Ping(JobArgs, kind="config_ping"):
    pass


def _workers() -> Workers:
    w = Workers()

    @w.register(Ping)
    async def ping(ctx: Any, job: Any) -> None:
        return None

    return w


@pytest.mark.parametrize("max_workers", [0, -1, 10_001, True, 1.5, "10"])
def test_queue_config_refuses_bad_max_workers(max_workers: Any) -> None:
    with pytest.raises(ConfigError):
        QueueConfig(max_workers=max_workers)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_interval": 0},
        {"dead_client_after": 0},
        {"leader_ttl": 0},
        {"rescue_stuck_jobs_after": -1},
        {"fetch_poll_interval": 0},
        {"job_timeout": 0},
        {"job_timeout": "60"},
        {"soft_stop_timeout": -1},
        {"completer_batch_size": 0},
        {"schema": ""},
        {"schema": "x" * 64},
        {"vacuum_dead_tuples": -1},
        {"vacuum_dead_tuples": True},
        {"vacuum_dead_tuples": 1.5},
    ],
    ids=repr,
)
def test_client_refuses_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Client("postgresql://unused", workers=_workers(), **kwargs)


def test_working_client_needs_workers() -> None:
    with pytest.raises(ConfigError, match="workers"):
        Client("postgresql://unused", queues={"default": QueueConfig()})


def test_queue_names_are_validated() -> None:
    with pytest.raises(InvalidOptsError):
        Client("postgresql://unused", workers=_workers(), queues={"bad name": QueueConfig()})


def test_client_takes_a_pool_or_a_dsn() -> None:
    with pytest.raises(ConfigError):
        Client(42)  # type: ignore[arg-type]


def test_registering_a_plain_def_makes_a_blocking_worker() -> None:
    # Issue 19: a plain `def` runs in a worker thread instead of being refused.
    w = Workers()
    w.register(Ping, lambda ctx, job: None)
    reg = w.get(Ping.kind)
    assert reg is not None and reg.blocking


def test_registering_an_async_def_is_not_blocking() -> None:
    reg = _workers().get(Ping.kind)
    assert reg is not None and not reg.blocking


def test_registering_a_generator_function_is_refused() -> None:
    def gen(ctx: Any, job: Any) -> Any:
        yield None

    with pytest.raises(ConfigError, match="generator"):
        Workers().register(Ping, gen)


def test_registering_a_kind_twice_is_refused() -> None:
    w = _workers()
    with pytest.raises(ConfigError, match="already registered"):

        @w.register(Ping)
        async def again(ctx: Any, job: Any) -> None:
            return None
