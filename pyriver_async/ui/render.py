"""Turning job data into text a page can show: exact JSON, redaction, truncation,
times and durations. Pure functions; the templates escape everything they print."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "REDACTED",
    "Redactor",
    "format_bytes",
    "format_count",
    "format_duration",
    "format_ms",
    "iso",
    "parse_exact",
    "pretty_json",
    "relative",
]

REDACTED = "[redacted]"


def parse_exact(text: str) -> Any:
    """JSON text parsed with numbers kept exact (ints as int, others as Decimal)."""
    return json.loads(text, parse_float=Decimal, parse_constant=Decimal)


def _dumps_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _number(v: int | Decimal | float) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Decimal):
        return str(v) if v.is_finite() else "null"
    return repr(v) if math.isfinite(v) else "null"


def pretty_json(value: Any, *, indent: int = 2, sort_keys: bool = True) -> str:
    """``value`` as indented JSON with its numbers printed exactly as parsed."""
    out: list[str] = []

    def emit(v: Any, level: int) -> None:
        pad = " " * (indent * (level + 1))
        end = " " * (indent * level)
        if v is None:
            out.append("null")
        elif v is True or v is False:
            out.append("true" if v else "false")
        elif isinstance(v, int | float | Decimal):
            out.append(_number(v))
        elif isinstance(v, str):
            out.append(_dumps_str(v))
        elif isinstance(v, Mapping):
            if not v:
                out.append("{}")
                return
            keys = sorted(v, key=str) if sort_keys else list(v)
            out.append("{\n")
            for i, k in enumerate(keys):
                out.append(f"{pad}{_dumps_str(str(k))}: ")
                emit(v[k], level + 1)
                out.append(",\n" if i < len(keys) - 1 else "\n")
            out.append(end + "}")
        elif isinstance(v, list | tuple):
            if not v:
                out.append("[]")
                return
            out.append("[\n")
            for i, item in enumerate(v):
                out.append(pad)
                emit(item, level + 1)
                out.append(",\n" if i < len(v) - 1 else "\n")
            out.append(end + "]")
        else:
            out.append(_dumps_str(str(v)))

    emit(value, 0)
    return "".join(out)


class Redactor:
    """Replaces the values of keys named like any of ``keys`` (case-insensitively, at
    any depth) by ``"[redacted]"``, then applies ``format_args`` when given."""

    def __init__(
        self,
        keys: Iterable[str],
        format_args: Callable[[Any], Any] | None = None,
    ) -> None:
        self.keys = frozenset(k.lower() for k in keys)
        self.format_args = format_args

    @property
    def active(self) -> bool:
        return bool(self.keys) or self.format_args is not None

    def redact(self, value: Any) -> Any:
        if not self.keys:
            return value
        if isinstance(value, Mapping):
            return {
                k: REDACTED if str(k).lower() in self.keys else self.redact(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value

    def touches(self, value: Any) -> bool:
        """Whether redaction would change ``value``."""
        if not self.keys:
            return False
        if isinstance(value, Mapping):
            return any(str(k).lower() in self.keys or self.touches(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return any(self.touches(v) for v in value)
        return False

    def args(self, value: Any) -> Any:
        value = self.redact(value)
        if self.format_args is not None:
            value = self.format_args(value)
        return value


def iso(at: datetime | None) -> str | None:
    """``at`` in UTC, ISO 8601 with a Z."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if at in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)):
        return None
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_duration(d: timedelta | float | None) -> str:
    """A short human duration: 850 ms, 41 s, 3 m 20 s, 2 h 5 m, 3 d 4 h."""
    if d is None:
        return "—"
    s = d.total_seconds() if isinstance(d, timedelta) else float(d)
    if not math.isfinite(s):
        return "∞"
    s = abs(s)
    if s < 1:
        return f"{round(s * 1000)} ms"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{round(s)} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} m {sec} s" if sec and m < 10 else f"{m} m"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m} m" if m else f"{h} h"
    d_, h = divmod(h, 24)
    return f"{d_} d {h} h" if h else f"{d_} d"


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if math.isinf(ms):
        return "> 336 s"
    return format_duration(ms / 1000)


def relative(at: datetime | None, now: datetime) -> str:
    """``at`` relative to ``now``: "3 m ago", "in 20 s"."""
    if at is None:
        return "—"
    if iso(at) is None:
        return "never"
    delta = (at - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    text = format_duration(abs(delta))
    return f"in {text}" if delta > 0 else f"{text} ago"


def format_count(n: int | None, *, capped: bool = False) -> str:
    if n is None:
        return "—"
    return f"{n:,}+" if capped else f"{n:,}"


def format_estimate(n: int | None) -> str:
    """An estimate, rounded: ≈ 2.3 M."""
    if n is None:
        return "unknown"
    if n < 1000:
        return f"≈ {n}"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            v = n / size
            return f"≈ {v:.1f} {unit}" if v < 10 else f"≈ {round(v)} {unit}"
    return f"≈ {n}"


def format_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def first_line(text: str | None, limit: int = 160) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def unique_states(mask: int | None, order: Sequence[str]) -> list[str]:
    """The states of River's unique-states bitmask (bit 0 = the first of ``order``)."""
    if mask is None:
        return []
    return [name for i, name in enumerate(order) if mask & (1 << i)]
