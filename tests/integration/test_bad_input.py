"""Bad input to the insert path: a typed error and nothing written, or exact storage.

Every case counts the rows afterwards. The hypothesis suite throws random valid
options and args (unicode, quotes, backslashes, SQL text, nesting, big integers) at
insert and insert_many and reads them back, and random invalid values that must
always be refused with a typed error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyriver_async import (
    Client,
    InsertOpts,
    InvalidArgsError,
    InvalidOptsError,
    JobArgs,
    JobState,
    KindConflictError,
    PyRiverError,
    _insert,
)

from .test_insert import count_rows


class Fuzz(JobArgs, kind="it_bad_input_fuzz"):
    text: str
    number: int
    ratio: float
    flag: bool
    items: list[Any]
    mapping: dict[str, Any]
    maybe: str | None = None


class Loose(JobArgs, kind="it_bad_input_loose"):
    value: Any = None


def _fuzz(**over: Any) -> Fuzz:
    base: dict[str, Any] = dict(
        text="t", number=1, ratio=0.5, flag=True, items=[], mapping={}, maybe=None
    )
    base.update(over)
    return Fuzz(**base)


Attempt = Callable[[Client], Awaitable[Any]]

INVALID: list[tuple[str, Attempt, type[Exception]]] = [
    ("priority 0", lambda c: c.insert(_fuzz(), InsertOpts(priority=0)), InvalidOptsError),
    ("priority 5", lambda c: c.insert(_fuzz(), InsertOpts(priority=5)), InvalidOptsError),
    ("priority True", lambda c: c.insert(_fuzz(), InsertOpts(priority=True)), InvalidOptsError),
    (
        "priority '1'",
        lambda c: c.insert(_fuzz(), InsertOpts(priority="1")),  # type: ignore[arg-type]
        InvalidOptsError,
    ),
    ("empty queue", lambda c: c.insert(_fuzz(), InsertOpts(queue="")), InvalidOptsError),
    ("128-char queue", lambda c: c.insert(_fuzz(), InsertOpts(queue="q" * 128)), InvalidOptsError),
    (
        "queue with SQL",
        lambda c: c.insert(_fuzz(), InsertOpts(queue="a'; drop table river_job; --")),
        InvalidOptsError,
    ),
    ("queue with NUL", lambda c: c.insert(_fuzz(), InsertOpts(queue="a\x00b")), InvalidOptsError),
    ("max_attempts 0", lambda c: c.insert(_fuzz(), InsertOpts(max_attempts=0)), InvalidOptsError),
    (
        "max_attempts 40000",
        lambda c: c.insert(_fuzz(), InsertOpts(max_attempts=40000)),
        InvalidOptsError,
    ),
    ("unencodable args", lambda c: c.insert(Loose(value=object())), InvalidArgsError),
    ("args with NUL", lambda c: c.insert(_fuzz(text="a\x00b")), InvalidArgsError),
    ("args key with NUL", lambda c: c.insert(_fuzz(mapping={"k\x00": 1})), InvalidArgsError),
    ("args not UTF-8", lambda c: c.insert(_fuzz(text="\udcff")), InvalidArgsError),
    ("args NaN", lambda c: c.insert(_fuzz(ratio=math.nan)), InvalidArgsError),
    ("args infinity", lambda c: c.insert(_fuzz(items=[math.inf])), InvalidArgsError),
    (
        "naive scheduled_at",
        lambda c: c.insert(_fuzz(), InsertOpts(scheduled_at=datetime(2030, 1, 1))),
        InvalidOptsError,
    ),
    ("negative delay", lambda c: c.insert(_fuzz(), InsertOpts(delay=-1)), InvalidOptsError),
    (
        "negative timedelta delay",
        lambda c: c.insert(_fuzz(), InsertOpts(delay=timedelta(seconds=-5))),
        InvalidOptsError,
    ),
    ("tag with comma", lambda c: c.insert(_fuzz(), InsertOpts(tags=["a,b"])), InvalidOptsError),
    ("256-char tag", lambda c: c.insert(_fuzz(), InsertOpts(tags=["t" * 256])), InvalidOptsError),
    (
        "metadata non-str key",
        lambda c: c.insert(_fuzz(), InsertOpts(metadata={1: "x"})),  # type: ignore[dict-item]
        InvalidOptsError,
    ),
    (
        "metadata with NUL",
        lambda c: c.insert(_fuzz(), InsertOpts(metadata={"a": "\x00"})),
        InvalidOptsError,
    ),
    (
        "unknown opts keyword",
        lambda c: c.insert(_fuzz(), InsertOpts(queueu="x")),  # type: ignore[call-arg]
        InvalidOptsError,
    ),
    ("not JobArgs", lambda c: c.insert({"a": 1}), InvalidArgsError),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("attempt", "exc"), [(a, e) for _, a, e in INVALID], ids=[n for n, _, _ in INVALID]
)
async def test_invalid_input_raises_and_writes_nothing(
    pool: asyncpg.Pool, attempt: Attempt, exc: type[Exception]
) -> None:
    client = Client(pool)
    with pytest.raises(exc) as info:
        await attempt(client)
    if exc is not TypeError:
        assert isinstance(info.value, PyRiverError)
    assert await count_rows(pool) == 0
    # The table is intact and the client still works.
    await client.insert(_fuzz())
    assert await count_rows(pool) == 1


BAD_ITEMS: list[tuple[str, Callable[[], Any], type[Exception]]] = [
    ("NUL in args", lambda: _fuzz(text="\x00"), InvalidArgsError),
    ("unencodable args", lambda: Loose(value=object()), InvalidArgsError),
    ("NaN in args", lambda: _fuzz(ratio=math.nan), InvalidArgsError),
    ("too deep", lambda: Loose(value=_deep(600)), InvalidArgsError),
    ("bad metadata", lambda: (_fuzz(), InsertOpts(metadata={"a": {1j}})), InvalidOptsError),
    ("wrong opts type", lambda: (_fuzz(), "default"), InvalidOptsError),
]


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("threshold", [1, 100_000], ids=["copy", "unnest"])
@pytest.mark.parametrize(
    ("make", "exc"), [(m, e) for _, m, e in BAD_ITEMS], ids=[n for n, _, _ in BAD_ITEMS]
)
async def test_one_bad_item_in_insert_many_writes_nothing(
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    threshold: int,
    make: Callable[[], Any],
    exc: type[Exception],
) -> None:
    monkeypatch.setattr(_insert, "COPY_THRESHOLD", threshold)
    client = Client(pool)
    items: list[Any] = [_fuzz(number=i) for i in range(100)]
    items.insert(37, make())
    with pytest.raises(exc):
        await client.insert_many(items)
    assert await count_rows(pool) == 0


def test_kind_errors_at_class_definition() -> None:
    class Taken(JobArgs, kind="it_bad_input_taken"):
        a: int

    with pytest.raises(KindConflictError):

        class AlsoTaken(JobArgs, kind="it_bad_input_taken"):
            b: int

    with pytest.raises(KindConflictError):

        class TooLong(JobArgs, kind="k" * 128):
            a: int

    with pytest.raises(KindConflictError):

        class NoKind(JobArgs):
            a: int


# -- hypothesis --------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
NASTY = st.sampled_from(
    [
        "'; drop table river_job; --",
        "' OR '1'='1",
        '"',
        "\\",
        "\\u0000",
        "\\\\u0000",
        "$1",
        "%s",
        "NULL",
        "null",
        "SELECT * FROM river_job",
        "\u2028",
        "😀",
        "\U0010ffff",
        "é",
        "{",
        "]",
    ]
)
# Any character PostgreSQL can store in text: all but NUL and lone surrogates.
TEXT = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
    NASTY,
    st.lists(NASTY, max_size=4).map("".join),
)
JSON = st.recursive(
    st.none() | st.booleans() | INT64 | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
FUZZ = st.builds(
    Fuzz,
    text=TEXT,
    number=INT64,
    ratio=FLOATS,
    flag=st.booleans(),
    items=st.lists(JSON, max_size=5),
    mapping=st.dictionaries(TEXT, JSON, max_size=5),
    maybe=st.none() | TEXT,
)
OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
SCHEDULED = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=OFFSETS
)
TAG = st.text(
    alphabet=st.characters(
        codec="utf-8",  # no lone surrogates
        exclude_characters="," + "".join(map(chr, range(32))) + "\x7f",
    ),
    min_size=1,
    max_size=255,
)
VALID_OPTS = st.builds(
    InsertOpts,
    queue=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,126}", fullmatch=True),
    priority=st.none() | st.integers(1, 4),
    max_attempts=st.none() | st.integers(1, 32767),
    scheduled_at=st.none() | SCHEDULED,
    tags=st.none() | st.lists(TAG, max_size=4),
    metadata=st.none() | st.dictionaries(TEXT, JSON, max_size=4),
)
HYPOTHESIS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(job: Any, args: Fuzz, opts: InsertOpts | None, inserted_at: datetime) -> None:
    assert job.args == args
    o = opts or InsertOpts()
    assert job.queue == (o.queue or "default")
    assert job.priority == (o.priority or 1)
    assert job.max_attempts == (o.max_attempts or 25)
    assert job.tags == list(o.tags or ())
    assert job.metadata == dict(o.metadata or {})
    if o.scheduled_at is not None:
        assert job.scheduled_at == o.scheduled_at
        if o.scheduled_at > inserted_at + timedelta(seconds=5):
            assert job.state is JobState.SCHEDULED
        elif o.scheduled_at < inserted_at - timedelta(seconds=5):
            assert job.state is JobState.AVAILABLE
    else:
        assert job.state is JobState.AVAILABLE


@HYPOTHESIS
@given(args=FUZZ, opts=st.none() | VALID_OPTS)
async def test_valid_input_round_trips_exactly(
    pool: asyncpg.Pool, args: Fuzz, opts: InsertOpts | None
) -> None:
    client = Client(pool)
    now = datetime.now(UTC)
    res = await client.insert(args, opts)
    stored = await client.get(res.job.id)
    assert stored == res.job
    _check(stored, args, opts, now)


@HYPOTHESIS
@given(
    batch=st.lists(st.tuples(FUZZ, st.none() | VALID_OPTS), min_size=1, max_size=8),
    copy=st.booleans(),
)
async def test_valid_batches_round_trip_exactly(
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    batch: list[tuple[Fuzz, InsertOpts | None]],
    copy: bool,
) -> None:
    monkeypatch.setattr(_insert, "COPY_THRESHOLD", 1 if copy else 100_000)
    client = Client(pool)
    now = datetime.now(UTC)
    results = await client.insert_many(batch)
    assert len(results) == len(batch)
    for (args, opts), res in zip(batch, results, strict=True):
        stored = await client.get(res.job.id)
        assert stored == res.job
        _check(stored, args, opts, now)


QUEUE_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,126}")
NOT_QUEUE = st.one_of(
    st.one_of(st.text(max_size=200), NASTY).filter(lambda s: QUEUE_RULE.fullmatch(s) is None),
    st.integers(),
    st.binary(),
)
INVALID_OPTS = st.one_of(
    st.fixed_dictionaries(
        {
            "priority": st.one_of(
                st.integers().filter(lambda p: not 1 <= p <= 4),
                st.booleans(),
                st.text(),
                st.floats(),
            )
        }
    ),
    st.fixed_dictionaries({"queue": NOT_QUEUE}),
    st.fixed_dictionaries(
        {
            "max_attempts": st.one_of(
                st.integers(max_value=0), st.integers(min_value=32768), st.floats()
            )
        }
    ),
    st.fixed_dictionaries({"scheduled_at": st.datetimes()}),  # naive
    st.fixed_dictionaries(
        {
            "delay": st.one_of(
                st.floats(max_value=-1e-6), st.timedeltas(max_value=timedelta(microseconds=-1))
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "tags": st.lists(
                st.one_of(
                    st.text(min_size=256, max_size=300),
                    st.text(max_size=20).map(lambda s: s + "," + s),
                    st.text(max_size=20).map(lambda s: s + "\n"),
                    st.just(""),
                ),
                min_size=1,
                max_size=3,
            )
        }
    ),
    st.fixed_dictionaries(
        {"metadata": st.dictionaries(st.integers() | st.none(), JSON, min_size=1, max_size=3)}
    ),
)


@HYPOTHESIS
@given(kwargs=INVALID_OPTS, args=FUZZ)
async def test_invalid_opts_are_always_refused(
    pool: asyncpg.Pool, kwargs: dict[str, Any], args: Fuzz
) -> None:
    client = Client(pool)
    before = await count_rows(pool)
    with pytest.raises(InvalidOptsError):
        await client.insert(args, InsertOpts(**kwargs))
    assert await count_rows(pool) == before


@HYPOTHESIS
@given(
    good=st.lists(FUZZ, max_size=5),
    bad=st.one_of(
        st.tuples(TEXT, TEXT).map(lambda t: _fuzz(text=t[0] + "\x00" + t[1])),
        TEXT.map(lambda t: _fuzz(mapping={t + "\x00": 1})),
        st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda f: _fuzz(ratio=f)),
        st.sampled_from(["\ud800", "\udfff", "a\udcffb"]).map(lambda s: _fuzz(maybe=s)),
    ),
)
async def test_invalid_args_are_always_refused(
    pool: asyncpg.Pool, good: list[Fuzz], bad: Fuzz
) -> None:
    client = Client(pool)
    before = await count_rows(pool)
    with pytest.raises(InvalidArgsError):
        await client.insert(bad)
    with pytest.raises(InvalidArgsError):
        await client.insert_many([*good, bad, *good])
    assert await count_rows(pool) == before
