"""Runtime quota overrides as DynamoDB items (metering/overrides.py).

One item per override, all under one partition: `pk=OVERRIDES`,
`sk=<org>#<app>#<model>#<day>` (`app` and `day` empty when unset), with the
fields as attributes. The set is small (set by hand), so a replica reads the
whole partition in one strongly consistent Query every `quotas.overrides_refresh`.

A mixin of `DynamoDBStore`: it needs the store's open client (`_api()`), its
`table`, `_quota_key` and `_update_item`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from botocore.exceptions import ClientError

from metering.dynamodb_schema import error_code, n, s
from metering.overrides import QuotaOverride

__all__ = ["OverrideItems"]

_PK = "OVERRIDES"


def _sort_key(org: str, app: str, model: str, day: str) -> str:
    return f"{org}#{app}#{model}#{day}"


def _override(item: dict[str, Any]) -> QuotaOverride:
    return QuotaOverride(
        org=item["org"]["S"], app=item.get("app", {}).get("S", ""), model=item["model"]["S"],
        day=item.get("day", {}).get("S", ""), quota_pico_usd=int(item["quota_pico_usd"]["N"]),
        set_by=item.get("set_by", {}).get("S", ""), set_at=float(item.get("set_at", {}).get("N", "0")),
    )


class OverrideItems:
    # Provided by DynamoDBStore:
    table: str
    _api: Callable[[], Any]
    _quota_key: Callable[[str, str], dict[str, Any]]
    _update_item: Callable[..., Awaitable[Any]]

    async def quota_overrides(self) -> list[QuotaOverride]:
        items: list[dict[str, Any]] = []
        paginator = self._api().get_paginator("query")
        async for page in paginator.paginate(
            TableName=self.table, KeyConditionExpression="pk = :pk", ConsistentRead=True,
            ExpressionAttributeValues={":pk": s(_PK)},
        ):
            items.extend(page["Items"])
        return [_override(item) for item in items]

    async def put_quota_override(self, override: QuotaOverride) -> QuotaOverride | None:
        response = await self._api().put_item(
            TableName=self.table,
            Item={"pk": s(_PK), "sk": s(_sort_key(*override.key)), "org": s(override.org), "app": s(override.app),
                  "model": s(override.model), "day": s(override.day),
                  "quota_pico_usd": n(override.quota_pico_usd), "set_by": s(override.set_by),
                  "set_at": n(override.set_at)},
            ReturnValues="ALL_OLD",
        )
        old = response.get("Attributes")
        return _override(old) if old else None

    async def delete_quota_override(self, org: str, app: str, model: str, day: str) -> QuotaOverride | None:
        response = await self._api().delete_item(
            TableName=self.table, Key={"pk": s(_PK), "sk": s(_sort_key(org, app, model, day))},
            ReturnValues="ALL_OLD",
        )
        old = response.get("Attributes")
        return _override(old) if old else None

    async def clear_exhausted(self, scope: str, day: str, model: str) -> None:
        try:
            await self._update_item({
                "Key": self._quota_key(scope, day),
                "UpdateExpression": "DELETE exhausted :model",
                # No quota item that day: nothing to clear (and none is created without its TTL).
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": {":model": {"SS": [model]}},
            })
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
