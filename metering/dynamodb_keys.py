"""Issued caller credentials as DynamoDB items (`pk=KEY#<access key id>`, `sk=KEY`).

A mixin of `DynamoDBStore`: it needs the store's open client (`_api()`), its
`table`, its `_clock` and its `_key_source`. Keys are listed through its GSI
(`index_name`, `MetricTypeIndex`; `gsi2pk=KEYS`). The `secret` attribute holds the secret encrypted
(`metering/secret_box.py`), or the bare secret in items written before
encryption existed until `costkeeper keys encrypt` converts them. Meta items
(`pk=META#<name>`, `sk=META`, `value`) hold the key-check marker and, with KMS,
the wrapped data key (`metering/secret_keys.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from metering.dynamodb_schema import error_code, n, s
from metering.secret_box import SecretBox, SecretKeyError
from metering.secret_keys import SecretsMixin, reencrypt_marker
from metering.store import (
    IssuedKey,
    KeyRecord,
    ReencryptResult,
    generate_access_key_id,
)

__all__ = ["KeyItems"]


class KeyItems(SecretsMixin):
    # Provided by DynamoDBStore (and `_key_source` for SecretsMixin):
    table: str
    index_name: str
    _clock: Callable[[], float]
    _api: Callable[[], Any]

    async def create_key(self, org: str, app: str) -> IssuedKey:
        box, secret = await self._new_secret(org, app)
        created_at = self._clock()
        for _ in range(5):
            access_key_id = generate_access_key_id()
            try:
                await self._api().put_item(
                    TableName=self.table,
                    Item={
                        "pk": s(f"KEY#{access_key_id}"), "sk": s("KEY"), "access_key_id": s(access_key_id),
                        "org": s(org), "app": s(app), "secret": s(box.encrypt(access_key_id, secret)),
                        "created_at": n(created_at),
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
        return None if item is None else _key_record(await self._secrets(), item)

    async def list_keys(self) -> list[KeyRecord]:
        items = await self._key_items()
        if not items:
            return []
        box = await self._secrets()
        return [_key_record(box, item) for item in items]

    async def _key_items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        paginator = self._api().get_paginator("query")
        async for page in paginator.paginate(
            TableName=self.table, IndexName=self.index_name, KeyConditionExpression="gsi2pk = :keys",
            ExpressionAttributeValues={":keys": s("KEYS")},
        ):
            items.extend(page["Items"])
        return items

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

    async def encrypt_secrets(self) -> ReencryptResult:
        box = await self._secrets()
        encrypted, unchanged, failed = 0, 0, []
        for item in await self._key_items():
            access_key_id, stored = item["access_key_id"]["S"], item["secret"]["S"]
            try:
                new = box.reencrypted(access_key_id, stored)
            except SecretKeyError as exc:
                failed.append(str(exc))
                continue
            if new is None:
                unchanged += 1
                continue
            try:
                await self._api().update_item(
                    TableName=self.table,
                    Key={"pk": s(f"KEY#{access_key_id}"), "sk": s("KEY")},
                    UpdateExpression="SET secret = :new",
                    ConditionExpression="secret = :old",  # unless another `keys encrypt` was first
                    ExpressionAttributeValues={":new": s(new), ":old": s(stored)},
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                unchanged += 1
                continue
            encrypted += 1
        await reencrypt_marker(box, self)
        return ReencryptResult(encrypted, unchanged, tuple(failed))

    # -- MetaStore (metering/secret_keys.py) -------------------------------

    async def get_meta(self, name: str) -> str | None:
        response = await self._api().get_item(
            TableName=self.table, Key={"pk": s(f"META#{name}"), "sk": s("META")}, ConsistentRead=True,
        )
        item = response.get("Item")
        return None if item is None else str(item["value"]["S"])

    async def add_meta(self, name: str, value: str) -> bool:
        try:
            await self._put_meta(name, value, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def set_meta(self, name: str, value: str) -> None:
        await self._put_meta(name, value)

    async def _put_meta(self, name: str, value: str, **condition: str) -> None:
        await self._api().put_item(
            TableName=self.table,
            Item={"pk": s(f"META#{name}"), "sk": s("META"), "value": s(value), "updated_at": n(self._clock())},
            **condition,
        )


def _key_record(box: SecretBox, item: dict[str, Any]) -> KeyRecord:
    revoked = item.get("revoked_at")
    access_key_id = item["access_key_id"]["S"]
    return KeyRecord(
        access_key_id=access_key_id,
        org=item["org"]["S"],
        app=item["app"]["S"],
        secret=box.reveal(access_key_id, item["secret"]["S"]),
        created_at=float(item["created_at"]["N"]),
        revoked_at=float(revoked["N"]) if revoked else None,
    )
