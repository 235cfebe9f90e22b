"""What the stores report of their own writes: calls by operation, items, flush times."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metering.events import UsageEvent
from metering.store_stats import FLUSH_BUCKETS, StoreStats
from proxy.metrics import ProxyMetrics

MakeEvent = Callable[..., UsageEvent]


@pytest.mark.anyio
async def test_every_backend_counts_its_writes(store: object, make_event: MakeEvent) -> None:
    stats: StoreStats = store.stats  # type: ignore[attr-defined]
    before_writes, before_items = stats.writes, stats.items_written
    events = [make_event(f"req-{n}", org=f"org-{n % 2}") for n in range(40)]
    assert await store.write_batch("j:1-1", events) is True  # type: ignore[attr-defined]
    writes, items = stats.writes - before_writes, stats.items_written - before_items
    # A batch of 40 events is a handful of writes, never one per event...
    assert 1 <= writes <= 5
    # ...and touches more than one item (usage counters, rates, the batch marker).
    assert items >= 3
    assert await store.write_batch("j:1-1", events) is False  # a repeated batch writes (almost) nothing
    assert stats.writes - before_writes <= writes + 1


def test_flush_times_fill_cumulative_buckets() -> None:
    stats = StoreStats()
    stats.on_flush(0.003, 10)
    stats.on_flush(0.2, 5)
    assert (stats.flushes, stats.flushed_events) == (2, 15)
    assert stats.flush_seconds_sum == pytest.approx(0.203)
    bucket = dict(zip(FLUSH_BUCKETS, stats.flush_buckets, strict=False))
    assert bucket[0.005] == 1 and bucket[0.1] == 1 and bucket[0.25] == 2 and stats.flush_buckets[-1] == 2


def test_dynamodb_calls_count_items_per_operation() -> None:
    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

    stats = StoreStats()
    stats.on_dynamodb_call(Model("TransactWriteItems"), {"TransactItems": [{}, {}, {}]})
    stats.on_dynamodb_call(Model("BatchWriteItem"), {"RequestItems": {"t": [{}, {}]}})
    stats.on_dynamodb_call(Model("UpdateItem"), {})
    stats.on_dynamodb_call(Model("GetItem"), {})
    assert stats.items_written == 6
    assert stats.writes == 3 and stats.calls["GetItem"] == 1


def test_the_proxy_metrics_export_every_count_as_it_happens() -> None:
    stats, metrics = StoreStats(), ProxyMetrics()
    metrics.watch_store(stats)
    stats.on_transaction(3)
    stats.on_transaction(2)
    stats.on_flush(0.02, 5)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.exposition(0).decode())
               for s in family.samples}
    assert samples[("costkeeper_store_calls_total", (("operation", "Transaction"),))] == 2
    assert samples[("costkeeper_store_items_written_total", ())] == 5
    assert samples[("costkeeper_store_flushed_events_total", ())] == 5
    assert samples[("costkeeper_store_flush_seconds_count", ())] == 1
    assert samples[("costkeeper_store_flush_seconds_bucket", (("le", "0.025"),))] == 1
    assert samples[("costkeeper_store_flush_seconds_bucket", (("le", "0.01"),))] == 0
