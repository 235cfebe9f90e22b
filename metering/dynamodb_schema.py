"""The DynamoDB table: one table, one GSI, TTL on `ttl` (DESIGN.md §4).

Every item has a string partition key `pk` and sort key `sk`. Money is integer
pico-USD (`metering/money.py`), days are UTC `YYYY-MM-DD`, minutes UTC `HH:MM`; a
scope is `org` (ORG quotas) or `org/app` (APP quotas).

| item | pk | sk | attributes |
|---|---|---|---|
| usage counter shard | `USAGE#<day>#<shard>` | `<org>#<app>#<model>` | `org`, `app`, `model`, `day`, `requests`, `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_write_tokens`, `cost_pico_usd`, `estimated_requests`, `unpriced_requests` |
| daily total (consolidated) | `TOTAL#<day>` | `<scope>` | `scope`, `day`, `models` (map model → the counters above), `consolidated_at` |
| model rate per minute | `METRICS#<day>` | `<HH:MM>:00#MODEL_RATE#<model>` | `model`, `tpm`, `rpm`, `timestamp` = `<day>T<HH:MM>:00Z`, `gsi2pk` = `MODEL_RATE#<model>`, `gsi2sk` = `<day>#<HH:MM>:00`, `ttl` (`metering/dynamodb_rates.py`) |
| quota (budget, leases, sticky state) | `QUOTA#<scope>` | `<day>` | `committed_pico_usd#<model>` (spent + leased, per model), `lease#<model>#<holder>` and `lexp#<model>#<holder>` (each budget lease's amount in pico-USD and its expiry), `exhausted` (string set), `exhausted_at#<model>` (epoch seconds of its first mark), `ttl` |
| days with usage | `DAYS` | `<YYYY>` | `days` (string set of `YYYY-MM-DD`, added once per day and process) |
| tag counter shard | `TAGGED#<key>#<day>#<shard>` | `<org>#<app>#<model>#<value>` | `org`, `app`, `model`, `day`, `tag_key`, `value` and the usage counters (`metering/dynamodb_tags.py`) |
| kept tag values | `TAGVALUES#<org>#<key>` | `<day>` | `values` (string set, at most `max_tag_values`), `ttl` |
| batch marker | `BATCH#<batch id>#<part>` | `BATCH` | `applied_at`, `ttl` |
| lease | `LEASE#<name>` | `LEASE` | `owner`, `expires_at` |
| reported usage's claim | `REPORT#report:<org>/<app>:<request id>` | `REPORT` | `claimed_at`, `ttl` (`metering/dynamodb_reports.py`) |
| issued key | `KEY#<access key id>` | `KEY` | `org`, `app`, `secret` (encrypted, `metering/secret_box.py`), `created_at`, `revoked_at`, `gsi2pk` = `KEYS`, `gsi2sk` = `<created_at>#<id>` |
| meta | `META#<name>` | `META` | `value`: the key-check marker, the KMS-wrapped data key (`metering/secret_keys.py`) |
| async invocation owner | `INVOCATION#<invocation ARN>` | `INVOCATION` | `arn`, `org`, `app`, `model`, `started_at` (`metering/dynamodb_invocations.py`) |

* Usage counters are sharded: a flush adds to one of `shards` items per
  (org, app, model, day), picked by a hash of the batch id — random across
  flushes and replicas, the same on a replay — so concurrent replicas rarely
  contend for an item. Shards sit in the partition key, spreading a day's
  writes over `shards` partitions. Reports query the shards of each day.
* A lease-holding replica sums the shards into one `TOTAL` item per scope and
  day about every minute, so a scope's usage is one item read.
* A budget lease claim needs an atomic check-and-add, which a sharded counter
  cannot give: `committed_pico_usd#<model>` is one number on the scope's quota item, and a
  claim is one `UpdateItem` that ADDs to it and to the holder's `lease#…` under
  `attribute_not_exists(#c) OR #c <= :limit`, returning the item (`ALL_NEW`, or
  `ALL_OLD` when refused) so the claimer sees what is left without another read.
  A flush settles leases in its own transaction (ADD to `committed_pico_usd#…` and `lease#…`),
  so every lease and the scope's `committed` stay on one item (metering/budget.py).
* GSI `MetricTypeIndex` (configurable: `store.index_name`; `gsi2pk`, `gsi2sk`, all
  attributes projected) answers "rates of model M between two minutes" and lists
  issued keys in creation order. Before issue #23 it was named `gsi2` and rate items
  had `HH:MM` sort keys: `store init` adds the new index (DynamoDB backfills it) and
  folds old rate items into new ones; readers count both meanwhile.
* Money before issue #16 was micro-USD, in attributes named `cost_micro_usd`
  (usage counters, and the counters of `TOTAL` maps) and `committed#<model>`
  (quota items). Nothing rewrites them: a reader adds an old attribute ×10⁶ to its
  pico-USD namesake, so old items, and items a replica of the previous version
  still adds to during a rolling upgrade, count at their true value. A lease claim
  first folds a quota item's old attribute into the new one (one conditional
  update), so its condition sees the whole committed spend.
* TTL: rate items after `metrics_ttl_days`, batch markers after
  `marker_ttl_days` (a journal older than that must not be replayed), quota
  items and kept tag values 35 days after their day. Usage, tag counters, totals, keys and
  invocation owners never expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from metering.money import PICO_PER_MICRO

__all__ = [
    "error_code",
    "GSI",
    "LEGACY_COST",
    "LEGACY_GSI",
    "QUOTA_TTL_DAYS",
    "committed_attribute",
    "committed_by_model",
    "create_table",
    "exhausted_at_attribute",
    "gsi_definition",
    "legacy_committed_attribute",
    "n",
    "num",
    "s",
    "shard_of",
]

logger = logging.getLogger(__name__)

#: The GSI on (`gsi2pk`, `gsi2sk`), by the name existing rate widgets query (issue #23);
#: `store.index_name` in the config. `LEGACY_GSI` is its name before issue #23.
GSI = "MetricTypeIndex"
LEGACY_GSI = "gsi2"
QUOTA_TTL_DAYS = 35
#: The micro-USD counter attribute written before issue #16 (read ×10⁶).
LEGACY_COST = "cost_micro_usd"
_COMMITTED = "committed_pico_usd#"
_LEGACY_COMMITTED = "committed#"
_EXHAUSTED_AT = "exhausted_at#"

_ATTRIBUTES = [
    {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "gsi2pk", "gsi2sk")
]
_GSI_DEFINITION: dict[str, Any] = {
    "IndexName": GSI,
    "KeySchema": [
        {"AttributeName": "gsi2pk", "KeyType": "HASH"},
        {"AttributeName": "gsi2sk", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "ALL"},
}


def error_code(exc: ClientError) -> str:
    """The DynamoDB error code of a botocore ClientError (`ConditionalCheckFailedException` …)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


def num(item: Mapping[str, Any], name: str) -> int:
    """An integer attribute of a low-level item (0 when absent)."""
    value = item.get(name)
    return int(value["N"]) if value else 0


def committed_attribute(model: str) -> str:
    """The quota item's attribute of `model`'s committed spend, in pico-USD."""
    return _COMMITTED + model


def exhausted_at_attribute(model: str) -> str:
    """The quota item's attribute of when `model` was first marked exhausted (epoch seconds)."""
    return _EXHAUSTED_AT + model


def legacy_committed_attribute(model: str) -> str:
    """The same in micro-USD, as written before issue #16."""
    return _LEGACY_COMMITTED + model


def committed_by_model(item: Mapping[str, Any]) -> dict[str, int]:
    """model → committed pico-USD of a quota item, old micro-USD attributes included."""
    committed: dict[str, int] = {}
    for name, value in item.items():
        if name.startswith(_COMMITTED):
            model, amount = name[len(_COMMITTED):], int(value["N"])
        elif name.startswith(_LEGACY_COMMITTED):
            model, amount = name[len(_LEGACY_COMMITTED):], int(value["N"]) * PICO_PER_MICRO
        else:
            continue
        committed[model] = committed.get(model, 0) + amount
    return committed


def shard_of(batch_id: str, key: str, shards: int) -> int:
    """The counter shard a batch writes `key` to: spread, yet stable on replay."""
    digest = hashlib.sha256(f"{batch_id}|{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % shards


def gsi_definition(index: str = GSI) -> dict[str, Any]:
    """The GSI on (`gsi2pk`, `gsi2sk`), all attributes projected, named `index`."""
    return {**_GSI_DEFINITION, "IndexName": index}


async def create_table(client: Any, table: str, index: str = GSI) -> str:
    """Create the table, its GSI (named `index`) and TTL, whatever of them is missing;
    idempotent. An existing GSI of another name (`gsi2` before issue #23) is left for
    replicas of the previous version; delete it once none runs."""
    done = []
    try:
        await client.create_table(
            TableName=table,
            AttributeDefinitions=_ATTRIBUTES,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
            GlobalSecondaryIndexes=[gsi_definition(index)],
        )
        done.append("created the table and its GSI")
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    description = await _wait_active(client, table)
    if not any(found["IndexName"] == index for found in description.get("GlobalSecondaryIndexes", [])):
        await client.update_table(
            TableName=table,
            AttributeDefinitions=_ATTRIBUTES,
            GlobalSecondaryIndexUpdates=[{"Create": gsi_definition(index)}],
        )
        await _wait_active(client, table)
        done.append(f"added GSI {index}")
    ttl = (await client.describe_time_to_live(TableName=table))["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        try:
            await client.update_time_to_live(
                TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
            )
            done.append("enabled TTL on `ttl`")
        except ClientError as exc:
            # Another init (or an earlier attempt that timed out client-side) got there first.
            if "already enabled" not in exc.response["Error"].get("Message", ""):
                raise
    elif ttl.get("AttributeName") != "ttl":
        raise RuntimeError(f"table {table} has TTL on {ttl.get('AttributeName')!r}, expected 'ttl'")
    return f"DynamoDB table {table} ready ({'; '.join(done) or 'already complete'})"


async def _wait_active(client: Any, table: str, wait_for: float = 300.0) -> dict[str, Any]:
    """Until the table and every GSI are ACTIVE; the table's description."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_for
    while True:
        description: dict[str, Any] = (await client.describe_table(TableName=table))["Table"]
        statuses = [description["TableStatus"], *(i["IndexStatus"] for i in description.get("GlobalSecondaryIndexes", []))]
        if all(status == "ACTIVE" for status in statuses):
            return description
        if loop.time() > deadline:
            raise TimeoutError(f"table {table} not ACTIVE after {wait_for:g} s: {statuses}")
        await asyncio.sleep(1.0)


#: Retries of an update a concurrent flush transaction conflicts with.
CONFLICT_RETRIES = 6
DAY_SECONDS = 86_400


def update_body(key: dict[str, Any], adds: dict[str, int], sets: dict[str, dict[str, Any]] | None = None,
            set_if_absent: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """An UpdateItem body: `SET name = value, … ADD counter delta, …` with placeholders."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    set_parts: list[str] = []
    add_parts: list[str] = []
    for i, (name, value) in enumerate((sets or {}).items()):
        names[f"#s{i}"], values[f":s{i}"] = name, value
        set_parts.append(f"#s{i} = :s{i}")
    for i, (name, value) in enumerate((set_if_absent or {}).items()):
        names[f"#i{i}"], values[f":i{i}"] = name, value
        set_parts.append(f"#i{i} = if_not_exists(#i{i}, :i{i})")
    for i, (name, delta) in enumerate(adds.items()):
        names[f"#a{i}"], values[f":a{i}"] = name, n(delta)
        add_parts.append(f"#a{i} :a{i}")
    expression = ""
    if set_parts:
        expression += "SET " + ", ".join(set_parts)
    if add_parts:
        expression += " ADD " + ", ".join(add_parts)
    return {
        "Key": key,
        "UpdateExpression": expression.strip(),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def day_epoch(day: str, minute: str = "00:00") -> int:
    return int(datetime.strptime(f"{day} {minute}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp())
