"""Usage events folded into the few counters a flush writes (DESIGN.md §4).

However many requests a batch holds, it writes one usage counter per
(org, app, model, day), one rate counter per (day, minute, model) and one
committed-spend delta per (quota scope, day, model), plus what each budget lease
settles (`metering/leases.py`). A request Bedrock refused (`UsageEvent.refused`: a
4xx, nothing billed) adds only its committed delta and settlement, which give back
what admission held for it: its model id is the client's, and would
otherwise make a row per id a client cares to invent. Folding is exact integer
addition, so any split of the same events sums to the same totals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from adapters.modelid import base_model_id
from metering.events import UsageEvent, utc_day_and_minute
from metering.store import UsageRow, group_order
from metering.tags import TAG_PREFIX

__all__ = ["COUNTER_FIELDS", "Aggregate", "CommitKey", "Counters", "Rate", "RateKey", "SettleKey", "TaggedKey",
           "Tally", "UsageKey", "regroup_by_base_model", "stored_groups"]

#: (org, app, model, day)
UsageKey = tuple[str, str, str, str]
#: (org, app, model, day, tag key, tag value as the request carried it)
TaggedKey = tuple[str, str, str, str, str, str]
#: (day `YYYY-MM-DD`, minute `HH:MM`, model)
RateKey = tuple[str, str, str]
#: (quota scope, day, model)
CommitKey = tuple[str, str, str]
#: (quota scope, day, model, lease holder)
SettleKey = tuple[str, str, str, str]


@dataclass(slots=True)
class Counters:
    """The additive part of a `UsageRow`."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_pico_usd: int = 0
    estimated_requests: int = 0
    unpriced_requests: int = 0

    def add_event(self, event: UsageEvent) -> None:
        self.requests += 1
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.cache_read_tokens += event.cache_read_tokens
        self.cache_write_tokens += event.cache_write_tokens
        self.cost_pico_usd += event.cost_pico_usd
        self.estimated_requests += int(event.estimated)
        self.unpriced_requests += int(not event.priced)

    def add(self, other: Counters) -> None:
        for name in COUNTER_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_FIELDS}

    def row(self, **groups: str | None) -> UsageRow:
        """These counters as a `UsageRow` with the given group fields (`tag:<key>` → `tag`)."""
        fields: dict[str, Any] = {("tag" if name.startswith(TAG_PREFIX) else name): value
                                  for name, value in groups.items()}
        fields.update(self.as_dict())
        return UsageRow(**fields)


COUNTER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Counters))


def stored_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """What a store groups by to answer `groups`: `model` in place of `base_model`,
    which no store keeps (`regroup_by_base_model` derives it)."""
    return tuple(dict.fromkeys("model" if name == "base_model" else name for name in groups))


def regroup_by_base_model(rows: Iterable[UsageRow], groups: Sequence[str]) -> list[UsageRow]:
    """Rows grouped by `stored_groups(groups)`, summed into rows grouped by `groups`
    and sorted by them; `rows` as they are when `groups` has no `base_model`.

    In Python rather than SQL: a summary has a row per model, not per request, so
    this costs a few rows' additions where a SQL function would run once per request.
    """
    if "base_model" not in groups:
        return list(rows)
    totals: dict[tuple[str | None, ...], Counters] = {}
    for row in rows:
        values = {name: row.value(name) for name in groups}
        values["base_model"] = base_model_id(row.model or "")
        counters = totals.setdefault(tuple(values[name] for name in groups), Counters())
        counters.add(Counters(**{name: getattr(row, name) for name in COUNTER_FIELDS}))
    return [counters.row(**dict(zip(groups, key, strict=True)))
            for key, counters in sorted(totals.items(), key=group_order)]


@dataclass(slots=True)
class Rate:
    #: Tokens of every kind (input, output, cache read, cache write).
    tokens: int = 0
    requests: int = 0


def _settle(settled: dict[SettleKey, int], commit_key: CommitKey, event: UsageEvent) -> None:
    """Add what `event` (of a lease) settles to `settled`."""
    settle_key = (*commit_key, event.lease)
    settled[settle_key] = settled.get(settle_key, 0) + event.reserved_pico_usd


class Tally:
    """What the recorder keeps of a journal segment's events on the hot path: how many,
    and Σ reserved per budget lease (`Aggregate.settled`, for `on_stored`). A store folds
    the events into its own `Aggregate`; a full one per segment as well cost every
    request a dozen dict updates for counters nothing read (issue #20)."""

    __slots__ = ("events", "settled")

    def __init__(self, events: Iterable[UsageEvent] = ()) -> None:
        self.events = 0
        self.settled: dict[SettleKey, int] = {}
        for event in events:
            self.add(event)

    def add(self, event: UsageEvent) -> None:
        self.events += 1
        if event.lease and event.quota_scope:
            _settle(self.settled, (event.quota_scope, utc_day_and_minute(event.timestamp)[0], event.quota_key), event)


class Aggregate:
    """Counters of a set of events; `add` is O(1) so the hot path can call it."""

    __slots__ = ("events", "usage", "tagged", "rates", "committed", "settled", "_rows")

    def __init__(self, events: Iterable[UsageEvent] = (), *, rows: bool = True) -> None:
        """`rows=False`: `usage` and `tagged` stay empty, for a store that keeps the events
        themselves as its rows (SQLite) and would only throw those counters away."""
        self._rows = rows
        self.events = 0
        self.usage: dict[UsageKey, Counters] = {}
        #: The usage of tagged events again, per tag (metering/tags.py): a store bounds
        #: the values before it keeps them.
        self.tagged: dict[TaggedKey, Counters] = {}
        self.rates: dict[RateKey, Rate] = {}
        #: cost - reserved: what a flush adds to each scope's committed spend.
        self.committed: dict[CommitKey, int] = {}
        #: Σ reserved per budget lease: what a flush moves from each lease to spent.
        self.settled: dict[SettleKey, int] = {}
        for event in events:
            self.add(event)

    def add(self, event: UsageEvent) -> None:
        # Once per event a flush stores: written out rather than in helpers (issue #20).
        self.events += 1
        day, minute = utc_day_and_minute(event.timestamp)
        if not event.refused:  # a refusal billed nothing: no row or rate for a client-chosen id
            if self._rows:
                self._add_rows(event, day)
            rate_key = (day, minute, event.model)
            rate = self.rates.get(rate_key)
            if rate is None:
                rate = self.rates[rate_key] = Rate()
            rate.tokens += event.total_tokens
            rate.requests += 1
        scope = event.quota_scope
        if scope:
            commit_key = (scope, day, event.quota_key)
            committed = self.committed
            committed[commit_key] = committed.get(commit_key, 0) + event.cost_pico_usd - event.reserved_pico_usd
            if event.lease:
                _settle(self.settled, commit_key, event)

    def _add_rows(self, event: UsageEvent, day: str) -> None:
        key = (event.org, event.app, event.model, day)
        counters = self.usage.get(key)
        if counters is None:
            counters = self.usage[key] = Counters()
        counters.add_event(event)
        for tag_key, value in event.tags:
            tagged_key = (*key, tag_key, value)
            tagged = self.tagged.get(tagged_key)
            if tagged is None:
                tagged = self.tagged[tagged_key] = Counters()
            tagged.add_event(event)

    def merge(self, other: Aggregate) -> None:
        self.events += other.events
        for key, counters in other.usage.items():
            self.usage.setdefault(key, Counters()).add(counters)
        for tagged_key, counters in other.tagged.items():
            self.tagged.setdefault(tagged_key, Counters()).add(counters)
        for rate_key, rate in other.rates.items():
            mine = self.rates.setdefault(rate_key, Rate())
            mine.tokens += rate.tokens
            mine.requests += rate.requests
        for commit_key, delta in other.committed.items():
            self.committed[commit_key] = self.committed.get(commit_key, 0) + delta
        for settle_key, reserved in other.settled.items():
            self.settled[settle_key] = self.settled.get(settle_key, 0) + reserved

    def committed_by_scope(self) -> dict[tuple[str, str], dict[str, int]]:
        """{(scope, day): {model: delta}}, zero deltas left out."""
        result: dict[tuple[str, str], dict[str, int]] = {}
        for (scope, day, model), delta in sorted(self.committed.items()):
            if delta:
                result.setdefault((scope, day), {})[model] = delta
        return result

    def settled_by_scope(self) -> dict[tuple[str, str], dict[tuple[str, str], int]]:
        """{(scope, day): {(model, lease holder): Σ reserved}}, zeros left out."""
        result: dict[tuple[str, str], dict[tuple[str, str], int]] = {}
        for (scope, day, model, holder), reserved in sorted(self.settled.items()):
            if reserved:
                result.setdefault((scope, day), {})[(model, holder)] = reserved
        return result
