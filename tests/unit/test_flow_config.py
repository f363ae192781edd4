"""Flow control settings: bad input is a ConfigError at configuration, naming the
setting; conflicting limits are refused; good ones compile into the claim's rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pyriver_async import (
    ConfigError,
    InvalidOptsError,
    JobArgs,
    KindLimits,
    PartitionKey,
    QueueConfig,
    RateLimit,
    SequenceOpts,
    Workers,
)
from pyriver_async._claim import FlowClaimer, PlainClaimer, claimer_for, compile_rules
from pyriver_async._flow import sequence_metadata


class Export(JobArgs, kind="flowcfg_export"):
    customer_id: int = 0


class Webhook(JobArgs, kind="flowcfg_webhook"):
    customer_id: int = 0
    event: str = ""

    def sequence_opts(self) -> SequenceOpts:
        return SequenceOpts(by=("customer_id",))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"global_limit": 0}, "global_limit must be from 1"),
        ({"global_limit": -3}, "global_limit must be from 1"),
        ({"global_limit": True}, "global_limit must be an int"),
        ({"global_limit": 2.5}, "global_limit must be an int"),
        ({"partition_by": "customer_id", "partition_limit": 0}, "partition_limit must be from 1"),
        ({"partition_limit": 1}, "partition_limit needs partition_by"),
        ({"partition_by": "customer_id"}, "partition_by needs partition_limit"),
        ({"partition_by": 42, "partition_limit": 1}, "partition_by must be"),
        ({"partition_by": Export, "partition_limit": 1}, "not the class"),
        ({"fair": True}, "fair needs partition_by"),
        ({"fair": "yes"}, "fair must be True"),
        (
            {"partition_by": "c", "partition_limit": 1, "fair": {"a": 0}},
            "the weight of 'a' must be from 1",
        ),
        (
            {"partition_by": "c", "partition_limit": 1, "fair": {object: 2}},
            "is not a JSON value",
        ),
        (
            {"global_limit": 2, "partition_by": "c", "partition_limit": 3},
            "partition_limit 3 is above global_limit 2",
        ),
        ({"rate_limit": 10}, "rate_limit must be a RateLimit"),
        ({"kinds": {"flowcfg_export": {"global_limit": 1}}}, "must be a KindLimits"),
        ({"kinds": {"bad kind": KindLimits(global_limit=1)}}, "invalid"),
        ({"kinds": ["flowcfg_export"]}, "must map kinds"),
        ({"registered_kinds_only": "no"}, "registered_kinds_only must be True or False"),
    ],
)
def test_bad_limits_are_refused_at_configuration(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QueueConfig(**settings)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RateLimit(0), "RateLimit.limit must be from 1"),
        (lambda: RateLimit(10, per=0), "RateLimit.per must be a positive duration"),
        (lambda: RateLimit(10, per=timedelta(0)), "RateLimit.per must be a positive duration"),
        (lambda: RateLimit(10, per=-1), "RateLimit.per must be a positive duration"),
        (lambda: RateLimit(10, per=float("inf")), "RateLimit.per must be a positive duration"),
        (lambda: RateLimit(10, per="1s"), "RateLimit.per must be a timedelta"),  # type: ignore[arg-type]
        (lambda: RateLimit(10, burst=0), "RateLimit.burst must be from 1"),
        (lambda: RateLimit(10, by=3.5), "RateLimit.by must be"),  # type: ignore[arg-type]
        (lambda: RateLimit(10, every=1), "unexpected keyword argument 'every'"),  # type: ignore[call-arg]
        (lambda: PartitionKey(), "an empty PartitionKey"),
        (lambda: PartitionKey(args=("a",), metadata=("b",)), "not both"),
        (lambda: PartitionKey(args=("a", "b", "c", "d")), "at most 3 fields"),
        (lambda: PartitionKey(args=("a", "a")), "named twice"),
        (lambda: PartitionKey(args=("",)), "non-empty strings"),
        (lambda: PartitionKey(kind="yes"), "kind must be True or False"),  # type: ignore[arg-type]
        (lambda: KindLimits(local_limit=0), "local_limit must be from 1"),
        (lambda: KindLimits(global_limit=5, partition_limit=1), "needs partition_by"),
        (lambda: KindLimits(limit=3), "unexpected keyword argument 'limit'"),  # type: ignore[call-arg]
        (lambda: SequenceOpts(by=("a",), key="x"), "not both"),
        (lambda: SequenceOpts(name=""), "name must be a non-empty string"),
    ],
)
def test_bad_flow_values_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"global_limit": 5, "kinds": {"flowcfg_export": KindLimits(global_limit=6)}},
            "global_limit 6 is above the queue's global_limit 5",
        ),
        (
            {"max_workers": 4, "kinds": {"flowcfg_export": KindLimits(local_limit=5)}},
            "local_limit 5 is above max_workers 4",
        ),
        (
            {
                "kinds": {
                    "flowcfg_export": KindLimits(global_limit=1),
                    Export: KindLimits(global_limit=2),
                }
            },
            "kind 'flowcfg_export' is given twice",
        ),
        (
            {
                "partition_by": "customer_id",
                "fair": True,
                "kinds": {
                    "flowcfg_export": KindLimits(partition_by="customer_id", fair=True),
                },
            },
            "fairness is set for",
        ),
    ],
)
def test_conflicting_limits_for_one_kind_are_refused(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"conflicting limits: .*{message}"):
        QueueConfig(**settings)


def test_shorthands_normalise_to_a_partition_key() -> None:
    cfg = QueueConfig(
        partition_by="customer_id",
        partition_limit=1,
        rate_limit=RateLimit(100, per=timedelta(minutes=1), by=("token", "region")),
        kinds={Export: KindLimits(partition_by=PartitionKey(metadata=("tenant",), kind=True),
                                  partition_limit=2)},
    )  # fmt: skip
    assert cfg.partition_by == PartitionKey(args=("customer_id",))
    assert cfg.rate_limit is not None and cfg.rate_limit.by == PartitionKey(
        args=("token", "region")
    )
    assert list(cfg.kinds) == ["flowcfg_export"]  # a class key becomes its kind
    assert cfg.has_limits and not QueueConfig(max_workers=3).has_limits


def test_rate_limit_algorithm_parameters() -> None:
    rate = RateLimit(100, per=timedelta(minutes=1))
    assert rate.interval == pytest.approx(0.6)
    assert rate.tolerance == pytest.approx(99 * 0.6)  # a full bucket: 100 at once
    smooth = RateLimit(10, per=1, burst=1)
    assert smooth.tolerance == 0.0


def test_limits_compile_into_rules_of_the_claim() -> None:
    cfg = QueueConfig(
        max_workers=50,
        global_limit=20,
        partition_by="customer_id",
        partition_limit=2,
        fair={7: 3},
        kinds={
            "flowcfg_export": KindLimits(global_limit=4, local_limit=1, rate_limit=RateLimit(5))
        },
    )
    rules, fair_rule, weights = compile_rules("q", cfg)
    assert [(r.setting, r.kind, r.cap, r.src) for r in rules] == [
        ("global_limit", None, 20, "none"),
        ("partition_limit", None, 2, "args"),
        ("global_limit", "flowcfg_export", 4, "none"),
        ("local_limit", "flowcfg_export", 1, "none"),
        ("rate_limit", "flowcfg_export", None, "none"),
    ]
    assert fair_rule == 2 and weights == {7: 3}
    assert rules[4].name == "rate:q:flowcfg_export"  # names the rate limit's rows
    assert rules[1].describe() == "partition_limit 2 per key (args.customer_id) on the queue"
    claimer = claimer_for("q", cfg, Workers(), schema="public")
    assert isinstance(claimer, FlowClaimer)
    assert claimer.weight_keys == ["[null,7,null,null]"]
    # The local cap is what this process still has room for.
    assert claimer._rules_for({"flowcfg_export": 1}).cap[3] == 0


def test_a_queue_without_limits_keeps_the_plain_claim() -> None:
    workers = Workers()

    @workers.register(Export)
    async def export(ctx: Any, job: Any) -> None: ...

    plain = claimer_for("q", QueueConfig(), workers, schema="public")
    assert isinstance(plain, PlainClaimer) and plain.kinds == ["flowcfg_export"]
    every = claimer_for("q", QueueConfig(registered_kinds_only=False), workers, schema="public")
    assert every.kinds is None

    @workers.register(Webhook)
    async def hook(ctx: Any, job: Any) -> None: ...

    # A registered kind in sequences needs the locked claim, limits or not.
    assert isinstance(claimer_for("q", QueueConfig(), workers, schema="public"), FlowClaimer)


def test_each_queue_has_its_own_gate() -> None:
    gates = {
        FlowClaimer(q, QueueConfig(global_limit=1), schema="public", kinds=None,
                    sequences=False).gate
        for q in ("a", "b")
    }  # fmt: skip
    assert gates == {"gate:a", "gate:b"}


def test_sequence_key_is_fixed_at_insert() -> None:
    meta = sequence_metadata(Webhook(customer_id=42, event="paid"))
    assert meta == {"pyriver:sequence": '["flowcfg_webhook",[42]]'}
    assert sequence_metadata(Export()) is None

    class Named(JobArgs, kind="flowcfg_named"):
        account: str = ""

        def sequence_opts(self) -> SequenceOpts:
            return SequenceOpts(key=self.account.lower(), name="accounts",
                                continue_on_failure=True)  # fmt: skip

    assert sequence_metadata(Named(account="ACME")) == {
        "pyriver:sequence": '["accounts","acme"]',
        "pyriver:sequence_continue": True,
    }


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (lambda self: 1 / 0, "sequence_opts\\(\\) of kind .* raised ZeroDivisionError"),
        (lambda self: {"by": "x"}, "must return a SequenceOpts or None, got dict"),
        (lambda self: SequenceOpts(by=("nope",)), "names fields the args lack: \\['nope'\\]"),
        (lambda self: SequenceOpts(key=object()), "cannot be encoded as JSON"),
    ],
)
def test_a_bad_sequence_is_refused_at_insert(opts: Any, message: str) -> None:
    cls = type(
        "BadSeq", (JobArgs,), {"sequence_opts": opts, "__module__": __name__}, kind="flowcfg_bad"
    )
    with pytest.raises(InvalidOptsError, match=message):
        sequence_metadata(cls())


def test_empty_kind_limits_keep_the_plain_claim() -> None:
    cfg = QueueConfig(kinds={"flowcfg_export": KindLimits()})
    assert isinstance(claimer_for("q", cfg, Workers(), schema="public"), PlainClaimer)
