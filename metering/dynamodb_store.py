"""The shared store for many replicas: DynamoDB through aiobotocore.

The key schema is in `metering/dynamodb_schema.py`; budget leases, keys, overrides,
invocation owners and tags are mixins in their own modules. A flushed batch becomes
one `TransactWriteItems` per 99 counter updates plus, in each, a conditional
put of the part's batch marker: a replayed part fails its condition and
changes nothing. No item is written per request (issue 4): usage lives only in
counters, so `get_event` is not offered and reports are by whole UTC days.

Errors: botocore retries throttling and transient errors (standard mode,
`max_attempts`, backoff with jitter); transaction conflicts between replicas
are retried here a few times; anything left raises to the caller — the
metering pipeline then keeps the batch in its journal and retries later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from metering.aggregate import (
    COUNTER_FIELDS,
    Aggregate,
    Counters,
    regroup_by_base_model,
    stored_groups,
)
from metering.dynamodb_invocations import InvocationItems
from metering.dynamodb_keys import KeyItems
from metering.dynamodb_leases import LeaseItems, lease_name
from metering.dynamodb_overrides import OverrideItems
from metering.dynamodb_rates import migrate_rate_items, query_rates, rate_update
from metering.dynamodb_reports import claim_report
from metering.dynamodb_schema import (
    CONFLICT_RETRIES,
    DAY_SECONDS,
    GSI,
    LEGACY_COST,
    QUOTA_TTL_DAYS,
    committed_attribute,
    create_table,
    day_epoch,
    error_code,
    n,
    num,
    s,
    shard_of,
    update_body,
)
from metering.dynamodb_tags import TagItems, tag_rows
from metering.events import UsageEvent, utc_day
from metering.money import PICO_PER_MICRO
from metering.secret_keys import KeySource
from metering.store import (
    ModelRate,
    UnsupportedQuery,
    UsageRow,
    events_batch_id,
    normalize_group_by,
)
from metering.store_stats import StoreStats
from metering.tags import tag_key_of

__all__ = ["DynamoDBStore"]

logger = logging.getLogger(__name__)

#: DynamoDB's limit of items per TransactWriteItems (raised from 25 in 2022).
MAX_TRANSACTION_ITEMS = 100


def _slot(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d#%H:%M")


def _counters(item: dict[str, Any]) -> Counters:
    counters = Counters(**{name: num(item, name) for name in COUNTER_FIELDS})
    counters.cost_pico_usd += num(item, LEGACY_COST) * PICO_PER_MICRO  # written before issue #16
    return counters


def _attributes(item: dict[str, Any]) -> dict[str, str]:
    """The string attributes of a counter item (its group fields)."""
    return {name: value["S"] for name, value in item.items() if "S" in value}


class DynamoDBStore(KeyItems, InvocationItems, OverrideItems, TagItems, LeaseItems):
    """`UsageStore`, `LeaseStore`, `KeyStore` and `InvocationStore` on one DynamoDB table."""

    def __init__(
        self,
        *,
        table: str,
        region: str,
        endpoint_url: str | None = None,
        shards: int = 8,
        max_attempts: int = 3,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        metrics_ttl_days: int = 8,
        marker_ttl_days: int = 30,
        max_transaction_items: int = MAX_TRANSACTION_ITEMS,
        clock: Callable[[], float] = time.time,
        key_source: KeySource | None = None,
        index_name: str = GSI,
        max_tag_values: int = 100,
    ) -> None:
        if shards < 1 or max_transaction_items < 2:
            raise ValueError("shards must be at least 1 and max_transaction_items at least 2")
        self.table = table
        #: The GSI on (`gsi2pk`, `gsi2sk`): rates and the key list (`MetricTypeIndex`).
        self.index_name = index_name
        self._region = region
        self._endpoint_url = endpoint_url
        self._shards = shards
        #: Distinct values kept per (org, tag key, day); more count as `other` (metering/tags.py).
        self.max_tag_values = max_tag_values
        self._config = AioConfig(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._metrics_ttl = metrics_ttl_days * DAY_SECONDS
        self._marker_ttl = marker_ttl_days * DAY_SECONDS
        self._max_items = max_transaction_items
        self._clock = clock
        #: The key for issued secrets; None: none configured (no default: see secret_keys.py).
        self._key_source = key_source
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self.stats = StoreStats()
        #: Days this process has registered as having usage (see `_register_days`).
        self._known_days: set[str] = set()

    # -- life cycle --------------------------------------------------------

    async def open(self) -> None:
        """Create the client (credentials from the standard AWS chain). No call is made."""
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(get_session().create_client(
            "dynamodb", region_name=self._region, endpoint_url=self._endpoint_url, config=self._config,
        ))
        self._stack = stack
        self._client.meta.events.register("before-parameter-build.dynamodb", self.stats.on_dynamodb_call)

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> DynamoDBStore:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def init(self) -> str:
        """`costkeeper store init`: the table, its GSI and TTL, and rate items of the
        layout before issue #23 folded into today's (idempotent)."""
        summary = await create_table(self._api(), self.table, self.index_name)
        folded = await migrate_rate_items(self._api(), self.table)
        return summary + (f"; folded {folded} rate items into the HH:MM:00 layout" if folded else "")

    def _api(self) -> Any:
        if self._client is None:
            raise RuntimeError("DynamoDBStore is not open (await store.open())")
        return self._client

    # -- UsageStore --------------------------------------------------------

    async def write_batch(self, batch_id: str, events: Sequence[UsageEvent]) -> bool:
        if not events:
            return False
        aggregate = Aggregate(events)
        if aggregate.tagged:
            aggregate.tagged = await self.bounded_tags(aggregate.tagged)
        await self._register_days({day for (_, _, _, day) in aggregate.usage})
        updates = self._updates(batch_id, aggregate)
        size = self._max_items - 1  # each part carries its own marker
        parts = [updates[i:i + size] for i in range(0, len(updates), size)]
        applied = False
        for index, part in enumerate(parts):
            applied |= await self._apply_part(f"{batch_id}#{index}", part)
        return applied

    async def write_events(self, events: Sequence[UsageEvent]) -> None:
        if events:
            await self.write_batch(events_batch_id(events), events)

    async def _register_days(self, days: set[str]) -> None:
        """Note the days that have usage, once per day and process, so a report
        queries only those (a set per year: `pk=DAYS`, `sk=<YYYY>`)."""
        for day in sorted(days - self._known_days):
            await self._update_item({
                "Key": {"pk": s("DAYS"), "sk": s(day[:4])},
                "UpdateExpression": "ADD #days :day",
                "ExpressionAttributeNames": {"#days": "days"},
                "ExpressionAttributeValues": {":day": {"SS": [day]}},
            })
            self._known_days.add(day)

    async def _usage_days(self, first: str, last: str) -> list[str]:
        """Days between `first` and `last` (inclusive) that have usage."""
        days: list[str] = []
        for year in range(int(first[:4]), int(last[:4]) + 1):
            response = await self._api().get_item(
                TableName=self.table, Key={"pk": s("DAYS"), "sk": s(str(year))}, ConsistentRead=True,
            )
            days.extend(day for day in response.get("Item", {}).get("days", {}).get("SS", []) if first <= day <= last)
        return sorted(days)

    def _updates(self, batch_id: str, aggregate: Aggregate) -> list[dict[str, Any]]:
        """The batch's updates in a deterministic order (a replay splits identically)."""
        updates: list[dict[str, Any]] = []
        for (org, app, model, day), counters in sorted(aggregate.usage.items()):
            sort_key = f"{org}#{app}#{model}"
            shard = shard_of(batch_id, f"{day}#{sort_key}", self._shards)
            updates.append(update_body(
                {"pk": s(f"USAGE#{day}#{shard:02d}"), "sk": s(sort_key)},
                counters.as_dict(),
                sets={"org": s(org), "app": s(app), "model": s(model), "day": s(day)},
            ))
        for key, adds, sets in self.tag_counter_updates(batch_id, aggregate.tagged):
            updates.append(update_body(key, adds, sets=sets))
        for (day, minute, model), rate in sorted(aggregate.rates.items()):
            updates.append(rate_update(day, minute, model, rate.tokens, rate.requests,
                                       day_epoch(day, minute) + self._metrics_ttl))
        committed, settled = aggregate.committed_by_scope(), aggregate.settled_by_scope()
        for scope, day in sorted(committed.keys() | settled.keys()):
            # Cost beyond what leases covered goes to committed; what they covered leaves them.
            adds = {committed_attribute(model): delta for model, delta in committed.get((scope, day), {}).items()}
            adds.update({lease_name(model, holder): -reserved
                         for (model, holder), reserved in settled.get((scope, day), {}).items()})
            updates.append(update_body(self._quota_key(scope, day), adds,
                                   set_if_absent={"ttl": n(day_epoch(day) + QUOTA_TTL_DAYS * DAY_SECONDS)}))
        return [{"Update": {"TableName": self.table, **update}} for update in updates]

    async def _apply_part(self, marker_id: str, updates: list[dict[str, Any]]) -> bool:
        now = int(self._clock())
        marker = {"Put": {
            "TableName": self.table,
            "Item": {"pk": s(f"BATCH#{marker_id}"), "sk": s("BATCH"), "applied_at": n(now),
                     "ttl": n(now + self._marker_ttl)},
            "ConditionExpression": "attribute_not_exists(pk)",
        }}
        for attempt in range(CONFLICT_RETRIES):
            try:
                await self._api().transact_write_items(TransactItems=[marker, *updates])
                return True
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = [reason.get("Code", "None") for reason in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False  # this part was applied before
                retryable = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "None"}
                if not set(reasons) <= retryable or attempt == CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.01, 0.05) * 2**attempt)  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    async def claim_report(self, report_id: str) -> bool:
        """Claim a reported usage's id once (`metering/dynamodb_reports.py`): False if claimed before."""
        return await claim_report(self._api(), self.table, report_id, self._clock(), self._marker_ttl)

    async def get_event(self, request_id: str) -> UsageEvent | None:
        raise UnsupportedQuery(
            "the DynamoDB store keeps counters, not one item per request (issue 4); "
            "use usage_summary, scope_totals or model_rates"
        )

    async def usage_summary(self, since: float, until: float | None, by: Sequence[str]) -> list[UsageRow]:
        wanted = normalize_group_by(by)
        groups = stored_groups(wanted)
        if "operation" in groups:
            raise UnsupportedQuery("the DynamoDB store counts by org, app, model and day, not by operation")
        first = utc_day(since)
        # No upper bound: include tomorrow, for replicas whose clocks run ahead.
        last = utc_day(until - 1e-6) if until is not None else utc_day(self._clock() + DAY_SECONDS)
        days = await self._usage_days(first, last)
        items = await self._shard_items(days)
        tag = tag_key_of(groups)
        if tag is not None:
            tagged = await self._items(self.tagged_pks(tag, days))
            return regroup_by_base_model(tag_rows(
                [(_attributes(item), _counters(item)) for item in items],
                [(_attributes(item), _counters(item)) for item in tagged], groups, f"tag:{tag}"), wanted)
        totals: dict[tuple[str | None, ...], Counters] = {}
        for item in items:
            key = tuple(item[name]["S"] for name in groups)
            totals.setdefault(key, Counters()).add(_counters(item))
        return regroup_by_base_model([
            counters.row(**dict(zip(groups, key, strict=True)))
            for key, counters in sorted(totals.items())
            if counters.requests
        ], wanted)

    async def _shard_items(self, days: Iterable[str]) -> list[dict[str, Any]]:
        return await self._items([f"USAGE#{day}#{shard:02d}" for day in days for shard in range(self._shards)])

    async def _items(self, pks: Iterable[str]) -> list[dict[str, Any]]:
        results = await asyncio.gather(*(self._query_all(pk=pk) for pk in pks))
        return [item for result in results for item in result]

    async def _query_all(self, *, pk: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        paginator = self._api().get_paginator("query")
        async for page in paginator.paginate(
            TableName=self.table, KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": s(pk)}, ConsistentRead=True,
        ):
            items.extend(page["Items"])
        return items

    async def model_rates(self, model: str, since: float, until: float) -> list[ModelRate]:
        if until <= since:
            return []
        return await query_rates(self._api(), self.table, self.index_name, model,
                                 _slot(since), _slot(until - 1e-6))

    async def scope_totals(self, scope: str, day: str) -> dict[str, UsageRow]:
        response = await self._api().get_item(
            TableName=self.table, Key={"pk": s(f"TOTAL#{day}"), "sk": s(scope)}, ConsistentRead=True,
        )
        models = response.get("Item", {}).get("models", {}).get("M", {})
        return {model: _counters(value["M"]).row(model=model, day=day) for model, value in sorted(models.items())}

    # -- consolidation (see metering/consolidate.py) -----------------------

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Hold lease `name` for `seconds` if it is free, expired or already ours."""
        now = self._clock()
        try:
            await self._api().put_item(
                TableName=self.table,
                Item={"pk": s(f"LEASE#{name}"), "sk": s("LEASE"), "owner": s(owner), "expires_at": n(now + seconds)},
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR #owner = :me",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":now": n(now), ":me": s(owner)},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def consolidate(self, day: str) -> int:
        """Sum the day's counter shards into one TOTAL item per scope (each org
        and each org/app); the number of items written. Idempotent."""
        totals: dict[str, dict[str, Counters]] = {}
        for item in await self._shard_items([day]):
            org, app, model = item["org"]["S"], item["app"]["S"], item["model"]["S"]
            counters = _counters(item)
            for scope in (org, f"{org}/{app}"):
                totals.setdefault(scope, {}).setdefault(model, Counters()).add(counters)
        now = self._clock()
        requests = [
            {"PutRequest": {"Item": {
                "pk": s(f"TOTAL#{day}"), "sk": s(scope), "scope": s(scope), "day": s(day),
                "consolidated_at": n(now),
                "models": {"M": {model: {"M": {name: n(value) for name, value in counters.as_dict().items()}}
                                 for model, counters in models.items()}},
            }}}
            for scope, models in sorted(totals.items())
        ]
        for i in range(0, len(requests), 25):  # BatchWriteItem's limit
            pending: dict[str, Any] = {self.table: requests[i:i + 25]}
            for attempt in range(8):
                response = await self._api().batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                await asyncio.sleep(random.uniform(0.05, 0.1) * 2**attempt)  # noqa: S311 - jitter
            else:
                raise RuntimeError(f"consolidation of {day}: items left unprocessed after retries")
        return len(requests)

    async def _update_item(self, update: dict[str, Any], **options: str) -> dict[str, Any]:
        """UpdateItem, retrying the conflicts a concurrent flush transaction causes."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                response: dict[str, Any] = await self._api().update_item(TableName=self.table, **update, **options)
                return response
            except ClientError as exc:
                if error_code(exc) != "TransactionConflictException" or attempt == CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.02) * 2**attempt)  # noqa: S311 - jitter
        raise AssertionError("unreachable")
