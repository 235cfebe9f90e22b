"""Budget leases on DynamoDB: the `LeaseStore` side of `metering/budget.py`.

A scope's day is one QUOTA item (`pk=QUOTA#<scope>`, `sk=<day>`): the committed
spend per model (`committed_pico_usd#<model>`), each replica's lease on it
(`lease#<model>#<holder>`, pico-USD) with its expiry (`lexp#<model>#<holder>`), and
the `exhausted` set. A claim is one conditional UpdateItem: it adds the amount to
the committed spend and the lease only while the committed spend stays within the
quota, so replicas never claim more than the quota between them (metering/leases.py
states the bound).

A mixin of `DynamoDBStore`: it needs the store's open client (`_api()`), its `table`
and `_update_item` (which retries the conflicts a concurrent flush causes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from metering.budget import LeaseRecord, ModelBudget, ScopeBudget
from metering.dynamodb_schema import (
    CONFLICT_RETRIES,
    DAY_SECONDS,
    QUOTA_TTL_DAYS,
    committed_attribute,
    committed_by_model,
    day_epoch,
    error_code,
    exhausted_at_attribute,
    legacy_committed_attribute,
    n,
    s,
    update_body,
)
from metering.money import PICO_PER_MICRO
from metering.store import StoreError

__all__ = ["LeaseItems", "lease_name"]


#: A budget lease's amount (pico-USD) and expiry (epoch seconds) on the scope's QUOTA item.
_LEASE, _EXPIRY = "lease#", "lexp#"


def lease_name(model: str, holder: str) -> str:
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


class LeaseItems:
    # Provided by DynamoDBStore:
    table: str
    _api: Callable[[], Any]
    _update_item: Callable[..., Any]

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
        update = update_body(self._quota_key(scope, day),
                         {committed_attribute(model): amount, lease_name(model, holder): amount},
                         sets={_expiry_name(model, holder): n(expires_at)},
                         set_if_absent={"ttl": n(day_epoch(day) + QUOTA_TTL_DAYS * DAY_SECONDS)})
        update["ConditionExpression"] = "(attribute_not_exists(#a0) OR #a0 <= :limit) AND attribute_not_exists(#old)"
        update["ExpressionAttributeNames"]["#old"] = legacy_committed_attribute(model)
        update["ExpressionAttributeValues"][":limit"] = n(quota - amount)
        for _ in range(CONFLICT_RETRIES):
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
        lease, expiry = lease_name(model, holder), _expiry_name(model, holder)
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
        update = update_body(key, adds, sets=sets)
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
            names[f"#l{i}"], names[f"#e{i}"] = lease_name(model, holder), _expiry_name(model, holder)
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
            "ExpressionAttributeValues": {":model": {"SS": [model]}, ":ttl": n(day_epoch(day) + QUOTA_TTL_DAYS * DAY_SECONDS),
                                          ":at": {"N": repr(time.time())}},
        })

    async def exhaustion_times(self, scope: str, day: str) -> dict[str, float | None]:
        item = await self._quota_item(scope, day)
        at = {model: item.get(exhausted_at_attribute(model)) for model in item.get("exhausted", {}).get("SS", [])}
        return {model: None if value is None else float(value["N"]) for model, value in at.items()}
