"""Prometheus metrics: what the proxy measured, labelled by org, app and model.

One private `CollectorRegistry` per proxy (served on the admin port at
`/metrics`), never the global one, so tests and several apps in one process do
not share counters. Label cardinality is bounded: org/app come from issued keys
or config, and models beyond `max_models` distinct ids are reported as `other`.
Model ids are the client's choice, so only an id Bedrock has served takes a
label slot: a request Bedrock refused (`UsageEvent.refused`) counts under its
id's label if it has one, else under `other` (issue #17 item 5: 300 invented
ids used to fill every slot and push real models into `other`). A label value
is at most `MAX_LABEL_CHARS` long: a longer id is cut and suffixed with a hash
of the whole, so two ids never share a label by accident.

With several workers (proxy/workers.py) every process writes its values to
prometheus-client's multiprocess files and the scrape sums them
(`aggregate_processes`); the gauges say how (`multiprocess_mode`).
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from adapters.memo import remember
from metering.events import UsageEvent
from metering.money import PICO_PER_USD
from metering.store_stats import FLUSH_BUCKETS, StoreStats

__all__ = ["MAX_LABEL_CHARS", "ProxyMetrics"]

#: Longest model label value; SDKs' ids and ARNs are below 130 characters.
MAX_LABEL_CHARS = 160
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
#: Label combinations whose series `observe` keeps at hand (bounded like the labels are).
_CHILDREN_KEPT = 4096
#: `costkeeper_tokens`' direction label of input, output, cache read and cache write tokens.
_DIRECTIONS = ("input", "output", "cache_read", "cache_write")


class ProxyMetrics:
    def __init__(self, max_models: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._max_models = max_models
        self._models: set[str] = set()
        #: (org, app, model, operation, status) → the series `observe` moves for it.
        self._series: dict[tuple[str, str, str, str, int], _Series] = {}
        #: Set by `aggregate_processes`: scrapes read every worker's files from there.
        self._multiprocess_dir: str | None = None
        labels = ("org", "app", "model")
        self.tokens = Counter("costkeeper_tokens", "Tokens metered, by direction.",
                              (*labels, "direction"), registry=self.registry)
        self.requests = Counter("costkeeper_requests", "Model requests answered, by operation and status.",
                                (*labels, "operation", "status"), registry=self.registry)
        self.cost = Counter("costkeeper_cost_usd", "Cost of the metered usage in USD.", labels,
                            registry=self.registry)
        self.latency = Histogram("costkeeper_request_duration_seconds", "Time from request to last byte.",
                                 ("org", "app", "model", "operation"), buckets=_LATENCY_BUCKETS,
                                 registry=self.registry)
        self.first_byte = Histogram("costkeeper_first_byte_seconds", "Time from request to first response byte.",
                                    ("org", "app", "model", "operation"), buckets=_LATENCY_BUCKETS,
                                    registry=self.registry)
        self.fallbacks = Counter("costkeeper_fallbacks", "Requests served by a fallback model.",
                                 ("org", "app", "requested_model", "model"), registry=self.registry)
        self.cached = Counter("costkeeper_cached_responses", "Requests answered from the response cache.",
                              labels, registry=self.registry)
        self.estimated = Counter("costkeeper_estimated_usage", "Requests whose usage had to be estimated.",
                                 labels, registry=self.registry)
        self.quota_use = Gauge("costkeeper_quota_use_ratio", "Committed spend / daily quota, per scope and model.",
                               ("scope", "model"), registry=self.registry,
                               multiprocess_mode="livemostrecent")  # workers read the same store
        # Today's budget of each scope and model as this process last read it from the store
        # (metering/leases.py): spent (settled), leased (held by every replica), remaining.
        self.quota_budget = Gauge("costkeeper_quota_budget_usd", "Today's quota budget per scope and model, by "
                                  "state: spent (settled), leased (held by replicas' slices), remaining.",
                                  ("scope", "model", "state"), registry=self.registry,
                                  multiprocess_mode="livemostrecent")
        self.quota_unchecked = Counter("costkeeper_quota_unchecked", "Requests served without quota budget "
                                       "(store unreachable, fail-open).", ("scope", "model"), registry=self.registry)
        self.lease_writes = Counter("costkeeper_quota_lease_writes", "Budget lease writes to the store, by kind "
                                    "(claim, renew, give_back, reclaim, exhausted).", ("kind",),
                                    registry=self.registry)
        self.backlog = Gauge("costkeeper_metering_backlog", "Usage events not yet written to the store.",
                             registry=self.registry, multiprocess_mode="livesum")  # each worker its own journal
        self.store_calls = Counter("costkeeper_store_calls", "Calls to the usage store, by operation "
                                   "(DynamoDB API calls; SQLite write transactions).", ("operation",),
                                   registry=self.registry)
        self.store_items = Counter("costkeeper_store_items_written", "Items (DynamoDB) or rows (SQLite) written.",
                                   registry=self.registry)
        self.store_flush = Histogram("costkeeper_store_flush_seconds", "Time to store one batch of usage events.",
                                     buckets=FLUSH_BUCKETS, registry=self.registry)
        self.inflight_bodies = Gauge("costkeeper_inflight_body_bytes", "Request-body bytes held by requests in "
                                     "flight (capped by limits.max_inflight_body_bytes).", registry=self.registry,
                                     multiprocess_mode="livesum")  # each worker its own budget
        self.auth_failures = Counter("costkeeper_auth_failures", "Requests refused with a 403, by reason "
                                     "(unknown_key, bad_signature, clock_skew, …).", ("reason",),
                                     registry=self.registry)
        self.config_info = Gauge("costkeeper_config_info", "1 for the configuration this process runs "
                                 "(sha256 of config.yaml's bytes), 0 for one it ran before a reload.",
                                 ("sha256",), registry=self.registry, multiprocess_mode="liveall")
        self.config_reload_errors = Counter("costkeeper_config_reload_errors", "Config reloads refused (an "
                                            "invalid file: the running configuration was kept).",
                                            registry=self.registry)
        self.upstream_retries = Counter("costkeeper_upstream_retries", "Requests sent again on a fresh "
                                        "connection: the pooled one had been closed by the upstream.",
                                        registry=self.registry)
        self.store_flushed = Counter("costkeeper_store_flushed_events", "Usage events stored by the flushes.",
                                     registry=self.registry)

    def _model(self, model: str, claim: bool = True) -> str:
        """The label for `model`: its own (a slot is taken when `claim`), else `other`."""
        label = _label_value(model)
        if label in self._models:
            return label
        if not claim or len(self._models) >= self._max_models:
            return "other"
        self._models.add(label)
        return label

    def observe(self, event: UsageEvent, fallback: bool = False) -> None:
        key = (event.org, event.app, event.model, event.operation, event.status)
        series = self._series.get(key)
        if series is None:
            series = _Series(self, (event.org, event.app, self._model(event.model, not event.refused)),
                             event.operation, event.status)
            if series.labels[2] in self._models:  # its own label, for good: the same series every time
                remember(self._series, key, series, _CHILDREN_KEPT)
        labels = series.labels
        for index, count in enumerate((event.input_tokens, event.output_tokens, event.cache_read_tokens,
                                       event.cache_write_tokens)):
            if count > 0:
                series.add_tokens(index)(count)
            elif count:
                series.tokens(index).inc(count)  # refused (ValueError), as a counter refuses it
        series.add_request(1)
        if event.cost_pico_usd:
            series.add_cost()(event.cost_pico_usd / PICO_PER_USD)
        series.observe_latency(event.latency_ms / 1000)
        if event.first_byte_ms is not None:
            series.observe_first_byte()(event.first_byte_ms / 1000)
        if fallback:
            self.fallbacks.labels(event.org, event.app, self._model(event.requested_model, not event.refused),
                                  labels[2]).inc()
        if event.cached:
            self.cached.labels(*labels).inc()
        if event.estimated:
            self.estimated.labels(*labels).inc()

    def watch_store(self, stats: StoreStats) -> None:
        """Export what the metering path asks of the store: counted as it happens, in
        metrics of this registry, so workers' counts add up like every other metric."""
        stats.listen(self)

    def on_call(self, operation: str, items: int) -> None:
        self.store_calls.labels(operation).inc()
        if items:
            self.store_items.inc(items)

    def on_flush(self, seconds: float, events: int) -> None:
        self.store_flush.observe(seconds)
        self.store_flushed.inc(events)

    def set_quota_use(self, scope: str, model: str, ratio: float) -> None:
        self.quota_use.labels(scope, self._model(model)).set(ratio)

    def set_quota_budget(self, scope: str, model: str, spent: int, leased: int, remaining: int) -> None:
        """Amounts in pico-USD."""
        model = self._model(model)
        for state, amount in (("spent", spent), ("leased", leased), ("remaining", remaining)):
            self.quota_budget.labels(scope, model, state).set(amount / PICO_PER_USD)

    def on_unchecked(self, scope: str, model: str) -> None:
        self.quota_unchecked.labels(scope, self._model(model)).inc()

    def on_lease_write(self, kind: str) -> None:
        self.lease_writes.labels(kind).inc()

    def aggregate_processes(self, directory: str) -> None:
        """Scrapes sum the metrics of every process writing to `directory` (the
        PROMETHEUS_MULTIPROC_DIR the worker processes started with)."""
        self._multiprocess_dir = directory

    def exposition(self, backlog: int) -> bytes:
        self.backlog.set(backlog)
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry)


class _Series:
    """The series one (org, app, model, operation, status) moves, found once: `labels()`
    validates and takes a lock on every call, and `observe` moves five to eight series
    per request (issue #20). A series is made when first moved, as `labels()` on demand
    would (a made series is exported, at 0).

    Each is moved through its value's own `inc` (`_adder`, `_observer`), bound once: the
    public `inc` and `observe` check, on every call, what holds for every call here (a
    labelled child is observable, the amounts are not negative), and cost twice as much."""

    __slots__ = ("labels", "add_request", "observe_latency", "_metrics", "_operation", "_tokens", "_adds",
                 "_add_cost", "_observe_first_byte")

    def __init__(self, metrics: ProxyMetrics, labels: tuple[str, str, str], operation: str, status: int) -> None:
        self.labels = labels
        self._metrics, self._operation = metrics, operation
        self._tokens: list[Any] = [None] * len(_DIRECTIONS)
        self._adds: list[Callable[[float], None] | None] = [None] * len(_DIRECTIONS)
        self._add_cost: Callable[[float], None] | None = None
        self._observe_first_byte: Callable[[float], None] | None = None
        # Moved by every request.
        self.add_request = _adder(metrics.requests.labels(*labels, operation, str(status)))
        self.observe_latency = _observer(metrics.latency.labels(*labels, operation))

    def tokens(self, index: int) -> Any:
        child = self._tokens[index]
        if child is None:
            child = self._tokens[index] = self._metrics.tokens.labels(*self.labels, _DIRECTIONS[index])
        return child

    def add_tokens(self, index: int) -> Callable[[float], None]:
        """Adds a positive count of the direction's tokens."""
        add = self._adds[index]
        if add is None:
            add = self._adds[index] = _adder(self.tokens(index))
        return add

    def add_cost(self) -> Callable[[float], None]:
        """Adds a positive cost in USD."""
        if self._add_cost is None:
            self._add_cost = _adder(self._metrics.cost.labels(*self.labels))
        return self._add_cost

    def observe_first_byte(self) -> Callable[[float], None]:
        if self._observe_first_byte is None:
            self._observe_first_byte = _observer(self._metrics.first_byte.labels(*self.labels, self._operation))
        return self._observe_first_byte


def _adder(child: Any) -> Callable[[float], None]:
    """`child.inc` for a positive amount: its value's own `inc` (which takes the value's
    lock, or writes the multiprocess file), else, should a prometheus-client version
    keep it elsewhere, the public `inc`."""
    inc = getattr(getattr(child, "_value", None), "inc", None)
    return inc if callable(inc) else cast(Callable[[float], None], child.inc)


def _observer(child: Any) -> Callable[[float], None]:
    """`child.observe` of a histogram: its sum and its first bucket whose bound is at least
    the amount (a NaN: none), each value moved by its own `inc`, as `Histogram.observe`
    moves them; else, should a prometheus-client version keep them elsewhere, the public
    `observe` (tests/proxy/test_observe.py holds the two to the same exposition)."""
    values, bounds = getattr(child, "_buckets", None), getattr(child, "_upper_bounds", None)
    add_sum = getattr(getattr(child, "_sum", None), "inc", None)
    if not (callable(add_sum) and isinstance(values, list) and isinstance(bounds, list | tuple)
            and len(values) == len(bounds) and bounds and bounds[-1] == math.inf):
        return cast(Callable[[float], None], child.observe)
    sum_inc = add_sum
    bucket_incs = tuple(value.inc for value in values)
    upper = tuple(bounds)

    def observe(amount: float) -> None:
        sum_inc(amount)
        index = bisect_left(upper, amount)  # bounds are sorted, the last is +Inf: in range unless NaN (0)
        if amount <= upper[index]:
            bucket_incs[index](1)

    return observe


def _label_value(model: str) -> str:
    if len(model) <= MAX_LABEL_CHARS:
        return model
    digest = hashlib.sha256(model.encode()).hexdigest()[:12]
    return f"{model[:MAX_LABEL_CHARS - 14]}…{digest}"
