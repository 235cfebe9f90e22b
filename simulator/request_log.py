"""The simulator's log of the requests it received, for `GET /_sim/requests`
(simulator/introspection.py): what reached "Bedrock", as it arrived.

Apart from the routes that serve it: the simulator's state (simulator/context.py)
holds a log, and the routes read that state, so neither imports the other.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["RequestLog", "MAX_RECORDS", "MAX_BODY_KEPT"]

MAX_RECORDS = 200
#: Bodies are kept up to this size: 200 requests of 25 MB would not fit in memory.
MAX_BODY_KEPT = 64 * 1024
_REDACTED = "<redacted>"


class RequestLog:
    """Records are dicts the request path fills in as it goes; raw headers and
    body (its first `MAX_BODY_KEPT` bytes) are kept as received and only
    decoded when someone asks."""

    def __init__(self, size: int = MAX_RECORDS) -> None:
        self._records: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, record: dict[str, Any]) -> None:
        self._records.append(record)

    def clear(self) -> int:
        count = len(self._records)
        self._records.clear()
        return count

    def snapshot(self) -> list[dict[str, Any]]:
        return [_public(record) for record in self._records]


def _public(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in ("raw_headers", "raw_body")}
    headers: dict[str, str] = {}
    for raw_name, raw_value in record.get("raw_headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = _REDACTED if name == "authorization" else raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    out["headers"] = headers
    out["body"] = record.get("raw_body", b"").decode("utf-8", errors="replace")
    return out
