"""JobArgs, InsertOpts and UniqueOpts: validation at the boundary, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from pyriver_async import (
    ConfigError,
    InsertOpts,
    InvalidArgsError,
    InvalidOptsError,
    JobArgs,
    JobState,
    KindConflictError,
    QueueConfig,
    UniqueOpts,
)
from pyriver_async._args import kind_registry
from pyriver_async._insert_params import MAX_JSON_DEPTH, build_insert_params


class Email(JobArgs, kind="unit_args_email"):
    user_id: int
    subject: str = ""


class WithDefaults(JobArgs, kind="unit_args_defaults"):
    n: int = 0

    def insert_opts(self) -> InsertOpts | None:
        return InsertOpts(queue="mail", priority=3, tags=["a"], delay=timedelta(minutes=5))


class Anything(JobArgs, kind="unit_args_anything"):
    value: Any = None


# -- JobArgs -----------------------------------------------------------------------------


def test_kind_is_a_class_attribute_and_registered() -> None:
    assert Email.kind == "unit_args_email"
    assert Email(user_id=1).kind == "unit_args_email"
    assert kind_registry["unit_args_email"] is Email
    # The kind is not a field: it is not encoded with the args.
    assert msgspec.json.encode(Email(user_id=1)) == b'{"user_id":1,"subject":""}'


def test_two_classes_with_one_kind_fail_at_definition() -> None:
    class First(JobArgs, kind="unit_args_dup"):
        a: int

    with pytest.raises(KindConflictError, match="already used"):

        class Second(JobArgs, kind="unit_args_dup"):
            b: int

    assert kind_registry["unit_args_dup"] is First


def test_redefining_the_same_class_takes_the_kind_over() -> None:
    def make() -> type[JobArgs]:
        class Again(JobArgs, kind="unit_args_again"):
            a: int

        return Again

    first, second = make(), make()
    assert first is not second
    assert kind_registry["unit_args_again"] is second


def test_subclass_without_kind_is_refused() -> None:
    with pytest.raises(KindConflictError, match="needs a kind"):

        class NoKind(JobArgs):
            a: int


def test_subclass_inheriting_a_kind_is_refused() -> None:
    with pytest.raises(KindConflictError, match="inherits the kind"):

        class MoreEmail(Email):
            extra: int = 0


@pytest.mark.parametrize(
    "kind",
    [
        "",
        "k" * 128,
        "has space",
        "tab\there",
        "newline\n",
        "trailing_newline\n",
        "nul\x00",
        "\ud800",
    ],
)
def test_invalid_kinds_are_refused(kind: str) -> None:
    with pytest.raises(KindConflictError):

        class Bad(JobArgs, kind=kind):
            a: int


def test_kind_of_127_chars_is_the_longest() -> None:
    class Long(JobArgs, kind="k" * 127):
        a: int

    assert Long.kind == "k" * 127


def test_msgspec_class_keywords_still_work() -> None:
    class Frozen(JobArgs, kind="unit_args_frozen", frozen=True):  # type: ignore[misc]
        a: int

    with pytest.raises(AttributeError):
        Frozen(a=1).a = 2  # type: ignore[misc]


# -- InsertOpts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"priority": 0},
        {"priority": 5},
        {"priority": True},
        {"priority": "1"},
        {"priority": 1.0},
        {"queue": ""},
        {"queue": "q" * 128},
        {"queue": "a'; drop table river_job; --"},
        {"queue": "with space"},
        {"queue": "trailing\n"},
        {"queue": "_leading"},
        {"queue": 5},
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"max_attempts": 40000},
        {"max_attempts": False},
        {"scheduled_at": datetime(2030, 1, 1)},
        {"scheduled_at": "2030-01-01T00:00:00Z"},
        {"scheduled_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))},
        {"delay": -1},
        {"delay": timedelta(seconds=-1)},
        {"delay": float("inf")},
        {"delay": float("nan")},
        {"delay": "5"},
        {"delay": True},
        {"delay": 5, "scheduled_at": datetime(2030, 1, 1, tzinfo=UTC)},
        {"tags": "a,b"},
        {"tags": ["a,b"]},
        {"tags": ["t" * 256]},
        {"tags": [""]},
        {"tags": ["new\nline"]},
        {"tags": ["trailing\n"]},
        {"tags": ["\ud800"]},
        {"tags": [1]},
        {"tags": {"a"}},
        {"metadata": {1: "x"}},
        {"metadata": [("a", 1)]},
        {"unique": {"by_args": True}},
    ],
)
def test_invalid_insert_opts_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptsError):
        InsertOpts(**kwargs)


def test_a_misspelled_option_is_the_librarys_typed_error() -> None:
    with pytest.raises(InvalidOptsError, match="unexpected keyword argument 'qeueu'"):
        InsertOpts(qeueu="default")  # type: ignore[call-arg]
    with pytest.raises(InvalidOptsError, match="by_arg"):
        UniqueOpts(by_arg=True)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="max_wokers"):
        QueueConfig(max_wokers=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "key", ["cancel_attempted_at", "snoozes", "output", "unique_key_conflict", "river:log",
            "pyriver:anything"],
)  # fmt: skip
def test_metadata_keys_with_engine_meaning_are_refused(key: str) -> None:
    with pytest.raises(InvalidOptsError, match="reserved"):
        InsertOpts(metadata={key: "2026-01-01T00:00:00Z", "tenant": "a"})


def test_other_metadata_keys_are_accepted() -> None:
    assert InsertOpts(metadata={"tenant": "a", "riverside": 1}).metadata == {
        "tenant": "a",
        "riverside": 1,
    }


class Typed(JobArgs, kind="args_typed_check"):
    user_id: int
    when: datetime | None = None


def test_args_are_validated_against_their_type_at_the_boundary() -> None:
    with pytest.raises(InvalidArgsError, match="Expected `int`, got `str`"):
        build_insert_params(Typed(user_id="x"), None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgsError, match="naive datetime"):
        build_insert_params(Typed(user_id=1, when=datetime(2026, 1, 1)), None)
    with pytest.raises(InvalidArgsError, match="naive datetime"):
        build_insert_params(Typed(user_id=1, when=datetime(2026, 1, 1)), InsertOpts(queue="other"))
    ok = build_insert_params(Typed(user_id=1, when=datetime(2026, 1, 1, tzinfo=UTC)), None)
    assert ok.kind == "args_typed_check"


def test_valid_insert_opts_are_normalised() -> None:
    o = InsertOpts(
        queue="mail.high:1-a_b",
        priority=4,
        max_attempts=32767,
        delay=2.5,
        tags=["t" * 255, "ünïcode"],
        metadata={"k": [1, {"x": None}]},
    )
    assert o.delay == timedelta(seconds=2.5)
    assert o.tags == ("t" * 255, "ünïcode")


# -- UniqueOpts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"by_period": 0},
        {"by_period": timedelta(seconds=-1)},
        {"by_period": "1h"},
        {"by_period": float("nan")},
        {"by_state": ["completed"]},
        {"by_state": ["available", "pending", "running", "bogus"]},
        {"by_state": "available"},
        {"by_args": "yes"},
        {"by_queue": 1},
    ],
)
def test_invalid_unique_opts_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptsError):
        UniqueOpts(**kwargs)


def test_unique_states_mask() -> None:
    assert UniqueOpts().states_mask == 245  # River's default: all but cancelled, discarded
    every = UniqueOpts(by_state=list(JobState))
    assert every.states_mask == 255
    required = UniqueOpts(by_state=["available", "pending", "running", "scheduled"])
    assert required.states_mask == 1 | 16 | 64 | 128
    assert UniqueOpts(by_period=60).period == timedelta(minutes=1)


# -- encoding (build_insert_params) ------------------------------------------------------


def test_defaults_from_insert_opts_merge_under_explicit_opts() -> None:
    now = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
    p = build_insert_params(WithDefaults(), None, now)
    assert (p.queue, p.priority, p.tags) == ("mail", 3, ["a"])
    assert p.scheduled_at == now + timedelta(minutes=5)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    p = build_insert_params(WithDefaults(), InsertOpts(priority=1, scheduled_at=at), now)
    assert (p.queue, p.priority, p.scheduled_at) == ("mail", 1, at)


def test_insert_opts_hook_must_return_insert_opts() -> None:
    class Wrong(JobArgs, kind="unit_args_wrong_hook"):
        def insert_opts(self) -> InsertOpts | None:
            return {"queue": "x"}  # type: ignore[return-value]

    with pytest.raises(InvalidOptsError):
        build_insert_params(Wrong(), None)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        "nul \x00 inside",
        {"key\x00": 1},
        "\ud800 lone surrogate",
        float("nan"),
        [1.0, float("inf")],
        {"a": float("-inf")},
        {1: "x", "a": "y"},  # keys that cannot be sorted together
    ],
)
def test_args_that_cannot_be_stored_raise(value: Any) -> None:
    with pytest.raises(InvalidArgsError):
        build_insert_params(Anything(value=value), None)


def test_not_job_args_raises() -> None:
    with pytest.raises(InvalidArgsError):
        build_insert_params({"a": 1}, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptsError):
        build_insert_params(Email(user_id=1), {"queue": "x"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["\\u0000", "\\\\u0000", "a\\u0000b", '"\\u0000"', "\\" * 7 + "u0000"]
)
def test_escaped_backslash_before_u0000_is_not_a_nul(text: str) -> None:
    p = build_insert_params(Anything(value=text), None)
    assert msgspec.json.decode(p.encoded_args, type=Anything).value == text


def test_metadata_that_cannot_be_stored_raises() -> None:
    for meta in ({"a": object()}, {"a": "\x00"}, {"a": float("nan")}, {"a": {(1, 2): 3}}):
        with pytest.raises(InvalidOptsError):
            build_insert_params(Email(user_id=1), InsertOpts(metadata=meta))


def test_delay_beyond_datetime_range_raises() -> None:
    with pytest.raises(InvalidOptsError):
        build_insert_params(Email(user_id=1), InsertOpts(delay=timedelta(days=999_999_999)))


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_limit() -> None:
    # The args object is one level, so a value of MAX_JSON_DEPTH - 1 levels fits exactly.
    p = build_insert_params(Anything(value=_nested(MAX_JSON_DEPTH - 1)), None)
    assert msgspec.json.decode(p.encoded_args, type=Anything).value == _nested(MAX_JSON_DEPTH - 1)
    with pytest.raises(InvalidArgsError, match="nested deeper"):
        build_insert_params(Anything(value=_nested(MAX_JSON_DEPTH)), None)
    # Far deeper than msgspec can encode: the same typed error, not a RecursionError.
    with pytest.raises(InvalidArgsError, match="nested deeper"):
        build_insert_params(Anything(value=_nested(100_000)), None)
    # Brackets inside strings do not count.
    build_insert_params(Anything(value=["[" * 10_000, "{" * 10_000]), None)


def test_dict_key_order_does_not_change_the_encoding() -> None:
    a = build_insert_params(Anything(value={"b": 1, "a": {"y": 1, "x": 2}}), None)
    b = build_insert_params(Anything(value={"a": {"x": 2, "y": 1}, "b": 1}), None)
    assert a.encoded_args == b.encoded_args
