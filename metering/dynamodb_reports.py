"""Claims on the request ids of client-reported usage (`POST /v1/usage-reports`, issue #23).

The DynamoDB store keeps counters, not one item per request, so it cannot tell a
report sent twice from two reports: a client retrying after a lost answer would be
counted twice. Before a report is recorded, its id is claimed with a conditional
put (`pk=REPORT#<id>`, `sk=REPORT`, `claimed_at`, `ttl`); a second claim fails and
the report is answered as a duplicate. The claim lives as long as a batch marker:
reports older than that are refused by their timestamp anyway.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from metering.dynamodb_schema import error_code, n, s

__all__ = ["claim_report"]


async def claim_report(client: Any, table: str, report_id: str, now: float, ttl_seconds: int) -> bool:
    """True when `report_id` was not claimed before (now it is), False for a duplicate."""
    try:
        await client.put_item(
            TableName=table,
            Item={"pk": s(f"REPORT#{report_id}"), "sk": s("REPORT"), "claimed_at": n(int(now)),
                  "ttl": n(int(now) + ttl_seconds)},
            ConditionExpression="attribute_not_exists(pk)",
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True
