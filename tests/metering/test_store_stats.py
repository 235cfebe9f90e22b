"""What the stores report of their own writes: calls by operation, items, flush times."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metering.events import UsageEvent
from metering.store_stats import WRITE_OPERATIONS, StoreStats
from proxy.admin.metrics import ProxyMetrics

MakeEvent = Callable[..., UsageEvent]


def _samples(metrics: ProxyMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the proxy's /metrics would say, through prometheus-client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.exposition(0).decode())
            for s in family.samples}


def _writes_and_items(metrics: ProxyMetrics) -> tuple[float, float]:
    samples = _samples(metrics)
    writes = sum(value for (name, labels), value in samples.items()
                 if name == "costkeeper_store_calls_total" and dict(labels)["operation"] in WRITE_OPERATIONS)
    return writes, samples.get(("costkeeper_store_items_written_total", ()), 0.0)


@pytest.mark.anyio
async def test_every_backend_counts_its_writes(store: object, make_event: MakeEvent) -> None:
    metrics = ProxyMetrics()
    metrics.watch_store(store.stats)  # type: ignore[attr-defined]
    before_writes, before_items = _writes_and_items(metrics)
    events = [make_event(f"req-{n}", org=f"org-{n % 2}") for n in range(40)]
    assert await store.write_batch("j:1-1", events) is True  # type: ignore[attr-defined]
    after_writes, after_items = _writes_and_items(metrics)
    writes, items = after_writes - before_writes, after_items - before_items
    # A batch of 40 events is a handful of writes, never one per event...
    assert 1 <= writes <= 5
    # ...and touches more than one item (usage counters, rates, the batch marker).
    assert items >= 3
    assert await store.write_batch("j:1-1", events) is False  # a repeated batch writes (almost) nothing
    assert _writes_and_items(metrics)[0] - before_writes <= writes + 1


def test_dynamodb_calls_count_items_per_operation() -> None:
    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

    stats, metrics = StoreStats(), ProxyMetrics()
    metrics.watch_store(stats)
    stats.on_dynamodb_call(Model("TransactWriteItems"), {"TransactItems": [{}, {}, {}]})
    stats.on_dynamodb_call(Model("BatchWriteItem"), {"RequestItems": {"t": [{}, {}]}})
    stats.on_dynamodb_call(Model("UpdateItem"), {})
    stats.on_dynamodb_call(Model("GetItem"), {})
    assert _writes_and_items(metrics) == (3, 6)
    assert _samples(metrics)[("costkeeper_store_calls_total", (("operation", "GetItem"),))] == 1


def test_the_proxy_metrics_export_every_count_as_it_happens() -> None:
    stats, metrics = StoreStats(), ProxyMetrics()
    metrics.watch_store(stats)
    stats.on_transaction(3)
    stats.on_transaction(2)
    stats.on_flush(0.003, 10)
    stats.on_flush(0.2, 5)
    samples = _samples(metrics)
    assert samples[("costkeeper_store_calls_total", (("operation", "Transaction"),))] == 2
    assert samples[("costkeeper_store_items_written_total", ())] == 5
    assert samples[("costkeeper_store_flushed_events_total", ())] == 15
    assert samples[("costkeeper_store_flush_seconds_count", ())] == 2
    assert samples[("costkeeper_store_flush_seconds_sum", ())] == pytest.approx(0.203)
    for bound, count in (("0.005", 1), ("0.1", 1), ("0.25", 2), ("+Inf", 2)):
        assert samples[("costkeeper_store_flush_seconds_bucket", (("le", bound),))] == count
