"""River-compatible unique keys, computed without a database."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pyriver_async import InsertOpts, JobArgs, UniqueOpts
from pyriver_async._insert_params import build_insert_params
from pyriver_async._unique import _rfc3339, period_lower_bound, sorted_args_json, unique_key


class K(JobArgs, kind="k"):
    # Declared out of order: the key sorts the top-level keys.
    b: str
    a: int


class Nested(JobArgs, kind="unit_unique_nested"):
    name: str
    extra: dict[str, int]


class Row(JobArgs, kind="unit_unique_row", array_like=True):
    a: int
    b: str


WED = datetime(2024, 5, 8, 15, 30, 12, 345678, tzinfo=UTC)


def test_weekly_period_starts_on_monday() -> None:
    week = timedelta(days=7)
    assert period_lower_bound(WED, week) == datetime(2024, 5, 6, tzinfo=UTC)
    assert period_lower_bound(WED, week).weekday() == 0
    for day in range(1, 60):
        t = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(days=day, hours=day % 24)
        lb = period_lower_bound(t, week)
        assert lb.weekday() == 0 and lb <= t < lb + week


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        (timedelta(hours=1), datetime(2024, 5, 8, 15, tzinfo=UTC)),
        (timedelta(minutes=15), datetime(2024, 5, 8, 15, 30, tzinfo=UTC)),
        (timedelta(days=1), datetime(2024, 5, 8, tzinfo=UTC)),
        (timedelta(seconds=1), datetime(2024, 5, 8, 15, 30, 12, tzinfo=UTC)),
        # Go's Truncate counts from January 1 of year 1 (not from midnight, nor from
        # 1970): that midnight is 17,736,312 h after it, 6 more than a multiple of 7,
        # so that day's 7 h windows start at 01:00, 08:00, 15:00 and 22:00.
        (timedelta(hours=7), datetime(2024, 5, 8, 15, tzinfo=UTC)),
    ],
)
def test_period_lower_bound(period: timedelta, expected: datetime) -> None:
    assert period_lower_bound(WED, period) == expected


def test_period_lower_bound_converts_to_utc() -> None:
    paris = WED.astimezone(timezone(timedelta(hours=2)))
    assert period_lower_bound(paris, timedelta(days=1)) == datetime(2024, 5, 8, tzinfo=UTC)


def test_rfc3339_is_gos_format() -> None:
    assert _rfc3339(datetime(2024, 5, 6, tzinfo=UTC)) == "2024-05-06T00:00:00Z"
    assert _rfc3339(datetime(5, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == "0005-01-02T03:04:05Z"


def test_unique_key_is_sha256_of_rivers_string() -> None:
    expected = hashlib.sha256(
        b'&kind=k&args={"a":1,"b":"x"}&period=2024-05-06T00:00:00Z&queue=q'
    ).digest()
    opts = UniqueOpts(by_args=True, by_period=timedelta(days=7), by_queue=True)
    encoded = b'{"b":"x","a":1}'
    assert unique_key("k", "q", encoded, opts, WED) == expected
    p = build_insert_params(K(b="x", a=1), InsertOpts(queue="q", unique=opts), WED)
    assert p.unique_key == expected
    assert p.unique_states == 245


@pytest.mark.parametrize(
    ("opts", "text"),
    [
        (UniqueOpts(), b"&kind=k"),
        (UniqueOpts(by_queue=True), b"&kind=k&queue=q"),
        (UniqueOpts(by_args=True), b'&kind=k&args={"a":1,"b":"x"}'),
        (UniqueOpts(by_period=3600), b"&kind=k&period=2024-05-08T15:00:00Z"),
    ],
)
def test_each_part_only_when_enabled(opts: UniqueOpts, text: bytes) -> None:
    p = build_insert_params(K(b="x", a=1), InsertOpts(queue="q", unique=opts), WED)
    assert p.unique_key == hashlib.sha256(text).digest()


def test_sorted_args_json_keeps_values_as_encoded() -> None:
    assert sorted_args_json(b'{"z":[3,1],"a":{"y":1,"x":2},"m":"\\u00e9"}') == (
        b'{"a":{"y":1,"x":2},"m":"\\u00e9","z":[3,1]}'
    )
    assert sorted_args_json(b"{}") == b"{}"
    # array_like args have no keys to sort: used as encoded.
    assert sorted_args_json(b'[1,"x"]') == b'[1,"x"]'


def test_key_ignores_dict_insertion_order() -> None:
    opts = InsertOpts(unique=UniqueOpts(by_args=True))
    one = build_insert_params(Nested(name="n", extra={"b": 1, "a": 2}), opts, WED)
    two = build_insert_params(Nested(name="n", extra={"a": 2, "b": 1}), opts, WED)
    three = build_insert_params(Nested(name="n", extra={"a": 2, "b": 3}), opts, WED)
    assert one.unique_key == two.unique_key != three.unique_key


def test_array_like_args_have_a_key() -> None:
    opts = InsertOpts(unique=UniqueOpts(by_args=True))
    p = build_insert_params(Row(a=1, b="x"), opts, WED)
    assert p.unique_key == hashlib.sha256(b'&kind=unit_unique_row&args=[1,"x"]').digest()


def test_key_differs_by_what_is_enabled() -> None:
    base = dict(kind="k", encoded_args=b'{"a":1}', now=WED)
    k1 = unique_key(queue="q1", opts=UniqueOpts(by_queue=True), **base)  # type: ignore[arg-type]
    k2 = unique_key(queue="q2", opts=UniqueOpts(by_queue=True), **base)  # type: ignore[arg-type]
    k3 = unique_key(queue="q1", opts=UniqueOpts(), **base)  # type: ignore[arg-type]
    k4 = unique_key(queue="q2", opts=UniqueOpts(), **base)  # type: ignore[arg-type]
    assert k1 != k2 and k3 == k4 and k1 != k3
