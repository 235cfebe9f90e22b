"""Per-minute model-rate items on DynamoDB, in the layout existing widgets query (issue #23).

First-generation CloudWatch dashboards (Lambda widgets) read per-minute model
rates with `query --index-name MetricTypeIndex --key-condition-expression
"gsi2pk = :pk"` and expect this item::

    pk = METRICS#2024-01-20
    sk = 14:35:00#MODEL_RATE#<model>
    model, tpm, rpm, timestamp = 2024-01-20T14:35:00Z, ttl,
    gsi2pk = MODEL_RATE#<model>, gsi2sk = 2024-01-20#14:35:00

so Cost Keeper writes exactly that: seconds are always `:00`. Before issue #23
the sort keys were `HH:MM` with no `model` or `timestamp`. Readers here read both
(an old replica may still add to an old item during a rolling upgrade: both count),
and `costkeeper store init` folds old items into new ones (`migrate_rate_items`),
so the widgets see one shape once the upgrade is done.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from metering.dynamodb_schema import error_code, n, num, s
from metering.store import ModelRate

__all__ = ["is_legacy_rate", "migrate_rate_items", "query_rates", "rate_key", "rate_update"]

logger = logging.getLogger(__name__)


def rate_key(day: str, minute: str, model: str) -> dict[str, Any]:
    """The key of `model`'s item for `minute` (`HH:MM`) of `day`."""
    return {"pk": s(f"METRICS#{day}"), "sk": s(f"{minute}:00#MODEL_RATE#{model}")}


def rate_sets(day: str, minute: str, model: str, ttl: int) -> dict[str, dict[str, Any]]:
    """The attributes a rate item carries beside its counters."""
    return {
        "model": s(model),
        "timestamp": s(f"{day}T{minute}:00Z"),
        "gsi2pk": s(f"MODEL_RATE#{model}"),
        "gsi2sk": s(f"{day}#{minute}:00"),
        "ttl": n(ttl),
    }


def rate_update(day: str, minute: str, model: str, tokens: int, requests: int, ttl: int) -> dict[str, Any]:
    """An UpdateItem body adding to `model`'s counters of one minute (idempotent sets)."""
    sets = rate_sets(day, minute, model, ttl)
    names = {f"#s{i}": name for i, name in enumerate(sets)}
    values = {f":s{i}": value for i, value in enumerate(sets.values())}
    names.update({"#tpm": "tpm", "#rpm": "rpm"})
    values.update({":tpm": n(tokens), ":rpm": n(requests)})
    return {
        "Key": rate_key(day, minute, model),
        "UpdateExpression": "SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(sets)))
                            + " ADD #tpm :tpm, #rpm :rpm",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def is_legacy_rate(item: dict[str, Any]) -> bool:
    """A rate item written before issue #23: sort key `HH:MM#MODEL_RATE#…`."""
    sk = item.get("sk", {}).get("S", "")
    return item.get("pk", {}).get("S", "").startswith("METRICS#") and sk[5:17] == "#MODEL_RATE#"


async def query_rates(client: Any, table: str, index: str, model: str, first: str, last: str) -> list[ModelRate]:
    """Rates of `model` for the minutes `first`..`last` (`YYYY-MM-DD#HH:MM`, inclusive),
    oldest first, old (`…#HH:MM`) and new (`…#HH:MM:00`) items of one minute summed.

    `BETWEEN first AND last:00` holds both: `…#HH:MM` sorts just before `…#HH:MM:00`.
    """
    totals: dict[tuple[str, str], list[int]] = {}
    paginator = client.get_paginator("query")
    async for page in paginator.paginate(
        TableName=table, IndexName=index,
        KeyConditionExpression="gsi2pk = :model AND gsi2sk BETWEEN :first AND :last",
        ExpressionAttributeValues={":model": s(f"MODEL_RATE#{model}"), ":first": s(first),
                                   ":last": s(f"{last}:00")},
    ):
        for item in page["Items"]:
            day, _, clock = item["gsi2sk"]["S"].partition("#")
            counts = totals.setdefault((day, clock[:5]), [0, 0])
            counts[0] += num(item, "tpm")
            counts[1] += num(item, "rpm")
    return [ModelRate(model=model, day=day, minute=minute, tpm=tpm, rpm=rpm)
            for (day, minute), (tpm, rpm) in sorted(totals.items())]


async def migrate_rate_items(client: Any, table: str, attempts: int = 4) -> int:
    """Fold every old-layout rate item into its new-layout item; the number folded.

    Each fold is one transaction: add the old counters to the new item and delete
    the old one on condition that its counters are still those read, so a replica of
    the previous version adding to it meanwhile makes the fold retry rather than lose
    its count. Idempotent: a second run finds nothing old. Rate items live
    `metrics_ttl_days`, so this scans at most that many days of minutes.
    """
    folded = 0
    paginator = client.get_paginator("scan")
    async for page in paginator.paginate(
        TableName=table, FilterExpression="begins_with(pk, :metrics)",
        ExpressionAttributeValues={":metrics": s("METRICS#")}, ConsistentRead=True,
    ):
        for item in page["Items"]:
            if is_legacy_rate(item):
                folded += await _fold(client, table, item, attempts)
    return folded


async def _fold(client: Any, table: str, item: dict[str, Any], attempts: int) -> int:
    key = {"pk": item["pk"], "sk": item["sk"]}
    for _ in range(attempts):
        day = item["pk"]["S"].removeprefix("METRICS#")
        minute, _, model = item["sk"]["S"].partition("#MODEL_RATE#")
        ttl = num(item, "ttl")
        update = rate_update(day, minute, model, num(item, "tpm"), num(item, "rpm"), ttl)
        delete = {
            "TableName": table, "Key": key,
            "ConditionExpression": "#tpm = :tpm AND #rpm = :rpm",
            "ExpressionAttributeNames": {"#tpm": "tpm", "#rpm": "rpm"},
            "ExpressionAttributeValues": {":tpm": n(num(item, "tpm")), ":rpm": n(num(item, "rpm"))},
        }
        try:
            await client.transact_write_items(TransactItems=[
                {"Update": {"TableName": table, **update}}, {"Delete": delete},
            ])
            return 1
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
        found = (await client.get_item(TableName=table, Key=key, ConsistentRead=True)).get("Item")
        if found is None:
            return 0  # folded by a concurrent init
        item = found
    logger.warning("rate item %s %s kept changing; left for the next `store init`", key["pk"]["S"], key["sk"]["S"])
    return 0
