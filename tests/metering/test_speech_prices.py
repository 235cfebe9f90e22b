"""Speech and text tokens priced apart (metering/pricing.py `speech_input`, `speech_output`)."""

from __future__ import annotations

import pytest

from adapters.usage import Usage
from metering.pricing import Price, PriceTable

SONIC = "amazon.nova-sonic-v1:0"
RATES = {"input": 0.06, "output": 0.24, "speech_input": 3.4, "speech_output": 13.6}


def test_speech_tokens_cost_their_own_rates_exactly() -> None:
    table = PriceTable({SONIC: Price.from_mapping(SONIC, RATES)})
    usage = Usage(input_tokens=21, output_tokens=13, speech_input_tokens=13, speech_output_tokens=5)
    # pico-USD per token = USD per 1M × 10⁶: 13 × 3.4 + 8 × 0.06 + 5 × 13.6 + 8 × 0.24 (× 10⁶).
    assert table.cost_pico_usd(SONIC, usage) == 13 * 3_400_000 + 8 * 60_000 + 5 * 13_600_000 + 8 * 240_000
    assert table.cost_pico_usd("us." + SONIC, Usage(input_tokens=4)) == 4 * 60_000


def test_speech_tokens_on_a_price_without_speech_rates_are_unpriced_not_billed_as_text() -> None:
    table = PriceTable({SONIC: Price.from_mapping(SONIC, {"input": 0.06, "output": 0.24})})
    assert table.cost_pico_usd(SONIC, Usage(input_tokens=10, speech_input_tokens=1)) is None
    assert table.cost_pico_usd(SONIC, Usage(input_tokens=10)) == 600_000


def test_a_speech_rate_is_checked_like_the_others() -> None:
    with pytest.raises(ValueError, match="speech_input"):
        Price.from_mapping(SONIC, {**RATES, "speech_input": -1})
