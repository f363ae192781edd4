"""The named SQL of ``sql/*.sql``, rendered for one schema, one attribute per query.

Each ``-- name: x`` block of a ``.sql`` file is a query; a name starting with ``_`` is a
fragment that other queries include as ``{_name}``. ``{schema}`` and the other
placeholders below are filled in once per schema (configuration, never user text);
``@param`` marks a bind parameter, rendered as ``$1, $2...`` for asyncpg and as
``%(param)s`` for psycopg. :class:`Queries` declares every query, and loading checks
that the files define exactly those, so a typo is an import error, not a runtime one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from operator import itemgetter
from typing import Any

from .columns import JOB_COLUMNS

__all__ = ["Queries", "Query", "quote_ident", "quote_literal"]

_NAME_RE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
# `@name`, not preceded by a word character or another `@` (jsonb's `@>` has no name).
_PARAM_RE = re.compile(r"(?<![\w@])@([a-z_][a-z0-9_]*)")
_FRAGMENT_RE = re.compile(r"\{(_\w+)\}")

# Columns sent back as a plainer type: unique_states (bit(8)) as an int; state (an
# enum) as text, since asyncpg introspects an enum type on every connection that
# first meets it (a catalog query: the first claim on a fresh connection took ~20 ms
# instead of ~2 ms); the JSON columns as text, which the library decodes itself, so a
# JSON codec the application registered on its connections never decodes ours.
_RESULT_CASTS = {
    "unique_states": "int",
    "state": "text",
    "args": "text",
    "metadata": "text",
    "errors": "text[]",
}


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (the schema name is configuration, never user text)."""
    if not name or "\x00" in name or len(name.encode()) > 63:
        raise ValueError(f"invalid schema name {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL byte in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def _cast_columns(cols: tuple[str, ...], prefix: str = "") -> str:
    return ", ".join(
        f"{prefix}{c}::{_RESULT_CASTS[c]} AS {c}" if c in _RESULT_CASTS else f"{prefix}{c}"
        for c in cols
    )


class Query:
    """One query for one schema: ``sql`` and ``params`` for asyncpg, ``pyformat()`` for
    psycopg; ``bind(**values)`` orders keyword values as ``sql`` wants them."""

    __slots__ = ("_get", "name", "params", "sql", "text")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text  # with @params
        order: dict[str, int] = {}

        def number(m: re.Match[str]) -> str:
            return f"${order.setdefault(m.group(1), len(order) + 1)}"

        self.sql = _PARAM_RE.sub(number, text)
        self.params: tuple[str, ...] = tuple(order)
        self._get: Any = itemgetter(*self.params) if self.params else None

    def bind(self, **values: Any) -> tuple[Any, ...]:
        """The positional arguments of ``sql``, from every parameter given by name."""
        if len(values) != len(self.params):
            missing = sorted(set(self.params) - set(values))
            extra = sorted(set(values) - set(self.params))
            raise TypeError(f"query {self.name}: missing {missing}, unexpected {extra}")
        if not self.params:
            return ()
        got = self._get(values)
        return got if len(self.params) > 1 else (got,)

    def pyformat(self) -> str:
        """The query with ``%(name)s`` parameters (psycopg), literal ``%`` doubled."""
        return _PARAM_RE.sub(lambda m: f"%({m.group(1)})s", self.text.replace("%", "%%"))

    def __repr__(self) -> str:
        return f"Query({self.name!r}, params={self.params!r})"


@cache
def _load() -> dict[str, str]:
    """Every ``-- name: x`` block of every ``sql/*.sql`` file, by name (fragments too)."""
    out: dict[str, str] = {}
    root = resources.files(__package__).joinpath("sql")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        chunks = _NAME_RE.split(entry.read_text(encoding="utf-8"))
        for i in range(1, len(chunks), 2):
            name, body = chunks[i], chunks[i + 1]
            if name in out:
                raise RuntimeError(f"query {name!r} defined twice (in {entry.name})")
            lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
            out[name] = "\n".join(lines).strip().rstrip(";")
    for name, text in list(out.items()):
        # Fragments may hold fragments: substitute until none is left (a few rounds).
        for _ in range(8):
            text, n = _FRAGMENT_RE.subn(lambda m: out[m.group(1)], text)
            if not n:
                break
        else:
            raise RuntimeError(f"query {name!r}: fragments nest too deep (a cycle?)")
        out[name] = text
    return out


@dataclass(frozen=True, slots=True)
class Queries:
    """Every query of the library, rendered for one schema (``Queries.for_schema(s)``)."""

    schema: str
    qschema: str
    insert_channel: str
    control_channel: str
    leadership_channel: str
    job_sequence: str
    # job.sql
    job_insert: Query
    job_insert_many: Query
    job_notify_queues: Query
    job_next_ids: Query
    job_claim: Query
    job_claim_after: Query
    job_complete_many: Query
    job_delete_completed_many: Query
    job_set_outcome_many: Query
    job_release_orphans: Query
    job_get: Query
    job_cancel: Query
    # -- client.wait (issue 19) --
    job_mark_waited: Query
    job_schedule: Query
    job_rescue: Query
    job_rescue_by_age: Query
    job_clean: Query
    # job.sql: inserts from other libraries (issue 17)
    job_copy_from_stdin: Query
    # queue.sql
    queue_pause: Query
    queue_resume: Query
    queue_paused_many: Query
    queue_keep: Query
    queue_clean: Query
    # leader.sql
    leader_delete_expired: Query
    leader_elect: Query
    leader_get: Query
    leader_reelect: Query
    leader_resign: Query
    # client.sql
    client_heartbeat: Query
    client_mark_dead: Query
    client_prune: Query
    # control.sql (the query and control API: _control.py, listing.py)
    job_list_ids_pkey: Query
    job_list_ids_fetch: Query
    job_list_ids_finalized: Query
    job_list_ids_contains: Query
    job_list_rows: Query
    job_queues_in_states: Query
    job_retry_many: Query
    job_unique_holder: Query
    job_cancel_many: Query
    job_delete_many: Query
    queue_list_rows: Query
    queue_counts: Query
    queue_count_estimate: Query
    client_table_exists: Query
    client_list: Query
    leader_info: Query
    schema_drop: Query
    # pg.sql
    pg_job_table_stats: Query
    pg_vacuum_jobs: Query
    # pg.sql: failover and the vacuum horizon (issue 22)
    pg_writable: Query
    pg_horizon_holders: Query
    # migration.sql
    migration_table_info: Query
    migration_rows: Query
    migration_rows_main_only: Query
    migration_record: Query
    migration_record_main_only: Query
    migration_forget: Query
    migration_forget_main_only: Query
    migration_lock: Query
    migration_unlock: Query
    migration_search_path: Query
    schema_exists: Query
    schema_create: Query
    schema_columns: Query
    schema_indexes: Query
    # -- telemetry.sql (issue 19) --
    job_count_by_queue_state: Query
    # flow.sql (flow control: claims of queues with limits, their status)
    flow_gate: Query
    flow_claim: Query
    flow_claim_capped: Query
    flow_claim_partitioned: Query
    flow_candidates: Query
    flow_usage: Query
    flow_unclaimed_kinds: Query
    flow_prune: Query

    # insights.sql (the read-only insights of _insights.py and the web UI)
    insights_state_counts: Query
    insights_final_window: Query
    insights_estimate: Query
    insights_max_id: Query
    insights_throughput: Query
    insights_breakdown: Query
    insights_queue_states: Query
    insights_queues: Query
    insights_queue_counts: Query
    insights_queue_lag: Query
    insights_scheduler_lag: Query
    insights_cleaner_lag: Query
    insights_kinds: Query
    insights_kind_sample: Query
    insights_claim_order: Query
    insights_job_documents: Query
    insights_job_document_full: Query
    insights_unique_conflict: Query
    insights_discarded_errors: Query
    insights_retryable_errors: Query
    insights_periodic_runs: Query
    insights_running: Query
    insights_liveness_table: Query
    insights_clients: Query
    insights_leader: Query
    insights_table_health: Query
    insights_old_xmin: Query
    insights_server: Query
    insights_ping: Query

    @staticmethod
    @cache
    def for_schema(schema: str = "public") -> Queries:
        """The queries for ``schema`` (made once per schema, then shared)."""
        qschema = quote_ident(schema)
        channels = {
            "insert_channel": f"{schema}.river_insert",
            "control_channel": f"{schema}.river_control",
            "leadership_channel": f"{schema}.river_leadership",
        }
        subst = {
            "{schema}": qschema,
            "{job_columns}": _cast_columns(JOB_COLUMNS),
            "{job_columns_j}": _cast_columns(JOB_COLUMNS, "j."),
            "{job_columns_null}": ", ".join("NULL" for _ in JOB_COLUMNS),
            **{"{" + k + "}": quote_literal(v) for k, v in channels.items()},
        }
        pattern = re.compile("|".join(re.escape(k) for k in subst))
        texts = {n: t for n, t in _load().items() if not n.startswith("_")}
        queries = {
            name: Query(name, pattern.sub(lambda m: subst[m.group(0)], text))
            for name, text in texts.items()
        }
        return Queries(
            schema,
            qschema,
            channels["insert_channel"],
            channels["control_channel"],
            channels["leadership_channel"],
            f"{qschema}.river_job_id_seq",
            **queries,
        )


def _check_declared() -> None:
    declared = {f.name for f in fields(Queries) if f.type in ("Query", Query)}
    defined = {n for n in _load() if not n.startswith("_")}
    if declared != defined:
        raise RuntimeError(
            "sql/*.sql and Queries disagree: "
            f"undeclared {sorted(defined - declared)}, undefined {sorted(declared - defined)}"
        )


_check_declared()
