"""What the proxy asks of its store: calls by operation, items written, flush times.

DynamoDB bills every write, and a store round-trip per request would put the
database on the hot path; these counts are how a platform team (and
`make bench`) checks that metering stays a few batched writes per thousand
requests. They are exported as Prometheus metrics (proxy/metrics.py).

DynamoDB calls are counted with a botocore `before-parameter-build` hook: once per API
call (a retried call counts once), the operation's name as the label.
SQLite has no API calls; each write transaction counts as one call named
"Transaction" and each row it inserts or updates as one item.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

__all__ = ["FLUSH_BUCKETS", "WRITE_OPERATIONS", "StoreStats"]

#: The operations that write (DynamoDB's names, and SQLite's transactions).
WRITE_OPERATIONS = frozenset({
    "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "Transaction",
})

#: Seconds; one flush writes one batch of a second's worth of events.
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreStats:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.items_written = 0
        self.flushes = 0
        self.flushed_events = 0
        self.flush_seconds_sum = 0.0
        #: Cumulative counts per FLUSH_BUCKETS bound, then +Inf (Prometheus histogram shape).
        self.flush_buckets = [0] * (len(FLUSH_BUCKETS) + 1)

    def on_dynamodb_call(self, model: Any, params: dict[str, Any], **_kwargs: Any) -> None:
        """botocore `before-parameter-build.dynamodb` handler (sees the API parameters)."""
        operation = model.name
        self.calls[operation] += 1
        if operation == "TransactWriteItems":
            self.items_written += len(params.get("TransactItems", ()))
        elif operation == "BatchWriteItem":
            self.items_written += sum(len(requests) for requests in params.get("RequestItems", {}).values())
        elif operation in WRITE_OPERATIONS:
            self.items_written += 1

    def on_transaction(self, rows: int) -> None:
        """SQLite: one write transaction that changed `rows` rows."""
        self.calls["Transaction"] += 1
        self.items_written += rows

    def on_flush(self, seconds: float, events: int) -> None:
        """One batch of `events` usage events stored in `seconds`."""
        self.flushes += 1
        self.flushed_events += events
        self.flush_seconds_sum += seconds
        for index in range(bisect.bisect_left(FLUSH_BUCKETS, seconds), len(self.flush_buckets)):
            self.flush_buckets[index] += 1

    @property
    def writes(self) -> int:
        return sum(count for operation, count in self.calls.items() if operation in WRITE_OPERATIONS)
