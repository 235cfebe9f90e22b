"""`PriceTable.price_of` remembers what it worked out for an id not priced under its own
name (metering/pricing.py `_derived`): the answer is the one it works out afresh, asked
once or many times, in any order, past the bound of what it keeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import metering.pricing
from metering.pricing import Price, PriceTable

_PRICES = {
    "anthropic.claude-3-haiku-20240307-v1:0": Price(input=1, output=2, cache_read=0, cache_write=0),
    "us.anthropic.claude-3-haiku-20240307-v1:0": Price(input=3, output=4, cache_read=0, cache_write=0),
    "amazon.nova-pro-v1:0": Price(input=5, output=6, cache_read=0, cache_write=0),
}
_PROFILES = {"arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc": "amazon.nova-pro-v1:0"}
_IDS = st.sampled_from([
    *_PRICES, *_PROFILES, "eu.anthropic.claude-3-haiku-20240307-v1:0", "apac.amazon.nova-pro-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0",
    "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
    "unknown.model-v1:0", "", "us.", "arn:aws:bedrock:",
]) | st.text(max_size=20)


@given(st.lists(_IDS, max_size=30), st.integers(1, 4))
def test_a_remembered_price_is_the_one_worked_out_afresh(ids: list[str], kept: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metering.pricing, "_DERIVED_KEPT", kept)
        table = PriceTable(_PRICES, _PROFILES)
        for model_id in ids + ids:
            assert table.price_of(model_id) == PriceTable(_PRICES, _PROFILES).price_of(model_id)
            assert len(table._derived) <= kept
