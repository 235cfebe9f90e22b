"""Per-minute model rates in the layout existing widgets query (issue #23), against
DynamoDB Local: the widget's own query and figures, and the migration from `HH:MM`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from metering.dynamodb_schema import create_table
from metering.dynamodb_store import DynamoDBStore
from metering.events import UsageEvent
from proxy.admin.usage_api import rate_summary
from tests.rate_widget import widget_figures

pytestmark = pytest.mark.anyio

MakeEvent = Callable[..., UsageEvent]
MODEL = "us.anthropic.claude-opus-4-1-20250805-v1:0"
#: HH:35:00 of the previous hour: recent, since DynamoDB Local deletes items past their TTL.
T0 = float((int(time.time() // 3600) - 1) * 3600 + 35 * 60)
DAY = time.strftime("%Y-%m-%d", time.gmtime(T0))
HOUR = time.strftime("%H", time.gmtime(T0))


async def widget_query(store: DynamoDBStore, model: str, index: str = "MetricTypeIndex") -> list[dict[str, Any]]:
    """What the widgets run: `query --index-name MetricTypeIndex --key-condition-expression "gsi2pk = :pk"`."""
    items: list[dict[str, Any]] = []
    for _ in range(100):  # a GSI is eventually consistent
        response = await store._client.query(
            TableName=store.table, IndexName=index, KeyConditionExpression="gsi2pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"MODEL_RATE#{model}"}},
        )
        items = response["Items"]
        if items:
            return items
        await asyncio.sleep(0.05)
    return items


async def test_rate_items_have_the_widget_layout(dynamodb_store: DynamoDBStore, make_event: MakeEvent) -> None:
    await dynamodb_store.write_events([
        make_event("a", model=MODEL, timestamp=T0 + 5, input_tokens=10, output_tokens=2),
        make_event("b", model=MODEL, timestamp=T0 + 59, input_tokens=7, output_tokens=1, cache_read_tokens=3),
    ])
    response = await dynamodb_store._client.get_item(
        TableName=dynamodb_store.table, ConsistentRead=True,
        Key={"pk": {"S": f"METRICS#{DAY}"}, "sk": {"S": f"{HOUR}:35:00#MODEL_RATE#{MODEL}"}})
    assert {k: v for k, v in response["Item"].items() if k != "ttl"} == {
        "pk": {"S": f"METRICS#{DAY}"}, "sk": {"S": f"{HOUR}:35:00#MODEL_RATE#{MODEL}"},
        "model": {"S": MODEL}, "tpm": {"N": "23"}, "rpm": {"N": "2"},
        "timestamp": {"S": f"{DAY}T{HOUR}:35:00Z"},
        "gsi2pk": {"S": f"MODEL_RATE#{MODEL}"}, "gsi2sk": {"S": f"{DAY}#{HOUR}:35:00"},
    }
    assert int(response["Item"]["ttl"]["N"]) == int(T0) + 8 * 86_400


async def test_the_widget_query_and_figures_equal_the_traffic_and_the_rates_api(
    dynamodb_store: DynamoDBStore, make_event: MakeEvent
) -> None:
    now = time.time()
    minute = int(now // 60) * 60
    # (minutes ago, input tokens) of each request: a peak 20 minutes ago, traffic in the last five.
    traffic = [(20, 900), (20, 800), (7, 50), (4, 30), (2, 10), (2, 20), (0, 5)]
    await dynamodb_store.write_events([
        make_event(f"r{i}", model=MODEL, timestamp=minute - 60 * ago + 1, input_tokens=tokens, output_tokens=0)
        for i, (ago, tokens) in enumerate(traffic)
    ])
    expected: dict[str, tuple[int, int]] = {}
    for ago, tokens in traffic:
        stamp = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(minute - 60 * ago))
        tpm, rpm = expected.get(stamp, (0, 0))
        expected[stamp] = (tpm + tokens, rpm + 1)

    items = await widget_query(dynamodb_store, MODEL)
    assert {item["timestamp"]["S"]: (int(item["tpm"]["N"]), int(item["rpm"]["N"])) for item in items} == expected
    assert all(item["model"]["S"] == MODEL for item in items)

    # What /v1/rates answers: the store's rates of the last hour, summarised.
    rates = await dynamodb_store.model_rates(MODEL, minute - 59 * 60, now + 60)
    for field in ("tpm", "rpm"):
        api = rate_summary(rates, field, now)
        # The API's minutes are `…T14:35Z` (unchanged since before issue #23); the items' `…T14:35:00Z`.
        api["overall_peak"] = {**api["overall_peak"], "time": api["overall_peak"]["time"][:-1] + ":00Z"}
        assert widget_figures(items, field, now) == api
    assert widget_figures(items, "tpm", now)["overall_peak"] == {
        "value": 1700, "time": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(minute - 20 * 60))}


async def test_store_init_migrates_a_table_of_the_previous_layout(
    dynamodb_factory: Callable[..., DynamoDBStore], make_event: MakeEvent
) -> None:
    """A table made before issue #23: GSI `gsi2`, rate items keyed `HH:MM`. `store init`
    adds `MetricTypeIndex` (UpdateTable on a live table) and folds the old items into
    new ones, counted once; readers sum old and new items of a minute meanwhile."""
    async with dynamodb_factory() as store:
        client = store._client
        await create_table(client, store.table, "gsi2")
        old = {"pk": {"S": f"METRICS#{DAY}"}, "sk": {"S": f"{HOUR}:35#MODEL_RATE#{MODEL}"},
               "tpm": {"N": "100"}, "rpm": {"N": "4"}, "ttl": {"N": str(int(T0) + 8 * 86_400)},
               "gsi2pk": {"S": f"MODEL_RATE#{MODEL}"}, "gsi2sk": {"S": f"{DAY}#{HOUR}:35"}}
        await client.put_item(TableName=store.table, Item=old)
        await client.put_item(TableName=store.table, Item={
            **old, "sk": {"S": f"{HOUR}:36#MODEL_RATE#{MODEL}"}, "gsi2sk": {"S": f"{DAY}#{HOUR}:36"}})
        key = await store.create_key("acme", "chat")  # listed through the GSI, old and new

        summary = await store.init()
        assert "added GSI MetricTypeIndex" in summary and "folded 2 rate items" in summary
        indexes = (await client.describe_table(TableName=store.table))["Table"]["GlobalSecondaryIndexes"]
        assert {index["IndexName"] for index in indexes} == {"gsi2", "MetricTypeIndex"}
        await store.write_events([make_event("n", model=MODEL, timestamp=T0 + 1, input_tokens=5, output_tokens=0)])

        items = await widget_query(store, MODEL)
        assert {item["timestamp"]["S"]: (int(item["tpm"]["N"]), int(item["rpm"]["N"])) for item in items} == {
            f"{DAY}T{HOUR}:35:00Z": (105, 5), f"{DAY}T{HOUR}:36:00Z": (100, 4)}
        assert all(item["sk"]["S"].endswith(f":00#MODEL_RATE#{MODEL}") for item in items)
        assert "already complete" in await store.init()  # nothing left to fold
        assert [key.access_key_id] == [record.access_key_id for record in await store.list_keys()]

        # A replica of the previous version adds to an old item during the upgrade: both count.
        await client.put_item(TableName=store.table, Item=old)
        rates = await store.model_rates(MODEL, T0, T0 + 120)
        assert [(rate.minute, rate.tpm, rate.rpm) for rate in rates] == [(f"{HOUR}:35", 205, 9), (f"{HOUR}:36", 100, 4)]


async def test_the_index_name_is_configurable(dynamodb_factory: Callable[..., DynamoDBStore],
                                              make_event: MakeEvent) -> None:
    async with dynamodb_factory(index_name="RatesByModel") as store:
        await store.init()
        await store.write_events([make_event("a", model=MODEL, timestamp=T0, input_tokens=3, output_tokens=0)])
        [item] = await widget_query(store, MODEL, index="RatesByModel")
        assert item["tpm"] == {"N": "3"}
        assert [(rate.minute, rate.tpm) for rate in await store.model_rates(MODEL, T0, T0 + 60)] == [(f"{HOUR}:35", 3)]
