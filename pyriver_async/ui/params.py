"""Query-string and form parsing: every bad value becomes a :class:`BadParam` naming
the parameter (a 400 page), never an exception from deeper down."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._job import JobState

__all__ = [
    "LIMITS",
    "BadParam",
    "JobsQuery",
    "Params",
    "parse_jobs_query",
    "parse_json_object",
]

LIMITS = (20, 50, 100, 200)
_NAME_RE = re.compile(r"^[\w.:/@ -]{1,128}$")
_STATES = {s.value: s for s in JobState}
MAX_JSON_FILTER = 4096
MAX_IDS = 1000


class BadParam(Exception):
    """A request parameter that cannot be used (answered 400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class Params:
    """Multi-valued parameters (a query string or a form) with typed getters."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for k, v in items:
            self._values.setdefault(k, []).append(v)

    @classmethod
    def from_form(cls, form: Mapping[str, list[str]]) -> Params:
        return cls((k, v) for k, vs in form.items() for v in vs)

    def all(self, name: str) -> list[str]:
        """Every non-blank value of ``name``; comma-separated values are split."""
        out: list[str] = []
        for v in self._values.get(name, []):
            out.extend(p.strip() for p in v.split(",") if p.strip())
        return out

    def raw(self, name: str) -> list[str]:
        return [v for v in self._values.get(name, []) if v != ""]

    def one(self, name: str, default: str | None = None) -> str | None:
        vals = self.raw(name)
        if len(vals) > 1:
            raise BadParam(name, "given more than once")
        return vals[0].strip() if vals else default

    def integer(
        self, name: str, default: int | None = None, *, lo: int = 0, hi: int = 2**63 - 1
    ) -> int | None:
        v = self.one(name)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise BadParam(name, f"not a whole number: {v[:40]!r}") from None
        if not lo <= n <= hi:
            raise BadParam(name, f"must be between {lo} and {hi}")
        return n

    def ints(
        self, name: str, *, lo: int = 1, hi: int = 2**63 - 1, most: int = MAX_IDS
    ) -> list[int]:
        out = []
        for v in self.all(name):
            for part in v.split():
                try:
                    n = int(part)
                except ValueError:
                    raise BadParam(name, f"not a whole number: {part[:40]!r}") from None
                if not lo <= n <= hi:
                    raise BadParam(name, f"{n} is out of range ({lo} to {hi})")
                out.append(n)
        if len(out) > most:
            raise BadParam(name, f"at most {most} values")
        return out

    def names(self, name: str, *, most: int = 100) -> list[str]:
        out = self.all(name)
        for v in out:
            if not _NAME_RE.match(v):
                raise BadParam(name, f"not a valid name: {v[:40]!r}")
        if len(out) > most:
            raise BadParam(name, f"at most {most} values")
        return sorted(set(out))

    def state(self, name: str, default: JobState | None = None) -> JobState | None:
        v = self.one(name)
        if v is None:
            return default
        if v not in _STATES:
            raise BadParam(name, f"unknown state {v[:40]!r} (one of {', '.join(sorted(_STATES))})")
        return _STATES[v]

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        v = self.one(name, default)
        assert v is not None
        if v not in choices:
            raise BadParam(name, f"must be one of {', '.join(choices)}")
        return v

    def time(self, name: str) -> datetime | None:
        v = self.one(name)
        if v is None:
            return None
        try:
            at = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise BadParam(name, f"not a date and time (ISO 8601): {v[:40]!r}") from None
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    def flag(self, name: str) -> bool:
        return self.one(name) in ("1", "on", "true", "yes")


def _depth(v: Any, level: int = 0) -> int:
    if isinstance(v, dict):
        return max([level + 1, *(_depth(x, level + 1) for x in v.values())])
    if isinstance(v, list):
        return max([level + 1, *(_depth(x, level + 1) for x in v)])
    return level


def parse_json_object(name: str, text: str) -> dict[str, Any]:
    """A containment filter: a JSON object (at most 4 KB, 5 levels deep), or the
    ``key=value`` shorthand (``user_id=42``, value read as JSON when it parses)."""
    text = text.strip()
    if len(text.encode()) > MAX_JSON_FILTER:
        raise BadParam(name, f"longer than {MAX_JSON_FILTER} bytes")
    if not text.startswith("{") and "=" in text:
        key, _, raw = text.partition("=")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        return {key.strip(): value}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadParam(name, f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadParam(name, "must be a JSON object")
    if _depth(value) > 5:
        raise BadParam(name, "nested more than 5 levels deep")
    return value


ORDERS = ("default", "asc", "desc", "claim")


@dataclass
class JobsQuery:
    """The job list's filter, order and page, as the URL holds them."""

    state: JobState
    queues: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    tag_mode: str = "any"
    ids: list[int] = field(default_factory=list)
    args: dict[str, Any] | None = None
    args_text: str = ""
    meta: dict[str, Any] | None = None
    meta_text: str = ""
    after: datetime | None = None
    before: datetime | None = None
    order: str = "default"
    cursor: str | None = None
    limit: int = 20

    @property
    def filtered(self) -> bool:
        """Whether anything narrows the list besides its state."""
        return bool(
            self.queues
            or self.kinds
            or self.priorities
            or self.tags
            or self.ids
            or self.args
            or self.meta
            or self.after
            or self.before
        )

    def query_items(self, **overrides: Any) -> list[tuple[str, str]]:
        """This query as URL parameters (with some replaced), defaults left out."""
        q: dict[str, Any] = {
            "state": self.state.value,
            "queue": self.queues,
            "kind": self.kinds,
            "priority": [str(p) for p in self.priorities],
            "tag": self.tags,
            "tag_mode": self.tag_mode if self.tags and self.tag_mode != "any" else None,
            "id": " ".join(str(i) for i in self.ids) or None,
            "args": self.args_text or None,
            "meta": self.meta_text or None,
            "after": self.after.isoformat() if self.after else None,
            "before": self.before.isoformat() if self.before else None,
            "order": None if self.order == "default" else self.order,
            "limit": None if self.limit == 20 else str(self.limit),
            "cursor": self.cursor,
        }
        q.update(overrides)
        items: list[tuple[str, str]] = []
        for k, v in q.items():
            if v is None:
                continue
            if isinstance(v, list):
                items.extend((k, str(x)) for x in v)
            else:
                items.append((k, str(v)))
        return items


def parse_jobs_query(p: Params) -> JobsQuery:
    state = p.state("state", JobState.AVAILABLE)
    assert state is not None
    limit = p.integer("limit", 20, lo=1, hi=200)
    assert limit is not None
    if limit not in LIMITS:
        raise BadParam("limit", f"must be one of {', '.join(map(str, LIMITS))}")
    args_text = p.one("args") or ""
    meta_text = p.one("meta") or ""
    q = JobsQuery(
        state=state,
        queues=p.names("queue"),
        kinds=p.names("kind"),
        priorities=sorted(set(p.ints("priority", lo=1, hi=4))),
        tags=p.names("tag"),
        tag_mode=p.choice("tag_mode", ("any", "all"), "any"),
        ids=p.ints("id"),
        args=parse_json_object("args", args_text) if args_text else None,
        args_text=args_text,
        meta=parse_json_object("meta", meta_text) if meta_text else None,
        meta_text=meta_text,
        after=p.time("after"),
        before=p.time("before"),
        order=p.choice("order", ORDERS, "default"),
        cursor=p.one("cursor"),
        limit=limit,
    )
    if q.cursor is not None and (len(q.cursor) > 2000 or not re.match(r"^[\w=-]+$", q.cursor)):
        raise BadParam("cursor", "malformed cursor")
    if q.order == "claim" and (state is not JobState.AVAILABLE or len(q.queues) != 1):
        raise BadParam("order", "claim order needs state=available and exactly one queue")
    return q
