"""What only the DynamoDB store does, against DynamoDB Local over HTTP: the
table's shape, TTL attributes, multi-part transactions, shards, consolidation."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from metering.aggregate import Aggregate
from metering.consolidate import Consolidator
from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent
from metering.recorder import UsageRecorder
from metering.store import UnsupportedQuery

pytestmark = pytest.mark.anyio

MakeEvent = Callable[..., UsageEvent]
T0 = float(calendar.timegm((2025, 3, 10, 12, 0, 0)))
DAY = "2025-03-10"
MODEL = "amazon.nova-pro-v1:0"
EIGHT_DAYS = 8 * 86_400


async def item(store: DynamoDBStore, pk: str, sk: str) -> dict[str, Any]:
    response = await store._client.get_item(TableName=store.table, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                            ConsistentRead=True)
    found: dict[str, Any] = response.get("Item", {})
    return found


async def test_init_creates_table_gsi_and_ttl_idempotently(dynamodb_store: DynamoDBStore) -> None:
    assert "already complete" in await dynamodb_store.init()
    client = dynamodb_store._client
    table = (await client.describe_table(TableName=dynamodb_store.table))["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "MetricTypeIndex"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["gsi2pk", "gsi2sk"]
    ttl = (await client.describe_time_to_live(TableName=dynamodb_store.table))["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")


async def test_items_have_the_documented_keys_and_ttl(dynamodb_store: DynamoDBStore, make_event: MakeEvent) -> None:
    await dynamodb_store.write_batch("j:1-1", [
        make_event("a", timestamp=T0 + 5, input_tokens=10, output_tokens=2, quota_scope="acme/chatbot",
                   cost_pico_usd=40, reserved_pico_usd=100),
    ])
    rate = await item(dynamodb_store, f"METRICS#{DAY}", f"12:00:00#MODEL_RATE#{MODEL}")
    assert {k: v for k, v in rate.items() if k not in ("pk", "sk")} == {
        "tpm": {"N": "12"}, "rpm": {"N": "1"}, "model": {"S": MODEL}, "timestamp": {"S": f"{DAY}T12:00:00Z"},
        "gsi2pk": {"S": f"MODEL_RATE#{MODEL}"}, "gsi2sk": {"S": f"{DAY}#12:00:00"},
        "ttl": {"N": str(int(T0) + EIGHT_DAYS)},
    }
    quota = await item(dynamodb_store, "QUOTA#acme/chatbot", DAY)
    assert quota[f"committed_pico_usd#{MODEL}"] == {"N": "-60"} and int(quota["ttl"]["N"]) > T0 + 30 * 86_400
    marker = await item(dynamodb_store, "BATCH#j:1-1#0", "BATCH")
    assert int(marker["ttl"]["N"]) - int(marker["applied_at"]["N"]) == 30 * 86_400
    shards = [await item(dynamodb_store, f"USAGE#{DAY}#{s:02d}", f"acme#chatbot#{MODEL}") for s in range(4)]
    [usage] = [found for found in shards if found]
    assert "ttl" not in usage  # usage is history: it never expires
    assert (usage["requests"], usage["cost_pico_usd"]) == ({"N": "1"}, {"N": "40"})


async def test_a_batch_split_over_transactions_replays_exactly_once(
    dynamodb_factory: Callable[..., DynamoDBStore], make_event: MakeEvent
) -> None:
    """Four items per transaction: the marker and three updates. The process dies
    after the first part; the replay applies only the parts still missing."""
    events = [make_event(f"r{i}", model=f"m{i % 5}", app=f"app{i % 2}", timestamp=T0 + 60 * (i % 3),
                         quota_scope="acme", cost_pico_usd=i) for i in range(30)]
    async with dynamodb_factory(max_transaction_items=4) as store:
        await store.init()
        updates = store._updates("j:1-2", Aggregate(events))
        assert len(updates) > 3 * 3  # several parts
        assert await store._apply_part("j:1-2#0", updates[:3]) is True  # then the crash
        assert await store.write_batch("j:1-2", events) is True
        assert await store.write_batch("j:1-2", events) is False
        [row] = await store.usage_summary(0, None, [])
        assert (row.requests, row.cost_pico_usd) == (30, sum(range(30)))
        budget = await store.read_budget("acme", DAY)
        assert sum(model.spent for model in budget.models.values()) == sum(range(30))
        rates = await store.model_rates("m0", T0, T0 + 180)
        assert sum(rate.rpm for rate in rates) <= 6  # the GSI may lag, never double


async def test_counters_spread_over_shards(dynamodb_factory: Callable[..., DynamoDBStore],
                                          make_event: MakeEvent) -> None:
    async with dynamodb_factory(shards=4) as store:
        await store.init()
        for batch in range(12):
            await store.write_batch(f"j:{batch}-{batch}", [make_event(f"r{batch}-{i}") for i in range(3)])
        shards = [await item(store, f"USAGE#{DAY}#{s:02d}", f"acme#chatbot#{MODEL}") for s in range(4)]
        used = [int(found["requests"]["N"]) for found in shards if found]
        assert len(used) > 1 and sum(used) == 36


async def test_no_per_request_items(dynamodb_store: DynamoDBStore, make_event: MakeEvent) -> None:
    await dynamodb_store.write_events([make_event("a")])
    with pytest.raises(UnsupportedQuery):
        await dynamodb_store.get_event("a")
    with pytest.raises(UnsupportedQuery):
        await dynamodb_store.usage_summary(0, None, ["operation"])


async def test_one_lease_holder_consolidates_daily_totals(
    dynamodb_factory: Callable[..., DynamoDBStore], make_event: MakeEvent, tmp_path: Path
) -> None:
    """Two replicas, each with its own pipeline, write to one table; the lease
    holder sums the shards into one TOTAL item per scope."""
    now = [T0]
    first = dynamodb_factory(clock=lambda: now[0])
    async with first, dynamodb_factory(table=first.table, clock=lambda: now[0]) as second:
        await first.init()
        replicas = [UsageRecorder(store, tmp_path / name, flush_interval=60)
                    for store, name in ((first, "a"), (second, "b"))]
        for recorder in replicas:
            await recorder.start()
        for i in range(40):
            replicas[i % 2].record(make_event(f"r{i}", app=("chatbot", "search")[i % 4 // 2],
                                              model=("m-a", "m-b")[i % 3 % 2], cost_pico_usd=i))
        await asyncio.gather(*(recorder.flush() for recorder in replicas))

        consolidators = [Consolidator(first, 60, owner="replica-a", clock=lambda: now[0]),
                         Consolidator(second, 60, owner="replica-b", clock=lambda: now[0])]
        assert [await c.run_once() for c in consolidators] == [True, False]
        org = await second.scope_totals("acme", DAY)  # one item read, from any replica
        expected = await first.usage_summary(0, None, ["model"])
        assert {m: (r.requests, r.cost_pico_usd) for m, r in org.items()} == {
            r.model: (r.requests, r.cost_pico_usd) for r in expected}
        app = await first.scope_totals("acme/search", DAY)
        assert sum(r.requests for r in app.values()) == 20
        assert await first.scope_totals("nobody", DAY) == {}

        now[0] += 60  # the holder renews; the other still waits
        assert [await c.run_once() for c in consolidators] == [True, False]
        now[0] += 1000  # the holder died: its lease expires and the other takes over
        assert await consolidators[1].run_once() is True
        assert await consolidators[0].run_once() is False
        for recorder in replicas:
            await recorder.stop()
