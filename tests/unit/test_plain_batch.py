"""insert_many's one-call encoding of a plain batch gives what the per-job path gives.

``build_plain_params`` is a shortcut: for a batch of bare JobArgs with every default
option it encodes all the args in one encoder call. It must build exactly the params
the per-job path builds, and hand every batch it cannot vouch for (an item that cannot
be stored, options, a foreign object) back to that path, which words the error.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyriver_async import InsertOpts, InvalidArgsError, JobArgs
from pyriver_async._insert_params import MAX_JSON_DEPTH, build_insert_params, build_plain_params


class Loose(JobArgs, kind="unit_plain_loose"):
    value: Any = None


class Other(JobArgs, kind="unit_plain_other"):
    n: int = 0
    name: str = ""


class OwnOpts(JobArgs, kind="unit_plain_own_opts"):
    n: int = 0

    def insert_opts(self) -> InsertOpts | None:
        return InsertOpts(queue="elsewhere")


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def _each(items: list[Any]) -> list[Any] | None:
    try:
        return [build_insert_params(a, None) for a in items]
    except InvalidArgsError:
        return None


@settings(max_examples=300, deadline=None)
@given(values=st.lists(JSONISH, min_size=1, max_size=30), other=st.booleans())
def test_a_batch_encodes_as_its_jobs_do_one_by_one(values: list[Any], other: bool) -> None:
    items: list[JobArgs] = [Loose(value=v) for v in values]
    if other:
        items.append(Other(n=len(values), name="line\nbreak"))
    batch = build_plain_params(items)
    each = _each(items)
    if each is None:
        assert batch is None  # the per-job path then raises the typed error
    else:
        assert batch == each


@pytest.mark.parametrize(
    "bad",
    [
        Loose(value="nul \x00 inside"),
        Loose(value={"a": [1.0, math.nan]}),
        Loose(value=math.inf),
        Loose(value="\ud800"),
        Loose(value=object()),
        Loose(value={1: "x", "a": "y"}),
    ],
    ids=["nul", "nan", "inf", "surrogate", "object", "unsortable-keys"],
)
def test_one_unstorable_job_hands_the_batch_back(bad: Loose) -> None:
    items = [Loose(value=i) for i in range(50)]
    items.insert(20, bad)
    assert build_plain_params(items) is None


def test_too_deep_is_handed_back_and_just_deep_enough_is_not() -> None:
    def nested(depth: int) -> Any:
        value: Any = []
        for _ in range(depth - 1):
            value = [value]
        return value

    fits = [Loose(value=nested(MAX_JSON_DEPTH - 1)), Loose(value=1)]
    assert build_plain_params(fits) == _each(fits)
    assert build_plain_params([Loose(value=1), Loose(value=nested(MAX_JSON_DEPTH))]) is None
    # Many shallow jobs hold more brackets in all than the limit: still fine.
    shallow = [Loose(value=[[1]]) for _ in range(MAX_JSON_DEPTH)]
    assert build_plain_params(shallow) == _each(shallow)


def test_batches_with_options_or_foreign_items_take_the_per_job_path() -> None:
    assert build_plain_params([Loose(), OwnOpts()]) is None
    assert build_plain_params([Loose(), (Loose(), None)]) is None
    assert build_plain_params([Loose(), {"value": 1}]) is None
    assert build_plain_params([Loose(), None]) is None


class RawArgs(JobArgs, kind="unit_plain_raw"):
    v: msgspec.Raw


def test_raw_json_with_newlines_is_handed_back() -> None:
    # msgspec copies a Raw value as it is, newlines included: the lines no longer
    # match the jobs, so the batch goes to the per-job path, which stores it.
    items = [RawArgs(v=msgspec.Raw(b"[1,\n2]"))] + [RawArgs(v=msgspec.Raw(b"1"))] * 20
    assert build_plain_params(items) is None
    each = _each(items)
    assert each is not None
    assert msgspec.json.decode(each[0].encoded_args) == {"v": [1, 2]}


def test_an_empty_batch_has_no_params() -> None:
    assert build_plain_params([]) == []
