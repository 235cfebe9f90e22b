"""One metered request, as the proxy hands it to the metering pipeline.

A `UsageEvent` is immutable and self-contained: it carries its cost, computed
once when the request ends, so a later price change never rewrites history and
a store never needs the price table. Money is integer pico-USD (`metering/money.py`).

Journal lines written before issue #16 name their costs `cost_micro_usd` and
`reserved_micro_usd`; `from_record` reads them ×10⁶, so a journal replayed after an
upgrade counts what it holds at its true value. The field names say the unit:
a line is never read in the wrong one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import EllipsisType
from typing import Any

from adapters.slot_init import slot_init
from adapters.usage import Usage
from metering.money import PICO_PER_MICRO
from metering.pricing import PriceTable
from metering.tags import Tags, make_tags

__all__ = ["UsageEvent", "utc_day", "utc_day_and_minute"]


def utc_day(timestamp: float) -> str:
    """`YYYY-MM-DD` of an epoch timestamp in UTC — the day quotas and reports use."""
    return utc_day_and_minute(timestamp)[0]


def utc_day_and_minute(timestamp: float) -> tuple[str, str]:
    """(`YYYY-MM-DD`, `HH:MM`) of an epoch timestamp in UTC."""
    return _day_and_minute(int(timestamp // 60))


@functools.lru_cache(maxsize=4096)
def _day_and_minute(minute_index: int) -> tuple[str, str]:
    # Cached per minute: formatting dates costs more than the rest of metering
    # an event on the hot path, and consecutive events share their minute.
    moment = datetime.fromtimestamp(minute_index * 60, UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H:%M")


# kw_only: twenty fields, several of the same type; a positional mix-up
# (input vs output tokens) would be silent, a keyword mix-up cannot happen.
@slot_init  # one per request: the frozen dataclass's own __init__ cost ≈ 5 µs (issue #20)
@dataclass(frozen=True, slots=True, kw_only=True)
class UsageEvent:
    #: Unique per request; stores count an event once per request id.
    request_id: str
    #: When the request started, epoch seconds (UTC day boundaries follow it).
    timestamp: float
    org: str
    app: str
    #: Bedrock operation, e.g. `InvokeModel`, `ConverseStream`.
    operation: str
    #: What the client put in the path (label, model id, profile id or ARN).
    requested_model: str
    #: The model actually used (differs from `requested_model` after a fallback).
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    #: Exact, in pico-USD (10⁻¹² USD).
    cost_pico_usd: int
    #: False when `model` had no price: the cost is 0 and reports flag the row.
    priced: bool
    latency_ms: float
    #: None for non-streamed responses or when no byte ever arrived.
    first_byte_ms: float | None
    #: HTTP status returned to the client.
    status: int
    #: True when Bedrock reported no usage and the proxy estimated it.
    estimated: bool
    #: The quota scope charged ("acme" for ORG scope, "acme/chatbot" for APP
    #: scope); "" when the model has no quota for the caller.
    quota_scope: str = ""
    #: The part of the cost (pico-USD) the budget lease `lease` covered (at most the worst
    #: case the request was admitted with); the flush moves it from the lease to spent.
    reserved_pico_usd: int = 0
    #: The chain model whose quota the cost counts against (its configured id, e.g.
    #: `anthropic.claude-haiku-…` when `model` is the `us.` profile sent); "" → `model`.
    quota_model: str = ""
    #: The budget lease (its holder id) the request was admitted against; "" for none.
    lease: str = ""
    #: Served from the proxy's response cache: no upstream call, no cost.
    cached: bool = False
    #: The client left before the response was complete. The usage is Bedrock's own
    #: count if the upstream delivered it within `limits.hangup_tail_*` after the
    #: client left, else an estimate (`estimated`).
    hung_up: bool = False
    #: The service tier ("" standard, "priority", "flex" …) and latency mode ("" standard,
    #: "optimized") the request was priced at: what served it, as Bedrock said, else what it asked for.
    service_tier: str = ""
    latency: str = ""
    #: Cost attribution tags (metering/tags.py), sorted by key; values already cut to
    #: 64 characters. A store may count a value as `other` (its distinct-values bound).
    tags: Tags = ()

    @property
    def day(self) -> str:
        return utc_day(self.timestamp)

    @property
    def quota_key(self) -> str:
        """The model id the committed spend of `quota_scope` is kept under."""
        return self.quota_model or self.model

    @property
    def refused(self) -> bool:
        """Bedrock refused the request (a 4xx) and billed nothing. Such an event is
        journaled and stored as the error it is, but makes no usage row, no rate and
        no metric label of its own: its model id is the client's choice, unbounded
        (issue #17 item 5). Its reservation is still settled (`Aggregate.committed`)."""
        return 400 <= self.status < 500 and self.total_tokens == 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def minute(self) -> str:
        """`HH:MM` (UTC) of `timestamp`, the bucket of the per-minute model rates."""
        return utc_day_and_minute(self.timestamp)[1]

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (the journal's line format). Not `asdict`, which
        deep-copies every value: this runs on the proxy's hot path."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> UsageEvent:
        """Inverse of `to_record`; keys this version does not know are ignored,
        missing ones with a default take it, micro-USD ones are converted
        (journals outlive upgrades)."""
        values = {name: record[name] for name in _FIELD_NAMES if name in record}
        for old, new in _MICRO_FIELDS.items():
            if old in record and new not in values:
                values[new] = record[old] * PICO_PER_MICRO
        if "tags" in values:  # JSON made the pairs lists
            values["tags"] = make_tags(values["tags"])
        return cls(**values)

    @classmethod
    def from_usage(
        cls,
        usage: Usage,
        prices: PriceTable,
        *,
        request_id: str,
        timestamp: float,
        org: str,
        app: str,
        operation: str,
        requested_model: str,
        model: str,
        latency_ms: float,
        status: int,
        first_byte_ms: float | None = None,
        quota_scope: str = "",
        quota_model: str = "",
        reserved_pico_usd: int = 0,
        lease: str = "",
        cached: bool = False,
        hung_up: bool = False,
        tags: Tags = (),
        cost: int | None | EllipsisType = ...,
    ) -> UsageEvent:
        """Price `usage` for `model` (the model used, not the one requested).

        An unpriced model is still metered — cost 0, `priced=False` — so its
        tokens show up in reports instead of vanishing. `cost`: what `prices`
        says `usage` costs on `model`, when the caller has priced it already
        (to settle a lease); `...`: price it here.
        """
        if cost is ...:
            cost = prices.cost_pico_usd(model, usage)
        return cls(
            request_id=request_id,
            timestamp=timestamp,
            org=org,
            app=app,
            operation=operation,
            requested_model=requested_model,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost_pico_usd=0 if cost is None else cost,
            priced=cost is not None,
            latency_ms=latency_ms,
            first_byte_ms=first_byte_ms,
            status=status,
            estimated=usage.estimated,
            quota_scope=quota_scope,
            quota_model="" if quota_model == model else quota_model,
            reserved_pico_usd=reserved_pico_usd,
            lease=lease,
            cached=cached,
            hung_up=hung_up,
            service_tier=usage.service_tier or "",
            latency=usage.latency or "",
            tags=tags,
        )


_FIELD_NAMES = tuple(f.name for f in fields(UsageEvent))
#: Fields of journal lines written before issue #16 (micro-USD) → today's (pico-USD).
_MICRO_FIELDS = {"cost_micro_usd": "cost_pico_usd", "reserved_micro_usd": "reserved_pico_usd"}
