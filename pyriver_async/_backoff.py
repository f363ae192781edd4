"""Retry backoff: River's default, (recorded errors + 1) ** 4 seconds with ±10 % jitter."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from ._job import Job

__all__ = ["default_retry_delay", "default_retry_delay_for", "reconnect_delays"]

# Past this many errors the delay stops growing (24**4 s is ~3.8 days).
_MAX_COUNTED_ERRORS = 24


def default_retry_delay(job: Job[Any]) -> timedelta:
    """Delay before the next attempt of ``job``, which has just failed.

    Counted on recorded errors, not attempts, so snoozes do not shorten it.
    """
    return default_retry_delay_for(len(job.errors) + 1)


def default_retry_delay_for(n: int) -> timedelta:
    """River's backoff for the ``n``-th failure: n**4 seconds, +-10 % jitter."""
    n = max(1, min(n, _MAX_COUNTED_ERRORS + 1))
    return timedelta(seconds=float(n**4) * random.uniform(0.9, 1.1))


def reconnect_delays(first: float = 0.1, maximum: float = 5.0) -> Iterator[float]:
    """Exponential backoff with jitter for reconnect loops (an endless generator)."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, maximum)
