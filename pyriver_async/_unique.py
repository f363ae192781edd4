"""River-compatible unique keys: sha256 of ``&kind=…&args=…&period=…&queue=…``."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import msgspec

from ._args import UniqueOpts

_YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)
_raw_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encode = msgspec.json.encode


def sorted_args_json(encoded_args: bytes) -> bytes:
    """The args object with its top-level keys sorted, values exactly as encoded.

    Args that are not a JSON object (a Struct with ``array_like=True``) are used as
    encoded: their order is already fixed by the class.
    """
    if not encoded_args.startswith(b"{"):
        return encoded_args
    obj = _raw_decoder.decode(encoded_args)
    parts = [_encode(k) + b":" + bytes(obj[k]) for k in sorted(obj)]
    return b"{" + b",".join(parts) + b"}"


def period_lower_bound(now: datetime, period: timedelta) -> datetime:
    """Truncate ``now`` to a multiple of ``period`` counted from year 1 (as Go's Truncate)."""
    since = now.astimezone(UTC) - _YEAR_ONE
    return _YEAR_ONE + (since // period) * period


def _rfc3339(t: datetime) -> str:
    """Go's ``time.RFC3339`` for a UTC time: whole seconds, four-digit year, ``Z``."""
    t = t.astimezone(UTC)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}Z"


def unique_key(
    kind: str, queue: str, encoded_args: bytes, opts: UniqueOpts, now: datetime
) -> bytes:
    key = "&kind=" + kind
    out = key.encode()
    if opts.by_args:
        out += b"&args=" + sorted_args_json(encoded_args)
    period = opts.period
    if period is not None:
        out += b"&period=" + _rfc3339(period_lower_bound(now, period)).encode()
    if opts.by_queue:
        out += b"&queue=" + queue.encode()
    return hashlib.sha256(out).digest()
