"""Job args and options validated and encoded into the driver's :class:`InsertParams`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec

from ._args import InsertOpts, JobArgs, validate_queue
from ._driver import InsertParams
from ._errors import InvalidArgsError, InvalidOptsError
from ._flow import sequence_metadata
from ._unique import unique_key

# Dict keys (and sets) are written sorted, as Go's encoding/json writes maps: equal
# args give equal bytes whatever the insertion order of their dicts, which makes the
# by_args unique key independent of it. Struct fields keep their declared order.
_encode = msgspec.json.Encoder(order="deterministic").encode

# Args and metadata nested deeper than this are refused at insert. msgspec decodes
# recursively and gives up near Python's recursion limit (1000 frames, less the depth
# of the caller's stack), so a deeper document could be stored (PostgreSQL takes
# ~10,000 levels) yet never be decoded by a worker. 512 leaves room for any caller.
MAX_JSON_DEPTH = 512
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")
# An escaped NUL (`\u0000`) that is not itself the tail of an escaped backslash.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

DEFAULT_QUEUE = "default"
# The metadata key of a job deleted at completion (InsertOpts.ephemeral).
EPHEMERAL_KEY = "pyriver:ephemeral"
DEFAULT_PRIORITY = 1
DEFAULT_MAX_ATTEMPTS = 25


def _merge(explicit: InsertOpts | None, from_args: InsertOpts | None) -> InsertOpts | None:
    if from_args is not None and not isinstance(from_args, InsertOpts):
        raise InvalidOptsError(
            f"insert_opts() must return an InsertOpts or None, got {type(from_args).__name__}"
        )
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


def _too_deep(raw: bytes) -> bool:
    """True when arrays and objects nest more than MAX_JSON_DEPTH levels in ``raw``."""
    if len(raw) <= 2 * MAX_JSON_DEPTH:
        return False  # each level takes at least two bytes
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False  # not enough brackets to be too deep: skip the scan
    depth = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _any_leaf(tree: Any, test: Any) -> bool:
    """Whether ``test`` holds for a leaf of ``tree`` (built-in values: dicts, lists)."""
    stack: list[Any] = [tree]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif test(v):
            return True
    return False


def _has_non_finite(value: Any) -> bool:
    """True when a float NaN or infinity hides in ``value`` (msgspec writes them as null)."""
    try:
        tree = msgspec.to_builtins(value)
    except (TypeError, ValueError):  # pragma: no cover - it was just encoded
        return False
    return _any_leaf(tree, lambda v: isinstance(v, float) and not math.isfinite(v))


def _encode_json(value: Any) -> tuple[bytes | None, str]:
    """Encode ``value`` for a jsonb column: (bytes, "") or (None, why it cannot be stored)."""
    try:
        raw = _encode(value)
    except RecursionError:
        return None, f"it is nested deeper than {MAX_JSON_DEPTH} levels"
    except (TypeError, ValueError, OverflowError) as exc:
        return None, f"it cannot be encoded as JSON: {exc}"
    why = _unstorable(raw, value)
    return (None, why) if why else (raw, "")


# The same check for other JSON the library stores (job output, middleware metadata).
encode_json = _encode_json


def _unstorable(raw: bytes, value: Any) -> str:
    """Why the JSON ``raw`` (msgspec's encoding of ``value``) cannot be stored, or ""."""
    if b"\\u0000" in raw and _JSON_NUL.search(raw):
        return "it contains a NUL character, which PostgreSQL's jsonb refuses"
    if len(raw) > 2 * MAX_JSON_DEPTH and _too_deep(raw):
        return f"it is nested deeper than {MAX_JSON_DEPTH} levels"
    if b"null" in raw and _has_non_finite(value):
        return "it contains a float NaN or infinity, which JSON cannot represent"
    return ""


_valid_queues: set[str] = {DEFAULT_QUEUE}
# For each JobArgs class seen: whether it overrides insert_opts(). Checking a class
# once instead of every instance keeps isinstance (an ABC check) off the batch path.
_own_opts: dict[type, bool] = {}
_NO_TAGS: tuple[str, ...] = ()


def _check_args_class(args: object) -> bool:
    if not isinstance(args, JobArgs):
        raise InvalidArgsError(
            f"insert() takes a JobArgs instance, got {type(args).__name__}; "
            'define `class MyArgs(JobArgs, kind="my_kind")`'
        )
    return _check_args_class_of(type(args))


_encode_lines = msgspec.json.Encoder(order="deterministic").encode_lines


class _ArgsType:
    """What checking args of one JobArgs class needs, made once per class.

    A msgspec Struct does not validate its fields when it is built
    (``SendEmail(user_id="x")`` is accepted), so args are checked by decoding their
    encoded bytes back into the class: what a worker's decoder would refuse later is
    refused at insert instead. Naive datetimes decode fine, so classes that may hold a
    ``datetime`` (a field of that type, or of ``Any``) have their objects walked too.
    """

    __slots__ = ("decoder", "list_decoder", "may_hold_datetimes")

    def __init__(self, cls: type) -> None:
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(cls)
        self.list_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(list[cls])  # type: ignore[valid-type]
        self.may_hold_datetimes = _may_hold_datetime(msgspec.inspect.type_info(cls), set())


_args_types: dict[type, _ArgsType] = {}


def _args_type(cls: type) -> _ArgsType:
    t = _args_types.get(cls)
    if t is None:
        t = _ArgsType(cls)
        if len(_args_types) < 10_000:
            _args_types[cls] = t
    return t


def _may_hold_datetime(t: msgspec.inspect.Type, seen: set[int]) -> bool:
    """Whether a value of type ``t`` may hold a datetime without a required time zone."""
    mi = msgspec.inspect
    if isinstance(t, mi.DateTimeType):
        return t.tz is not True
    if isinstance(t, mi.AnyType):
        return True
    if isinstance(t, mi.StructType | mi.DataclassType | mi.TypedDictType | mi.NamedTupleType):
        if id(t.cls) in seen:
            return False
        seen.add(id(t.cls))
        return any(_may_hold_datetime(f.type, seen) for f in t.fields)
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _may_hold_datetime(t.item_type, seen)
    if isinstance(t, mi.TupleType):
        return any(_may_hold_datetime(i, seen) for i in t.item_types)
    if isinstance(t, mi.DictType):
        return _may_hold_datetime(t.key_type, seen) or _may_hold_datetime(t.value_type, seen)
    if isinstance(t, mi.UnionType):
        return any(_may_hold_datetime(i, seen) for i in t.types)
    if isinstance(t, mi.Metadata):
        return _may_hold_datetime(t.type, seen)
    return False


def _has_naive_datetime(args: object) -> bool:
    tree = msgspec.to_builtins(args, builtin_types=(datetime,))
    return _any_leaf(tree, lambda v: isinstance(v, datetime) and v.utcoffset() is None)


def _encode_args(cls: type, args: object) -> bytes:
    """The args encoded for the jsonb column, checked; InvalidArgsError otherwise."""
    encoded, why = _encode_json(args)
    if encoded is None:
        raise InvalidArgsError(f"args of kind {cls.kind!r} cannot be stored: {why}")  # type: ignore[attr-defined]
    _check_args(cls, args, encoded)
    return encoded


def _check_args(cls: type, args: object, encoded: bytes) -> None:
    """Refuse args whose encoding does not decode back into their class, or that hold
    a naive datetime (stored without its time zone, it would mean another time)."""
    t = _args_type(cls)
    try:
        t.decoder.decode(encoded)
    except msgspec.ValidationError as exc:
        kind = getattr(cls, "kind", cls.__name__)
        raise InvalidArgsError(
            f"args of kind {kind!r} do not match {cls.__name__}: {exc} "
            "(a msgspec Struct does not check its fields when it is built)"
        ) from None
    if t.may_hold_datetimes and _has_naive_datetime(args):
        kind = getattr(cls, "kind", cls.__name__)
        raise InvalidArgsError(
            f"args of kind {kind!r} hold a naive datetime; use timezone-aware ones, e.g. "
            "datetime.now(timezone.utc)"
        )


def _batch_args_valid(items: Sequence[object], texts: list[str]) -> bool:
    """:func:`_check_args` for a whole batch: one decode per class of the batch."""
    by_class: dict[type, list[str]] = {}
    for a, text in zip(items, texts, strict=True):
        by_class.setdefault(type(a), []).append(text)
    for cls, group in by_class.items():
        t = _args_type(cls)
        try:
            t.list_decoder.decode("[" + ",".join(group) + "]")
        except msgspec.ValidationError:
            return False
        if t.may_hold_datetimes and any(_has_naive_datetime(a) for a in items if type(a) is cls):
            return False
    return True


def build_plain_params(items: Sequence[object]) -> list[InsertParams] | None:
    """The params of a batch of bare JobArgs whose classes take every default option,
    encoded by one encoder call instead of one per job; None when some item needs
    :func:`build_insert_params` (a pair with options, a class with its own
    ``insert_opts()``, something that is not JobArgs, args that cannot be stored),
    which then also words the error.

    Measured on a 100k batch of small args: 1.1-1.4 us a job item by item, ~0.4 us so.
    """
    if not items:
        return []
    kinds: dict[type, str] = {}
    for cls in set(map(type, items)):
        # Not seen yet, its own insert_opts, or not JobArgs at all: the general path.
        if _own_opts.get(cls) is not False and (
            not issubclass(cls, JobArgs) or _check_args_class_of(cls)
        ):
            return None
        kinds[cls] = cls.kind  # type: ignore[attr-defined]
    try:
        whole = _encode_lines(items)
        texts = whole.decode().split("\n")
    except Exception:  # the per-job path raises what it would raise, for the first item
        return None
    texts.pop()  # each job's line ends with a newline
    if len(texts) != len(items):
        return None  # a msgspec.Raw value holds a newline of its own
    # Brackets take a character each, so only a line this long can nest too deep.
    closer_look = (
        b"\\u0000" in whole or b"null" in whole or max(map(len, texts)) > 2 * MAX_JSON_DEPTH
    )
    # Content that needs a look job by job, in a batch that is most likely fine.
    if closer_look and any(_unstorable(t.encode(), a) for t, a in zip(texts, items, strict=True)):
        return None
    if not _batch_args_valid(items, texts):
        return None
    jobs = cast("Sequence[JobArgs]", items)
    return [
        InsertParams(
            a, t, kinds[type(a)], DEFAULT_MAX_ATTEMPTS, "{}", DEFAULT_PRIORITY, DEFAULT_QUEUE,
            None, _NO_TAGS, None, None,
        )
        for a, t in zip(jobs, texts, strict=True)
    ]  # fmt: skip


def _check_args_class_of(cls: type) -> bool:
    """Whether the JobArgs class ``cls`` has its own insert_opts or sequence_opts (and
    remember it): its jobs then take the general path."""
    own = (
        cls.insert_opts is not JobArgs.insert_opts  # type: ignore[attr-defined]
        or cls.sequence_opts is not JobArgs.sequence_opts  # type: ignore[attr-defined]
    )
    if len(_own_opts) < 10_000:
        _own_opts[cls] = own
    return own


def build_insert_params(
    args: JobArgs, opts: InsertOpts | None, now: datetime | None = None
) -> InsertParams:
    """Validate and encode one job. Raises before anything touches the database."""
    cls = type(args)
    own_opts = _own_opts.get(cls)
    if own_opts is None:
        own_opts = _check_args_class(args)
    if opts is None and not own_opts:
        # The common case, kept lean for big batches: defaults all the way.
        encoded = _encode_args(cls, args)
        return InsertParams(
            args,
            encoded.decode(),
            cls.kind,
            DEFAULT_MAX_ATTEMPTS,
            "{}",
            DEFAULT_PRIORITY,
            DEFAULT_QUEUE,
            None,
            _NO_TAGS,
            None,
            None,
        )
    if opts is not None and not isinstance(opts, InsertOpts):
        raise InvalidOptsError(f"opts must be an InsertOpts, got {type(opts).__name__}")
    o = _merge(opts, args.insert_opts())
    kind = cls.kind
    encoded = _encode_args(cls, args)
    queue = DEFAULT_QUEUE
    priority = DEFAULT_PRIORITY
    max_attempts = DEFAULT_MAX_ATTEMPTS
    scheduled_at: datetime | None = None
    tags: Sequence[str] = _NO_TAGS
    metadata = "{}"
    ukey: bytes | None = None
    ustates: int | None = None
    on_conflict = 0
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
                if now is None:
                    now = datetime.now(UTC)
                try:
                    scheduled_at = now + d
                except OverflowError:
                    raise InvalidOptsError(f"delay {d} is too far in the future") from None
        if o.tags is not None:
            tags = list(o.tags)
        if o.metadata is not None or o.ephemeral:
            meta: dict[str, Any] = dict(o.metadata or {})
            if o.ephemeral:
                meta[EPHEMERAL_KEY] = True  # reserved: set here, after validation
            metadata = _encode_metadata(meta, kind)
        if o.unique is not None:
            if now is None:
                now = datetime.now(UTC)
            ukey = unique_key(kind, queue, encoded, o.unique, now)
            ustates = o.unique.states_mask
            on_conflict = o.unique.conflict_mask
    if cls.sequence_opts is not JobArgs.sequence_opts:
        # Flow control: the job's sequence, fixed at insert (see _flow.SequenceOpts).
        in_sequence = sequence_metadata(args)
        if in_sequence is not None:
            merged: dict[str, Any] = {}
            if o is not None:
                merged.update(o.metadata or {})
                if o.ephemeral:
                    merged[EPHEMERAL_KEY] = True
            merged.update(in_sequence)
            metadata = _encode_metadata(merged, kind)
    if queue not in _valid_queues:
        validate_queue(queue)
        if len(_valid_queues) < 1000:
            _valid_queues.add(queue)
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
        unique_on_conflict=on_conflict,
    )


def _encode_metadata(metadata: Mapping[str, Any], kind: str) -> str:
    raw, why = _encode_json(dict(metadata))
    if raw is None:
        raise InvalidOptsError(f"metadata of a {kind!r} job cannot be stored: {why}")
    return raw.decode()
