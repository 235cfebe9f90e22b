"""Async-invocation owners as DynamoDB items (`pk=INVOCATION#<ARN>`, `sk=INVOCATION`).

A mixin of `DynamoDBStore`: it needs the store's open client (`_api()`) and its
`table`. One item per ARN, written once with a conditional put; Get reads one
item, List one BatchGetItem per 100 ARNs of the page (the ARNs Bedrock listed,
however many jobs the account holds). The items do not expire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from metering.dynamodb_schema import error_code, n, s
from metering.invocations import Invocation

__all__ = ["InvocationItems"]

#: DynamoDB's limit of keys per BatchGetItem.
_KEYS_PER_BATCH = 100
#: Rounds of retrying UnprocessedKeys (a throttled partition) before giving up.
_UNPROCESSED_ROUNDS = 5


def _key(arn: str) -> dict[str, Any]:
    return {"pk": s(f"INVOCATION#{arn}"), "sk": s("INVOCATION")}


def _invocation(item: dict[str, Any]) -> Invocation:
    return Invocation(arn=item["arn"]["S"], org=item["org"]["S"], app=item["app"]["S"], model=item["model"]["S"],
                      started_at=float(item["started_at"]["N"]))


class InvocationItems:
    # Provided by DynamoDBStore:
    table: str
    _api: Callable[[], Any]

    async def record_invocation(self, invocation: Invocation) -> tuple[Invocation, bool]:
        try:
            await self._api().put_item(
                TableName=self.table,
                Item={**_key(invocation.arn), "arn": s(invocation.arn), "org": s(invocation.org),
                      "app": s(invocation.app), "model": s(invocation.model),
                      "started_at": n(invocation.started_at)},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            response = await self._api().get_item(TableName=self.table, Key=_key(invocation.arn),
                                                   ConsistentRead=True)
            return _invocation(response["Item"]), False
        return invocation, True

    async def invocations(self, arns: Sequence[str]) -> dict[str, Invocation]:
        wanted = list(dict.fromkeys(arns))
        found: dict[str, Invocation] = {}
        for start in range(0, len(wanted), _KEYS_PER_BATCH):
            keys = [_key(arn) for arn in wanted[start:start + _KEYS_PER_BATCH]]
            for attempt in range(_UNPROCESSED_ROUNDS):
                response = await self._api().batch_get_item(
                    RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}})
                for item in response.get("Responses", {}).get(self.table, []):
                    record = _invocation(item)
                    found[record.arn] = record
                keys = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not keys:
                    break
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                raise RuntimeError(f"DynamoDB left {len(keys)} invocation records unread after "
                                   f"{_UNPROCESSED_ROUNDS} rounds")
        return found
