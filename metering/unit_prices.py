"""Prices of work not billed in tokens, and the cost of one request in integer pico-USD.

A `pricing` entry is either a token price (`input`, `output`, …: `metering/pricing.py`)
or a unit price, never both:

    amazon.nova-reel-v1:1: {per_second: 0.08}          # USD per second of video
    amazon.nova-canvas-v1:0: {per_image: 0.04}         # USD per image
    guardrail: {per_1k_text_units: {content: 0.15, topic: 0.15, sensitive_information: 0.1,
                                    contextual_grounding: 0.1, word: 0}, per_image: 0.00075}

`guardrail` prices every ApplyGuardrail call (its usage events name the model
`guardrail`): USD per 1,000 text units of each policy (`adapters.units.GUARDRAIL_POLICIES`)
and per image its content filter checked. The rates above are examples of the
kind the Amazon Bedrock pricing page lists (Nova Reel per second of 720p video);
they change and differ by Region: configure the ones AWS bills you.

Rates are kept as exact integers of pico-USD per unit (a rate that is not exact at
that resolution is refused at start-up, naming its key), so costs sum exactly.

A request is priced only if every unit it reports with a non-zero amount has a
rate, and at least one of its units does: a video job whose duration cannot be read,
or a guardrail policy without a rate, is unpriced (cost 0, flagged, warned once),
never silently cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from adapters.modelid import base_model_id, price_id
from adapters.units import GUARDRAIL_POLICIES, Units
from metering.money import usd_to_pico

__all__ = ["UNIT_FIELDS", "UnitPrice", "UnitPrices", "is_unit_price"]

logger = logging.getLogger(__name__)

UNIT_FIELDS = frozenset({"per_second", "per_image", "per_1k_text_units"})
#: Ids warned about as unpriced, at most (a client chooses the ids it sends).
_MAX_WARNED = 1000


def is_unit_price(raw: Mapping[str, object]) -> bool:
    """Whether a `pricing` entry names a unit price (and so must be parsed as one)."""
    return bool(UNIT_FIELDS & set(raw))


def _rate(key: str, value: object, per: int = 1) -> int:
    """USD per `per` units, as exact pico-USD per unit."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"pricing.{key}: expected a non-negative number of USD, got {value!r}")
    pico, remainder = divmod(usd_to_pico(value, f"pricing.{key}"), per)
    if remainder:
        raise ValueError(f"pricing.{key}: {value!r} USD per {per:,} is not a whole number of pico-USD per unit")
    return pico


@dataclass(frozen=True, slots=True)
class UnitPrice:
    """pico-USD per unit; None: this price does not bill that unit."""

    per_second: int | None = None
    per_image: int | None = None
    #: Guardrail policy → pico-USD per text unit (configured as USD per 1,000).
    per_text_unit: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def rate(self, unit: str) -> int | None:
        """pico-USD per one `unit` (a name from `Units.amounts`)."""
        if unit == "second":
            return self.per_second
        if unit == "image":
            return self.per_image
        return self.per_text_unit.get(unit.removeprefix("text:")) if unit.startswith("text:") else None

    def cost_pico_usd(self, units: Units) -> int | None:
        """The cost of `units`, or None if they cannot be priced (see the module docstring)."""
        total = 0
        billed = False
        for unit, amount in units.amounts().items():
            rate = self.rate(unit)
            if rate is None:
                if amount:
                    return None
                continue
            billed = True
            total += round(amount * rate)  # whole units are exact; a fraction of a second rounds to a pico-USD
        return total if billed else None

    @classmethod
    def from_mapping(cls, model: str, raw: Mapping[str, object]) -> UnitPrice:
        unknown = set(raw) - UNIT_FIELDS
        if unknown:
            raise ValueError(f"pricing.{model}: unknown field(s) {sorted(unknown)} beside a unit price; a price is "
                             f"per token (input, output, …) or per unit ({', '.join(sorted(UNIT_FIELDS))}), not both")
        text = raw.get("per_1k_text_units") or {}
        if not isinstance(text, Mapping):
            raise ValueError(f"pricing.{model}.per_1k_text_units: expected a mapping of guardrail policy → USD")
        policies = set(text) - set(GUARDRAIL_POLICIES)
        if policies:
            raise ValueError(f"pricing.{model}.per_1k_text_units: unknown policy(ies) {sorted(policies)}; "
                             f"expected some of {sorted(GUARDRAIL_POLICIES)}")
        return cls(
            per_second=_rate(f"{model}.per_second", raw["per_second"]) if "per_second" in raw else None,
            per_image=_rate(f"{model}.per_image", raw["per_image"]) if "per_image" in raw else None,
            per_text_unit=MappingProxyType({
                str(policy): _rate(f"{model}.per_1k_text_units.{policy}", value, per=1000)
                for policy, value in text.items()}),
        )


class UnitPrices:
    """Unit prices by model id, looked up like token prices: the id itself, then an
    inference profile's id (an ARN bills as its profile), then the base model."""

    def __init__(self, prices: Mapping[str, UnitPrice], profiles: Mapping[str, str] | None = None) -> None:
        self._prices = dict(prices)
        self._profiles = dict(profiles or {})
        self._warned: set[str] = set()

    def price_of(self, model_id: str) -> UnitPrice | None:
        price = self._prices.get(model_id)
        if price is None:
            named = price_id(self._profiles.get(model_id, model_id))
            price = self._prices.get(named) or self._prices.get(base_model_id(named))
        return price

    def cost_pico_usd(self, model_id: str, units: Units) -> int | None:
        """The cost of `units` on `model_id`, or None (warned once per id) if unpriced."""
        price = self.price_of(model_id)
        cost = None if price is None else price.cost_pico_usd(units)
        if cost is None and model_id not in self._warned and len(self._warned) < _MAX_WARNED:
            self._warned.add(model_id)
            logger.warning("no unit price for %s covers what it billed (%s); metering it at cost 0",
                           model_id[:200], ", ".join(units.amounts()) or "nothing readable")
        return cost
