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

A speech-to-speech model (Nova Sonic) bills speech and text tokens at their own rates:
`speech_input` and `speech_output` price the speech share of a request's input and
output tokens (`Usage.speech_input_tokens`, `speech_output_tokens`), `input` and
`output` the rest. A request with speech tokens on a price without those rates is
unpriced (cost 0, flagged), never billed as text.

Bedrock's service tiers and latency-optimized inference are billed differently
(adapters/tiers.py): `service_tiers` multiplies every rate for a tier
(`{priority: 1.75, flex: 0.5}`, kept as exact fractions; such a request's cost is
rounded once, to the pico-USD), `latency_optimized` gives the rates of a
latency-optimized request. A request is priced by the tier that served it
(`Usage.service_tier`, `Usage.latency`); one asking for a tier its model's price
does not list is refused before it is sent (`unpriced_tier`), so the quota
never counts a priority request at the standard price.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from types import MappingProxyType

from adapters.memo import remember
from adapters.modelid import base_model_id, price_id
from adapters.usage import Usage
from metering.money import pico_per_token

__all__ = ["PRICED_SERVICE_TIERS", "Price", "PriceTable", "PriceTier"]

logger = logging.getLogger(__name__)


_RATES = ("input", "output", "cache_read", "cache_write")
_SPEECH_RATES = ("speech_input", "speech_output")
#: Characters of a model id shown in a log line (a client can send 2,048).
_SHOWN = 200


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


#: The service tiers a price may list (`default` is the standard tier: the base rates).
PRICED_SERVICE_TIERS = ("priority", "flex", "reserved")


@dataclass(frozen=True, slots=True)
class Price:
    """Pico-USD per token (USD per 1M tokens × 10⁶), with optional long-context tiers,
    service-tier multipliers and latency-optimized rates."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    #: Ascending by threshold; the highest one a request exceeds applies.
    tiers: tuple[PriceTier, ...] = ()
    #: Service tier (`priority`, `flex`, `reserved`) → multiplier of every rate (exact).
    service_tiers: Mapping[str, Fraction] = field(default_factory=lambda: MappingProxyType({}))
    #: The rates of a request served latency-optimized; None: not priced (refused).
    latency_optimized: Price | None = None
    #: Speech tokens (of input and output), for speech-to-speech models; None: not priced.
    speech_input: int | None = None
    speech_output: int | None = None

    def __post_init__(self) -> None:
        _check_rates(self)

    def rates_for(self, prompt_tokens: int) -> Price | PriceTier:
        """The rates a request with `prompt_tokens` prompt tokens pays."""
        chosen: Price | PriceTier = self
        for tier in self.tiers:
            if prompt_tokens > tier.above_input_tokens:
                chosen = tier
        return chosen

    def multiplier(self, service_tier: str | None) -> Fraction | None:
        """The factor on every rate for `service_tier`; None when the price does not list it."""
        if not service_tier or service_tier == "default":
            return _ONE
        return self.service_tiers.get(service_tier)

    @classmethod
    def from_mapping(cls, model: str, raw: Mapping[str, object]) -> Price:
        """From `config.yaml`'s `pricing.<model>`: USD per 1M tokens, each exact at
        pico-USD per token (at most 6 decimals) or refused naming its key."""
        known = {*_RATES, *_SPEECH_RATES, "tiers", "service_tiers", "latency_optimized"}
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
        return replace(base, tiers=tuple(sorted(tiers, key=lambda tier: tier.above_input_tokens)),
                       service_tiers=_service_tiers(model, raw.get("service_tiers")),
                       latency_optimized=_latency_optimized(model, raw.get("latency_optimized"), base),
                       **{name: _rate(model, name, raw[name]) for name in _SPEECH_RATES if name in raw})


#: The standard tier's factor: one instance, not a Fraction made per request (issue #20).
_ONE = Fraction(1)


def _multiplier(key: str, value: object) -> Fraction:
    """A configured multiplier, exactly as written (1.75 is 7/4, not the nearest float)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key}: expected a non-negative multiplier, got {value!r}")
    return Fraction(str(value))


def _service_tiers(model: str, raw: object) -> Mapping[str, Fraction]:
    """`{priority: 1.75, flex: 0.5}`: a multiplier of every rate per service tier."""
    key = f"pricing.{model}.service_tiers"
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        raise ValueError(f"{key}: expected a mapping of service tier → multiplier, e.g. {{priority: 1.75}}")
    unknown = set(raw) - set(PRICED_SERVICE_TIERS)
    if unknown:
        raise ValueError(f"{key}: unknown service tier(s) {sorted(map(str, unknown))}; "
                         f"expected some of {list(PRICED_SERVICE_TIERS)} (default is the base price)")
    return MappingProxyType({str(tier): _multiplier(f"{key}.{tier}", factor) for tier, factor in raw.items()})


def _latency_optimized(model: str, raw: object, base: Price) -> Price | None:
    """Latency-optimized rates: `input` and `output`; a cache rate left out is the base rate."""
    if raw is None:
        return None
    where = f"{model}.latency_optimized"
    if not isinstance(raw, Mapping):
        raise ValueError(f"pricing.{where}: expected {{input: …, output: …}}")
    unknown = set(raw) - set(_RATES)
    if unknown:
        raise ValueError(f"pricing.{where}: unknown field(s) {sorted(unknown)}; expected {list(_RATES)}")
    if "input" not in raw or "output" not in raw:
        raise ValueError(f"pricing.{where}: 'input' and 'output' prices are required")
    rates: dict[str, int] = {name: _rate(where, name, raw[name]) if name in raw else getattr(base, name)
                               for name in _RATES}
    return Price(input=rates["input"], output=rates["output"], cache_read=rates["cache_read"],
                 cache_write=rates["cache_write"])


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


#: `PriceTable._derived` holds at most this many ids (then starts again, adapters/memo.py).
_DERIVED_KEPT = 4096


class PriceTable:
    def __init__(self, prices: Mapping[str, Price], profiles: Mapping[str, str] | None = None) -> None:
        self._prices = dict(prices)
        #: Application-inference-profile ARNs → their base model (configured; the ARN names none).
        self._profiles = dict(profiles or {})
        self._unpriced = _UnpricedWarnings()
        #: `price_of` of the ids not priced under their own name (a geo profile, an ARN, an
        #: unpriced id): parsing one costs ≈ 1 µs, and admission and metering ask for the
        #: same request's several times (issue #20). Client-chosen ids: bounded.
        self._derived: dict[str, Price | None] = {}

    def __contains__(self, model_id: str) -> bool:
        return self.price_of(model_id) is not None

    def price_of(self, model_id: str) -> Price | None:
        """The price Bedrock bills `model_id` at: its own (a priced profile wins over its
        base model, an inference-profile ARN is priced as its profile id), else the
        base model's. An application profile is priced as the model it is mapped to."""
        price = self._prices.get(model_id)
        if price is not None:
            return price
        try:
            return self._derived[model_id]
        except KeyError:
            pass
        priced_as = price_id(self._profiles.get(model_id, model_id))
        return remember(self._derived, model_id,
                        self._prices.get(priced_as) or self._prices.get(base_model_id(priced_as)), _DERIVED_KEPT)

    def cost_pico_usd(self, model_id: str, usage: Usage) -> int | None:
        """Exact cost in pico-USD, or None when the model has no price (warned, see `_UnpricedWarnings`)."""
        price = self.price_of(model_id)
        if price is None:
            if usage.total_tokens:  # nothing used (a refusal) costs 0 whatever the price: no warning
                self._unpriced.warn(model_id)
            return None
        # Served latency-optimized but not priced so (admission refuses asking for it): base rates.
        rated = price.latency_optimized if usage.latency == "optimized" and price.latency_optimized else price
        # A tier the price does not list (Bedrock served `reserved` unasked): the base rates.
        factor = price.multiplier(usage.service_tier)
        rates = rated.rates_for(usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens)
        cost = (
            usage.input_tokens * rates.input
            + usage.output_tokens * rates.output
            + usage.cache_read_tokens * rates.cache_read
            + usage.cache_write_tokens * rates.cache_write
        )
        if usage.speech_input_tokens or usage.speech_output_tokens:
            speech = _speech_cost(price, usage)
            if speech is None:
                self._unpriced.warn(model_id)
                return None
            cost += speech
        # `is _ONE` first: Fraction's `==` is Python code, the standard tier's every request asks (issue #20).
        return cost if factor is None or factor is _ONE or factor == 1 else round(factor * cost)

    def unpriced_tier(self, model_id: str, service_tier: str, latency: str) -> str | None:
        """The `pricing` key a request for this tier needs and `model_id`'s price lacks, or
        None when it can be priced (or the model has no price at all: metered unpriced)."""
        price = self.price_of(model_id)
        if price is None:
            return None
        if price.multiplier(service_tier) is None:
            return f"service_tiers.{service_tier}"
        if latency == "optimized" and price.latency_optimized is None:
            return "latency_optimized"
        if latency not in ("", "optimized"):
            return f"latency {latency}"
        return None


def _speech_cost(price: Price, usage: Usage) -> int | None:
    """What the speech tokens cost beyond their count at the text rates (already in the
    request's cost); None when the price has no speech rate for tokens the request used."""
    extra = 0
    for tokens, speech_rate, text_rate in ((usage.speech_input_tokens, price.speech_input, price.input),
                                           (usage.speech_output_tokens, price.speech_output, price.output)):
        if tokens:
            if speech_rate is None:
                return None
            extra += tokens * (speech_rate - text_rate)
    return extra


class _UnpricedWarnings:
    """"No price for model X", once per id, in bounded memory and at a bounded rate.

    Model ids are the client's choice: a set of every id warned about would grow
    without end, and a line per invented id would flood the log. The last
    `remembered` ids are kept (each warned once while remembered); at most
    `per_minute` lines a minute are written, and the next line says how many
    were left out.
    """

    def __init__(self, remembered: int = 1024, per_minute: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remembered = remembered
        self._per_minute = per_minute
        self._clock = clock
        self._window = -1
        self._written = 0
        self._left_out = 0

    def warn(self, model_id: str) -> None:
        if model_id in self._seen:
            self._seen.move_to_end(model_id)
            return
        self._seen[model_id] = None
        if len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        window = int(self._clock() // 60)
        if window != self._window:
            self._window, self._written = window, 0
        if self._written >= self._per_minute:
            self._left_out += 1
            return
        self._written += 1
        shown = model_id if len(model_id) <= _SHOWN else model_id[:_SHOWN] + "…"
        if self._left_out:
            logger.warning("no price configured for model %s; metering it at cost 0 "
                           "(%d more unpriced models not logged)", shown, self._left_out)
            self._left_out = 0
        else:
            logger.warning("no price configured for model %s; metering it at cost 0", shown)
