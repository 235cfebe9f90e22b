"""Usage that Bedrock reports itself, for every model family.

* Non-streamed InvokeModel responses carry `X-Amzn-Bedrock-*-Token-Count`
  headers. They are not in the service model (observed only, BEDROCK_WIRE.md
  §1.1); embeddings send only the input count. Recordings spell the names in
  either case, so lookups are case-insensitive.
* A stream's last decoded chunk carries `amazon-bedrock-invocationMetrics`
  (§3.3), always with int counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters._fields import child, token_count, usage_or_none
from adapters.usage import Usage

__all__ = [
    "INPUT_TOKENS_HEADER",
    "OUTPUT_TOKENS_HEADER",
    "CACHE_READ_TOKENS_HEADER",
    "CACHE_WRITE_TOKENS_HEADER",
    "INVOCATION_METRICS_KEY",
    "usage_from_headers",
    "usage_from_invocation_metrics",
]

INPUT_TOKENS_HEADER = "x-amzn-bedrock-input-token-count"
OUTPUT_TOKENS_HEADER = "x-amzn-bedrock-output-token-count"
CACHE_READ_TOKENS_HEADER = "x-amzn-bedrock-cache-read-input-token-count"
CACHE_WRITE_TOKENS_HEADER = "x-amzn-bedrock-cache-write-input-token-count"
_TOKEN_HEADERS = frozenset(
    {INPUT_TOKENS_HEADER, OUTPUT_TOKENS_HEADER, CACHE_READ_TOKENS_HEADER, CACHE_WRITE_TOKENS_HEADER}
)
INVOCATION_METRICS_KEY = "amazon-bedrock-invocationMetrics"


def usage_from_headers(headers: Mapping[str, str]) -> Usage | None:
    """Any mapping (httpx.Headers, a plain dict in any case); `None` if no count is present."""
    found: dict[str, int | None] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _TOKEN_HEADERS:
            found[lowered] = token_count(value)
    if not found:
        return None
    return usage_or_none(
        input_tokens=found.get(INPUT_TOKENS_HEADER),
        output_tokens=found.get(OUTPUT_TOKENS_HEADER),
        cache_read_tokens=found.get(CACHE_READ_TOKENS_HEADER),
        cache_write_tokens=found.get(CACHE_WRITE_TOKENS_HEADER),
    )


def usage_from_invocation_metrics(chunk: Mapping[str, Any]) -> Usage | None:
    """The invocation metrics of a decoded stream chunk, if this chunk has them."""
    metrics = child(chunk, INVOCATION_METRICS_KEY)
    if not metrics:
        return None
    return usage_or_none(
        token_count(metrics.get("inputTokenCount")),
        token_count(metrics.get("outputTokenCount")),
        token_count(metrics.get("cacheReadInputTokenCount")),
        token_count(metrics.get("cacheWriteInputTokenCount")),
    )
