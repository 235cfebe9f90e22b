from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from adapters.usage import Usage
from metering.events import UsageEvent, utc_day
from metering.pricing import Price, PriceTable, _UnpricedWarnings

#: pico-USD per token of USD per 1M tokens: ×10⁶.
P = 10**6
PRICES = PriceTable({
    "amazon.nova-micro-v1:0": Price.from_mapping("nova", {"input": 0.035, "output": 0.14}),
    "anthropic.claude-sonnet-4-5-20250929-v1:0": Price.from_mapping(
        "sonnet", {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}),
    "amazon.titan-embed-text-v2:0": Price.from_mapping("titan", {"input": 0.02, "output": 0}),
})
NOVA = "amazon.nova-micro-v1:0"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"


def event_for(usage: Usage, model: str = NOVA, **overrides: object) -> UsageEvent:
    fields: dict[str, object] = dict(
        request_id="r1", timestamp=1_741_608_000.0, org="acme", app="chatbot", operation="Converse",
        requested_model="premium", model=model, latency_ms=12.0, status=200,
    )
    fields.update(overrides)
    return UsageEvent.from_usage(usage, PRICES, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "usage", "pico_usd"),
    [
        # USD per 1M tokens ×10⁶ is pico-USD per token; nothing is rounded.
        (NOVA, Usage(input_tokens=1_000_000), 35_000 * 10**6),
        (NOVA, Usage(input_tokens=1000, output_tokens=1000), 175 * 10**6),
        (NOVA, Usage(input_tokens=7), 245_000),  # 0.245 µ$: was rounded to 0
        (NOVA, Usage(input_tokens=20), 700_000),
        (NOVA, Usage(output_tokens=3), 420_000),
        (NOVA, Usage(output_tokens=4), 560_000),
        (NOVA, Usage(input_tokens=7, output_tokens=3), 665_000),
        (NOVA, Usage(), 0),
        (SONNET, Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=10_000, cache_write_tokens=2000),
         (3000 + 7500 + 3000 + 7500) * 10**6),
        (SONNET, Usage(cache_read_tokens=1), 300_000),
        (SONNET, Usage(cache_write_tokens=1), 3_750_000),
        (f"us.{SONNET}", Usage(input_tokens=1), 3 * P),  # inference profile → base model's price
        (f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}", Usage(input_tokens=1_000_000), 35_000 * 10**6),
        # Titan Text Embeddings v2, $0.02 per 1M tokens: 24 tokens are 0.48 µ$, not $0 (issue #16).
        (TITAN, Usage(input_tokens=24), 480_000),
    ],
)
def test_cost_in_pico_usd(model: str, usage: Usage, pico_usd: int) -> None:
    assert PRICES.cost_pico_usd(model, usage) == pico_usd
    event = event_for(usage, model)
    assert (event.cost_pico_usd, event.priced) == (pico_usd, True)


@pytest.mark.parametrize(
    ("usd_per_million", "pico_per_token"),
    [(0.00875, 8_750), (0.035, 35_000), (0.02, 20_000), (3.75, 3_750_000), (0.000001, 1), (75, 75_000_000),
     (0, 0), (1e-6, 1), (123.456789, 123_456_789)],
)
def test_prices_are_exact_integers_of_pico_usd_per_token(usd_per_million: float, pico_per_token: int) -> None:
    price = Price.from_mapping("m", {"input": usd_per_million, "output": usd_per_million})
    assert (price.input, price.output) == (pico_per_token, pico_per_token)
    assert type(price.input) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [(0.0000001, r"pricing\.m\.input: 1e-07 is not a whole number of pico-USD per token"),
     (0.1234567, r"pricing\.m\.input: 0\.1234567 is not a whole number"),
     (0.1 + 0.2, r"pricing\.m\.input: 0\.30000000000000004 is not a whole number"),
     (float("inf"), r"pricing\.m\.input: expected a non-negative number"),
     (float("nan"), r"pricing\.m\.input: expected a non-negative number"),
     (-1, r"pricing\.m\.input: expected a non-negative number"),
     ("0.5", r"pricing\.m\.input: expected a non-negative number")],
)
def test_a_price_that_is_not_exact_in_pico_usd_is_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Price.from_mapping("m", {"input": value, "output": 1})


def test_a_usd_price_where_pico_usd_belongs_is_refused() -> None:
    with pytest.raises(TypeError, match="integer pico-USD per token"):
        Price(input=0.035, output=0.14)  # type: ignore[arg-type]


def test_unpriced_model_is_metered_at_zero() -> None:
    event = event_for(Usage(input_tokens=500, output_tokens=20), "mistral.unknown-v1:0")
    assert (event.cost_pico_usd, event.priced) == (0, False)
    assert (event.input_tokens, event.output_tokens) == (500, 20)


def test_from_usage_copies_everything() -> None:
    usage = Usage(input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4, estimated=True)
    event = event_for(usage, first_byte_ms=3.5, status=499, requested_model="premium")
    assert event == UsageEvent(
        request_id="r1", timestamp=1_741_608_000.0, org="acme", app="chatbot", operation="Converse",
        requested_model="premium", model=NOVA, input_tokens=1, output_tokens=2, cache_read_tokens=3,
        cache_write_tokens=4, cost_pico_usd=35_000 + 2 * 140_000, priced=True, latency_ms=12.0, first_byte_ms=3.5,
        status=499, estimated=True,
    )
    assert event.total_tokens == 10
    assert event.day == "2025-03-10"


def test_events_are_immutable() -> None:
    event = event_for(Usage())
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.cost_pico_usd = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("timestamp", "day"),
    [(0.0, "1970-01-01"), (1_741_651_199.999, "2025-03-10"), (1_741_651_200.0, "2025-03-11")],
)
def test_utc_day(timestamp: float, day: str) -> None:
    assert utc_day(timestamp) == day


LONG = "anthropic.claude-sonnet-4-5-20250929-v1:0"
TIERED = PriceTable({
    LONG: Price.from_mapping(LONG, {
        "input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75,
        "tiers": [{"above_input_tokens": 200_000, "input": 6.0, "output": 22.5, "cache_read": 0.6, "cache_write": 7.5}],
    }),
})


@pytest.mark.parametrize(
    ("usage", "pico_usd"),
    [
        # at the threshold: base rates
        (Usage(input_tokens=200_000, output_tokens=1000), 200_000 * 3_000_000 + 1000 * 15_000_000),
        # above it: the whole request at the tier's rates
        (Usage(input_tokens=200_001, output_tokens=1000), 200_001 * 6_000_000 + 1000 * 22_500_000),
        # Cached prompt tokens count toward the threshold, and are billed at the tier's rates.
        (Usage(input_tokens=1000, cache_read_tokens=150_000, cache_write_tokens=49_000),
         1000 * 3_000_000 + 150_000 * 300_000 + 49_000 * 3_750_000),
        (Usage(input_tokens=1001, cache_read_tokens=150_000, cache_write_tokens=49_000),
         1001 * 6_000_000 + 150_000 * 600_000 + 49_000 * 7_500_000),
    ],
)
def test_long_context_tier_applies_to_the_whole_request(usage: Usage, pico_usd: int) -> None:
    assert TIERED.cost_pico_usd(LONG, usage) == pico_usd
    assert TIERED.cost_pico_usd(f"global.{LONG}", usage) == pico_usd  # profiles share the tiers


def test_tiers_are_ordered_and_omitted_cache_rates_are_the_base_rates() -> None:
    price = Price.from_mapping("m", {"input": 1, "output": 2, "cache_read": 0.1, "tiers": [
        {"above_input_tokens": 500, "input": 3, "output": 4},
        {"above_input_tokens": 100, "input": 2, "output": 3},
    ]})
    assert [tier.above_input_tokens for tier in price.tiers] == [100, 500]
    assert price.rates_for(100) is price
    assert price.rates_for(101).input == 2 * P and price.rates_for(501).input == 3 * P
    assert price.rates_for(501).cache_read == P // 10


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ({"above_input_tokens": 1}, "tiers: expected a list"),
        ([{"input": 1, "output": 1}], r"\['above_input_tokens'\] required"),
        ([{"above_input_tokens": -1, "input": 1, "output": 1}], "non-negative integer"),
        ([{"above_input_tokens": 5, "input": 1, "output": 1, "batch": 2}], "unknown field"),
        ([{"above_input_tokens": 5, "input": "x", "output": 1}], r"tiers\[0\].input"),
        ([{"above_input_tokens": 5, "input": 1, "output": 1}, {"above_input_tokens": 5, "input": 2, "output": 2}],
         "share a threshold"),
    ],
)
def test_bad_tiers_are_refused(tiers: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Price.from_mapping("m", {"input": 1, "output": 1, "tiers": tiers})


def test_events_round_trip_through_the_journal_format() -> None:
    event = event_for(Usage(input_tokens=3), quota_scope="acme/chatbot", reserved_pico_usd=12)
    assert UsageEvent.from_record(event.to_record()) == event
    assert UsageEvent.from_record({**event.to_record(), "from_a_newer_version": 1}) == event
    old = {k: v for k, v in event.to_record().items() if k not in ("quota_scope", "reserved_pico_usd")}
    assert UsageEvent.from_record(old).quota_scope == ""


def test_journal_lines_written_in_micro_usd_are_read_in_pico_usd() -> None:
    """A journal written before issue #16 and replayed after the upgrade counts its
    costs at their true value (their fields name the unit)."""
    event = event_for(Usage(input_tokens=1000, output_tokens=1000), quota_scope="acme")
    record = event.to_record()
    before = {("cost_micro_usd" if k == "cost_pico_usd" else k): v for k, v in record.items()
              if k != "reserved_pico_usd"}
    before.update(cost_micro_usd=175, reserved_micro_usd=40)
    restored = UsageEvent.from_record(before)
    assert restored == replace(event, cost_pico_usd=175 * P, reserved_pico_usd=40 * P)
    older = {k: v for k, v in before.items() if k not in ("quota_scope", "reserved_micro_usd")}
    assert UsageEvent.from_record(older).reserved_pico_usd == 0
    assert "cost_micro_usd" not in record and record["cost_pico_usd"] == 175 * P


def test_refused_means_a_4xx_that_billed_nothing() -> None:
    base = dict(request_id="r", timestamp=0.0, org="o", app="a", operation="InvokeModel", requested_model="m",
                model="m", input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0,
                cost_pico_usd=0, priced=False, latency_ms=1.0, first_byte_ms=None, estimated=False)
    assert UsageEvent(**base, status=400).refused and UsageEvent(**base, status=429).refused  # type: ignore[arg-type]
    assert not UsageEvent(**base, status=200).refused  # type: ignore[arg-type]
    assert not UsageEvent(**base, status=503).refused  # type: ignore[arg-type]
    assert not UsageEvent(**{**base, "output_tokens": 3}, status=400).refused  # type: ignore[arg-type]


def test_unpriced_warnings_are_bounded_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    table = PriceTable({})
    table._unpriced = _UnpricedWarnings(remembered=5, per_minute=3, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="metering.pricing"):
        for i in range(100):
            assert table.cost_pico_usd(f"invented-{i}-" + "x" * 1900, Usage(1, 1)) is None
        assert table.cost_pico_usd("nothing-used", Usage()) is None  # a refusal: no warning at all
        now[0] = 61.0
        table.cost_pico_usd("later", Usage(1, 1))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4 and all(len(line) < 400 for line in lines)
    assert "97 more unpriced models not logged" in lines[-1] and "later" in lines[-1]
    assert len(table._unpriced._seen) <= 5


SERVED = PriceTable({"amazon.nova-pro-v1:0": Price.from_mapping("amazon.nova-pro-v1:0", {
    "input": 0.8, "output": 3.2, "cache_read": 0.2, "service_tiers": {"priority": 1.75, "flex": 0.5, "reserved": 0},
    "latency_optimized": {"input": 1.0, "output": 4.0},
})})


@pytest.mark.parametrize(("usage", "micro_usd"), [  # in micro-USD for reading; compared in pico-USD
    (Usage(1000, 1000), 4000),
    (Usage(1000, 1000, service_tier=""), 4000),
    (Usage(1000, 1000, service_tier="priority"), 7000),
    (Usage(1000, 1000, service_tier="flex"), 2000),
    (Usage(1000, 1000, service_tier="reserved"), 0),  # prepaid capacity, as configured
    (Usage(1000, 1000, service_tier="unlisted"), 4000),  # served unasked, unpriced: the base rates
    (Usage(1000, 1000, latency="optimized"), 5000),
    (Usage(1000, 1000, service_tier="priority", latency="optimized"), 8750),
    (Usage(1000, 0, cache_read_tokens=1000, latency="optimized"), 1200),  # cache rate left out: the base rate
])
def test_service_tiers_and_latency_optimized_prices(usage: Usage, micro_usd: int) -> None:
    assert SERVED.cost_pico_usd("us.amazon.nova-pro-v1:0", usage) == micro_usd * P


def test_unpriced_tiers_are_named() -> None:
    plain = PriceTable({"m.x-v1:0": Price.from_mapping("m.x-v1:0", {"input": 1, "output": 1})})
    assert plain.unpriced_tier("m.x-v1:0", "", "") is None
    assert plain.unpriced_tier("m.x-v1:0", "priority", "") == "service_tiers.priority"
    assert plain.unpriced_tier("m.x-v1:0", "", "optimized") == "latency_optimized"
    assert plain.unpriced_tier("m.x-v1:0", "", "warp") == "latency warp"
    assert plain.unpriced_tier("unpriced.model-v1:0", "priority", "optimized") is None  # metered unpriced
    assert SERVED.unpriced_tier("amazon.nova-pro-v1:0", "flex", "optimized") is None


@pytest.mark.parametrize(("raw", "message"), [
    ({"service_tiers": {"default": 1}}, r"unknown service tier\(s\) \['default'\]"),
    ({"service_tiers": {"priority": -1}}, "non-negative multiplier"),
    ({"service_tiers": [1.75]}, "expected a mapping of service tier"),
    ({"latency_optimized": {"input": 1}}, "'input' and 'output' prices are required"),
    ({"latency_optimized": {"input": 1, "output": 1, "tiers": []}}, "unknown field"),
])
def test_bad_tier_prices_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Price.from_mapping("m", {"input": 1, "output": 1, **raw})


def test_events_record_the_tier_they_were_priced_at() -> None:
    event = UsageEvent.from_usage(
        Usage(1000, 1000, service_tier="priority", latency="optimized"), SERVED, request_id="r", timestamp=0.0,
        org="o", app="a", operation="Converse", requested_model="m", model="amazon.nova-pro-v1:0",
        latency_ms=1.0, status=200)
    assert (event.service_tier, event.latency, event.cost_pico_usd) == ("priority", "optimized", 8750 * P)
    assert UsageEvent.from_record(event.to_record()) == event
