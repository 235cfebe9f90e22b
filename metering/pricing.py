"""Prices per model, and the cost of one request in integer pico-USD.

`config.yaml` gives prices in USD per 1M tokens; they are kept as integer pico-USD
per token (×10⁶, exact: `metering/money.py`), so `cost = Σ tokens × price` is an
exact integer and nothing is rounded — a sum of requests' costs is the cost of their
summed tokens, to the pico-USD, for requests that pay the same rates.
Inference-profile ids (`us.`, `global.` …) fall back to their base model's price
unless the profile is priced itself (geo profiles can cost ~10 % more). A price
may have tiers (`PriceTier`): a request whose prompt exceeds a tier's threshold
pays that tier's rates for all of its tokens — so across tiers the sum of requests'
costs is not the cost of their summed tokens (each request is priced by its own
prompt, as Bedrock bills it), though each cost is still exact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from adapters.modelid import base_model_id, price_id
from adapters.usage import Usage
from metering.money import pico_per_token

__all__ = ["Price", "PriceTable", "PriceTier"]

logger = logging.getLogger(__name__)


_RATES = ("input", "output", "cache_read", "cache_write")


def _rate(model: str, name: str, value: object) -> int:
    """A configured rate (USD per 1M tokens) as pico-USD per token; ValueError naming the key."""
    return pico_per_token(value, f"pricing.{model}.{name}")


def _check_rates(owner: object) -> None:
    # A float here is a USD-per-1M price passed where pico-USD per token belongs:
    # refuse it rather than meter at a millionth of the price.
    for name in _RATES:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TypeError(f"{type(owner).__name__}.{name}: expected non-negative integer pico-USD per token, "
                            f"got {value!r} (Price.from_mapping takes USD per 1M tokens)")


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Prices (pico-USD per token) for the whole of a request whose prompt —
    input plus cache-read plus cache-write tokens — exceeds `above_input_tokens`.

    Anthropic's long-context pricing works this way (checked 2025-11): above
    200K prompt tokens every token of the request, output included, is billed
    at the long-context rates, and cached prompt tokens count toward the threshold.
    """

    above_input_tokens: int
    input: int
    output: int
    cache_read: int
    cache_write: int

    def __post_init__(self) -> None:
        _check_rates(self)


@dataclass(frozen=True, slots=True)
class Price:
    """Pico-USD per token (USD per 1M tokens × 10⁶), with optional long-context tiers."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    #: Ascending by threshold; the highest one a request exceeds applies.
    tiers: tuple[PriceTier, ...] = ()

    def __post_init__(self) -> None:
        _check_rates(self)

    def rates_for(self, prompt_tokens: int) -> Price | PriceTier:
        """The rates a request with `prompt_tokens` prompt tokens pays."""
        chosen: Price | PriceTier = self
        for tier in self.tiers:
            if prompt_tokens > tier.above_input_tokens:
                chosen = tier
        return chosen

    @classmethod
    def from_mapping(cls, model: str, raw: Mapping[str, object]) -> Price:
        """From `config.yaml`'s `pricing.<model>`: USD per 1M tokens, each exact at
        pico-USD per token (at most 6 decimals) or refused naming its key."""
        known = {*_RATES, "tiers"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"pricing.{model}: unknown field(s) {sorted(unknown)}; expected {sorted(known)}")
        if "input" not in raw or "output" not in raw:
            raise ValueError(f"pricing.{model}: 'input' and 'output' prices are required")
        values = {name: _rate(model, name, raw[name]) for name in _RATES if name in raw}
        base = cls(input=values["input"], output=values["output"],
                   cache_read=values.get("cache_read", 0), cache_write=values.get("cache_write", 0))
        tiers_raw = raw.get("tiers") or []
        if not isinstance(tiers_raw, list):
            raise ValueError(f"pricing.{model}.tiers: expected a list of tiers")
        tiers = [_tier(model, i, tier, base) for i, tier in enumerate(tiers_raw)]
        thresholds = [tier.above_input_tokens for tier in tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"pricing.{model}.tiers: two tiers share a threshold {thresholds}")
        return replace(base, tiers=tuple(sorted(tiers, key=lambda tier: tier.above_input_tokens)))


def _tier(model: str, index: int, raw: object, base: Price) -> PriceTier:
    """A tier names its threshold, `input` and `output`; a cache rate it omits is the base rate."""
    where = f"{model}.tiers[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"pricing.{where}: expected a mapping")
    known = {"above_input_tokens", *_RATES}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"pricing.{where}: unknown field(s) {sorted(unknown)}; expected {sorted(known)}")
    missing = {"above_input_tokens", "input", "output"} - set(raw)
    if missing:
        raise ValueError(f"pricing.{where}: {sorted(missing)} required")
    threshold = raw["above_input_tokens"]
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
        raise ValueError(f"pricing.{where}.above_input_tokens: expected a non-negative integer, got {threshold!r}")
    rates = {name: _rate(where, name, raw[name]) if name in raw else getattr(base, name) for name in _RATES}
    return PriceTier(above_input_tokens=threshold, **rates)


class PriceTable:
    def __init__(self, prices: Mapping[str, Price], profiles: Mapping[str, str] | None = None) -> None:
        self._prices = dict(prices)
        #: Application-inference-profile ARNs → their base model (configured; the ARN names none).
        self._profiles = dict(profiles or {})
        self._warned: set[str] = set()

    def __contains__(self, model_id: str) -> bool:
        return self.price_of(model_id) is not None

    def price_of(self, model_id: str) -> Price | None:
        """The price Bedrock bills `model_id` at: its own (a priced profile wins over its
        base model, an inference-profile ARN is priced as its profile id), else the
        base model's. An application profile is priced as the model it is mapped to."""
        price = self._prices.get(model_id)
        if price is None:
            model_id = price_id(self._profiles.get(model_id, model_id))
            price = self._prices.get(model_id) or self._prices.get(base_model_id(model_id))
        return price

    def cost_pico_usd(self, model_id: str, usage: Usage) -> int | None:
        """Exact cost in pico-USD, or None when the model has no price (warned once)."""
        price = self.price_of(model_id)
        if price is None:
            if model_id not in self._warned:
                self._warned.add(model_id)
                logger.warning("no price configured for model %s; metering it at cost 0", model_id)
            return None
        rates = price.rates_for(usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens)
        return (
            usage.input_tokens * rates.input
            + usage.output_tokens * rates.output
            + usage.cache_read_tokens * rates.cache_read
            + usage.cache_write_tokens * rates.cache_write
        )
