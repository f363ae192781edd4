"""Loads the named SQL files and renders them for one schema."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

__all__ = ["JOB_COLUMNS", "Driver", "load_queries", "quote_ident"]

# The columns a Job is decoded from, in this order (see _codec.decode_job).
JOB_COLUMNS = (
    "id",
    "args",
    "kind",
    "queue",
    "state",
    "priority",
    "attempt",
    "max_attempts",
    "scheduled_at",
    "created_at",
    "attempted_at",
    "finalized_at",
    "attempted_by",
    "errors",
    "metadata",
    "tags",
    "unique_key",
    "unique_states",
)

_NAME_RE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (the schema name is configuration, never user text)."""
    if not name or "\x00" in name or len(name.encode()) > 63:
        raise ValueError(f"invalid schema name {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL byte in SQL literal")
    return "'" + value.replace("'", "''") + "'"


@cache
def load_queries() -> dict[str, str]:
    """Every ``-- name: x`` block of every ``*.sql`` file in this package, by name."""
    out: dict[str, str] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        chunks = _NAME_RE.split(text)
        for i in range(1, len(chunks), 2):
            name, body = chunks[i], chunks[i + 1]
            if name in out:
                raise RuntimeError(f"query {name!r} defined twice")
            lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
            out[name] = "\n".join(lines).strip().rstrip(";")
    return out


# Columns sent back as a plainer type: unique_states (bit(8)) as an int; state (an
# enum) as text, since asyncpg introspects an enum type on every connection that
# first meets it (a catalog query: the first claim on a fresh connection took ~20 ms
# instead of ~2 ms).
_RESULT_CASTS = {"unique_states": "int", "state": "text"}


def _cast_columns(cols: tuple[str, ...], prefix: str = "") -> str:
    return ", ".join(
        f"{prefix}{c}::{_RESULT_CASTS[c]} AS {c}" if c in _RESULT_CASTS else f"{prefix}{c}"
        for c in cols
    )


class Driver:
    """SQL for one schema: ``driver.sql["job_claim"]`` is a ready query string."""

    def __init__(self, schema: str = "public") -> None:
        self.schema = schema
        self.qschema = quote_ident(schema)
        self.insert_channel = f"{schema}.river_insert"
        self.control_channel = f"{schema}.river_control"
        self.leadership_channel = f"{schema}.river_leadership"
        subst = {
            "{schema}": self.qschema,
            "{job_columns}": _cast_columns(JOB_COLUMNS),
            "{job_columns_j}": _cast_columns(JOB_COLUMNS, "j."),
            "{insert_channel}": quote_literal(self.insert_channel),
            "{control_channel}": quote_literal(self.control_channel),
            "{leadership_channel}": quote_literal(self.leadership_channel),
        }
        pattern = re.compile("|".join(re.escape(k) for k in subst))
        self.sql: dict[str, str] = {
            name: pattern.sub(lambda m: subst[m.group(0)], q) for name, q in load_queries().items()
        }
        self.job_sequence = f"{self.qschema}.river_job_id_seq"
