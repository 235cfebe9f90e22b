"""Prices per model, and the cost of one request in integer micro-USD.

Prices are USD per 1M tokens, which is exactly micro-USD per token, so
`cost = Σ tokens × price` needs no scaling; it is rounded once per request.
Inference-profile ids (`us.`, `global.` …) fall back to their base model's price
unless the profile is priced itself (geo profiles can cost ~10 % more).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.modelid import base_model_id
from adapters.usage import Usage

__all__ = ["Price", "PriceTable"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    output: float
    cache_read: float = 0.0
    cache_write: float = 0.0

    @classmethod
    def from_mapping(cls, model: str, raw: Mapping[str, object]) -> Price:
        known = {"input", "output", "cache_read", "cache_write"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"pricing.{model}: unknown field(s) {sorted(unknown)}; expected {sorted(known)}")
        if "input" not in raw or "output" not in raw:
            raise ValueError(f"pricing.{model}: 'input' and 'output' prices are required")
        values = {}
        for name in known & set(raw):
            value = raw[name]
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"pricing.{model}.{name}: expected a non-negative number, got {value!r}")
            values[name] = float(value)
        return cls(**values)


class PriceTable:
    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)
        self._warned: set[str] = set()

    def __contains__(self, model_id: str) -> bool:
        return self.price_of(model_id) is not None

    def price_of(self, model_id: str) -> Price | None:
        price = self._prices.get(model_id)
        if price is None:
            price = self._prices.get(base_model_id(model_id))
        return price

    def cost_micro_usd(self, model_id: str, usage: Usage) -> int | None:
        """Cost in micro-USD, or None when the model has no price (warned once)."""
        price = self.price_of(model_id)
        if price is None:
            if model_id not in self._warned:
                self._warned.add(model_id)
                logger.warning("no price configured for model %s; metering it at cost 0", model_id)
            return None
        return round(
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + usage.cache_read_tokens * price.cache_read
            + usage.cache_write_tokens * price.cache_write
        )
