"""Retry backoff: River's default, (recorded errors + 1) ** 4 seconds with ±10 % jitter."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from ._job import Job

__all__ = ["default_retry_delay", "reconnect_delays"]

# Past this many errors the delay stops growing (24**4 s is ~3.8 days).
_MAX_COUNTED_ERRORS = 24


def default_retry_delay(job: Job[Any]) -> timedelta:
    """Delay before the next attempt of ``job``, which has just failed.

    Counted on recorded errors, not attempts, so snoozes do not shorten it.
    """
    n = min(len(job.errors), _MAX_COUNTED_ERRORS) + 1
    base = float(n**4)
    return timedelta(seconds=base * random.uniform(0.9, 1.1))


def reconnect_delays(first: float = 0.1, maximum: float = 5.0) -> Iterator[float]:
    """Exponential backoff with jitter for reconnect loops (an endless generator)."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, maximum)
