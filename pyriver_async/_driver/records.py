"""The small typed records that cross the driver seam (besides job rows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec

from .columns import UNIQUE_KEY

__all__ = [
    "COPY_COLUMNS",
    "ActionRow",
    "ClientRow",
    "FlowClaimed",
    "FlowRules",
    "HorizonHolder",
    "InsertParams",
    "InsertedRow",
    "KeyedCandidates",
    "LeaderInfoRow",
    "LeaderRow",
    "NextIds",
    "QueueRow",
    "RecordedMigration",
    "RescueCounts",
    "ScheduleCounts",
    "TableStats",
    "insert_many_values",
    "insert_values",
    "match_inserted",
]


class InsertParams(msgspec.Struct, gc=False):
    """One job, validated and encoded, ready for the insert statement.

    A Struct, not a dataclass: a 100k batch builds one each, and a Struct is made in C
    and left out of the cyclic GC (it refers to nothing that refers back to it).
    ``args`` is the caller's JobArgs object, kept for the result.
    """

    args: Any
    encoded_args: str
    kind: str
    max_attempts: int
    metadata: str
    priority: int
    queue: str
    scheduled_at: datetime | None
    tags: Sequence[str]
    unique_key: bytes | None
    unique_states: int | None
    #: UniqueOpts.conflict_mask: what a duplicate does to a waiting job (0: nothing).
    unique_on_conflict: int = 0


# -- the insert statements' parameters, by name, for every driver (issue 17) ----------

_JSON = msgspec.json.encode


def insert_values(p: InsertParams) -> dict[str, Any]:
    """The named parameters of ``job_insert`` for one job."""
    return {
        "args": p.encoded_args,
        "kind": p.kind,
        "max_attempts": p.max_attempts,
        "metadata": p.metadata,
        "priority": p.priority,
        "queue": p.queue,
        "scheduled_at": p.scheduled_at,
        "tags": p.tags,
        "unique_key": p.unique_key,
        "unique_states": p.unique_states,
        "on_conflict": p.unique_on_conflict,
    }


def insert_many_values(ps: Sequence[InsertParams], *, sequence: str) -> dict[str, Any]:
    """The named parameters of ``job_insert_many``: one array per column, and the
    UniqueOpts.on_conflict the rows share (the caller, ``_insert``, sends rows of one
    setting per statement)."""
    assert len({p.unique_on_conflict for p in ps}) <= 1, "one on_conflict per statement"
    return {
        "args": [p.encoded_args for p in ps],
        "kind": [p.kind for p in ps],
        "max_attempts": [p.max_attempts for p in ps],
        "metadata": [p.metadata for p in ps],
        "priority": [p.priority for p in ps],
        "queue": [p.queue for p in ps],
        "scheduled_at": [p.scheduled_at for p in ps],
        # one JSON array text per row: unnest() cannot take a ragged 2-D array
        "tags": [_JSON(p.tags).decode() if p.tags else None for p in ps],
        "unique_key": [p.unique_key for p in ps],
        "unique_states": [p.unique_states for p in ps],
        "sequence": sequence,
        "on_conflict": ps[0].unique_on_conflict if ps else 0,
    }


@dataclass(frozen=True, slots=True)
class InsertedRow:
    """A job row an insert wrote (or, ``skipped``, the unique duplicate it found)."""

    row: Sequence[Any]
    skipped: bool


@dataclass(frozen=True, slots=True)
class NextIds:
    """Ids drawn from the job sequence, and the database's clock when they were."""

    ids: list[int]
    now: datetime


# The columns the COPY path writes, in the order of each record it is given.
COPY_COLUMNS = (
    "id",
    "args",
    "kind",
    "max_attempts",
    "metadata",
    "priority",
    "queue",
    "scheduled_at",
    "created_at",
    "state",
    "tags",
)


@dataclass(frozen=True, slots=True)
class ScheduleCounts:
    total: int
    discarded: int


@dataclass(frozen=True, slots=True)
class RescueCounts:
    total: int
    retried: int
    discarded: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class LeaderRow:
    leader_id: str
    elected_at: datetime
    remaining: float  # seconds until the term expires unless renewed


@dataclass(frozen=True, slots=True)
class TableStats:
    live: int
    dead: int
    can_vacuum: bool


@dataclass(frozen=True, slots=True)
class RecordedMigration:
    line: str
    version: int
    created_at: datetime


def match_inserted(
    rows: Sequence[Sequence[Any]],
    ps: Sequence[InsertParams],
    *,
    skipped_at: int,
    ord_at: int,
) -> list[InsertedRow]:
    """Put the rows of job_insert_many back in the order of ``ps``.

    A new row carries the position (``ord``, from 1) of its input; a unique duplicate
    is the existing row, found by its key. ``skipped_at`` and ``ord_at`` are the
    positions of those two columns after the job columns.
    """
    by_ord: dict[int, InsertedRow] = {}
    by_key: dict[bytes, InsertedRow] = {}
    for r in rows:
        ins = InsertedRow(r, bool(r[skipped_at]))
        n = r[ord_at]
        if n is not None:
            by_ord[n] = ins
        elif r[UNIQUE_KEY] is not None:
            by_key[bytes(r[UNIQUE_KEY])] = ins
    out = []
    for n, p in enumerate(ps, start=1):
        ins_row = by_ord.get(n)
        if ins_row is None:
            assert p.unique_key is not None, "a row without a unique key is always inserted"
            ins_row = by_key[p.unique_key]
        out.append(ins_row)
    return out


# -- the query and control API (control.sql) ------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One job of a bulk action: its row as it now is (the deleted row for a delete),
    what was decided (``retry``/``cancel``/``delete`` when done, else why not:
    ``running``, ``already_available``, ``unique_conflict``, or the finalized state a
    cancel found) and, for a unique conflict, the job holding the key."""

    row: Sequence[Any]
    decision: str
    conflict_id: int | None = None


@dataclass(frozen=True, slots=True)
class QueueRow:
    name: str
    created_at: datetime
    metadata: str
    paused_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ClientRow:
    id: str
    hostname: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    marked_dead: bool
    now: datetime
    queues: list[str]
    queue_use: str
    stopping: bool
    dead_after: float | None
    metadata: str


@dataclass(frozen=True, slots=True)
class LeaderInfoRow:
    leader_id: str
    elected_at: datetime
    expires_at: datetime


# -- the vacuum horizon (issue 22) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HorizonHolder:
    """Something that keeps VACUUM from removing dead row versions (of the job table
    among others), so that every claim walks past more of them.

    ``kind`` is ``"session"`` (a transaction open for ``age_s`` seconds: ``pid``,
    ``application_name``, ``role``, ``client_addr``, ``state`` and the start of its
    ``query`` say whose), ``"prepared_transaction"`` (``name`` is its gid) or
    ``"replication_slot"`` (an inactive slot, ``name``, holding an xmin).
    ``xid_age`` is how many transactions old the row versions it holds back are.
    Ending it (``SELECT pg_terminate_backend(pid)``, ``ROLLBACK PREPARED``, dropping
    the slot) frees the horizon; the next VACUUM then removes them.
    """

    kind: str
    pid: int | None
    application_name: str | None
    role: str | None
    client_addr: str | None
    state: str | None
    age_s: float | None
    xid_age: int | None
    query: str | None
    name: str | None

    def describe(self) -> str:
        """One line naming it, for a log or a page."""
        if self.kind == "session":
            return (
                f"session pid {self.pid} (application {self.application_name or '-'!r}, "
                f"role {self.role or '-'}, from {self.client_addr or 'local'}, "
                f"{self.state or 'state unknown'}) with a transaction open for "
                f"{self.age_s or 0:.0f}s"
            )
        if self.kind == "prepared_transaction":
            return (
                f"prepared transaction {self.name!r} (role {self.role or '-'}) "
                f"prepared {self.age_s or 0:.0f}s ago"
            )
        return f"inactive replication slot {self.name!r} holding xmin {self.xid_age} xids old"


# -- flow control (flow.sql) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowRules:
    """The limits of one queue's claim as parallel lists, one element per rule
    (``_flow_rules`` in flow.sql); built by ``_claim.FlowClaimer``."""

    kind: list[str | None]
    src: list[str]  # none | args | metadata | kind | fn
    with_kind: list[bool]
    f1: list[str | None]
    f2: list[str | None]
    f3: list[str | None]
    name: list[str]
    cap: list[int | None]
    local: list[bool]
    rate_t: list[float | None]
    rate_tau: list[float | None]


@dataclass(frozen=True, slots=True)
class FlowClaimed:
    """What a flow claim returned: the job rows it marked running, how many candidates
    it looked at, whether some bucket was full (jobs waited on a limit), when the
    earliest empty rate bucket has a token again, and whether it had to run twice."""

    rows: list[Any]
    candidates: int
    blocked: bool
    refill_at: datetime | None
    #: The first try found another claim had committed while it waited for the gate,
    #: and the claim ran again behind the gate.
    retried: bool = False
    #: The scan of candidates ran out before the free slots did: more jobs may be
    #: claimable behind the keys this claim filled.
    more: bool = False


class KeyedCandidates(Protocol):
    """Keys that only the client can compute (a key function of the job), for the
    candidates that flow_claim may take next."""

    @property
    def kinds(self) -> Sequence[str]:
        """The kinds under a key function (the candidates read)."""
        ...

    def compute(self, rows: Sequence[Any]) -> tuple[str | None, list[int]]:
        """From the candidate job rows: their keys as JSON ``{"<id>": {"<rule name>":
        key}}``, and the ids whose key function failed (claimed, to be failed)."""
        ...


@dataclass(frozen=True, slots=True)
class FlowUsage:
    """One rule and key of the status API: jobs running, jobs waiting (among the first
    ``scanned`` available ones), and for a rate limit when its bucket next has room."""

    rule: int  # from 1, in FlowRules order
    key: str | None  # the key as JSON text (None: the key function's, not computed yet)
    running: int
    waiting: int
    next_start_at: datetime | None
    scanned: int
