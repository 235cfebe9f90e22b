"""Issued caller credentials as DynamoDB items (`pk=KEY#<access key id>`, `sk=KEY`).

A mixin of `DynamoDBStore`: it needs the store's open client (`_api()`), its
`table` and its `_clock`. Keys are listed through GSI `gsi2` (`gsi2pk=KEYS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from metering.dynamodb_schema import GSI, error_code, n, s
from metering.store import IssuedKey, KeyRecord, generate_access_key_id, generate_secret

__all__ = ["KeyItems"]


class KeyItems:
    # Provided by DynamoDBStore:
    table: str
    _clock: Callable[[], float]
    _api: Callable[[], Any]


    async def create_key(self, org: str, app: str) -> IssuedKey:
        if not org or not app:
            raise ValueError("a key needs a non-empty org and app")
        created_at = self._clock()
        secret = generate_secret()
        for _ in range(5):
            access_key_id = generate_access_key_id()
            try:
                await self._api().put_item(
                    TableName=self.table,
                    Item={
                        "pk": s(f"KEY#{access_key_id}"), "sk": s("KEY"), "access_key_id": s(access_key_id),
                        "org": s(org), "app": s(app), "secret": s(secret), "created_at": n(created_at),
                        "gsi2pk": s("KEYS"), "gsi2sk": s(f"{created_at:020.6f}#{access_key_id}"),
                    },
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    continue  # an id collision: next to impossible, retried anyway
                raise
            return IssuedKey(access_key_id, secret, org, app, created_at)
        raise RuntimeError("could not generate a unique access key id")

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        response = await self._api().get_item(
            TableName=self.table, Key={"pk": s(f"KEY#{access_key_id}"), "sk": s("KEY")}, ConsistentRead=True,
        )
        item = response.get("Item")
        return None if item is None else _key_record(item)

    async def list_keys(self) -> list[KeyRecord]:
        records: list[KeyRecord] = []
        paginator = self._api().get_paginator("query")
        async for page in paginator.paginate(
            TableName=self.table, IndexName=GSI, KeyConditionExpression="gsi2pk = :keys",
            ExpressionAttributeValues={":keys": s("KEYS")},
        ):
            records.extend(_key_record(item) for item in page["Items"])
        return records

    async def revoke_key(self, access_key_id: str) -> bool:
        try:
            await self._api().update_item(
                TableName=self.table,
                Key={"pk": s(f"KEY#{access_key_id}"), "sk": s("KEY")},
                UpdateExpression="SET revoked_at = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={":now": n(self._clock())},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True


def _key_record(item: dict[str, Any]) -> KeyRecord:
    revoked = item.get("revoked_at")
    return KeyRecord(
        access_key_id=item["access_key_id"]["S"],
        org=item["org"]["S"],
        app=item["app"]["S"],
        secret=item["secret"]["S"],
        created_at=float(item["created_at"]["N"]),
        revoked_at=float(revoked["N"]) if revoked else None,
    )
