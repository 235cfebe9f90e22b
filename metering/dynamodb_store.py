"""The shared store for many replicas: DynamoDB through aiobotocore.

The key schema is in `metering/dynamodb_schema.py`. A flushed batch becomes
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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from metering.budget import LeaseRecord, ModelBudget, ScopeBudget
from metering.dynamodb_invocations import InvocationItems
from metering.dynamodb_keys import KeyItems
from metering.dynamodb_overrides import OverrideItems
from metering.dynamodb_rates import migrate_rate_items, query_rates, rate_update
from metering.dynamodb_reports import claim_report
from metering.dynamodb_schema import (
    GSI,
    LEGACY_COST,
    QUOTA_TTL_DAYS,
    committed_attribute,
    committed_by_model,
    create_table,
    error_code,
    exhausted_at_attribute,
    legacy_committed_attribute,
    n,
    num,
    s,
    shard_of,
)
from metering.dynamodb_tags import TagItems, tag_rows
from metering.events import UsageEvent, utc_day
from metering.money import PICO_PER_MICRO
from metering.secret_keys import KeySource
from metering.store import (
    ModelRate,
    StoreError,
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
_CONFLICT_RETRIES = 6
_DAY = 86_400


def _update(key: dict[str, Any], adds: dict[str, int], sets: dict[str, dict[str, Any]] | None = None,
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


def _epoch(day: str, minute: str = "00:00") -> int:
    return int(datetime.strptime(f"{day} {minute}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp())


def _slot(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d#%H:%M")


def _counters(item: dict[str, Any]) -> Counters:
    counters = Counters(**{name: num(item, name) for name in COUNTER_FIELDS})
    counters.cost_pico_usd += num(item, LEGACY_COST) * PICO_PER_MICRO  # written before issue #16
    return counters


def _attributes(item: dict[str, Any]) -> dict[str, str]:
    """The string attributes of a counter item (its group fields)."""
    return {name: value["S"] for name, value in item.items() if "S" in value}


#: A budget lease's amount (pico-USD) and expiry (epoch seconds) on the scope's QUOTA item.
_LEASE, _EXPIRY = "lease#", "lexp#"


def _lease_name(model: str, holder: str) -> str:
    return f"{_LEASE}{model}#{holder}"


def _expiry_name(model: str, holder: str) -> str:
    return f"{_EXPIRY}{model}#{holder}"


def _budget(item: Mapping[str, Any]) -> ScopeBudget:
    """A QUOTA item as a ScopeBudget: `committed_pico_usd#<model>` (and the micro-USD
    `committed#<model>` written before issue #16, ×10⁶), `lease#<model>#<holder>`,
    `lexp#<model>#<holder>` (epoch seconds) and the `exhausted` set."""
    committed = committed_by_model(item)
    amounts: dict[tuple[str, str], int] = {}
    expiries: dict[tuple[str, str], float] = {}
    for name, value in item.items():
        if name.startswith(_LEASE):
            model, _, holder = name[len(_LEASE):].rpartition("#")
            amounts[(model, holder)] = int(value["N"])
        elif name.startswith(_EXPIRY):
            model, _, holder = name[len(_EXPIRY):].rpartition("#")
            expiries[(model, holder)] = float(value["N"])
    leases: dict[str, dict[str, LeaseRecord]] = {}
    for (model, holder), amount in amounts.items():
        leases.setdefault(model, {})[holder] = LeaseRecord(amount, expiries.get((model, holder)))
    return ScopeBudget(
        models={model: ModelBudget(committed.get(model, 0), leases.get(model, {}))
                for model in committed.keys() | leases.keys()},
        exhausted=frozenset(item.get("exhausted", {}).get("SS", [])),
    )


class DynamoDBStore(KeyItems, InvocationItems, OverrideItems, TagItems):
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
        self._metrics_ttl = metrics_ttl_days * _DAY
        self._marker_ttl = marker_ttl_days * _DAY
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
            updates.append(_update(
                {"pk": s(f"USAGE#{day}#{shard:02d}"), "sk": s(sort_key)},
                counters.as_dict(),
                sets={"org": s(org), "app": s(app), "model": s(model), "day": s(day)},
            ))
        for key, adds, sets in self.tag_counter_updates(batch_id, aggregate.tagged):
            updates.append(_update(key, adds, sets=sets))
        for (day, minute, model), rate in sorted(aggregate.rates.items()):
            updates.append(rate_update(day, minute, model, rate.tokens, rate.requests,
                                       _epoch(day, minute) + self._metrics_ttl))
        committed, settled = aggregate.committed_by_scope(), aggregate.settled_by_scope()
        for scope, day in sorted(committed.keys() | settled.keys()):
            # Cost beyond what leases covered goes to committed; what they covered leaves them.
            adds = {committed_attribute(model): delta for model, delta in committed.get((scope, day), {}).items()}
            adds.update({_lease_name(model, holder): -reserved
                         for (model, holder), reserved in settled.get((scope, day), {}).items()})
            updates.append(_update(self._quota_key(scope, day), adds,
                                   set_if_absent={"ttl": n(_epoch(day) + QUOTA_TTL_DAYS * _DAY)}))
        return [{"Update": {"TableName": self.table, **update}} for update in updates]

    async def _apply_part(self, marker_id: str, updates: list[dict[str, Any]]) -> bool:
        now = int(self._clock())
        marker = {"Put": {
            "TableName": self.table,
            "Item": {"pk": s(f"BATCH#{marker_id}"), "sk": s("BATCH"), "applied_at": n(now),
                     "ttl": n(now + self._marker_ttl)},
            "ConditionExpression": "attribute_not_exists(pk)",
        }}
        for attempt in range(_CONFLICT_RETRIES):
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
                if not set(reasons) <= retryable or attempt == _CONFLICT_RETRIES - 1:
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
        last = utc_day(until - 1e-6) if until is not None else utc_day(self._clock() + _DAY)
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

    # -- LeaseStore (metering/budget.py) ------------------------------------

    def _quota_key(self, scope: str, day: str) -> dict[str, Any]:
        return {"pk": s(f"QUOTA#{scope}"), "sk": s(day)}

    async def _quota_item(self, scope: str, day: str) -> dict[str, Any]:
        response = await self._api().get_item(
            TableName=self.table, Key=self._quota_key(scope, day), ConsistentRead=True,
        )
        item: dict[str, Any] = response.get("Item", {})
        return item

    async def read_budget(self, scope: str, day: str) -> ScopeBudget:
        return _budget(await self._quota_item(scope, day))

    async def claim_lease(self, scope: str, day: str, model: str, holder: str, amount: int, quota: int,
                          expires_at: float) -> tuple[bool, ScopeBudget]:
        if amount > quota:
            return False, await self.read_budget(scope, day)
        # Condition expressions have no arithmetic: compare with quota - amount, and only
        # once no micro-USD attribute holds part of the spend (`_fold_legacy`).
        update = _update(self._quota_key(scope, day),
                         {committed_attribute(model): amount, _lease_name(model, holder): amount},
                         sets={_expiry_name(model, holder): n(expires_at)},
                         set_if_absent={"ttl": n(_epoch(day) + QUOTA_TTL_DAYS * _DAY)})
        update["ConditionExpression"] = "(attribute_not_exists(#a0) OR #a0 <= :limit) AND attribute_not_exists(#old)"
        update["ExpressionAttributeNames"]["#old"] = legacy_committed_attribute(model)
        update["ExpressionAttributeValues"][":limit"] = n(quota - amount)
        for _ in range(_CONFLICT_RETRIES):
            try:
                response = await self._update_item(update, ReturnValues="ALL_NEW",
                                                   ReturnValuesOnConditionCheckFailure="ALL_OLD")
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                if await self._fold_legacy(scope, day, model):
                    continue  # the old attribute was in the way: look again
                old = exc.response.get("Item")
                return False, _budget(old) if old is not None else await self.read_budget(scope, day)
            return True, _budget(response.get("Attributes", {}))
        raise StoreError(f"lease claim on {scope} {day} {model}: its micro-USD spend kept coming back "
                         "(replicas of a version before issue #16 still running?)")

    async def _fold_legacy(self, scope: str, day: str, model: str) -> bool:
        """Move `model`'s micro-USD committed spend (written before issue #16) into its
        pico-USD attribute, atomically; False when the item has none."""
        old = (await self._quota_item(scope, day)).get(legacy_committed_attribute(model))
        if old is None:
            return False
        try:
            await self._update_item({
                "Key": self._quota_key(scope, day),
                "UpdateExpression": "SET #new = if_not_exists(#new, :zero) + :pico REMOVE #old",
                "ConditionExpression": "#old = :micro",
                "ExpressionAttributeNames": {"#new": committed_attribute(model), "#old": legacy_committed_attribute(model)},
                "ExpressionAttributeValues": {":zero": n(0), ":pico": n(int(old["N"]) * PICO_PER_MICRO),
                                              ":micro": old},
            })
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise  # else it changed since the read (folded or added to): the caller looks again
        return True

    async def renew_lease(self, scope: str, day: str, model: str, holder: str, give_back: int,
                          expires_at: float | None, *, drop: bool = False) -> bool:
        lease, expiry = _lease_name(model, holder), _expiry_name(model, holder)
        key = self._quota_key(scope, day)
        if drop:
            try:
                await self._update_item({
                    "Key": key, "UpdateExpression": "ADD #c :back REMOVE #l, #e",
                    "ConditionExpression": "#l = :amount",
                    "ExpressionAttributeNames": {"#c": committed_attribute(model), "#l": lease, "#e": expiry},
                    "ExpressionAttributeValues": {":back": n(-give_back), ":amount": n(give_back)},
                })
                return True
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise  # it holds more than it gives back (or is gone): give back only
        adds = {committed_attribute(model): -give_back, lease: -give_back} if give_back else {}
        sets = {expiry: n(expires_at)} if expires_at is not None else {}
        update = _update(key, adds, sets=sets)
        if not update["UpdateExpression"]:
            update["UpdateExpression"] = "SET #l = #l"
        update["ExpressionAttributeNames"]["#l"] = lease
        update["ConditionExpression"] = "attribute_exists(#l)"
        try:
            await self._update_item(update)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def reclaim_leases(self, scope: str, day: str, model: str, expired: Mapping[str, LeaseRecord]) -> bool:
        if not expired:
            return True
        names: dict[str, str] = {"#c": committed_attribute(model)}
        values: dict[str, Any] = {":delta": n(-sum(lease.amount for lease in expired.values()))}
        removed: list[str] = []
        conditions: list[str] = []
        for i, (holder, lease) in enumerate(sorted(expired.items())):
            names[f"#l{i}"], names[f"#e{i}"] = _lease_name(model, holder), _expiry_name(model, holder)
            values[f":a{i}"] = n(lease.amount)
            removed += [f"#l{i}", f"#e{i}"]
            if lease.expires_at is None:
                conditions.append(f"(#l{i} = :a{i} AND attribute_not_exists(#e{i}))")
            else:
                values[f":x{i}"] = n(lease.expires_at)
                conditions.append(f"(#l{i} = :a{i} AND #e{i} = :x{i})")
        try:
            await self._update_item({
                "Key": self._quota_key(scope, day),
                "UpdateExpression": f"ADD #c :delta REMOVE {', '.join(removed)}",
                "ConditionExpression": " AND ".join(conditions),
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            })
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def exhausted_models(self, scope: str, day: str) -> frozenset[str]:
        item = await self._quota_item(scope, day)
        return frozenset(item.get("exhausted", {}).get("SS", []))

    async def mark_exhausted(self, scope: str, day: str, model: str) -> None:
        await self._update_item({
            "Key": self._quota_key(scope, day),
            "UpdateExpression": "ADD exhausted :model SET #ttl = if_not_exists(#ttl, :ttl), #at = if_not_exists(#at, :at)",
            "ExpressionAttributeNames": {"#ttl": "ttl", "#at": exhausted_at_attribute(model)},
            "ExpressionAttributeValues": {":model": {"SS": [model]}, ":ttl": n(_epoch(day) + QUOTA_TTL_DAYS * _DAY),
                                          ":at": {"N": repr(time.time())}},
        })

    async def exhaustion_times(self, scope: str, day: str) -> dict[str, float | None]:
        item = await self._quota_item(scope, day)
        at = {model: item.get(exhausted_at_attribute(model)) for model in item.get("exhausted", {}).get("SS", [])}
        return {model: None if value is None else float(value["N"]) for model, value in at.items()}

    async def _update_item(self, update: dict[str, Any], **options: str) -> dict[str, Any]:
        """UpdateItem, retrying the conflicts a concurrent flush transaction causes."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                response: dict[str, Any] = await self._api().update_item(TableName=self.table, **update, **options)
                return response
            except ClientError as exc:
                if error_code(exc) != "TransactionConflictException" or attempt == _CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.02) * 2**attempt)  # noqa: S311 - jitter
        raise AssertionError("unreachable")
