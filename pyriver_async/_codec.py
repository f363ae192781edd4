"""Turning rows into Jobs and job options into insert parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from ._args import InsertOpts, JobArgs, validate_queue
from ._errors import InvalidArgsError, InvalidOptsError
from ._job import AttemptError, Job, JobState
from ._unique import unique_key

_encode = msgspec.json.encode
_attempt_error_decoder = msgspec.json.Decoder(AttemptError)
_metadata_decoder = msgspec.json.Decoder(dict[str, Any])
_STATES = {s.value: s for s in JobState}

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 1
DEFAULT_MAX_ATTEMPTS = 25


def decode_errors(raw: list[str] | None) -> list[AttemptError]:
    if not raw:
        return []
    out = []
    for e in raw:
        try:
            out.append(_attempt_error_decoder.decode(e))
        except msgspec.DecodeError:
            # A row another writer shaped differently: keep what can be read.
            out.append(AttemptError(at=datetime.now(UTC), attempt=0, error=str(e)))
    return out


def decode_metadata(raw: str | None) -> dict[str, Any]:
    if not raw or raw == "{}":
        return {}
    try:
        return _metadata_decoder.decode(raw)
    except msgspec.DecodeError:
        return {}


def job_from_record(rec: asyncpg.Record, args: Any) -> Job[Any]:
    """Build a Job from a row of JOB_COLUMNS, with ``args`` already decoded."""
    return Job(
        id=rec[0],
        args=args,
        kind=rec[2],
        queue=rec[3],
        state=_STATES[rec[4]],
        priority=rec[5],
        attempt=rec[6],
        max_attempts=rec[7],
        scheduled_at=rec[8],
        created_at=rec[9],
        attempted_at=rec[10],
        finalized_at=rec[11],
        attempted_by=rec[12] or [],
        errors=decode_errors(rec[13]),
        metadata=decode_metadata(rec[14]),
        tags=rec[15] or [],
        unique_key=rec[16],
        unique_states=rec[17],
    )


def args_from_record(rec: asyncpg.Record) -> Any:
    """The args of a row decoded into its registered JobArgs class, else a plain dict."""
    from ._args import kind_registry

    cls = kind_registry.get(rec[2])
    raw = rec[1]
    if cls is not None:
        try:
            return msgspec.json.decode(raw, type=cls)
        except msgspec.DecodeError:
            pass
    return msgspec.json.decode(raw)


@dataclass(slots=True)
class InsertParams:
    """One job, validated and encoded, ready for the insert statement."""

    args: JobArgs
    encoded_args: str
    kind: str
    max_attempts: int
    metadata: str
    priority: int
    queue: str
    scheduled_at: datetime | None
    tags: list[str]
    unique_key: bytes | None
    unique_states: int | None


def _merge(explicit: InsertOpts | None, from_args: InsertOpts | None) -> InsertOpts | None:
    if from_args is None:
        return explicit
    if explicit is None:
        return from_args
    values = {}
    for name in InsertOpts.__dataclass_fields__:
        v = getattr(explicit, name)
        values[name] = v if v is not None else getattr(from_args, name)
    if values["scheduled_at"] is not None and values["delay"] is not None:
        # The explicit one of the two wins.
        if explicit.scheduled_at is not None:
            values["delay"] = None
        else:
            values["scheduled_at"] = None
    return InsertOpts(**values)


def build_insert_params(
    args: JobArgs, opts: InsertOpts | None, now: datetime | None = None
) -> InsertParams:
    """Validate and encode one job. Raises before anything touches the database."""
    if not isinstance(args, JobArgs):
        raise InvalidArgsError(
            f"insert() takes a JobArgs instance, got {type(args).__name__}; "
            'define `class MyArgs(JobArgs, kind="my_kind")`'
        )
    if opts is not None and not isinstance(opts, InsertOpts):
        raise InvalidOptsError(f"opts must be an InsertOpts, got {type(opts).__name__}")
    o = _merge(opts, args.insert_opts())
    kind = type(args).kind
    try:
        encoded = _encode(args)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgsError(f"args of kind {kind!r} cannot be encoded as JSON: {exc}") from exc
    if b"\\u0000" in encoded:
        # PostgreSQL's jsonb cannot store a NUL character.
        raise InvalidArgsError(f"args of kind {kind!r} contain a NUL character, which jsonb refuses")
    queue = DEFAULT_QUEUE
    priority = DEFAULT_PRIORITY
    max_attempts = DEFAULT_MAX_ATTEMPTS
    scheduled_at: datetime | None = None
    tags: list[str] = []
    metadata = "{}"
    ukey: bytes | None = None
    ustates: int | None = None
    if o is not None:
        if o.queue is not None:
            queue = o.queue
        if o.priority is not None:
            priority = o.priority
        if o.max_attempts is not None:
            max_attempts = o.max_attempts
        if o.scheduled_at is not None:
            scheduled_at = o.scheduled_at
        elif o.delay is not None:
            d = o.delay if isinstance(o.delay, timedelta) else timedelta(seconds=o.delay)
            if d > timedelta(0):
                scheduled_at = (now or datetime.now(UTC)) + d
        if o.tags is not None:
            tags = list(o.tags)
        if o.metadata is not None:
            metadata = _encode_metadata(o.metadata, kind)
        if o.unique is not None:
            ukey = unique_key(kind, queue, encoded, o.unique, now or datetime.now(UTC))
            ustates = o.unique.states_mask
    validate_queue(queue)
    return InsertParams(
        args=args,
        encoded_args=encoded.decode(),
        kind=kind,
        max_attempts=max_attempts,
        metadata=metadata,
        priority=priority,
        queue=queue,
        scheduled_at=scheduled_at,
        tags=tags,
        unique_key=ukey,
        unique_states=ustates,
    )


def _encode_metadata(metadata: Mapping[str, Any], kind: str) -> str:
    try:
        raw = _encode(dict(metadata))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidOptsError(f"metadata of a {kind!r} job cannot be encoded: {exc}") from exc
    if b"\\u0000" in raw:
        raise InvalidOptsError("metadata contains a NUL character, which jsonb refuses")
    return raw.decode()
