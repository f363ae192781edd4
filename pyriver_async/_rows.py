"""Job rows (``JOB_COLUMNS`` order, read by named index) turned into :class:`Job`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from ._args import kind_registry
from ._driver import JobRow
from ._driver.columns import (
    ARGS,
    ATTEMPT,
    ATTEMPTED_AT,
    ATTEMPTED_BY,
    CREATED_AT,
    ERRORS,
    FINALIZED_AT,
    ID,
    KIND,
    MAX_ATTEMPTS,
    METADATA,
    PRIORITY,
    QUEUE,
    SCHEDULED_AT,
    STATE,
    TAGS,
    UNIQUE_KEY,
    UNIQUE_STATES,
)
from ._job import AttemptError, Job, JobState

__all__ = ["args_from_row", "decode_errors", "decode_metadata", "job_from_row"]

_attempt_error_decoder = msgspec.json.Decoder(AttemptError)
_metadata_decoder = msgspec.json.Decoder(dict[str, Any])
_STATES = {s.value: s for s in JobState}


def decode_errors(raw: list[str] | None) -> list[AttemptError]:
    if not raw:
        return []
    out = []
    for e in raw:
        try:
            out.append(_attempt_error_decoder.decode(e))
        except (msgspec.DecodeError, RecursionError):
            # A row another writer shaped differently: keep what can be read.
            out.append(AttemptError(at=datetime.now(UTC), attempt=0, error=str(e)))
    return out


def decode_metadata(raw: str | None) -> dict[str, Any]:
    if not raw or raw == "{}":
        return {}
    try:
        return _metadata_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # another writer's shape or nesting
        return {}


def job_from_row(row: JobRow, args: Any) -> Job[Any]:
    """Build a Job from a job row, with ``args`` already decoded."""
    errors = row[ERRORS]
    metadata = row[METADATA]
    return Job(
        row[ID],
        args,
        row[KIND],
        row[QUEUE],
        _STATES[row[STATE]],
        row[PRIORITY],
        row[ATTEMPT],
        row[MAX_ATTEMPTS],
        row[SCHEDULED_AT],
        row[CREATED_AT],
        row[ATTEMPTED_AT],
        row[FINALIZED_AT],
        row[ATTEMPTED_BY] or [],
        decode_errors(errors) if errors else [],
        decode_metadata(metadata) if metadata and metadata != "{}" else {},
        row[TAGS] or [],
        row[UNIQUE_KEY],
        row[UNIQUE_STATES],
    )


def args_from_row(row: JobRow) -> Any:
    """The args of a row decoded into its registered JobArgs class, else plain JSON values.

    A row no decoder can read (another writer nested it deeper than msgspec recurses)
    gives its JSON text: reading a job never fails on its args.
    """
    cls = kind_registry.get(row[KIND])
    raw = row[ARGS]
    if cls is not None:
        try:
            return msgspec.json.decode(raw, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return raw


def read_job(row: JobRow) -> Job[Any]:
    """A whole job from its row: args decoded as :func:`args_from_row` does."""
    return job_from_row(row, args_from_row(row))
