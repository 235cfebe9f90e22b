"""Unit prices (metering/unit_prices.py): video seconds, images, guardrail text units."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from adapters.units import Units
from metering.unit_prices import UnitPrice, UnitPrices
from proxy.config import ConfigError
from proxy.config_load import load_config

REEL = "amazon.nova-reel-v1:1"
GUARDRAIL = UnitPrice.from_mapping("guardrail", {"per_1k_text_units": {"content": 0.15, "topic": 0.15, "word": 0.0},
                                                 "per_image": 0.00075})


def _text(**units: int) -> Units:
    return Units(text_units=MappingProxyType(units))


@pytest.mark.parametrize(
    ("price", "units", "cost"),
    [
        (UnitPrice.from_mapping("m", {"per_second": 0.08}), Units(seconds=6), 480_000_000_000),
        (UnitPrice.from_mapping("m", {"per_second": 0.08}), Units(seconds=120), 9_600_000_000_000),
        (UnitPrice.from_mapping("m", {"per_image": 0.04}), Units(images=3), 120_000_000_000),
        (GUARDRAIL, _text(content=2, topic=2, word=5), 600_000_000),  # word filters are free
        (GUARDRAIL, Units(images=4, text_units=MappingProxyType({"content": 1})), 3_150_000_000),
        (GUARDRAIL, _text(content=0, topic=0), 0),  # nothing guarded, nothing billed: priced at 0
        # A unit the price does not bill, with a non-zero amount: unpriced, never silently cheap.
        (GUARDRAIL, _text(content=2, contextual_grounding=3), None),
        (GUARDRAIL, _text(content=2, contextual_grounding=0), 300_000_000),
        (UnitPrice.from_mapping("m", {"per_second": 0.08}), Units(images=1), None),
        # Nothing the price bills was reported: unpriced.
        (UnitPrice.from_mapping("m", {"per_second": 0.08}), Units(), None),
        (UnitPrice.from_mapping("m", {"per_second": 0.08}), Units(images=0), None),
    ],
)
def test_cost(price: UnitPrice, units: Units, cost: int | None) -> None:
    assert price.cost_pico_usd(units) == cost


@given(st.integers(min_value=0, max_value=10_000_000), st.integers(min_value=0, max_value=10_000),
       st.integers(min_value=0, max_value=10_000))
def test_a_video_costs_its_seconds_at_the_rate_and_more_seconds_never_cost_less(micro_usd: int, a: int,
                                                                               b: int) -> None:
    price = UnitPrice.from_mapping("m", {"per_second": micro_usd / 10**6})
    low, high = sorted((a, b))
    assert price.cost_pico_usd(Units(seconds=low)) == low * micro_usd * 10**6  # exact, in pico-USD
    assert price.cost_pico_usd(Units(seconds=low)) <= price.cost_pico_usd(Units(seconds=high))  # type: ignore[operator]


def test_lookup_follows_profiles_and_arns_like_token_prices() -> None:
    app_profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/videos01"
    prices = UnitPrices({REEL: UnitPrice.from_mapping("m", {"per_second": 0.08}), "us.amazon.nova-reel-v1:1": UnitPrice.from_mapping("m", {"per_second": 0.09})},
                        {app_profile: REEL})
    assert prices.price_of(REEL) == UnitPrice.from_mapping("m", {"per_second": 0.08})
    assert prices.price_of("us.amazon.nova-reel-v1:1") == UnitPrice.from_mapping("m", {"per_second": 0.09})  # its own price wins
    assert prices.price_of("eu.amazon.nova-reel-v1:1") == UnitPrice.from_mapping("m", {"per_second": 0.08})
    assert prices.price_of(f"arn:aws:bedrock:us-east-1::foundation-model/{REEL}") == UnitPrice.from_mapping("m", {"per_second": 0.08})
    assert prices.price_of(app_profile) == UnitPrice.from_mapping("m", {"per_second": 0.08})
    assert prices.price_of("amazon.nova-canvas-v1:0") is None
    assert prices.cost_pico_usd("amazon.nova-canvas-v1:0", Units(images=1)) is None


def test_config_splits_token_and_unit_prices(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "pricing:\n"
        "  amazon.nova-micro-v1:0: {input: 0.035, output: 0.14}\n"
        f"  {REEL}: {{per_second: 0.08}}\n"
        "  guardrail: {per_1k_text_units: {content: 0.15, topic: 0.15}, per_image: 0.00075}\n"
    )
    config = load_config(path, environ={})
    assert set(config.pricing) == {"amazon.nova-micro-v1:0"}
    assert set(config.unit_pricing) == {REEL, "guardrail"}
    assert config.unit_pricing["guardrail"].rate("text:content") == 150_000_000  # $0.15 per 1,000, in pico-USD each


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"per_second": 0.08, "input": 1, "output": 2}, r"per token .* or per unit"),
        ({"per_second": -1}, r"pricing.m.per_second: expected a non-negative number"),
        ({"per_image": True}, r"pricing.m.per_image"),
        ({"per_1k_text_units": {"toxicity": 0.1}}, r"unknown policy\(ies\) \['toxicity'\]"),
        ({"per_1k_text_units": [0.1]}, r"pricing.m.per_1k_text_units: expected a mapping"),
        ({"per_1k_text_units": {"content": "cheap"}}, r"pricing.m.per_1k_text_units.content"),
    ],
)
def test_invalid_unit_prices_are_refused_naming_the_key(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"pricing": {"m": entry}}))
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})
