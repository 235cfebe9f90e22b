"""What the proxy asks of its store: calls by operation, items written, flush times.

DynamoDB bills every write, and a store round-trip per request would put the
database on the hot path; these counts are how a platform team (and
`make bench`) checks that metering stays a few batched writes per thousand
requests. They are exported as Prometheus metrics (proxy/admin/metrics.py).

DynamoDB calls are counted with a botocore `before-parameter-build` hook: once per API
call (a retried call counts once), the operation's name as the label.
SQLite has no API calls; each write transaction counts as one call named
"Transaction" and each row it inserts or updates as one item.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["FLUSH_BUCKETS", "WRITE_OPERATIONS", "StoreListener", "StoreStats"]

#: The operations that write (DynamoDB's names, and SQLite's transactions).
WRITE_OPERATIONS = frozenset({
    "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "Transaction",
})

#: Seconds; one flush writes one batch of a second's worth of events.
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreListener(Protocol):
    """Told of every count as it happens (proxy/admin/metrics.py exports them)."""

    def on_call(self, operation: str, items: int) -> None: ...

    def on_flush(self, seconds: float, events: int) -> None: ...


class StoreStats:
    """Names what each store call was and how many items it wrote, and tells the
    listener (the proxy's Prometheus metrics, which hold the counts). Without a
    listener (the CLI's stores) nothing is kept."""

    def __init__(self) -> None:
        self._listener: StoreListener | None = None

    def listen(self, listener: StoreListener) -> None:
        """From now on `listener` hears every call and flush (the proxy listens before the store opens)."""
        self._listener = listener

    def on_dynamodb_call(self, model: Any, params: dict[str, Any], **_kwargs: Any) -> None:
        """botocore `before-parameter-build.dynamodb` handler (sees the API parameters)."""
        operation = model.name
        if operation == "TransactWriteItems":
            items = len(params.get("TransactItems", ()))
        elif operation == "BatchWriteItem":
            items = sum(len(requests) for requests in params.get("RequestItems", {}).values())
        else:
            items = int(operation in WRITE_OPERATIONS)
        if self._listener is not None:
            self._listener.on_call(operation, items)

    def on_transaction(self, rows: int) -> None:
        """SQLite: one write transaction that changed `rows` rows."""
        if self._listener is not None:
            self._listener.on_call("Transaction", rows)

    def on_flush(self, seconds: float, events: int) -> None:
        """One batch of `events` usage events stored in `seconds`."""
        if self._listener is not None:
            self._listener.on_flush(seconds, events)
