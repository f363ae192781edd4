"""Job arguments, insert options and uniqueness options, validated at the boundary."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from ._errors import InvalidOptsError, KindConflictError, typed_init_errors
from ._job import JobState

if TYPE_CHECKING:
    from ._flow import SequenceOpts

__all__ = ["DEFAULT_UNIQUE_STATES", "InsertOpts", "JobArgs", "UniqueOpts", "kind_registry"]

# River's limits: the database checks `char_length(kind) < 128` and the same for queues.
MAX_NAME_LENGTH = 127
MAX_TAG_LENGTH = 255
MAX_SMALLINT = 32767
# These are used with ``fullmatch``: ``$`` alone would accept a trailing newline.
_KIND_RE = re.compile(r"[^\s\x00-\x1f\x7f]+")
# Queue names travel in NOTIFY payloads, metrics labels and URLs of the UI: keep them plain.
_QUEUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")
_TAG_RE = re.compile(r"[^\x00-\x1f\x7f,]+")


def _is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates, which no UTF-8 column can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


kind_registry: dict[str, type[JobArgs]] = {}

# Metadata keys the engine or River reads to decide what happens to a job (see
# RIVER-INTEROP): a user may not set them at insert.
RESERVED_METADATA_KEYS = frozenset(
    {"cancel_attempted_at", "snoozes", "output", "unique_key_conflict"}
)
RESERVED_METADATA_PREFIXES = ("river:", "pyriver:")


def is_reserved_metadata_key(key: str) -> bool:
    return key in RESERVED_METADATA_KEYS or key.startswith(RESERVED_METADATA_PREFIXES)


def validate_kind(kind: object) -> str:
    if not isinstance(kind, str) or not kind:
        raise KindConflictError(f"a job kind must be a non-empty string, got {kind!r}")
    if len(kind) > MAX_NAME_LENGTH or not _KIND_RE.fullmatch(kind) or not _is_utf8(kind):
        raise KindConflictError(
            f"job kind {kind!r} is invalid: 1 to {MAX_NAME_LENGTH} characters, "
            "no whitespace or control characters"
        )
    return kind


def validate_queue(queue: object) -> str:
    if not isinstance(queue, str):
        raise InvalidOptsError(f"queue must be a string, got {type(queue).__name__}")
    if not 0 < len(queue) <= MAX_NAME_LENGTH or not _QUEUE_RE.fullmatch(queue):
        raise InvalidOptsError(
            f"queue name {queue!r} is invalid: 1 to {MAX_NAME_LENGTH} characters from "
            "letters, digits, '_', '-', '.', ':' (starting with a letter or digit)"
        )
    return queue


class _JobArgsMeta(msgspec.StructMeta):
    """Takes the ``kind=`` class keyword off before msgspec sees the class keywords."""

    def __new__(
        mcls,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        kind: str | None = None,
        **kwargs: Any,
    ) -> _JobArgsMeta:
        if kind is not None:
            validate_kind(kind)
        cls = super().__new__(mcls, name, bases, namespace, **kwargs)
        if kind is not None:
            existing = kind_registry.get(kind)
            # The same class defined again (a module reloaded, a class made in a
            # function called twice) takes the kind over; any other class may not.
            if existing is not None and (existing.__module__, existing.__qualname__) != (
                cls.__module__,
                cls.__qualname__,
            ):
                raise KindConflictError(
                    f"job kind {kind!r} is already used by "
                    f"{existing.__module__}.{existing.__qualname__}; each kind names one class"
                )
            kind_registry[kind] = cls  # type: ignore[assignment]
            cls.kind = kind  # type: ignore[attr-defined]
        elif any(isinstance(b, _JobArgsMeta) for b in bases):
            inherited = getattr(cls, "kind", None)
            if not inherited:
                raise KindConflictError(f'{name} needs a kind: `class {name}(JobArgs, kind="...")`')
            # A kind names exactly one class: a subclass that kept its parent's kind
            # would be decoded as the parent.
            raise KindConflictError(
                f"{name} inherits the kind {inherited!r} of its parent; give it its own: "
                f'`class {name}(..., kind="...")`'
            )
        return cls


class JobArgs(msgspec.Struct, metaclass=_JobArgsMeta):
    """Base class of typed job arguments: a msgspec Struct with a stable wire name.

    ``class SendEmail(JobArgs, kind="send_email"): user_id: int``

    The kind is what the database stores and what River processes see; rename the
    class freely, never the kind. A kind names exactly one class: two classes with
    one kind, a kind outside 1 to 127 characters (or with whitespace or control
    characters), a subclass without a kind, or one that would inherit its parent's,
    raise :class:`KindConflictError` when the class is defined. Override
    :meth:`insert_opts` to give this kind default insert options.
    """

    kind: ClassVar[str]

    if TYPE_CHECKING:

        def __init_subclass__(cls, *, kind: str | None = None, **kwargs: Any) -> None: ...

    def insert_opts(self) -> InsertOpts | None:
        """Default options for jobs of this kind; explicit ``opts`` on insert win."""
        return None

    def sequence_opts(self) -> SequenceOpts | None:
        """Override to put jobs of this kind in sequences: jobs sharing a sequence key
        run one at a time, in insertion order (see :class:`SequenceOpts` and
        ``docs/flow-control.md``). The key is computed at insert."""
        return None


# River's default: every state but cancelled and discarded.
DEFAULT_UNIQUE_STATES: tuple[JobState, ...] = (
    JobState.AVAILABLE,
    JobState.COMPLETED,
    JobState.PENDING,
    JobState.RETRYABLE,
    JobState.RUNNING,
    JobState.SCHEDULED,
)
_REQUIRED_UNIQUE_STATES = frozenset(
    {JobState.AVAILABLE, JobState.PENDING, JobState.RUNNING, JobState.SCHEDULED}
)
# Bit values of River's `unique_states bit(8)` read as an integer.
_STATE_BITS = {
    JobState.AVAILABLE: 1,
    JobState.CANCELLED: 2,
    JobState.COMPLETED: 4,
    JobState.DISCARDED: 8,
    JobState.PENDING: 16,
    JobState.RETRYABLE: 32,
    JobState.RUNNING: 64,
    JobState.SCHEDULED: 128,
}


@typed_init_errors(InvalidOptsError)
@dataclass(frozen=True, kw_only=True, slots=True)
class UniqueOpts:
    """Make a job unique: a duplicate insert returns the existing job instead.

    Uniqueness is always by kind, plus any of: the args (``by_args``), a time window
    (``by_period``: jobs inserted in the same window collide), the queue
    (``by_queue``). ``by_state`` lists the states in which an existing job blocks a
    new one (default: all but cancelled and discarded; it must include available,
    pending, running and scheduled). Enforced by a unique index, so it holds across
    processes and concurrent inserts.

    ``on_conflict`` says what a duplicate insert does to the existing job when that
    job is still waiting (``available``, ``scheduled`` or ``retryable``):

    - ``"skip"`` (the default, River's behaviour): nothing; the existing job is returned;
    - ``"reschedule_earlier"``: when the new job would run earlier (its
      ``scheduled_at``, now by default), the existing one is moved to that time (and
      becomes ``available`` when that time has come);
    - ``"raise_priority"``: when the new job has a higher priority (a smaller
      number), the existing one takes it;
    - both, as ``("reschedule_earlier", "raise_priority")``.

    A job already running or finalized is never changed. The insert still reports
    ``unique_skipped_as_duplicate`` and returns the existing job as it now is. The
    row stays River's: only its ``scheduled_at``, ``state`` and ``priority`` move.
    """

    by_args: bool = False
    by_period: timedelta | float | None = None
    by_queue: bool = False
    by_state: Sequence[JobState | str] | None = None
    on_conflict: str | Sequence[str] = "skip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_conflict", _conflict_actions(self.on_conflict))
        for name in ("by_args", "by_queue"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidOptsError(f"UniqueOpts.{name} must be True or False")
        if self.by_period is not None:
            period = _to_timedelta(self.by_period, "UniqueOpts.by_period")
            if period <= timedelta(0):
                raise InvalidOptsError("UniqueOpts.by_period must be positive")
            object.__setattr__(self, "by_period", period)
        if self.by_state is not None:
            if isinstance(self.by_state, str) or not isinstance(self.by_state, Sequence):
                raise InvalidOptsError("UniqueOpts.by_state must be a list of job states")
            try:
                states = tuple(JobState(s) for s in self.by_state)
            except ValueError as exc:
                raise InvalidOptsError(f"UniqueOpts.by_state: {exc}") from None
            missing = _REQUIRED_UNIQUE_STATES - set(states)
            if missing:
                raise InvalidOptsError(
                    "UniqueOpts.by_state must include available, pending, running and "
                    f"scheduled; missing {sorted(s.value for s in missing)}"
                )
            object.__setattr__(self, "by_state", states)

    @property
    def states_mask(self) -> int:
        states = self.by_state if self.by_state is not None else DEFAULT_UNIQUE_STATES
        mask = 0
        for s in states:
            mask |= _STATE_BITS[JobState(s)]
        return mask

    @property
    def conflict_mask(self) -> int:
        """``on_conflict`` as the insert statement's bits (1 reschedule, 2 priority)."""
        actions = self.on_conflict
        return sum(_CONFLICT_BITS[a] for a in actions) if isinstance(actions, tuple) else 0

    @property
    def period(self) -> timedelta | None:
        p = self.by_period
        return p if isinstance(p, timedelta) or p is None else timedelta(seconds=p)


_CONFLICT_BITS = {"reschedule_earlier": 1, "raise_priority": 2}


def _conflict_actions(value: object) -> str | tuple[str, ...]:
    """``"skip"``, or the sorted tuple of actions to take on a waiting duplicate."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise InvalidOptsError(
            "UniqueOpts.on_conflict must be 'skip', 'reschedule_earlier', 'raise_priority' "
            f"or a list of the last two, got {value!r}"
        )
    if list(names) == ["skip"]:
        return "skip"
    unknown = [n for n in names if n not in _CONFLICT_BITS]
    if unknown or not names:
        raise InvalidOptsError(
            f"UniqueOpts.on_conflict: unknown action {', '.join(map(repr, unknown)) or '(none)'}"
            "; the actions are 'skip', 'reschedule_earlier' and 'raise_priority'"
        )
    return tuple(sorted(set(names)))


def _to_timedelta(value: object, what: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptsError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    try:
        return timedelta(seconds=value)
    except (OverflowError, ValueError):  # inf, nan, or beyond timedelta's range
        raise InvalidOptsError(f"{what} is out of range: {value!r}") from None


@typed_init_errors(InvalidOptsError)
@dataclass(frozen=True, kw_only=True, slots=True)
class InsertOpts:
    """Per-insert options. Unset fields fall back to the args' ``insert_opts()``, then defaults.

    - ``queue``: default ``"default"``.
    - ``priority``: 1 (highest, the default) to 4.
    - ``max_attempts``: default 25.
    - ``scheduled_at`` (timezone-aware) or ``delay`` (timedelta or seconds): run later.
    - ``tags``: short strings for filtering; ``metadata``: a JSON object stored with the job.
      Keys that carry meaning for the engine or for River (``cancel_attempted_at``,
      ``snoozes``, ``output``, ``unique_key_conflict``, and any ``river:`` or
      ``pyriver:`` key) are refused: a user's metadata never steers an outcome.
    - ``unique``: see :class:`UniqueOpts`.
    - ``ephemeral``: delete the job when it completes instead of keeping a
      ``completed`` row (fewer writes per job; a failure, discard or cancellation is
      kept as usual). See ``docs/performance.md`` for what it saves and costs.
    """

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    scheduled_at: datetime | None = None
    delay: timedelta | float | None = None
    tags: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    unique: UniqueOpts | None = None
    ephemeral: bool | None = None

    def __post_init__(self) -> None:
        if self.queue is not None:
            validate_queue(self.queue)
        if self.priority is not None and (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not 1 <= self.priority <= 4
        ):
            raise InvalidOptsError(f"priority must be an int from 1 to 4, got {self.priority!r}")
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or not 1 <= self.max_attempts <= MAX_SMALLINT
        ):
            raise InvalidOptsError(
                f"max_attempts must be an int from 1 to {MAX_SMALLINT}, got {self.max_attempts!r}"
            )
        if self.scheduled_at is not None:
            if not isinstance(self.scheduled_at, datetime):
                raise InvalidOptsError(
                    f"scheduled_at must be a datetime, got {type(self.scheduled_at).__name__}"
                )
            if self.scheduled_at.tzinfo is None or self.scheduled_at.utcoffset() is None:
                raise InvalidOptsError(
                    "scheduled_at must be timezone-aware, e.g. datetime.now(timezone.utc)"
                )
            try:
                self.scheduled_at.astimezone(UTC)
            except OverflowError:
                raise InvalidOptsError(
                    f"scheduled_at {self.scheduled_at!r} is out of range in UTC"
                ) from None
        if self.delay is not None:
            if self.scheduled_at is not None:
                raise InvalidOptsError("give either scheduled_at or delay, not both")
            d = _to_timedelta(self.delay, "delay")
            if d < timedelta(0):
                raise InvalidOptsError("delay must not be negative")
            object.__setattr__(self, "delay", d)
        if self.tags is not None:
            if isinstance(self.tags, str) or not isinstance(self.tags, Sequence):
                raise InvalidOptsError("tags must be a list of strings")
            for t in self.tags:
                if (
                    not isinstance(t, str)
                    or not 0 < len(t) <= MAX_TAG_LENGTH
                    or not _TAG_RE.fullmatch(t)
                    or not _is_utf8(t)
                ):
                    raise InvalidOptsError(
                        f"tag {t!r} is invalid: 1 to {MAX_TAG_LENGTH} characters, "
                        "no commas or control characters"
                    )
            object.__setattr__(self, "tags", tuple(self.tags))
        # Encoding at insert (see _codec) checks the metadata's values and nesting.
        if self.metadata is not None and (
            not isinstance(self.metadata, Mapping)
            or not all(isinstance(k, str) for k in self.metadata)
        ):
            raise InvalidOptsError("metadata must be a mapping with string keys")
        if self.metadata is not None:
            reserved = sorted(k for k in self.metadata if is_reserved_metadata_key(k))
            if reserved:
                raise InvalidOptsError(
                    f"metadata keys {reserved} are reserved: the engine and River give "
                    "them meaning (cancellation, snoozes, output, rescues); use other names"
                )
        if self.unique is not None and not isinstance(self.unique, UniqueOpts):
            raise InvalidOptsError("unique must be a UniqueOpts")
        if self.ephemeral is not None and not isinstance(self.ephemeral, bool):
            raise InvalidOptsError("ephemeral must be True or False")
