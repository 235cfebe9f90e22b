"""Cost is exact when summed (issue #16 item 8): integer pico-USD from price to quota.

In micro-USD each request was rounded, so a request worth under 0.5 µ$ was free: a
24-token Titan Text Embeddings v2 call ($0.02 per 1M tokens) cost $0, a million of
them $0 instead of $0.48, and none counted toward a quota.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.usage import Usage
from metering.aggregate import Aggregate
from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent, utc_day
from metering.leases import BudgetLeases
from metering.money import format_usd, usd_to_pico
from metering.pricing import Price, PriceTable
from metering.quotas import Mode, QuotaSelector
from metering.store import Store
from tests.metering.budget_memory import committed_spend

MakeEvent = Callable[..., UsageEvent]
T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))

TITAN = "amazon.titan-embed-text-v2:0"
NOVA = "amazon.nova-micro-v1:0"
#: BEDROCK_WIRE.md §6: Titan Text Embeddings v2 is $0.02 per 1M input tokens.
PRICES = PriceTable({
    TITAN: Price.from_mapping(TITAN, {"input": 0.02, "output": 0}),
    NOVA: Price.from_mapping(NOVA, {"input": 0.035, "output": 0.14, "cache_read": 0.00875}),
})
RATES = ("input", "output", "cache_read", "cache_write")


def titan_call(request_id: str, **overrides: object) -> UsageEvent:
    fields: dict[str, object] = dict(request_id=request_id, timestamp=T0, org="acme", app="search",
                                     operation="InvokeModel", requested_model=TITAN, model=TITAN,
                                     latency_ms=5.0, status=200, quota_scope="acme")
    fields.update(overrides)
    return UsageEvent.from_usage(Usage(input_tokens=24), PRICES, **fields)  # type: ignore[arg-type]


def test_a_24_token_titan_embed_v2_call_costs_480_000_pico_usd() -> None:
    event = titan_call("one")
    assert (event.cost_pico_usd, event.priced) == (480_000, True)
    assert format_usd(event.cost_pico_usd) == "0.00000048"


def test_a_million_tiny_requests_sum_exactly() -> None:
    """The aggregate a flush writes, over a million 0.48 µ$ calls: $0.48, to the pico-USD."""
    event = titan_call("tiny")
    aggregate = Aggregate()
    for _ in range(1_000_000):
        aggregate.add(event)
    [counters] = aggregate.usage.values()
    assert (counters.requests, counters.cost_pico_usd) == (1_000_000, 480_000_000_000)
    assert format_usd(counters.cost_pico_usd) == "0.480000"
    assert aggregate.committed == {("acme", utc_day(T0), TITAN): 480_000_000_000}  # what quotas count
    half = Aggregate()
    for _ in range(500_000):
        half.add(event)
    halves = Aggregate()
    halves.merge(half)  # as two flushes of half each: any split sums to the same
    halves.merge(half)
    assert halves.usage == aggregate.usage and halves.committed == aggregate.committed


#: USD per 1M tokens with up to 6 decimals, as YAML hands them over (floats).
usd_per_million = st.integers(min_value=0, max_value=150_000_000).map(lambda n: n / 10**6)
tokens = st.integers(min_value=0, max_value=2_000_000)
usages = st.builds(Usage, input_tokens=tokens, output_tokens=tokens, cache_read_tokens=tokens,
                   cache_write_tokens=tokens)


def _exact_usd(rates: dict[str, float], usage: Usage) -> Decimal:
    """The cost in decimal arithmetic on the configured prices, independent of pricing.py."""
    return sum((Decimal(str(rates[name])) * getattr(usage, f"{name}_tokens") for name in RATES),
               Decimal(0)) / 10**6


def _summed(requests: list[Usage]) -> Usage:
    return Usage(**{f"{name}_tokens": sum(getattr(u, f"{name}_tokens") for u in requests) for name in RATES})


@settings(max_examples=400, deadline=None)
@given(rates=st.fixed_dictionaries({name: usd_per_million for name in RATES}), requests=st.lists(usages, max_size=40))
def test_the_sum_of_request_costs_is_the_cost_of_the_summed_tokens(rates: dict[str, float],
                                                                   requests: list[Usage]) -> None:
    """Per price, without tiers: equal to the smallest unit, and equal to the exact USD."""
    table = PriceTable({"m": Price.from_mapping("m", rates)})
    costs = [table.cost_pico_usd("m", usage) for usage in requests]
    assert all(isinstance(cost, int) for cost in costs)
    total = sum(cost or 0 for cost in costs)
    assert total == table.cost_pico_usd("m", _summed(requests))
    assert Decimal(total) / 10**12 == _exact_usd(rates, _summed(requests))
    assert Decimal(format_usd(total)) == _exact_usd(rates, _summed(requests))
    events = [UsageEvent.from_usage(usage, table, request_id=str(i), timestamp=T0, org="o", app="a",
                                    operation="Converse", requested_model="m", model="m", latency_ms=1.0,
                                    status=200) for i, usage in enumerate(requests)]
    assert sum(counters.cost_pico_usd for counters in Aggregate(events).usage.values()) == total


TIERED = Price.from_mapping("long", {
    "input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75,
    "tiers": [{"above_input_tokens": 200_000, "input": 6.0, "output": 22.5, "cache_read": 0.6, "cache_write": 7.5}],
})


@settings(max_examples=200, deadline=None)
@given(requests=st.lists(st.builds(Usage, input_tokens=st.integers(0, 400_000), output_tokens=tokens,
                                   cache_read_tokens=st.integers(0, 100_000)), max_size=20))
def test_with_tiers_each_request_pays_its_own_tier_exactly(requests: list[Usage]) -> None:
    """Tiers: a request's prompt picks its rates (as Bedrock bills), so the sum over
    requests is the sum, per tier, of the cost of that tier's summed tokens at its
    rates — not the cost of all tokens summed, which would put them in one tier."""
    table = PriceTable({"long": TIERED})
    by_tier: dict[int, list[Usage]] = {}
    for usage in requests:
        prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        by_tier.setdefault(id(TIERED.rates_for(prompt)), []).append(usage)
    per_tier = 0
    for members in by_tier.values():
        first = members[0]
        rates = TIERED.rates_for(first.input_tokens + first.cache_read_tokens + first.cache_write_tokens)
        summed = _summed(members)
        per_tier += sum(getattr(summed, f"{name}_tokens") * getattr(rates, name) for name in RATES)
    assert sum(table.cost_pico_usd("long", usage) or 0 for usage in requests) == per_tier


def test_across_tiers_the_summed_tokens_would_cost_more() -> None:
    table = PriceTable({"long": TIERED})
    small = Usage(input_tokens=150_000)
    assert 2 * (table.cost_pico_usd("long", small) or 0) == 2 * 150_000 * 3_000_000
    assert table.cost_pico_usd("long", _summed([small, small])) == 300_000 * 6_000_000


@pytest.mark.anyio
async def test_tiny_requests_are_stored_and_reported_exactly(store: Store) -> None:
    calls = [titan_call(f"t{i}") for i in range(1000)]
    await store.write_events(calls)
    [row] = await store.usage_summary(0, None, ["model"])
    assert (row.requests, row.cost_pico_usd) == (1000, 480_000_000)
    assert format_usd(row.cost_pico_usd) == "0.000480"
    assert await committed_spend(store, "acme", utc_day(T0)) == {TITAN: 480_000_000}
    if isinstance(store, DynamoDBStore):
        await store.consolidate(utc_day(T0))
    assert (await store.scope_totals("acme", utc_day(T0)))[TITAN].cost_pico_usd == 480_000_000


@pytest.mark.anyio
async def test_tiny_requests_count_toward_a_quota(store: Store) -> None:
    """Ten 24-token Titan calls (4.8 µ$) against a $0.000005 quota: the next call's
    worst case no longer fits, and the chain falls back. In micro-USD the ten were $0."""
    quota = usd_to_pico(0.000005, "daily_quota_usd")
    assert quota == 5_000_000
    await store.write_events([titan_call(f"q{i}") for i in range(10)])
    assert await committed_spend(store, "acme", utc_day(T0)) == {TITAN: 4_800_000}
    selector = QuotaSelector(BudgetLeases(store, clock=lambda: T0 + 1))
    worst_case = PRICES.cost_pico_usd(TITAN, Usage(input_tokens=24)) or 0
    selection = await selector.select("acme", utc_day(T0), (TITAN, NOVA), {TITAN: (TITAN, quota), NOVA: (NOVA, quota)}.get,
                                      lambda model: worst_case)
    assert (selection.model, selection.fallback, selection.mode) == (NOVA, True, Mode.NORMAL)
    # For itself only: 96 % spent is not yet exhausted (99 %), a smaller request may still fit.
    assert TITAN not in await store.exhausted_models("acme", utc_day(T0))
    # One call fewer would still fit: 9 × 0.48 µ$ + 0.48 µ$ ≤ 5 µ$.
    assert 9 * worst_case + worst_case <= quota


def test_a_daily_quota_is_exact_in_pico_usd() -> None:
    assert usd_to_pico(0.000005, "k") == 5_000_000
    assert usd_to_pico(50, "k") == 50 * 10**12
    with pytest.raises(ValueError, match=r"k: 1e-13 is not a whole number of pico-USD"):
        usd_to_pico(1e-13, "k")

